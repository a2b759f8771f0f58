#!/usr/bin/env python3
"""The namespace runner: one measurement inside a fresh network namespace.

bench.py starts it as `unshare --net -- python3 nsrunner.py`, writes the
measurement's spec (JSON) to its stdin and reads one JSON result line from
its stdout. It brings lo up, starts the server, runs the load generator
against it, then stops the server and, as a child subreaper, kills and
reaps everything left. Python 3 standard library only.
"""

import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import procfs
from common import libc, parse_kv, set_pdeathsig, warn


class Interrupted(Exception):
    pass


def _raise_interrupted(signum, frame):
    raise Interrupted(f"signal {signum}")


def bring_loopback_up():
    """`ip link set lo up` with an ioctl, so iproute2 is not needed."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifr = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, 0x8913, ifr))[1]     # SIOCGIFFLAGS
        fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"lo", flags | 0x1))  # SIOCSIFFLAGS, IFF_UP
    finally:
        s.close()


def listening(port):
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except (OSError, StopIteration):
            pass
    return False


def reap_all(deadline):
    """Kills and reaps every process left under us (we are a subreaper, so
    orphans of our servers land here)."""
    me = os.getpid()
    while True:
        left = [pid for pid, _ in procfs.children(me)]
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                break
        if not left:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def stop_server(proc, grace):
    """SIGTERM, wait up to grace seconds, then SIGKILL the whole process
    group (kept reserved by the unreaped leader), then reap."""
    info = {}
    t0 = time.monotonic()
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        while time.monotonic() - t0 < grace:
            st = procfs.state(proc.pid)
            if st is None or st == "Z":
                break
            time.sleep(0.02)
        info["stop_s"] = round(time.monotonic() - t0, 3)
        if procfs.state(proc.pid) not in (None, "Z"):
            info["stop_timeout"] = 1
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        info["server_exit"] = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        info["server_exit"] = "hung"
    return info


def join_cgroup(path):
    if not path:
        return
    try:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    except OSError as e:
        warn(f"cannot join {path}: {e}")


def start_server(spec, logf):
    """The server, pinned to the server CPU, in a process group of its own
    (stop_server kills the group)."""
    logf.write(f"--- {spec['peer']} {spec['test']} rep {spec['rep']}: {' '.join(spec['cmd'])}\n".encode())
    logf.flush()
    return subprocess.Popen(["taskset", "-c", str(spec["server_cpu"])] + spec["cmd"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=logf, start_new_session=True, env=spec["env"],
                            preexec_fn=set_pdeathsig(signal.SIGKILL))


def wait_listening(server, port):
    """Returns the seconds until the server listened on port."""
    t0 = time.monotonic()
    while not listening(port):
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode} before listening")
        if time.monotonic() - t0 > 10:
            raise RuntimeError("server not listening after 10 s")
        time.sleep(0.02)
    return round(time.monotonic() - t0, 3)


def run_loadgen(spec, server, result):
    """Runs the load generator against the server; adds its key=value line
    to result."""
    args = spec["loadgen"] + ["-a", "127.0.0.1", "-p", str(spec["port"])]
    if spec["test"].startswith("hold"):
        args += ["--pid", str(server.pid)]
    lg = subprocess.run(["taskset", "-c", str(spec["client_cpu"])] + args, stdin=subprocess.DEVNULL,
                        capture_output=True, text=True, timeout=spec["timeout"],
                        preexec_fn=set_pdeathsig(signal.SIGKILL))
    lines = [l for l in lg.stdout.splitlines() if l.startswith("mode=")]
    if lg.stderr.strip():
        result["loadgen_stderr"] = lg.stderr.strip()[-500:]
    if lg.returncode != 0 or not lines:
        raise RuntimeError(f"loadgen exited with {lg.returncode}: {lg.stderr.strip()[-300:]}")
    result.update(parse_kv(lines[-1]))
    result["raw"] = lines[-1]


def main():
    spec = json.load(sys.stdin)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _raise_interrupted)
    libc().prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    result = {"peer": spec["peer"], "test": spec["test"], "rep": spec["rep"]}
    server = None
    logf = open(spec["server_log"], "ab")
    try:
        join_cgroup(spec.get("cgroup"))
        bring_loopback_up()
        if listening(spec["port"]):
            raise RuntimeError(f"port {spec['port']} already in use in a fresh namespace?")
        server = start_server(spec, logf)
        result["ready_s"] = wait_listening(server, spec["port"])
        time.sleep(0.1)
        run_loadgen(spec, server, result)
        if server.poll() is not None:
            result["server_died"] = server.returncode
    except subprocess.TimeoutExpired:
        result["error"] = "load generator did not finish in time (killed)"
    except Interrupted as e:
        result["error"] = f"interrupted ({e})"
    except Exception as e:  # report, never leave a server behind
        result["error"] = str(e)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if server is not None:
            result.update(stop_server(server, spec["grace"]))
        if not reap_all(time.monotonic() + 10):
            result["leftover"] = 1
        logf.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
