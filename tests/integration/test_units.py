#!/usr/bin/env python3
"""The systemd units: they load cleanly, the hardening scores as promised,
and the limits fit the largest configuration the daemon accepts."""
import os
import re
import shutil
import subprocess
import tempfile

from harness import DAEMON, Skip, main

SERVICE = os.environ.get("ECHO_MPSERV_SERVICE", "")
SOCKET = os.path.join(os.environ.get("ECHO_MPSERV_SOURCE_ROOT", ""), "systemd", "echo-mpserv.socket")
SANDBOX = os.path.join(os.environ.get("ECHO_MPSERV_SOURCE_ROOT", ""), "systemd", "sandbox.inc")
SYSUSERS = os.path.join(os.environ.get("ECHO_MPSERV_SOURCE_ROOT", ""), "systemd", "echo-mpserv.sysusers")
DEBIAN = os.path.join(os.environ.get("ECHO_MPSERV_SOURCE_ROOT", ""), "debian")
# The Accept=yes template, built next to the service.
INSTANCE = os.path.join(os.path.dirname(SERVICE), "echo-mpserv@.service")
MAX_EXPOSURE = 1.0


def analyze(*args):
    if not shutil.which("systemd-analyze"):
        raise Skip("systemd-analyze is not installed")
    return subprocess.run(["systemd-analyze"] + list(args), capture_output=True, text=True, timeout=60)


def settings(path):
    with open(path) as f:
        return dict(re.findall(r"^(\w+)=(.*)$", f.read(), re.M))


def test_units_verify_cleanly():
    with tempfile.TemporaryDirectory() as tmp:
        # verify checks that ExecStart= and ExecReload= exist: point them at
        # the binary under test.
        for unit in (SERVICE, INSTANCE):
            with open(unit) as f:
                text = f.read()
            text = text.replace(re.search(r"^ExecStart=(\S+)", text, re.M).group(1), DAEMON)
            with open(os.path.join(tmp, os.path.basename(unit)), "w") as f:
                f.write(text)
        shutil.copy(SOCKET, tmp)
        p = analyze("verify", "--man=no", os.path.join(tmp, "echo-mpserv.socket"),
                    os.path.join(tmp, "echo-mpserv.service"), os.path.join(tmp, "echo-mpserv@.service"))
        assert p.returncode == 0 and p.stdout + p.stderr == "", p.stdout + p.stderr


def test_exposure_at_most_one():
    for unit in (SERVICE, INSTANCE):
        p = analyze("security", "--offline=yes", f"--threshold={int(MAX_EXPOSURE * 10)}", unit)
        m = re.search(r"Overall exposure level for echo-mpserv@?i?\.service: (\d+\.\d)", p.stdout)
        assert m, p.stdout + p.stderr
        print(f"   systemd-analyze security {os.path.basename(unit)}: exposure {m.group(1)} "
              f"(at most {MAX_EXPOSURE})")
        assert p.returncode == 0 and float(m.group(1)) <= MAX_EXPOSURE, p.stdout[-2000:]


def test_instances_run_in_the_daemons_sandbox():
    """echo-mpserv@.service (Accept=yes) has every line of the sandbox and
    the credential the daemon has (both are built from one snippet), and
    beyond them only what one short-lived process per client needs."""
    with open(SANDBOX) as f:
        sandbox = [line for line in f.read().splitlines() if line and not line.startswith("#")]
    units = {}
    for unit in (SERVICE, INSTANCE):
        with open(unit) as f:
            units[unit] = f.read().splitlines()
        missing = [line for line in sandbox if line not in units[unit]]
        assert not missing, (unit, missing)
    assert "DynamicUser=yes" in sandbox and "User=echo-mpserv" in sandbox  # one user for every instance
    own = {k: v for k, v in settings(INSTANCE).items()
           if f"{k}={v}" not in sandbox}
    assert own == {"Description": own["Description"], "Documentation": own["Documentation"],
                   "CollectMode": "inactive-or-failed", "Type": "simple", "ExecStart": own["ExecStart"],
                   "TasksMax": "4", "LimitNOFILE": "64"}, own
    assert own["ExecStart"] == settings(SERVICE)["ExecStart"]


