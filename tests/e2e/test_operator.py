#!/usr/bin/env python3
"""What an operator does to the packaged echo-mpserv under a real systemd 252,
from any state: move the port (also by restarting only the service, and
through an upgrade with the edit still pending), break the configuration
(the socket fails closed and says why in `systemctl status` and the kernel
log; a client queued while the file is broken waits for the fix and a
reload, the socket never fails; likewise while the hash key credential is
missing, until a restart of the service), reload an idle service, and read the exit statuses systemd names.

Usage (as root): test_operator.py PACKAGE.deb NEWER-PACKAGE.deb
Exit status: 0 passed, 1 failed, 77 skipped (no root or no namespaces).
"""
import os
import re
import sys
import threading
import time

import nspawn
from test_package import CONF, boot, check, client, debs_or_exit, echo_ok, figures, report, reset_conf, wait_status

NO_SOCKET = "systemd passed no listening socket; run: systemctl restart echo-mpserv.socket"


def refused(m, host, port):
    p = m.run_net([sys.executable, "-c", f"import socket; socket.create_connection(({host!r}, {port}), 5)"],
                  check=False)
    return p.returncode != 0 and "ConnectionRefusedError" in p.stderr


def listeners(m):
    """The machine's listening TCP sockets, as ss prints their local addresses."""
    return sorted(line.split()[3] for line in m.run(["ss", "-Htln"]).stdout.splitlines() if line.strip())


def fresh(m):
    """Each test starts from the installed state, whatever the last left."""
    reset_conf(m, "")
    m.systemctl("daemon-reload")
    m.systemctl("reset-failed", check=False)
    m.systemctl("restart", "echo-mpserv.socket")


def apply_port(m, text):
    reset_conf(m, text)
    m.systemctl("daemon-reload")
    m.systemctl("restart", "echo-mpserv.socket")


@check("port change, then only the service restarted: one clear line, no restart loop, socket stays up")
def t_service_restart_after_port_change(m):
    fresh(m)
    assert echo_ok(m)  # the service runs, on port 7
    cursor = m.journal_cursor()
    reset_conf(m, "port = 7777;\n")
    m.systemctl("daemon-reload")
    r = m.systemctl("restart", "echo-mpserv.service", check=False)
    assert r.returncode != 0, "the service started without a socket"
    m.wait_unit_state("echo-mpserv.service", ["failed"], timeout=30)
    assert m.unit_property("echo-mpserv.service", "ExecMainStatus") == "69"
    assert m.unit_property("echo-mpserv.service", "NRestarts") == "0"
    status = wait_status(m, "echo-mpserv.service", "status=69/UNAVAILABLE")
    m.wait_journal(re.escape(NO_SOCKET), cursor=cursor, unit="echo-mpserv.service")
    assert m.is_active("echo-mpserv.socket") != "failed", m.unit_property("echo-mpserv.socket", "Result")
    assert m.unit_property("echo-mpserv.socket", "Result") == "success"
    # The documented step, from this state.
    m.systemctl("restart", "echo-mpserv.socket")
    assert echo_ok(m, "127.0.0.1", 7777) and echo_ok(m, "::1", 7777)
    assert refused(m, "127.0.0.1", 7)
    figures.append("service restarted after a port change: exit 69/UNAVAILABLE, 0 restarts, socket "
                   "not taken down; a socket restart serves the new port")
    apply_port(m, "")
    assert echo_ok(m)


