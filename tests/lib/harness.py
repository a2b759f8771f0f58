"""Runs the real echo-mpserv binary the way systemd does, for integration tests.

A Daemon binds its listening sockets itself, passes them as fd 3, 4, ... with
LISTEN_FDS/LISTEN_PID (and LISTEN_FDNAMES), owns the NOTIFY_SOCKET and waits for
READY=1 instead of sleeping. Log lines (stderr) and notifications are collected
by background threads; tests wait for them with timeouts, never with sleeps.

Environment:
  ECHO_MPSERV          the binary under test (set by meson)
  ECHO_MPSERV_WRAPPER  a command prefix, e.g. valgrind with its options
  ECHO_MPSERV_SLOW     multiplies every wait and time bound (valgrind is ~20x
                       slower; tests/run-all.sh sets 3 on a machine kept busy)
  ECHO_MPSERV_SCALE    multiplies client counts of load tests (< 1 under valgrind)

It is the one place for what every test of the daemon needs: the Daemon,
a free port, the environment scrubbed of a service's variables, and the
parser of the connection record (/proc readers: procfs.py).
"""

import hashlib
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import procfs
from waiting import poll

DAEMON = os.environ.get("ECHO_MPSERV", "")
WRAPPER = shlex.split(os.environ.get("ECHO_MPSERV_WRAPPER", ""))
SLOW = float(os.environ.get("ECHO_MPSERV_SLOW", "1"))
SCALE = float(os.environ.get("ECHO_MPSERV_SCALE", "1"))

# The connection record, as src/session-log.c words it.
RECORD_RE = re.compile(
    r"connection (?P<client>\S+) -> (?P<local>\S+) closed: (?P<reason>[a-z-]+)"
    r"(?: \((?P<detail>[^)]*)\))? after (?P<duration>[\d.]+) s, (?P<bytes_in>\d+) bytes in, "
    r"(?P<bytes_out>\d+) bytes out, worker (?P<pid>\d+)")

# What systemd hands a service: a test's daemon gets only what the test sets.
SERVICE_ENV_PREFIXES = ("LISTEN_", "NOTIFY_", "WATCHDOG_", "JOURNAL_STREAM", "INVOCATION_ID",
                        "CREDENTIALS_DIRECTORY", "SYSTEMD_EXEC_PID")


def parse_records(lines):
    """The connection records among log lines, as dicts of RECORD_RE's groups."""
    return [m.groupdict() for m in (RECORD_RE.search(line) for line in lines) if m]


