#!/usr/bin/env python3
"""Side-by-side benchmark of echo-mpserv and its peers (see bench/README.md).

Run it through bench/run, as root, from anywhere:

    bench/run [--quick] [--reps N] [--peers a,b,...] [--no-install] ...

Every measurement runs in a network namespace of its own (unshare --net)
with only its loopback interface up: one server, one load generator, both
pinned to different CPUs; nothing ever listens outside. Each server is
stopped, and every process it left behind killed, before the next test.

Python 3 standard library only.
"""

import argparse
import ctypes
import datetime
import fcntl
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
SEED = os.path.normpath(os.path.join(ROOT, "..", "shared", "seed", "echo_mpserv.c"))
DEFAULT_BUILD = os.path.join(ROOT, "build-bench")
DEFAULT_OUT = os.path.join(BENCH, "out")

# command -> Debian package
COMMANDS = {
    "socat": "socat",
    "tcpserver": "ucspi-tcp",
    "ncat": "ncat",
    "xinetd": "xinetd",
    "gnuplot": "gnuplot-nox",
    "meson": "meson",
    "ninja": "ninja-build",
    "gcc": "gcc",
    "cc": "gcc",
    "pkg-config": "pkg-config",
    "unshare": "util-linux",
    "taskset": "util-linux",
}
PKGCONFIG = {"libsystemd": "libsystemd-dev", "libconfig": "libconfig-dev"}

PROFILES = {
    # seconds unless said otherwise; warm-up comes before each timed test
    "full": dict(reps=3, rate_d=5.0, pp_d=5.0, stream_d=3.0, warmup=0.5,
                 hold_n=1000, hold_d=1.0, scale_n=10000, floor_d=2.0),
    "quick": dict(reps=1, rate_d=2.0, pp_d=2.0, stream_d=1.5, warmup=0.3,
                  hold_n=300, hold_d=0.5, scale_n=10000, floor_d=1.0),
}

CONC = 50            # concurrency of rate, pingpong and the many-connection stream
HOLD_TIMEOUT = 10    # per-connection timeout while establishing/checking held connections
PIDS_DEFAULT = 4096  # process cap of a test's cgroup (a leaking server cannot take the machine)

MPSERV_CONF = """# written by bench/bench.py for the benchmark
listen = [ "127.0.0.1" ];
max_clients = 12000;
# warning: no per-connection log lines (they would dominate a 64-byte echo)
log_level = "warning";
# the 1 GiB default would end a full-speed stream after well under a second
max_session_bytes = 1099511627776L;
# the load generator is one source: lift the per-source limits it would hit
max_clients_per_source = 0;
source_rate = 0;
drain_timeout = 2;
"""

XINETD_CONF = """# written by bench/bench.py for the benchmark
service echo
{{
        type        = INTERNAL UNLISTED
        id          = echo-stream
        socket_type = stream
        protocol    = tcp
        user        = root
        wait        = no
        port        = {port}
        bind        = 127.0.0.1
        instances   = UNLIMITED
        per_source  = UNLIMITED
        # default cps is "50 10": over 50 connections/s the service is shut
        # for 10 s (every connection refused). Raised for a fair comparison.
        cps         = 1000000 1
}}
"""


# --------------------------------------------------------------------------
# peers

class Peer:
    def __init__(self, name, title, port, forking, note, needs=()):
        self.name, self.title, self.port = name, title, port
        self.forking, self.note, self.needs = forking, note, needs

    def command(self, ctx):
        raise NotImplementedError

    def available(self, ctx):
        for cmd in self.needs:
            if not shutil.which(cmd):
                return False, f"{cmd} not installed"
        return True, ""


class MpServ(Peer):
    def command(self, ctx):
        return [ctx.bin("src/echo-mpserv"), "-c", ctx.mpserv_conf, "-p", str(self.port)]

    def available(self, ctx):
        return (True, "") if os.access(ctx.bin("src/echo-mpserv"), os.X_OK) else (False, "not built")


class Textbook(Peer):
    def command(self, ctx):
        return [ctx.textbook, str(self.port)]

    def available(self, ctx):
        if not os.path.exists(SEED):
            return False, "../shared/seed/echo_mpserv.c not found"
        if not ctx.textbook:
            return False, "could not be compiled"
        return True, ""


class Socat(Peer):
    def __init__(self, *a, target="PIPE", **k):
        super().__init__(*a, **k)
        self.target = target

    def command(self, ctx):
        return ["socat", f"TCP-LISTEN:{self.port},bind=127.0.0.1,fork,reuseaddr,backlog=1024", self.target]


class Tcpserver(Peer):
    def command(self, ctx):
        return ["tcpserver", "-R", "-H", "-l", "0", "-c", "12000", "-b", "1024", "127.0.0.1", str(self.port), "cat"]


class Ncat(Peer):
    def command(self, ctx):
        return ["ncat", "-n", "-l", "-k", "-m", "12000", "-e", "/bin/cat", "127.0.0.1", str(self.port)]