@check("a broken configuration: the socket fails closed, status and kernel log say why")
def t_generator_fails_closed(m):
    fresh(m)
    apply_port(m, 'listen = [ "127.0.0.1" ];\nport = 7777;\n')
    assert listeners(m) == ["127.0.0.1:7777"], listeners(m)
    # The machine's /dev has no kmsg; give it the host's (the kernel log is
    # the kernel's, one for all), and read it from the host side.
    m.run(["sh", "-c", "[ -e /dev/kmsg ] || mknod -m 600 /dev/kmsg c 1 11"])
    cursor = m.journal_cursor()
    kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        os.lseek(kmsg, 0, os.SEEK_END)
        reset_conf(m, 'listen = [ "127.0.0.1" ];\nport = 7777;\nmax_clients = "many";\n')
        m.systemctl("daemon-reload")
        r = m.systemctl("restart", "echo-mpserv.socket", check=False)
        kernel = []
        while True:
            try:
                kernel.append(os.read(kmsg, 8192).decode(errors="replace"))
            except BlockingIOError:
                break
    finally:
        os.close(kmsg)
    assert r.returncode != 0, "the socket started with a broken configuration"
    assert listeners(m) == [], listeners(m)
    assert refused(m, "127.0.0.1", 7) and refused(m, "127.0.0.1", 7777)
    status = wait_status(m, "echo-mpserv.socket", "not listening: " + CONF)
    assert "status=78/CONFIG" in status, status
    # The check's FILE:LINE is in the unit's journal (systemctl status was
    # seen to leave out a line of a control process that journalctl -u had).
    m.wait_journal(rf"{CONF}:3: max_clients must be an integer", cursor=cursor, unit="echo-mpserv.socket")
    gen = [line.split(";", 1)[-1] for line in kernel if "echo-mpserv-generator" in line]
    assert any(f"{CONF}:3: max_clients must be an integer" in line for line in gen), kernel
    assert any("echo-mpserv.socket will not listen until" in line for line in gen), kernel
    figures.append(f"broken file: socket restart exit {r.returncode}, 0 listeners, the reason in "
                   f"systemctl status, FILE:LINE in its journal and {len(gen)} kernel log records")
    # Fixed: the configured address only.
    apply_port(m, 'listen = [ "127.0.0.1" ];\nport = 7777;\n')
    assert listeners(m) == ["127.0.0.1:7777"], listeners(m)
    assert echo_ok(m, "127.0.0.1", 7777)
    apply_port(m, "")
    assert echo_ok(m)


@check("reload before the first client is harmless; a broken file at a start with no client is 78/CONFIG, not a loop")
def t_reload(m):
    fresh(m)
    # (A reload of a broken file failing is in test_package.py's t_reload.)
    assert echo_ok(m)
    # Before the first client: reload fails (documented), try-reload-or-restart does nothing.
    m.systemctl("stop", "echo-mpserv.service")
    r = m.systemctl("reload", "echo-mpserv.service", check=False)
    assert r.returncode != 0 and "not active" in r.stderr, r.stderr
    m.systemctl("try-reload-or-restart", "echo-mpserv.service")
    assert m.is_active("echo-mpserv.service") == "inactive"
    # A broken file at a start no client waits for: the start fails,
    # 78/CONFIG, no restart loop (with a client queued it waits: below).
    reset_conf(m, 'max_clients = "many";\n')
    cursor = m.journal_cursor()
    r = m.systemctl("start", "echo-mpserv.service", check=False)
    assert r.returncode != 0, r
    m.wait_unit_state("echo-mpserv.service", ["failed"], timeout=30)
    m.wait_journal(re.escape(f"{CONF}:1: max_clients must be an integer"), cursor=cursor, unit="echo-mpserv.service")
    status = m.systemctl("status", "echo-mpserv.service", "--no-pager", check=False).stdout
    assert "status=78/CONFIG" in status, status
    assert m.unit_property("echo-mpserv.service", "NRestarts") == "0"
    assert m.is_active("echo-mpserv.socket") == "active"
    reset_conf(m, "")
    assert echo_ok(m)
    figures.append("reload of an idle service: 'not active' (documented), try-reload-or-restart 0; "
                   "broken file at a start with no client: start fails, 78/CONFIG, 0 restarts")


@check("systemctl restart with a broken file reports the failure; the next client waits for the fix")
def t_restart_broken_reports_failure(m):
    fresh(m)
    assert echo_ok(m)  # the daemon runs
    reset_conf(m, "max_clients = 512\nidle_timeot = 10;\n")  # a typo
    r = m.systemctl("restart", "echo-mpserv.service", check=False)
    m.wait_unit_state("echo-mpserv.service", ["failed"], timeout=30)
    active = m.is_active("echo-mpserv.service")
    main_status = m.unit_property("echo-mpserv.service", "ExecMainStatus")
    try_restart = m.systemctl("try-restart", "echo-mpserv.service", check=False)  # an upgrade's, now inactive
    assert r.returncode != 0 and active == "failed" and main_status == "78", (r.returncode, active, main_status)
    assert m.unit_property("echo-mpserv.service", "NRestarts") == "0"
    assert m.is_active("echo-mpserv.socket") == "active"
    # The next client starts it, and it waits for the fix, not looping.
    got = {}
    queued = threading.Thread(target=lambda: got.update(r=client(m, "once", "127.0.0.1", 7, 1000)))
    queued.start()
    try:
        wait_status(m, "echo-mpserv.service", "Not serving, the configuration does not load")
        reset_conf(m, "")
        m.systemctl("reload", "echo-mpserv.service")
        queued.join(120)
    finally:
        reset_conf(m, "")
        queued.join(150)
    assert got["r"]["received"] == 1000 and got["r"]["exact"], got
    assert m.is_active("echo-mpserv.socket") == "active" and echo_ok(m)
    figures.append(f"typo in the file, systemctl restart echo-mpserv: rc {r.returncode}, {active}, "
                   f"status {main_status}; try-restart then rc {try_restart.returncode}; the next client waited "
                   f"and got its 1000 bytes after fix + reload")