def scrubbed_env():
    """os.environ without the variables systemd sets for a service (the tests
    themselves may run under systemd)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_ENV_PREFIXES)}


class Skip(Exception):
    """Raised by a test that cannot run here (meson counts exit 77 as skipped)."""


def scaled(n, minimum=1):
    return max(minimum, int(n * SCALE))


def public_copy_of_daemon(directory):
    """A copy of the binary that another uid can execute: the checkout may sit
    in a directory only root can enter (a CI clone under /root, say)."""
    path = os.path.join(directory, "echo-mpserv")
    shutil.copy(DAEMON, path)
    os.chmod(path, 0o755)
    return path


def wait_until(predicate, timeout, what="condition", interval=0.01):
    """Polls predicate until it is true; fails with `what` after timeout*SLOW."""
    return poll(predicate, timeout * SLOW, what, interval)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Collector:
    """Lines or datagrams gathered by a thread, waited for under a condition."""

    def __init__(self, writers=1):
        self.items = []
        self.cond = threading.Condition()
        self.closed = False
        self.writers = writers  # closed when the last of them is done

    def add(self, item):
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    def close(self):
        """One source has ended; the collector closes with the last."""
        with self.cond:
            self.writers -= 1
            self.closed = self.writers <= 0
            self.cond.notify_all()

    def snapshot(self):
        with self.cond:
            return list(self.items)

    def wait(self, predicate, timeout, what):
        """Waits until predicate(items) is truthy; returns its value."""
        deadline = time.monotonic() + timeout * SLOW
        with self.cond:
            while True:
                value = predicate(self.items)
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0 or (self.closed and not value):
                    tail = "\n".join(str(i) for i in self.items[-15:])
                    why = "the source closed" if self.closed else "timed out"
                    raise AssertionError(f"{why} waiting for {what}; last items:\n{tail}")
                self.cond.wait(min(left, 0.2))


def inetd_session(config="", client_ip="127.0.0.1", env=None):
    """Accept=yes: runs the daemon on one connected socket (from client_ip),
    echoes b"inetd" through it, half-closes, and checks the daemon served it
    to the end and exited 0. Returns the Daemon, for its log; the caller
    cleans it up."""
    with socket.socket() as listener, socket.socket() as client:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client.bind((client_ip, 0))
        client.connect(listener.getsockname())
        conn, _ = listener.accept()
        d = Daemon(config, passed_fds=[conn.fileno()], env=env)
        try:
            d.start(wait_ready=False)
            conn.close()
            client.sendall(b"inetd")
            assert recv_exact(client, 5) == b"inetd"
            client.shutdown(socket.SHUT_WR)
            assert client.recv(1) == b""
            assert d.wait_exit() == 0
        except BaseException:
            d.cleanup()
            raise
        return d

class Daemon:
    def __init__(self, config="", args=(), listen=(("127.0.0.1", 0),), names=None,
                 activation=True, env=None, prefix=(), backlog=512, passed_fds=None,
                 config_mode=0o644, public_binary=False, ignored_signals=(), service=False, queued=0):
        self.dir = tempfile.TemporaryDirectory(prefix="echo-mpserv-test-")
        os.chmod(self.dir.name, 0o755)
        self.config_path = os.path.join(self.dir.name, "echo-mpserv.conf")
        self.write_config(config, config_mode)
        self.args = list(args)
        self.listen = listen
        self.names = names
        self.activation = activation
        self.extra_env = env or {}
        self.prefix = list(prefix)
        self.backlog = backlog
        self.passed_fds = passed_fds
        self.binary = public_copy_of_daemon(self.dir.name) if public_binary else DAEMON
        self.ignored_signals = ignored_signals  # e.g. ("CHLD",): inherited as SIG_IGN
        # Started as systemd starts a service (INVOCATION_ID, SYSTEMD_EXEC_PID
        # naming the daemon): SIGTERM then hands the sessions off.
        self.service = service
        # Clients connected to the first listener before the daemon starts,
        # as the one that makes systemd start a socket-activated service.
        self.n_queued = queued
        self.queued = []
        self.sockets = []
        self.proc = None
        self.log = Collector(writers=2)  # stderr and stdout: complete when both end
        self.notes = Collector()
        self.stored_fds = []  # (FDNAME, fd): what the daemon put in the "fd store"
        self.threads = []

    # -- configuration -------------------------------------------------
    # Every test client comes from loopback, which the default
    # source_limits_exempt lets past the per-source limits; tests about
    # admission control need loopback limited like any client, so the
    # exemption is emptied unless a test names the key (a comment naming it
    # keeps the default). Tests not about admission control lift the
    # per-source limits. A test that sets either key keeps it.
    # Likewise, tests count one record per connection, so those not about
    # the record budget lift it (past its burst, connections are summarized).
    UNLIMITED_SOURCES = "max_clients_per_source = 0;\nsource_rate = 0;\n"
    UNLIMITED_RECORDS = "log_connection_rate = 0; "  # no newline: error line numbers stay
    NO_EXEMPTION = "source_limits_exempt = []; "

    def write_config(self, text, mode=0o644):
        text = text or ""
        if "@include" not in text:
            if "log_connection_rate" not in text:
                text = self.UNLIMITED_RECORDS + text
            if "max_clients_per_source" not in text and "source_rate" not in text:
                text = self.UNLIMITED_SOURCES + text
            if "source_limits_exempt" not in text:
                text = self.NO_EXEMPTION + text
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.rename(tmp, self.config_path)

    # -- lifecycle -----------------------------------------------------
    def start(self, wait_ready=True):
        raise_nofile()
        fds = []
        if self.passed_fds is not None:
            fds = list(self.passed_fds)
        elif self.activation:
            for host, port in self.listen:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                s = socket.socket(family, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((host, port))
                s.listen(self.backlog)
                self.sockets.append(s)
                fds.append(s.fileno())
            for _ in range(self.n_queued):
                self.queued.append(socket.create_connection(self.address(), timeout=10 * SLOW))

        self.notify_path = os.path.join(self.dir.name, "notify")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        os.chmod(self.notify_path, 0o777)

        env = scrubbed_env()
        env["NOTIFY_SOCKET"] = self.notify_path
        env.update(self.extra_env)

        # Move the sockets to high numbers, then let bash place them at 3, 4, ...
        # and set LISTEN_PID to its own pid, which exec keeps for the daemon.
        high = [os.dup2(fd, 200 + i, inheritable=True) for i, fd in enumerate(fds)]
        script = ""
        if self.ignored_signals:
            script += "trap '' " + " ".join(self.ignored_signals) + "; "
        if self.service:
            script += "export INVOCATION_ID=0123456789abcdef0123456789abcdef SYSTEMD_EXEC_PID=$$; "
        if fds:
            env["LISTEN_FDS"] = str(len(fds))
            if self.names:
                env["LISTEN_FDNAMES"] = ":".join(self.names)
            script += "".join(f"exec {3 + i}<&{h} {h}<&-; " for i, h in enumerate(high))
            script += "export LISTEN_PID=$$; "
        script += 'exec "$@"'
        cmd = self.prefix + ["bash", "-c", script, "bash"] + WRAPPER + \
            [self.binary, "-c", self.config_path] + self.args
        try:
            self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         pass_fds=high, start_new_session=True)
        finally:
            for h in high:
                os.close(h)
        self._reader(self.proc.stderr, self.log, lambda b: b.decode(errors="replace").rstrip("\n"))
        self._reader(self.proc.stdout, self.log, lambda b: "stdout: " + b.decode(errors="replace").rstrip("\n"))
        self._notify_reader()
        if wait_ready:
            self.wait_notify("READY=1", timeout=10)
        return self

    def _reader(self, stream, collector, decode):
        def run():
            for line in iter(stream.readline, b""):
                collector.add(decode(line))
            collector.close()
            # stderr at EOF: the daemon is gone (or has moved its stderr
            # elsewhere: wait for its exit), so no notification will come
            # either; waiting for one must fail now, not at its timeout. The
            # notify reader still takes what is queued, then sees the end.
            if stream is self.proc.stderr:
                self.proc.wait()
                try:
                    self.notify.shutdown(socket.SHUT_RD)
                except OSError:
                    self.notes.close()
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    def _notify_reader(self):
        def run():
            while True:
                try:
                    data, fds, _, _ = socket.recv_fds(self.notify, 4096, 8)
                except OSError:
                    data, fds = b"", []
                text = data.decode(errors="replace")
                # Like systemd: FDSTORE=1 keeps its descriptors (stored_fds,
                # by FDNAME); any other's (BARRIER=1) is closed once read.
                if "FDSTORE=1" in text.split("\n"):
                    name = next((line[7:] for line in text.split("\n") if line.startswith("FDNAME=")), "stored")
                    self.stored_fds += [(name, fd) for fd in fds]
                else:
                    for fd in fds:
                        os.close(fd)
                if not data:  # shut down by the stderr reader, or closed
                    self.notes.close()
                    return
                self.notes.add(text)
        t = threading.Thread(target=run, daemon=True)
        t.start()

    @property
    def pid(self):
        return self.proc.pid

    @property
    def port(self):
        return self.sockets[0].getsockname()[1]

    def address(self, i=0):
        return self.sockets[i].getsockname()[:2]

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout=15):
        try:
            return self.proc.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon did not exit within {timeout * SLOW:.0f} s")

    def stop(self, timeout=15):
        """SIGTERM, then the exit status (which tests usually assert is 0)."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        for t in self.threads:
            t.join(5)
        for s in self.queued + self.sockets:
            s.close()
        if hasattr(self, "notify"):
            self.notify.close()
        for _, fd in self.stored_fds:
            os.close(fd)
        self.stored_fds = []
        self.dir.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    # -- observation ---------------------------------------------------
    def wait_log(self, pattern, timeout=10, count=1):
        """Waits until `count` lines match regex `pattern`; returns the matches."""
        rx = re.compile(pattern)

        def found(items):
            m = [rx.search(i) for i in items]
            m = [x for x in m if x]
            return m if len(m) >= count else None
        return self.log.wait(found, timeout, f"{count} log line(s) matching {pattern!r}")

    def log_lines(self, pattern):
        rx = re.compile(pattern)
        return [m for m in (rx.search(i) for i in self.log.snapshot()) if m]

    def records(self):
        return parse_records(self.log.snapshot())

    def wait_records(self, count, timeout=10):
        return [m.groupdict() for m in self.wait_log(RECORD_RE.pattern, timeout, count)]

    def wait_notify(self, text, timeout=10, after=0):
        """Waits for a notification containing `text`, among those from index `after` on."""
        def found(items):
            for i, n in enumerate(items[after:], after):
                if text in n:
                    return (i, n)
            return None
        try:
            return self.notes.wait(found, timeout, f"notification {text!r}")
        except AssertionError as e:
            status = self.proc.poll()
            log = "\n".join(self.log.snapshot()[-10:])
            raise AssertionError(f"{e}\ndaemon exit status: {status}; its last log lines:\n{log}") from None

    def children(self):
        """(pid, state) of the daemon's direct children."""
        return procfs.children(self.pid)

    def fds(self, pid=None):
        """The process's descriptors, minus a wrapper's: valgrind parks its own
        just below the hard limit, where a program's never land."""
        wrapper_floor = resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 16
        fds = (int(f) for f in os.listdir(f"/proc/{pid or self.pid}/fd"))
        return sorted(f for f in fds if f < wrapper_floor)

    def cpu_seconds(self):
        return procfs.cpu_seconds(self.pid)