class Xinetd(Peer):
    def command(self, ctx):
        conf = os.path.join(ctx.tmp, f"xinetd-{self.port}.conf")
        with open(conf, "w") as f:
            f.write(XINETD_CONF.format(port=self.port))
        return ["xinetd", "-dontfork", "-f", conf, "-filelog", os.path.join(ctx.tmp, "xinetd.log"),
                "-pidfile", os.path.join(ctx.tmp, f"xinetd-{self.port}.pid")]


class EpollEcho(Peer):
    def command(self, ctx):
        return [ctx.bin("bench/epoll-echo"), str(self.port)]

    def available(self, ctx):
        return (True, "") if os.access(ctx.bin("bench/epoll-echo"), os.X_OK) else (False, "not built")


PEERS = [
    MpServ("echo-mpserv", "echo-mpserv", 7001, True,
           "standalone, `-c` config: listen 127.0.0.1, max_clients 12000, log_level warning, "
           "max_session_bytes 1 TiB, per-source limits off (one load source), drain_timeout 2"),
    Textbook("textbook", "textbook", 7002, True,
             "../shared/seed/echo_mpserv.c compiled as is (cc -O2); binds INADDR_ANY (only inside the "
             "private namespace), listen backlog 5, 30-byte buffer, no TCP_NODELAY, leaks zombies "
             "(one waitpid per SIGCHLD)"),
    Socat("socat", "socat", 7003, True,
          "`socat TCP-LISTEN:P,bind=127.0.0.1,fork,reuseaddr,backlog=1024 PIPE` (one process per "
          "connection; PIPE and EXEC:cat both echo correctly, PIPE is the lighter)", needs=("socat",)),
    Tcpserver("tcpserver", "tcpserver", 7004, True,
              "ucspi-tcp `tcpserver -R -H -l 0 -c 12000 -b 1024 127.0.0.1 P cat` (fork + exec cat)",
              needs=("tcpserver",)),
    Ncat("ncat", "ncat", 7005, True,
         "`ncat -n -l -k -m 12000 -e /bin/cat 127.0.0.1 P` (two processes per connection; listen "
         "backlog 10, not configurable)", needs=("ncat",)),
    Xinetd("xinetd", "xinetd", 7006, True,
           "internal echo-stream service, private config, `cps = 1000000 1` (the default `50 10` "
           "refuses everything for 10 s after 50 connections in a second), instances UNLIMITED",
           needs=("xinetd",)),
    EpollEcho("epoll", "epoll-echo", 7007, False,
              "bench/epoll-echo.c: one process, non-forking epoll loop: the upper bound"),
    # Not in the default set; --peers socat-exec adds it.
    Socat("socat-exec", "socat EXEC:cat", 7008, True,
          "`socat ... EXEC:cat` (socat child + cat per connection)", needs=("socat",), target="EXEC:cat"),
]
DEFAULT_PEERS = ["echo-mpserv", "textbook", "socat", "tcpserver", "ncat", "xinetd", "epoll"]
PEER_BY_NAME = {p.name: p for p in PEERS}
SUBJECT = "echo-mpserv"
BOUND = "epoll"


# --------------------------------------------------------------------------
# small helpers

def log(msg=""):
    print(msg, flush=True)