@check("a broken file and a client queued: no start loop, the socket never fails, served after fix + reload")
def t_broken_config_with_a_client_queued(m):
    fresh(m)
    m.systemctl("stop", "echo-mpserv.service")
    reset_conf(m, "log_level = info;\n")
    cursor = m.journal_cursor()
    got = {}
    queued = threading.Thread(target=lambda: got.update(r=client(m, "once", "127.0.0.1", 7, 1000)))
    queued.start()
    try:
        wait_status(m, "echo-mpserv.service", "Not serving, the configuration does not load",
                    f'{CONF}:1: log_level = info: a string value must be in double quotes',
                    "systemctl reload echo-mpserv")
        m.wait_journal(r"not serving: the configuration does not load; clients wait in the socket's queue",
                       cursor=cursor, unit="echo-mpserv.service")
        assert queued.is_alive() and "r" not in got, got          # waiting, not refused, not served
        assert m.is_active("echo-mpserv.service") == "active"
        assert m.unit_property("echo-mpserv.service", "NRestarts") == "0"
        # The reload checks the file first: still broken, it fails and says why.
        r = m.systemctl("reload", "echo-mpserv.service", check=False)
        assert r.returncode != 0, r
        assert m.is_active("echo-mpserv.service") == "active" and queued.is_alive()
        reset_conf(m, 'log_level = "info";\n')
        m.systemctl("reload", "echo-mpserv.service")
        queued.join(120)
    finally:
        queued.join(150)
    assert got["r"]["received"] == 1000 and got["r"]["exact"], got
    assert m.unit_property("echo-mpserv.socket", "Result") == "success"
    assert m.is_active("echo-mpserv.socket") == "active"
    assert m.unit_property("echo-mpserv.service", "NRestarts") == "0"
    assert m.failed_units() == [], m.failed_units()
    assert echo_ok(m)
    figures.append("broken file, client queued: service up not serving (0 restarts, socket Result=success); "
                   "after fix + reload the queued client got its 1000 bytes back")


@check("a missing key credential and a client queued: no start loop, the socket never fails, served after a restart")
def t_bad_credential_with_a_client_queued(m):
    key = "/etc/echo-mpserv/log-hash-key"
    fresh(m)
    m.systemctl("stop", "echo-mpserv.service")
    m.run(["mv", key, key + ".away"])
    reset_conf(m, 'log_hash_key_credential = "log-hash-key";\n')
    cursor = m.journal_cursor()
    got = {}
    queued = threading.Thread(target=lambda: got.update(r=client(m, "once", "127.0.0.1", 7, 1000)))
    queued.start()
    try:
        # The unit's placeholder stands in for the missing file.
        wait_status(m, "echo-mpserv.service", "Not serving, the hash key credential does not load",
                    "/run/credentials/echo-mpserv.service/log-hash-key: 7 bytes (needs 16 to 128)",
                    "systemctl restart echo-mpserv")
        m.wait_journal(r"not serving: the hash key credential does not load; clients wait in the socket's queue",
                       cursor=cursor, unit="echo-mpserv.service")
        assert queued.is_alive() and "r" not in got, got          # waiting, not refused, not served
        assert m.is_active("echo-mpserv.service") == "active"
        assert m.unit_property("echo-mpserv.service", "NRestarts") == "0"
        # A reload passes no credential again: it fails, or leaves it waiting.
        reload = m.systemctl("reload", "echo-mpserv.service", check=False)
        assert m.is_active("echo-mpserv.service") == "active" and queued.is_alive()
        m.run(["mv", key + ".away", key])
        m.systemctl("restart", "echo-mpserv.service")
        queued.join(120)
    finally:
        queued.join(150)
        m.run(["sh", "-c", f"[ -e {key} ] || mv {key}.away {key}"])
    assert got["r"]["received"] == 1000 and got["r"]["exact"], got
    assert m.unit_property("echo-mpserv.socket", "Result") == "success"
    assert m.is_active("echo-mpserv.socket") == "active"
    assert m.unit_property("echo-mpserv.service", "NRestarts") == "0"
    m.systemctl("reset-failed", check=False)  # the stop of the waiting daemon was 78/CONFIG
    assert echo_ok(m)
    figures.append(f"missing key credential, client queued: service up not serving (0 restarts, socket "
                   f"Result=success); reload exit {reload.returncode}; after the key + a restart of the service "
                   f"the queued client got its 1000 bytes back")