def test_units_run_as_a_static_system_user():
    """DynamicUser=yes with a User= that the package creates statically
    (sysusers.d): systemd runs the units as that user instead of allocating
    a uid, which it would release at a stop while the workers of the stopped
    daemon still run (KillMode=process). The package's postinst runs
    systemd-sysusers (dh_installsysusers); its prerm ends leftover workers
    on removal. tests/e2e/test_package.py checks all of it under systemd."""
    sandbox = settings(SANDBOX)
    assert sandbox["DynamicUser"] == "yes", sandbox.get("DynamicUser")
    with open(SYSUSERS) as f:
        lines = [line.split() for line in f.read().splitlines() if line and not line.startswith("#")]
    assert [(line[0], line[1], line[2]) for line in lines] == [("u", sandbox["User"], "-")], lines
    if shutil.which("systemd-sysusers"):
        with tempfile.TemporaryDirectory() as root, open(SYSUSERS) as f:
            os.mkdir(os.path.join(root, "etc"))
            p = subprocess.run(["systemd-sysusers", "--dry-run", f"--root={root}", "-"], stdin=f,
                               capture_output=True, text=True)
        assert p.returncode == 0 and f"Creating user '{sandbox['User']}'" in p.stdout + p.stderr, \
            p.stdout + p.stderr
    with open(os.path.join(DEBIAN, "control")) as f:
        assert re.search(r"^Build-Depends:(.|\n )*dh-sequence-installsysusers", f.read(), re.M)
    with open(os.path.join(DEBIAN, "echo-mpserv.prerm")) as f:
        prerm = f.read()
    # systemctl kill's defaults: SIGTERM, every process of the unit.
    assert re.search(r'^\s+deb-systemd-invoke kill echo-mpserv\.service\b', prerm, re.M), prerm
    assert prerm.index("#DEBHELPER#") < prerm.index("invoke kill"), "the units must be stopped first"


def test_limits_fit_the_largest_configuration():
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
        f.write("max_clients = 999999;\n")
        f.flush()
        err = subprocess.run([DAEMON, "-c", f.name, "--check-config"], capture_output=True, text=True).stderr
    largest = int(re.search(r"max_clients = 999999 is out of range \(1\.\.(\d+)\)", err).group(1))
    service = settings(SERVICE)
    assert int(service["TasksMax"]) >= largest + 1, (service["TasksMax"], largest)
    # After a restart the daemon holds a pidfd per adopted session, and its own.
    assert int(service["LimitNOFILE"]) >= largest + 256, (service["LimitNOFILE"], largest)
    assert service["Type"] == "notify" and service["KillMode"] == "process"
    assert service["OOMPolicy"] == "continue" and service["Restart"] == "on-failure"
    assert set(service["RestartPreventExitStatus"].split()) == {"64", "69", "78"}
    socket = settings(SOCKET)
    assert socket["Accept"] == "no" and socket["ListenStream"] == "7" and socket["WantedBy"] == "sockets.target"
    print(f"   TasksMax={service['TasksMax']}, LimitNOFILE={service['LimitNOFILE']} for max_clients up to {largest}")


def test_journal_takes_what_the_record_budget_writes():
    """journald drops records past the unit's rate limit without a trace: it
    must take at least twice what the default budget writes in its interval
    (the rest of the daemon's records are bounded too). 0 would not turn the
    limit off in systemd 252: it means journald's default."""
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as empty:
        dump = subprocess.run([DAEMON, "-c", empty.name, "--dump-config"], capture_output=True,
                              text=True, check=True).stdout
    defaults = dict(re.findall(r"^(\w+) = (.*);$", dump, re.M))
    rate, burst = float(defaults["log_connection_rate"]), int(defaults["log_connection_burst"])
    service = settings(SERVICE)
    interval = service["LogRateLimitIntervalSec"]
    assert interval.endswith("s") and interval[:-1].isdigit() and int(interval[:-1]) > 0, interval
    most = burst + rate * int(interval[:-1])
    print(f"   the budget writes at most {most:.0f} connection records per {interval}; "
          f"journald takes {service['LogRateLimitBurst']}")
    assert rate > 0 and int(service["LogRateLimitBurst"]) >= 2 * most, (most, service["LogRateLimitBurst"])


if __name__ == "__main__":
    main([test_units_verify_cleanly, test_exposure_at_most_one, test_instances_run_in_the_daemons_sandbox,
          test_units_run_as_a_static_system_user,
          test_limits_fit_the_largest_configuration,
          test_journal_takes_what_the_record_budget_writes])