def warn(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


_libc = None


def libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def set_pdeathsig(sig):
    """Returns a preexec_fn: the child gets sig when its parent dies."""
    def fn():
        libc().prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
    return fn


def read_ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    try:
        return int(data[data.rindex(")") + 2:].split()[1])
    except (ValueError, IndexError):
        return None


def proc_state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
        return data[data.rindex(")") + 2]
    except (OSError, ValueError, IndexError):
        return None


def children_of(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and read_ppid(entry) == pid:
            out.append(int(entry))
    return out


def parse_kv(line):
    out = {}
    for tok in line.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            try:
                out[k] = float(v) if any(c in v for c in ".e") and not v.isalpha() else int(v)
            except ValueError:
                out[k] = v
    return out


def fmt_num(v, digits=None):
    if v is None:
        return "—"
    a = abs(v)
    if digits is None:
        digits = 0 if a >= 100 else 1 if a >= 10 else 2
    return f"{v:,.{digits}f}"


# --------------------------------------------------------------------------
# inside the namespace (bench.py --inner): one server, one load generator

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
        left = children_of(me)
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
            st = proc_state(proc.pid)
            if st is None or st == "Z":
                break
            time.sleep(0.02)
        info["stop_s"] = round(time.monotonic() - t0, 3)
        if proc_state(proc.pid) not in (None, "Z"):
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


def inner_main():
    spec = json.load(sys.stdin)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _raise_interrupted)
    libc().prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    result = {"peer": spec["peer"], "test": spec["test"], "rep": spec["rep"]}
    server = None
    logf = open(spec["server_log"], "ab")
    try:
        if spec.get("cgroup"):
            try:
                with open(os.path.join(spec["cgroup"], "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
            except OSError as e:
                warn(f"cannot join {spec['cgroup']}: {e}")
        bring_loopback_up()
        if listening(spec["port"]):
            raise RuntimeError(f"port {spec['port']} already in use in a fresh namespace?")
        logf.write(f"--- {spec['peer']} {spec['test']} rep {spec['rep']}: {' '.join(spec['cmd'])}\n".encode())
        logf.flush()
        server = subprocess.Popen(["taskset", "-c", str(spec["server_cpu"])] + spec["cmd"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=logf, start_new_session=True, env=spec["env"],
                                  preexec_fn=set_pdeathsig(signal.SIGKILL))
        t0 = time.monotonic()
        while not listening(spec["port"]):
            if server.poll() is not None:
                raise RuntimeError(f"server exited with {server.returncode} before listening")
            if time.monotonic() - t0 > 10:
                raise RuntimeError("server not listening after 10 s")
            time.sleep(0.02)
        result["ready_s"] = round(time.monotonic() - t0, 3)
        time.sleep(0.1)
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


# --------------------------------------------------------------------------
# outside: setup

def ensure_packages(no_install):
    missing = set()
    for cmd, pkg in COMMANDS.items():
        if not shutil.which(cmd):
            missing.add(pkg)
    if shutil.which("pkg-config"):
        for lib, pkg in PKGCONFIG.items():
            if subprocess.run(["pkg-config", "--exists", lib]).returncode != 0:
                missing.add(pkg)
    else:
        missing.update(PKGCONFIG.values())
    if not missing:
        return
    pkgs = sorted(missing)
    if no_install:
        warn(f"missing packages (not installing, --no-install): {' '.join(pkgs)}")
        return
    log(f"Installing: {' '.join(pkgs)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q"] + pkgs
    if subprocess.run(cmd, env=env).returncode != 0:
        log("apt-get install failed; running apt-get update first")
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(cmd, env=env, check=True)


def build(build_dir):
    if not os.path.exists(os.path.join(build_dir, "build.ninja")):
        if os.path.exists(build_dir):
            shutil.rmtree(build_dir)
        subprocess.run(["meson", "setup", build_dir, ROOT, "--buildtype=release"], check=True,
                       stdout=subprocess.DEVNULL)
    else:
        subprocess.run(["meson", "configure", build_dir, "-Dbuildtype=release"], check=True,
                       stdout=subprocess.DEVNULL)
    targets = ["echo-mpserv", "loadgen", "epoll-echo", "fork-floor", "fork-floor-libs"]
    r = subprocess.run(["meson", "compile", "-C", build_dir] + targets, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
        raise SystemExit("bench: build failed")


def compile_textbook(tmp):
    if not os.path.exists(SEED):
        return None
    out = os.path.join(tmp, "textbook-echo_mpserv")
    cc = shutil.which("cc") or shutil.which("gcc")
    r = subprocess.run([cc, "-O2", "-w", "-o", out, SEED], capture_output=True, text=True)
    if r.returncode != 0:
        warn(f"textbook server did not compile: {r.stderr.strip()[-500:]}")
        return None
    return out


class Cgroups:
    """A pids-limited cgroup per test (v2 or v1 pids controller), so a server
    that leaks processes (the textbook one leaks zombies) cannot exhaust the
    machine's pids. Best effort: without cgroups the tests run uncapped."""

    def __init__(self):
        self.base = None
        v2 = "/sys/fs/cgroup"
        try:
            if os.path.exists(f"{v2}/cgroup.controllers"):
                if "pids" in open(f"{v2}/cgroup.controllers").read().split():
                    sub = open(f"{v2}/cgroup.subtree_control").read().split()
                    if "pids" not in sub:
                        with open(f"{v2}/cgroup.subtree_control", "w") as f:
                            f.write("+pids")
                    self.base = v2
            elif os.path.exists("/sys/fs/cgroup/pids/cgroup.procs"):
                self.base = "/sys/fs/cgroup/pids"
        except OSError as e:
            warn(f"no pids cgroup ({e}); tests run without a process cap")
            self.base = None
        self.seq = 0

    def make(self, limit):
        if not self.base:
            return None
        self.seq += 1
        path = os.path.join(self.base, f"echo-bench.{os.getpid()}.{self.seq}")
        try:
            os.mkdir(path)
            with open(os.path.join(path, "pids.max"), "w") as f:
                f.write(str(limit))
            return path
        except OSError as e:
            warn(f"cannot set up cgroup {path}: {e}")
            self.remove(path)
            return None

    @staticmethod
    def remove(path):
        if not path:
            return
        for _ in range(100):
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.05)
        warn(f"could not remove cgroup {path}")


class Ctx:
    def __init__(self, args, tmp):
        self.args = args
        self.build_dir = os.path.abspath(args.build_dir)
        self.tmp = tmp
        self.textbook = None
        self.mpserv_conf = os.path.join(tmp, "echo-mpserv.conf")
        with open(self.mpserv_conf, "w") as f:
            f.write(MPSERV_CONF)

    def bin(self, rel):
        return os.path.join(self.build_dir, rel)


# --------------------------------------------------------------------------
# outside: running

def plan_tests(prof):
    w = str(prof["warmup"])
    hold = ["hold", "-c", str(prof["hold_n"]), "-d", str(prof["hold_d"]), "-t", str(HOLD_TIMEOUT), "-b", "64"]
    scale = ["hold", "-c", str(prof["scale_n"]), "-d", "1", "-t", str(HOLD_TIMEOUT), "-b", "64"]
    return [
        # name, loadgen args, seconds it takes roughly, pids cap
        ("hold", hold, 4, max(PIDS_DEFAULT, 2 * prof["hold_n"] + 512)),
        ("pingpong", ["pingpong", "-c", str(CONC), "-d", str(prof["pp_d"]), "-w", w], prof["pp_d"] + 2, PIDS_DEFAULT),
        ("stream1", ["stream", "-c", "1", "-d", str(prof["stream_d"]), "-w", w], prof["stream_d"] + 2, PIDS_DEFAULT),
        ("stream50", ["stream", "-c", str(CONC), "-d", str(prof["stream_d"]), "-w", w], prof["stream_d"] + 2,
         PIDS_DEFAULT),
        ("rate", ["rate", "-c", str(CONC), "-d", str(prof["rate_d"]), "-w", w], prof["rate_d"] + 2, PIDS_DEFAULT),
    ], ("hold10k", scale, 25, 2 * prof["scale_n"] + 1024)


_current_inner = None


def run_one(ctx, cg, peer, test, args, pids_cap, rep, logdir, raw):
    global _current_inner
    timeout = (2 * 120 + 60) if test.startswith("hold") else 120
    spec = {
        "peer": peer.name, "test": test, "rep": rep, "port": peer.port,
        "cmd": peer.command(ctx),
        "loadgen": [ctx.bin("bench/loadgen")] + args + ["-l", f"{peer.name}/{test}/{rep}"],
        "server_cpu": ctx.args.server_cpu, "client_cpu": ctx.args.client_cpu,
        "timeout": timeout, "grace": 6 if peer.name == SUBJECT else 3,
        "server_log": os.path.join(logdir, f"{peer.name}.log"),
        "env": dict(os.environ, LC_ALL="C"),
    }
    spec["env"].pop("NOTIFY_SOCKET", None)
    spec["env"].pop("LISTEN_FDS", None)
    spec["env"].pop("LISTEN_PID", None)
    cgroup = cg.make(pids_cap)
    spec["cgroup"] = cgroup
    result = None
    try:
        with open(os.path.join(logdir, "inner.log"), "ab") as errf:
            _current_inner = subprocess.Popen(
                ["unshare", "--net", "--", sys.executable, os.path.abspath(__file__), "--inner"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errf,
                preexec_fn=set_pdeathsig(signal.SIGTERM))
            try:
                out, _ = _current_inner.communicate(json.dumps(spec).encode(), timeout=timeout + 40)
            except subprocess.TimeoutExpired:
                _current_inner.terminate()
                out, _ = _current_inner.communicate(timeout=30)
            rc = _current_inner.returncode
        for line in out.decode(errors="replace").splitlines():
            if line.startswith("{"):
                result = json.loads(line)
        if result is None:
            result = {"peer": peer.name, "test": test, "rep": rep,
                      "error": f"namespace runner exited with {rc} and no result (see {logdir}/inner.log)"}
    finally:
        inner, _current_inner = _current_inner, None
        if inner is not None and inner.poll() is None:
            inner.terminate()  # it stops its server and reaps everything
            try:
                inner.wait(timeout=30)
            except subprocess.TimeoutExpired:
                inner.kill()
                inner.wait()
        Cgroups.remove(cgroup)
    raw.write(json.dumps(result) + "\n")
    raw.flush()
    return result


def summary_of(test, r):
    if "error" in r:
        return f"ERROR: {r['error']}"
    e = r.get("errors", 0)
    tail = f"  errors={e}" if e else ""
    if r.get("server_died") is not None:
        tail += f"  (server died: {r['server_died']})"
    if test == "rate":
        return f"{r['conn_per_s']:,.0f} conn/s  p50 {r['p50_us'] / 1000:.2f} ms  p99 {r['p99_us'] / 1000:.2f} ms{tail}"
    if test == "pingpong":
        return f"{r['msg_per_s']:,.0f} msg/s  p50 {r['p50_us']:.0f} µs  p99 {r['p99_us']:.0f} µs  p99.9 {r['p999_us']:.0f} µs{tail}"
    if test.startswith("stream"):
        return f"{r['mb_per_s']:,.1f} MB/s{tail}"
    return (f"{r['established']}/{r['conc']} up in {r['establish_s']:.2f} s, {r['alive_end']} still echoing, "
            f"PSS {r['pss_kb_per_conn']:.1f} KiB/conn, USS {r['uss_kb_per_conn']:.1f} KiB/conn "
            f"({r['procs']} processes){tail}")


def run_fork_floor(ctx, prof, rep, raw):
    out = {}
    for tool in ("fork-floor", "fork-floor-libs"):
        r = subprocess.run(["taskset", "-c", str(ctx.args.server_cpu), ctx.bin(f"bench/{tool}"),
                            "-d", str(prof["floor_d"])], capture_output=True, text=True, timeout=120)
        line = [l for l in r.stdout.splitlines() if l.startswith("mode=")]
        if r.returncode == 0 and line:
            res = parse_kv(line[-1])
            res.update(peer=tool, test="forkfloor", rep=rep, raw=line[-1])
        else:
            res = {"peer": tool, "test": "forkfloor", "rep": rep, "error": r.stderr.strip()[-300:]}
        raw.write(json.dumps(res) + "\n")
        out[tool] = res
    return out


# --------------------------------------------------------------------------
# outside: the table

# key, label, test, field, better ("up"/"down"), scale, reference ("epoll", "floor" or None)
METRICS = [
    ("rate", "Conn rate, C=50 (conn/s)", "rate", "conn_per_s", "up", 1, "floor"),
    ("rate_p50", "  cycle p50 (ms)", "rate", "p50_us", "down", 1e-3, None),
    ("rate_p99", "  cycle p99 (ms)", "rate", "p99_us", "down", 1e-3, None),
    ("pp_rate", "Ping-pong, C=50 (msg/s)", "pingpong", "msg_per_s", "up", 1, "epoll"),
    ("pp_p50", "  RTT p50 (µs)", "pingpong", "p50_us", "down", 1, "epoll"),
    ("pp_p99", "  RTT p99 (µs)", "pingpong", "p99_us", "down", 1, "epoll"),
    ("pp_p999", "  RTT p99.9 (µs)", "pingpong", "p999_us", "down", 1, "epoll"),
    ("st1", "Stream, 1 conn (MB/s)", "stream1", "mb_per_s", "up", 1, "epoll"),
    ("st50", "Stream, 50 conns (MB/s)", "stream50", "mb_per_s", "up", 1, "epoll"),
    ("pss", "Idle PSS/conn @[H] (KiB)", "hold", "pss_kb_per_conn", "down", 1, None),
    ("uss", "Idle USS/conn @[H] (KiB)", "hold", "uss_kb_per_conn", "down", 1, None),
    ("pte", "  page tables/conn (KiB)", "hold", "pte_kb_per_conn", "down", 1, None),
    ("est", "Establish [H] conns (s)", "hold", "establish_s", "down", 1, None),
    ("s_alive", "Scale: [S] held, echoing", "hold10k", "alive_end", "up", 1, None),
    ("s_est", "Scale: establish [S] (s)", "hold10k", "establish_s", "down", 1, None),
    ("s_pss", "Scale: PSS/conn @[S] (KiB)", "hold10k", "pss_kb_per_conn", "down", 1, None),
    ("s_uss", "Scale: USS/conn @[S] (KiB)", "hold10k", "uss_kb_per_conn", "down", 1, None),
]

# key -> (text, check(ratio_to_best, ratio_to_ref, subject_value, prof))
TARGETS = {
    "rate": ("≥1.5× best", lambda rb, rr, v, p: rb >= 1.5),
    "pp_p99": ("≤1.2× epoll", lambda rb, rr, v, p: rr <= 1.2),
    "st1": ("≥0.9× epoll", lambda rb, rr, v, p: rr >= 0.9),
    "st50": ("≥0.9× epoll", lambda rb, rr, v, p: rr >= 0.9),
    "pss": ("≤ every forking peer", lambda rb, rr, v, p: rb <= 1.0),
    "uss": ("≤ every forking peer", lambda rb, rr, v, p: rb <= 1.0),
    "s_alive": ("all, no errors", lambda rb, rr, v, p: v >= p["scale_n"]),
}


# Tests whose figures stop being comparable when some connections failed:
# failed cycles are not counted and cost less than good ones.
ERRORS_DISQUALIFY = {"rate", "pingpong", "stream1", "stream50"}


def had_errors(runs):
    return any("error" in r or r.get("errors", 0) or r.get("server_died") is not None for r in runs)


def median_of(runs, field):
    vals = [r[field] for r in runs if "error" not in r and isinstance(r.get(field), (int, float)) and r[field] >= 0]
    return statistics.median(vals) if vals else None


def build_table(results, floors, peers, prof, scale_peers):
    """Returns (header, rows, notes, chart data); cells are formatted text."""
    cols = [p.name for p in peers]
    forking = [p.name for p in peers if p.forking and p.name != SUBJECT]
    floor_plain = median_of(floors.get("fork-floor", []), "forks_per_s")
    floor_libs = median_of(floors.get("fork-floor-libs", []), "forks_per_s")
    header = ["Metric"] + [PEER_BY_NAME[c].title for c in cols] + \
             ["echo-mpserv ÷ best forking peer", "echo-mpserv ÷ reference", "target"]
    rows, chart = [], []
    flagged = False
    excluded = {}
    for key, label, test, field, better, scale, ref in METRICS:
        label = label.replace("[H]", f"{prof['hold_n']:,}").replace("[S]", f"{prof['scale_n']:,}")
        vals, cells = {}, []
        for c in cols:
            runs = results.get(c, {}).get(test, [])
            vals[c] = None
            if not runs:
                cells.append("skip" if test == "hold10k" and c not in scale_peers else "—")
                continue
            v = median_of(runs, field)
            vals[c] = v * scale if v is not None else None
            cell = fmt_num(vals[c]) if v is not None else "fail"
            if had_errors(runs):
                cell += "*"
                flagged = True
            cells.append(cell)
        cand = [(vals[c], c) for c in forking if vals.get(c) is not None]
        if test in ERRORS_DISQUALIFY:
            # A server that failed connections or stalled did less than the
            # others for its figure: it cannot be the one to beat.
            clean = [(v, c) for v, c in cand if not had_errors(results.get(c, {}).get(test, []))]
            for v, c in cand:
                if (v, c) not in clean:
                    excluded.setdefault(PEER_BY_NAME[c].title, set()).add(test)
            cand = clean
        best_v, best_c = (None, None)
        if cand:
            best_v, best_c = max(cand) if better == "up" else min(cand)
        subj = vals.get(SUBJECT)
        rb = subj / best_v if subj is not None and best_v else None
        ref_v, ref_name = None, ""
        if ref == "epoll" and vals.get(BOUND) is not None:
            ref_v, ref_name = vals[BOUND], "epoll"
        elif ref == "floor" and floor_plain:
            ref_v, ref_name = floor_plain, f"fork floor {fmt_num(floor_plain)}/s"
        rr = subj / ref_v if subj is not None and ref_v else None
        target = ""
        if key in TARGETS:
            text, check = TARGETS[key]
            needs = rr if key in ("pp_p99", "st1", "st50") else subj if key == "s_alive" else rb
            if needs is None:
                target = f"{text}: n/a (not measured)"
            else:
                ok = check(rb, rr, subj, prof)
                if key == "s_alive":
                    ok = ok and all("error" not in r and not r.get("errors")
                                    for r in results.get(SUBJECT, {}).get(test, []))
                target = f"{text}: {'met' if ok else 'MISSED'}"
        rows.append([label] + cells + [
            f"{rb:.2f}× ({PEER_BY_NAME[best_c].title})" if rb is not None else "—",
            f"{rr:.2f}× ({ref_name})" if rr is not None else "—",
            target])
        chart.append((key, label.strip(), better, [(PEER_BY_NAME[c].title, vals[c]) for c in cols]))
    notes = ["echo-mpserv runs with log_level = \"warning\" (no per-connection log lines) and "
             "max_session_bytes = 1 TiB; see the peer list for every command line."]
    if floor_plain:
        notes.append(f"Fork floor (fork+_exit+waitpid on the server CPU): {fmt_num(floor_plain)}/s for a minimal "
                     f"process, {fmt_num(floor_libs)}/s for one mapping echo-mpserv's shared libraries.")
    if flagged:
        notes.append("* = the load generator counted errors (failed, reset, stalled or timed-out connections, or "
                     "a server that died) in at least one repetition; see raw.jsonl.")
    if excluded:
        notes.append("Not eligible as best forking peer for throughput and latency rows, because of those errors: "
                     + "; ".join(f"{name} ({', '.join(sorted(tests))})" for name, tests in sorted(excluded.items()))
                     + ".")
    return header, rows, notes, chart


def render_text(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    def line(r):
        return "  ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) if i < len(header) - 3
                         else str(c).ljust(widths[i]) for i, c in enumerate(r)).rstrip()
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def render_markdown(header, rows):
    def esc(c):
        return str(c).replace("|", "\\|")
    out = ["| " + " | ".join(esc(h) for h in header) + " |",
           "|" + "|".join([":---"] + ["---:"] * (len(header) - 4) + [":---", ":---", ":---"]) + "|"]
    for r in rows:
        cells = [esc(c) for c in r]
        cells[0] = cells[0].strip()
        if r[0].startswith("  "):
            cells[0] = "&nbsp;&nbsp;" + cells[0]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def write_chart(outdir, chart, title):
    """A PNG of the table with gnuplot: one bar panel per headline metric."""
    if not shutil.which("gnuplot"):
        return None, "gnuplot not installed"
    wanted = ["rate", "pp_rate", "pp_p99", "st1", "st50", "pss", "est", "s_est"]
    panels = [c for c in chart if c[0] in wanted and any(v is not None and v > 0 for _, v in c[3])]
    if not panels:
        return None, "nothing to plot"
    dat = os.path.join(outdir, "chart.dat")
    with open(dat, "w") as f:
        for key, label, better, vals in panels:
            f.write(f"# {label}\n")
            for i, (name, v) in enumerate(vals):
                colour = 1 if name == SUBJECT else 3 if name.startswith("epoll") else 2
                f.write(f"\"{name}\" {v if v is not None else 'NaN'} {colour}\n")
            f.write("\n\n")
    gp = os.path.join(outdir, "chart.gp")
    logscale = {"rate", "pp_p99", "est", "s_est"}
    with open(gp, "w") as f:
        f.write("# written by bench/bench.py; redraw with: cd bench/out && gnuplot chart.gp\n")
        f.write("set terminal pngcairo size 1800,900 font ',10'\n" if "pngcairo" in gnuplot_terminals()
                else "set terminal png size 1800,900\n")
        f.write("set output 'chart.png'\n")
        f.write("set style fill solid 0.8 border -1\nset boxwidth 0.7\nset grid ytics\n"
                "set xtics rotate by -35 noenhanced\nunset key\nset linetype 1 lc rgb '#d62728'\n"
                "set linetype 2 lc rgb '#7f7f7f'\nset linetype 3 lc rgb '#1f77b4'\n")
        f.write(f"set multiplot layout 2,4 title \"{title}\" noenhanced\n")
        for i, (key, label, better, vals) in enumerate(panels):
            arrow = "higher is better" if better == "up" else "lower is better"
            f.write(f"set title \"{label}\\n({arrow}{', log scale' if key in logscale else ''})\" noenhanced\n")
            f.write("set logscale y\n" if key in logscale else "unset logscale y\nset yrange [0:*]\n")
            if key in logscale:
                f.write("set yrange [*:*]\n")
            f.write(f"plot 'chart.dat' index {i} using 0:2:3:xtic(1) with boxes lc variable, "
                    f"'' index {i} using 0:2:($2 >= 100 ? sprintf('%.0f', $2) : sprintf('%.3g', $2)) "
                    f"with labels offset 0,0.6 font ',8'\n")
        f.write("unset multiplot\n")
    r = subprocess.run(["gnuplot", "chart.gp"], cwd=outdir, capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stderr.strip()[-300:]
    return os.path.join(outdir, "chart.png"), ""


def gnuplot_terminals():
    r = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True)
    return r.stdout + r.stderr


def machine_info(args):
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip() or "?"
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True).stdout.strip()
        if dirty:
            commit += " (src/ modified)"
    except OSError:
        commit = "?"
    return (f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, Linux {platform.release()}, "
            f"{os.cpu_count()} CPUs ({cpu}), commit {commit}; server on CPU {args.server_cpu}, "
            f"load generator on CPU {args.client_cpu}")


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(prog="bench/run", description="Benchmark echo-mpserv against its peers.")
    ap.add_argument("--quick", action="store_true", help="short smoke run (~2-3 minutes), 1 repetition")
    ap.add_argument("--reps", type=int, help="repetitions (default 3; --quick: 1); the table shows medians")
    ap.add_argument("--peers", help=f"comma-separated subset (default: {','.join(DEFAULT_PEERS)}; "
                                    "also available: socat-exec)")
    ap.add_argument("--scale-peers", default="echo-mpserv,epoll",
                    help="peers to hold the scale test's 10,000 connections on (default: echo-mpserv,epoll)")
    ap.add_argument("--tests", help="comma-separated subset of hold,pingpong,stream1,stream50,rate,hold10k")
    ap.add_argument("--build-dir", default=DEFAULT_BUILD, help="meson build directory (default: build-bench)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output directory (default: bench/out)")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get install missing packages")
    ap.add_argument("--no-build", action="store_true", help="use the build directory as it is")
    ap.add_argument("--server-cpu", type=int, help="CPU for the servers (default: the last one)")
    ap.add_argument("--client-cpu", type=int, help="CPU for the load generator (default: the first one)")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.inner:
        return inner_main()

    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (network namespaces, cgroups, package installation)")
    cpus = sorted(os.sched_getaffinity(0))
    if args.server_cpu is None:
        args.server_cpu = cpus[-1]
    if args.client_cpu is None:
        args.client_cpu = cpus[0]
    if args.server_cpu == args.client_cpu:
        warn("server and load generator share a CPU: figures will be meaningless")
    prof = dict(PROFILES["quick" if args.quick else "full"])
    if args.reps:
        prof["reps"] = max(1, args.reps)
    names = args.peers.split(",") if args.peers else list(DEFAULT_PEERS)
    for n in names:
        if n not in PEER_BY_NAME:
            raise SystemExit(f"bench: unknown peer '{n}' (known: {', '.join(PEER_BY_NAME)})")
    if SUBJECT not in names:
        names.insert(0, SUBJECT)
    scale_peers = [n for n in args.scale_peers.split(",") if n]
    tests, scale_test = plan_tests(prof)
    if args.tests:
        want = args.tests.split(",")
        tests = [t for t in tests if t[0] in want]
        if "hold10k" not in want:
            scale_peers = []

    ensure_packages(args.no_install)
    if not args.no_build:
        log(f"Building ({os.path.relpath(args.build_dir, ROOT)}, buildtype=release) ...")
        build(args.build_dir)

    outdir = os.path.abspath(args.out)
    logdir = os.path.join(outdir, "logs")
    os.makedirs(logdir, exist_ok=True)
    for name in os.listdir(logdir):
        os.unlink(os.path.join(logdir, name))
    tmp = tempfile.mkdtemp(prefix="echo-bench.")
    cg = Cgroups()

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    try:
        ctx = Ctx(args, tmp)
        ctx.textbook = compile_textbook(tmp)
        peers, skipped = [], []
        for n in names:
            p = PEER_BY_NAME[n]
            ok, why = p.available(ctx)
            (peers if ok else skipped).append(p if ok else (p, why))
        if not any(p.name == SUBJECT for p in peers):
            raise SystemExit("bench: echo-mpserv is not built")
        per_peer_s = sum(t[2] for t in tests)
        est = prof["reps"] * (len(peers) * per_peer_s + 2 * prof["floor_d"] +
                              scale_test[2] * len([p for p in peers if p.name in scale_peers]))
        log(f"Peers: {', '.join(p.name for p in peers)}"
            + (f"; skipped: {', '.join(f'{p.name} ({why})' for p, why in skipped)}" if skipped else ""))
        log(f"{prof['reps']} repetition(s), about {est / 60:.0f} minutes. Raw lines go to "
            f"{os.path.relpath(outdir, ROOT)}/raw.jsonl, server logs to {os.path.relpath(logdir, ROOT)}/.")

        results, floors = {}, {}
        t_start = time.monotonic()
        with open(os.path.join(outdir, "raw.jsonl"), "w") as raw:
            for rep in range(1, prof["reps"] + 1):
                log(f"\n=== repetition {rep}/{prof['reps']}")
                for tool, res in run_fork_floor(ctx, prof, rep, raw).items():
                    floors.setdefault(tool, []).append(res)
                    log(f"  {tool:<16} {'ERROR ' + res['error'] if 'error' in res else fmt_num(res['forks_per_s']) + ' forks/s'}")
                # rotate the order each repetition so no peer always runs first
                order = peers[(rep - 1) % len(peers):] + peers[:(rep - 1) % len(peers)]
                for peer in order:
                    plan = list(tests)
                    if peer.name in scale_peers:
                        plan.append(scale_test)
                    for test, targs, _, cap in plan:
                        r = run_one(ctx, cg, peer, test, targs, cap, rep, logdir, raw)
                        results.setdefault(peer.name, {}).setdefault(test, []).append(r)
                        log(f"  {peer.name:<12} {test:<9} {summary_of(test, r)}")
        elapsed = time.monotonic() - t_start

        header, rows, notes, chart = build_table(results, floors, peers, prof, scale_peers)
        info = machine_info(args)
        peer_notes = [f"- **{p.title}**: {p.note}" for p in peers]
        peer_notes += [f"- **{p.title}**: skipped: {why}" for p, why in skipped]
        not_scaled = [p.title for p in peers if p.name not in scale_peers]
        if "hold10k" not in (args.tests or "hold10k"):
            not_scaled = []
        text = render_text(header, rows)
        log("\n" + text)
        for n in notes:
            log(n)
        if not_scaled:
            log(f"Scale rows: {', '.join(not_scaled)} not attempted at {prof['scale_n']:,} connections "
                "(see bench/README.md; --scale-peers to try).")
        log(f"Medians of {prof['reps']} repetition(s); {info}; {elapsed / 60:.1f} min.")

        md = [f"<!-- written by bench/run ({'--quick' if args.quick else 'full run'}); do not edit -->",
              f"Medians of {prof['reps']} repetition(s). {info}.", "",
              render_markdown(header, rows), ""]
        md += ["- " + n.replace("* =", "`*` =", 1) for n in notes]
        if not_scaled:
            md.append(f"- Scale rows: {', '.join(not_scaled)} not attempted at {prof['scale_n']:,} connections.")
        md += ["", "Peers:", ""] + peer_notes
        with open(os.path.join(outdir, "results.md"), "w") as f:
            f.write("\n".join(md) + "\n")
        with open(os.path.join(outdir, "results.txt"), "w") as f:
            f.write(text + "\n" + "\n".join(notes) + "\n" + f"Medians of {prof['reps']} repetition(s); {info}.\n")
        with open(os.path.join(outdir, "results.json"), "w") as f:
            json.dump({"info": info, "profile": prof, "header": header, "rows": rows, "notes": notes,
                       "results": results, "fork_floor": floors}, f, indent=1, default=str)
        png, err = write_chart(outdir, chart, f"echo-mpserv vs peers: medians of {prof['reps']} repetition(s)")
        rel = os.path.relpath(outdir, ROOT)
        log(f"Wrote {rel}/results.md, results.txt, results.json, raw.jsonl"
            + (f", {os.path.relpath(png, ROOT)}" if png else f" (no chart: {err})"))
    except KeyboardInterrupt:
        if _current_inner is not None and _current_inner.poll() is None:
            _current_inner.terminate()
            try:
                _current_inner.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _current_inner.kill()
        raise SystemExit("bench: interrupted; servers stopped")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
