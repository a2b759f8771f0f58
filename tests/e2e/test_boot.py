#!/usr/bin/env python3
"""Smoke test of the e2e harness: boot a real systemd, use it, power off.

Run as root:  python3 tests/e2e/test_boot.py
Exit status: 0 passed, 1 failed, 77 skipped (not root / no namespaces).
"""

import os
import socket
import sys
import time
import uuid

import nspawn


SKIP = 77

SOCKET_UNIT = """\
[Unit]
Description=e2e smoke echo socket

[Socket]
ListenStream=127.0.0.1:7
Accept=yes

[Install]
WantedBy=sockets.target
"""

SERVICE_UNIT = """\
[Unit]
Description=e2e smoke echo connection

[Service]
ExecStart=/bin/cat
StandardInput=socket
StandardOutput=socket
StandardError=journal
DynamicUser=yes
"""

# A client that runs both inside the machine (its python3) and in the
# machine's network namespace (the host's python3).
CLIENT = r"""
import socket, sys
payload = sys.argv[1].encode()
with socket.create_connection(("127.0.0.1", 7), timeout=10) as s:
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        got += b
sys.stdout.write(got.decode())
"""

LOOP_CLIENT = r"""
import socket, sys, time
n = int(sys.argv[1]); ok = 0
for i in range(n):
    msg = ("ping %d\n" % i).encode()
    with socket.create_connection(("127.0.0.1", 7), timeout=10) as s:
        s.sendall(msg); s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            got += b
    ok += got == msg
print("ok=%d of %d" % (ok, n))
"""


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, cond, detail=""):
        if cond:
            self.passed += 1
            print("ok   %s" % name, flush=True)
        else:
            self.failed += 1
            print("FAIL %s %s" % (name, detail), flush=True)
        return cond


def host_cgroups():
    return {h.base: {n for n in os.listdir(h.base)
                     if os.path.isdir(os.path.join(h.base, n)) and not n.startswith("echo-e2e-")}
            for h in nspawn.cgroup_hierarchies()}