ACCEPT_DROPIN = "/etc/systemd/system/echo-mpserv.socket.d/accept.conf"
ACCEPT_WARNING = "echo-mpserv: WARNING: echo-mpserv.socket has Accept=yes"


@check("upgrade of an Accept=yes socket whose file asks for what Accept=yes cannot enforce: one warning")
def t_upgrade_accept_yes_warns(m, deb):
    """The package's configure step (an upgrade: here the same package
    again) warns when echo-mpserv.socket has Accept=yes and the file asks
    for a policy an instance would reset every client for; not when the
    file is what Accept=yes can enforce. NEWS says what changed."""
    fresh(m)
    m.systemctl("stop", "echo-mpserv.socket", "echo-mpserv.service")
    m.write_file(ACCEPT_DROPIN, "[Socket]\nAccept=yes\nTriggerLimitIntervalSec=0\n")
    m.systemctl("daemon-reload")
    m.systemctl("start", "echo-mpserv.socket")
    try:
        reset_conf(m, "")  # the defaults: source_rate 20
        r = m.run(["dpkg", "-i", f"/root/debs/{os.path.basename(deb)}"])
        warned = [line for line in (r.stdout + r.stderr).splitlines() if "Accept=yes" in line]
        reset_conf(m, "source_rate = 0;\nsource_prefix_ipv6 = 128;\n")
        r2 = m.run(["dpkg", "-i", f"/root/debs/{os.path.basename(deb)}"])
        quiet = [line for line in (r2.stdout + r2.stderr).splitlines() if "Accept=yes" in line]
        news = m.run(["sh", "-c", "zcat /usr/share/doc/echo-mpserv/NEWS.Debian.gz"], check=False).stdout
        figures.append(f"dpkg -i with Accept=yes and the default file: {warned}; with source_rate = 0 and "
                       f"source_prefix_ipv6 = 128: {quiet}")
        assert len([w for w in warned if ACCEPT_WARNING in w]) == 1, warned
        assert any("Accept=yes cannot enforce source_rate: " in w for w in warned), warned
        assert quiet == [], quiet
        assert "--force-confold" in news and "TriggerLimitIntervalSec=0" in news and \
            "source_limits_exempt = []" in news, news
        assert echo_ok(m)
    finally:
        m.run(["rm", "-f", ACCEPT_DROPIN])
        reset_conf(m, "")
        m.systemctl("stop", "echo-mpserv.socket", check=False)
        m.systemctl("daemon-reload")
        m.systemctl("reset-failed", check=False)
        m.systemctl("start", "echo-mpserv.socket")


@check("upgrade with a port edit pending: the package moves the socket, no unit failed")
def t_upgrade_pending_port(m, newer):
    fresh(m)
    assert echo_ok(m)
    m.systemctl("reset-failed", check=False)
    reset_conf(m, "port = 7777;\n")  # edited, daemon-reload not run yet
    m.install_debs([os.path.basename(newer)])
    assert m.failed_units() == [], m.failed_units()
    assert m.is_active("echo-mpserv.socket") == "active"
    assert echo_ok(m, "127.0.0.1", 7777) and echo_ok(m, "::1", 7777)
    assert refused(m, "127.0.0.1", 7)
    assert m.failed_units() == [], m.failed_units()
    figures.append("upgrade with a pending port edit: the socket moved to 7777, no failed unit")


def main():
    deb, newer = debs_or_exit(__doc__, 2)
    start = time.monotonic()
    with nspawn.Machine.from_cache() as m:
        boot(m, [deb, newer], start)
        m.install_debs([os.path.basename(deb)])
        t_service_restart_after_port_change(m)
        t_generator_fails_closed(m)
        t_reload(m)
        t_restart_broken_reports_failure(m)
        t_broken_config_with_a_client_queued(m)
        t_bad_credential_with_a_client_queued(m)
        t_upgrade_accept_yes_warns(m, deb)
        t_upgrade_pending_port(m, newer)
        m.poweroff()
    return report(m, start)


if __name__ == "__main__":
    sys.exit(main())