def tcp_socket(local_port, remote_port):
    """The kernel's view of the TCP socket from local_port to remote_port on
    this host: (state as ss names it, "ESTAB", "FIN-WAIT-1", ..., unacknowledged
    bytes sent, unread bytes received), or None when there is none. Asks
    through ss (netlink, filtered by the kernel): /proc/net/tcp lists every
    socket and gets slow on a busy machine."""
    out = subprocess.run(["ss", "-tnH", "state", "all", f"( sport = :{local_port} and dport = :{remote_port} )"],
                         capture_output=True, text=True, check=True).stdout.split()
    if len(out) < 3:
        return None
    return out[0], int(out[2]), int(out[1])


# -- clients -------------------------------------------------------------
def connect(address, timeout=10, source=None, rcvbuf=None):
    """A client socket; `source` binds it to another loopback address
    (127.0.0.2, ...), which admission control sees as another client;
    `rcvbuf` sets SO_RCVBUF before connecting (set later, the window already
    offered makes the kernel drop data and retransmit it slowly)."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout * SLOW)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source:
        s.bind((source, 0))
    s.connect(address)
    return s


def served(address, source=None, payload=b"x"):
    """True when the connection is echoed, False when it is refused (reset
    right after the accept, the way admission control refuses)."""
    try:
        with connect(address, source=source) as s:
            s.sendall(payload)
            got = recv_exact(s, len(payload))
            assert got == payload, got
            return True
    except (ConnectionResetError, BrokenPipeError):
        return False


def live_sessions(address, n, source=None):
    """n connections, each echoed once, so each has its worker (and counts
    under max_clients and its source's limits) when this returns."""
    sessions = [connect(address, source=source) for _ in range(n)]
    for s in sessions:
        s.sendall(b"h")
        assert recv_exact(s, 1) == b"h"
    return sessions


class DefaultConfigDir:
    """A directory that is /etc/echo-mpserv for the commands prefix() runs:
    each runs in a private mount namespace, on an overlay of /etc (the
    host's /etc is never written), so the daemon's default configuration
    path can be tested. Needs root (Skip otherwise)."""

    def __init__(self):
        if os.geteuid() != 0:
            raise Skip("needs root for a private mount namespace")
        self.tmp = tempfile.TemporaryDirectory()
        for d in ("up", "work", "conf"):
            os.mkdir(os.path.join(self.tmp.name, d))
        os.chmod(self.tmp.name, 0o755)
        self.dir = os.path.join(self.tmp.name, "conf")
        os.chmod(self.dir, 0o755)
        self.path = os.path.join(self.dir, "echo-mpserv.conf")

    def prefix(self):
        script = ('mount -t overlay overlay -o lowerdir=/etc,upperdir="$1/up",workdir="$1/work" /etc && '
                  'mkdir -p /etc/echo-mpserv && mount --bind "$1/conf" /etc/echo-mpserv && shift && exec "$@"')
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", self.tmp.name] + WRAPPER

    def write(self, text):
        with open(self.path, "w") as f:
            f.write(text)
        os.chmod(self.path, 0o644)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.tmp.cleanup()


def free_port():
    """A port free on both 127.0.0.1 and ::1 right now, for standalone runs.
    Chosen below the kernel's ephemeral range, so no outgoing connection
    (other tests connect all the time) takes it before the daemon binds."""
    import random
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    for _ in range(200):
        port = random.randrange(max(1025, low - 12000), low)
        with socket.socket() as v4, socket.socket(socket.AF_INET6) as v6:
            try:
                v4.bind(("127.0.0.1", port))
                v6.bind(("::1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port")


def echo_once(address, payload=b"ping", timeout=10):
    with connect(address, timeout) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        return recv_all(s)


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(65536, n - len(buf)))
        if not chunk:
            raise AssertionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_all(s):
    buf = bytearray()
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return bytes(buf)
        buf += chunk


class LateReader:
    """A client with a small receive buffer that keeps sending (up to `total`
    bytes, or until stopped) and reads nothing until told to: the client a
    session limit or the cut must still deliver every counted byte to."""

    def __init__(self, address, total=None, rcvbuf=4096):
        self.sock = connect(address, rcvbuf=rcvbuf)
        self.port = self.sock.getsockname()[1]
        self.total = total
        self.sent = 0
        self.stop = threading.Event()
        self.errors = []
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    def _send(self):
        block = b"L" * 65536
        try:
            while not self.stop.is_set() and (self.total is None or self.sent < self.total):
                left = len(block) if self.total is None else min(len(block), self.total - self.sent)
                self.sent += self.sock.send(block[:left])
        except OSError as e:
            self.errors.append(e)

    def wait_server_closed(self, server_port, timeout=10):
        """Waits until the server's side has sent its FIN (or is gone)."""
        def closed():
            st = tcp_socket(server_port, self.port)
            return st is None or st[0] != "ESTAB"
        wait_until(closed, timeout, "the server to end the session")

    def read_to_end(self):
        """Stops sending, reads everything: (bytes received, ended by a reset)."""
        self.stop.set()
        got, reset = 0, False
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
        except ConnectionResetError:
            reset = True
        self.thread.join(10 * SLOW)
        self.sock.close()
        return got, reset


def stream_checksum(s, total, chunk=1 << 20):
    """Sends `total` random bytes from a thread, half-closes, reads the echo
    to EOF; returns (sent_sha256, received_sha256, received_len)."""
    sent = hashlib.sha256()
    errors = []

    def writer():
        try:
            left = total
            while left:
                piece = os.urandom(min(chunk, left))
                s.sendall(piece)
                sent.update(piece)
                left -= len(piece)
            s.shutdown(socket.SHUT_WR)
        except Exception as e:  # reported by the caller
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    got = hashlib.sha256()
    n = 0
    while True:
        data = s.recv(1 << 20)
        if not data:
            break
        got.update(data)
        n += len(data)
    t.join()
    if errors:
        raise errors[0]
    return sent.hexdigest(), got.hexdigest(), n


# -- running -------------------------------------------------------------
def main(tests):
    """Runs the given test functions; exit 0, 1 on failure, 77 if all skipped."""
    if not DAEMON:
        print("ECHO_MPSERV is not set", file=sys.stderr)
        sys.exit(2)
    only = sys.argv[1:]
    failed, skipped, ran = [], [], 0
    for t in tests:
        if only and t.__name__ not in only:
            continue
        ran += 1
        start = time.monotonic()
        print(f"-- {t.__name__}", flush=True)
        try:
            t()
            print(f"   ok ({time.monotonic() - start:.2f} s)", flush=True)
        except Skip as e:
            skipped.append(t.__name__)
            print(f"   skipped: {e}", flush=True)
        except Exception:
            failed.append(t.__name__)
            traceback.print_exc()
            # A timing failure reads differently on a loaded machine.
            with open("/proc/loadavg") as f:
                load = " ".join(f.read().split()[:3])
            print(f"   FAILED ({time.monotonic() - start:.2f} s; load average {load}; "
                  f"ECHO_MPSERV_SLOW {SLOW:g})", flush=True)
    if failed:
        print("failed: " + ", ".join(failed))
        sys.exit(1)
    if ran and len(skipped) == ran:
        sys.exit(77)
    sys.exit(0)