def body(m, c):
    before = host_cgroups()
    state = m.boot(timeout=60)
    c.check("boot: is-system-running = running|degraded",
            state in ("running", "degraded"), state)
    if state == "degraded":
        print("failed units: %s" % m.failed_units())
    st = m.run(["systemctl", "is-system-running"], check=False).stdout.strip()
    c.check("systemctl is-system-running", st in ("running", "degraded"), st)
    c.check("PID 1 is systemd",
            m.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd")
    virt = m.run(["systemd-detect-virt", "--container"], check=False).stdout.strip()
    c.check("detected as a container", virt not in ("", "none"), virt)
    c.check("hostname", m.run(["hostname"]).stdout.strip() == nspawn.HOSTNAME)
    lo = m.run(["ip", "-o", "link", "show", "lo"]).stdout
    c.check("lo is up", "UP" in lo.split(">")[0], lo)
    links = m.run(["ip", "-o", "link", "show"]).stdout.splitlines()
    c.check("only lo in the machine's netns", len(links) == 1, links)
    after = host_cgroups()
    c.check("nested systemd made no cgroups outside its own subtree", after == before,
            {k: after[k] ^ before.get(k, set()) for k in after if after[k] != before.get(k)})
    # In the hierarchies systemd tracks units with (cgroup2, name=systemd),
    # everything must be below init.scope/system.slice/...; in v1
    # controllers systemd leaves alone, its processes stay at the root.
    roots = [os.path.join(m.cgroups.top(h), "machine", "cgroup.procs")
             for h in m.cgroups.hierarchies if h.v2 or h.controllers == "name=systemd"]
    busy = [r for r in roots if open(r).read().strip()]
    c.check("systemd's root cgroup holds no process (unshare moved out)", not busy, busy)

    # journald
    marker = "e2e-marker-" + uuid.uuid4().hex
    m.run(["systemd-cat", "-t", "e2e-smoke", "echo", marker])
    m.run(["logger", "-t", "e2e-logger", marker + "-syslog"])
    line = m.wait_journal(marker, timeout=10, output="short")
    c.check("journald: systemd-cat record found", marker in line, line)
    line = m.wait_journal(marker + "-syslog", timeout=10)
    c.check("journald: logger (/dev/log) record found", bool(line))

    # A socket-activated echo service.
    m.write_file("/etc/systemd/system/e2e-echo.socket", SOCKET_UNIT)
    m.write_file("/etc/systemd/system/e2e-echo@.service", SERVICE_UNIT)
    m.systemctl("daemon-reload")
    m.systemctl("start", "e2e-echo.socket")
    c.check("socket active", m.is_active("e2e-echo.socket") == "active")
    ss = m.run(["ss", "-Htln"]).stdout
    c.check("listening on 127.0.0.1:7", "127.0.0.1:7 " in ss, ss)

    payload = "hello from the netns %s\n" % uuid.uuid4().hex
    r = m.run_net([sys.executable, "-c", CLIENT, payload], timeout=30)
    c.check("echo via host python3 in the machine's netns",
            r.stdout == payload, repr(r.stdout))
    payload2 = "hello from inside\n"
    r = m.run(["python3", "-c", CLIENT, payload2], timeout=30)
    c.check("echo via the machine's python3", r.stdout == payload2, repr(r.stdout))

    # The host's loopback is not the machine's.
    hs = socket.socket()
    try:
        hs.settimeout(2)
        err = hs.connect_ex(("127.0.0.1", 7))
    finally:
        hs.close()
    c.check("port 7 not reachable from the host netns", err != 0, err)

    # Background client loop inside the machine.
    bg = m.spawn(["python3", "-c", LOOP_CLIENT, "50"], name="loop")
    rc = bg.wait(timeout=60)
    c.check("background client loop", rc == 0 and "ok=50 of 50" in bg.stdout,
            "rc=%s out=%r err=%r" % (rc, bg.stdout, bg.stderr[-500:]))
    n = m.unit_property("e2e-echo.socket", "NAccepted")
    c.check("socket NAccepted == 52", n == "52", n)

    # A long-running client in the netns is killed at poweroff.
    m.spawn([sys.executable, "-c", "import time; time.sleep(600)"],
            net_only=True, name="sleeper")

    c.check("no failed units", not m.failed_units(), m.failed_units())

    how = m.poweroff(timeout=30)
    c.check("clean poweroff (not SIGKILL)", how == "poweroff", how)


def main():
    why = nspawn.environment_problem()
    if why:
        print("SKIP: %s" % why)
        return SKIP

    c = Checks()
    t0 = time.monotonic()
    tarball = nspawn.ensure_rootfs()
    t_rootfs = time.monotonic() - t0
    print("rootfs tarball: %s (%.1fs)" % (tarball, t_rootfs))

    m = nspawn.Machine.from_tarball(tarball)
    root, state_dir = m.root, m.state_dir
    try:
        with m:
            try:
                body(m, c)
            except Exception:
                import traceback
                traceback.print_exc()
                print(m.diagnostics())
                raise
    except Exception:
        c.check("no exception", False)

    left = m.leftovers or {}
    c.check("no processes left", not left.get("processes"), left.get("processes"))
    c.check("no mounts left", not left.get("mounts"), left.get("mounts"))
    c.check("no cgroups left", not left.get("cgroups"), left.get("cgroups"))
    c.check("cgroup dirs gone", not m.cgroups or not m.cgroups.existing(),
            m.cgroups and m.cgroups.existing())
    c.check("rootfs copy deleted", not os.path.exists(root), root)
    c.check("state dir deleted", not os.path.exists(state_dir), state_dir)
    host_mounts = [l for l in open("/proc/self/mountinfo") if root in l]
    c.check("no host mount mentions the rootfs", not host_mounts, host_mounts)

    t = m.timings
    print("timings: ensure_rootfs %.1fs, extract %.1fs, boot %.2fs "
          "(systemd exec'd after %.2fs), poweroff %.2fs (%s), total %.1fs"
          % (t_rootfs, t.get("extract", 0), t.get("boot", 0), t.get("exec_systemd", 0),
             t.get("poweroff", 0), t.get("poweroff_how", "-"), time.monotonic() - t0))
    print("%d passed, %d failed" % (c.passed, c.failed))
    return 0 if c.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
