#!/usr/bin/env python3
"""Protocol fuzzer: random client sessions against a live echo-mpserv.

Starts the real daemon in standalone mode on 127.0.0.1 (a free port, a
configuration written to a temporary directory), then runs sessions, several
at a time, each a random script drawn from a seeded PRNG: writes of 1 byte to
1 MiB (mostly small), pauses of 0-50 ms and reads, interleaved, now and then
a flood (writing without reading until the server stops reading), ended by

  half-close  shutdown(SHUT_WR), then read to EOF: the echo must be every
              byte sent, in order, nothing more, and the server must close;
  close       close() at a random point, possibly with echo still in flight;
  reset       SO_LINGER 0 then close(), i.e. an RST, at a random point.

Every byte received is checked against what was sent as soon as it arrives.
At the end the daemon gets SIGTERM and must exit 0, and its log must hold
exactly one connection record per session, none with reason "error" and none
of a worker killed by a signal, "client-closed" with bytes in == bytes out ==
bytes sent for each half-closed session, and "client-closed" or "reset" for
the others (bytes out never more than bytes in; exactly what the client read
when it read everything echoed and then closed). Figures are printed; the exit status is 0 on success, 1 on any
failure. Reproduce with the printed --seed (and --only INDEX for one session;
the script is the same, the timing is the kernel's).

Environment:
  ECHO_MPSERV          the daemon (default: build/src/echo-mpserv under the
                       repository root)
  ECHO_MPSERV_WRAPPER  a command prefix, e.g. valgrind with its options
  ECHO_MPSERV_SLOW     multiplies every timeout (valgrind is much slower)
  ECHO_MPSERV_SCALE    multiplies the number of sessions (< 1 under valgrind)

Loopback only, numeric addresses only. Bounded in time: no session starts
after --seconds (default 25), a session that takes more than 15 s fails, and
the daemon gets 15 s to stop, so a run ends within about a minute even when
the server hangs (all times multiplied by ECHO_MPSERV_SLOW); a healthy run
of 300 sessions takes a few seconds. The daemon is always killed on exit.
"""

import argparse
import collections
import os
import random
import re
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
os.environ.setdefault("ECHO_MPSERV", os.path.join(ROOT, "build", "src", "echo-mpserv"))
from harness import DAEMON, SCALE, SLOW, Daemon, RECORD_RE, free_port, parse_records  # noqa: E402

HOST = "127.0.0.1"
MIB = 1 << 20
CHUNK = 256 * 1024
SESSION_LIMIT = 15.0  # seconds one session may take (times SLOW) before it counts as hung

ENDINGS = ("half-close", "close", "reset")


class SessionFailure(Exception):
    pass


# -- one session -------------------------------------------------------------

def write_size(rng):
    """1 byte to 1 MiB, skewed to small: most writes fit in one segment."""
    r = rng.random()
    if r < 0.6:
        return rng.randint(1, 512)
    if r < 0.9:
        return rng.randint(513, 64 * 1024)
    return rng.randint(64 * 1024 + 1, MIB)


def make_script(rng):
    ending = rng.choices(ENDINGS, weights=(50, 25, 25))[0]
    ops = []
    for _ in range(rng.randint(0, 12)):
        kind = rng.choices(("write", "pause", "read", "flood"), weights=(10, 4, 4, 1))[0]
        if kind == "write":
            ops.append(("write", write_size(rng)))
        elif kind == "flood":
            ops.append(("flood", rng.randint(64 * 1024, 4 * MIB)))
        elif kind == "pause":
            ops.append(("pause", rng.uniform(0, 0.05)))
        else:
            ops.append(("read", rng.uniform(0, 0.02)))
    # close and reset: wait for the whole echo, part of it, or nothing.
    settle = rng.choice(("all", "some", "none"))
    return ending, ops, settle


class Session:
    def __init__(self, index, seed, port):
        self.index = index
        self.rng = random.Random("%s:%d" % (seed, index))
        self.ending, self.ops, self.settle = make_script(self.rng)
        self.port = port
        self.sent = bytearray()
        self.got = 0
        self.client_port = None
        self.sock = None
        self.sel = None
        self.deadline = None
        self.eof = False

    def describe(self):
        writes = [n if kind == "write" else "flood %d" % n for kind, n in self.ops
                  if kind in ("write", "flood")]
        return ("session %d: %s after %d op(s), %d write(s) of %s bytes, settle %s"
                % (self.index, self.ending, len(self.ops), len(writes), writes, self.settle))

    def fail(self, what):
        raise SessionFailure("%s (client port %s, %d sent, %d echoed): %s"
                             % (self.describe(), self.client_port, len(self.sent), self.got, what))

    def check_deadline(self):
        if time.monotonic() > self.deadline:
            self.fail("not finished after %.0f s: the server looks hung" % (SESSION_LIMIT * SLOW))

    def _received(self, chunk):
        end = self.got + len(chunk)
        if end > len(self.sent):
            self.fail("the server sent %d byte(s) more than the client wrote" % (end - len(self.sent)))
        expected = self.sent[self.got:end]
        if expected != chunk:
            at = next(i for i in range(len(chunk)) if chunk[i] != expected[i])
            self.fail("echo differs at byte %d: got 0x%02x, sent 0x%02x"
                      % (self.got + at, chunk[at], expected[at]))
        self.got = end

    def _recv_ready(self):
        """Reads what is there. Returns False on EOF."""
        try:
            chunk = self.sock.recv(CHUNK)
        except BlockingIOError:
            return True
        except ConnectionResetError:
            self.fail("connection reset by the server")
        if not chunk:
            self.eof = True
            return False
        self._received(chunk)
        return True

    def _pump(self, data=b"", read_for=0.0):
        """Sends data while reading the echo (the server stops reading when
        its echo is not read, so a blocking sendall() could deadlock), then
        keeps reading for read_for seconds."""
        view = memoryview(data)
        off = 0
        until = time.monotonic() + read_for
        while True:
            self.check_deadline()
            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if off < len(view) else 0)
            if off >= len(view):
                left = until - time.monotonic()
                if left <= 0:
                    return
            else:
                left = 0.2
            self.sel.modify(self.sock, want)
            for _, mask in self.sel.select(min(left, 0.2)):
                if mask & selectors.EVENT_READ and not self._recv_ready():
                    self.fail("the server closed the connection before the client did")
                if mask & selectors.EVENT_WRITE and off < len(view):
                    off += self._send_some(view, off)

    def _flood(self, data):
        """Writes without reading the echo until the kernel stops taking data
        for 50 ms (the server then blocks sending the echo and stops
        reading): the server's backpressure path. Only what was taken counts
        as sent."""
        view = memoryview(data)
        off = 0
        self.sel.modify(self.sock, selectors.EVENT_WRITE)
        while off < len(view) and self.sel.select(0.05):
            self.check_deadline()
            off += self._send_some(view, off)

    def _send_some(self, view, off):
        """Sends what the kernel takes of view[off:], up to a chunk; records
        it as sent and returns how much that was."""
        try:
            n = self.sock.send(view[off:off + CHUNK])
        except BlockingIOError:
            return 0
        except (ConnectionResetError, BrokenPipeError) as e:
            self.fail("send failed: %s" % e)
        self.sent += view[off:off + n]
        return n

    def run(self):
        self.deadline = time.monotonic() + SESSION_LIMIT * SLOW
        self.sock = socket.create_connection((HOST, self.port), timeout=10 * SLOW)
        try:
            self.client_port = self.sock.getsockname()[1]
            self.sock.setblocking(False)
            self.sel = selectors.DefaultSelector()
            self.sel.register(self.sock, selectors.EVENT_READ)
            for kind, arg in self.ops:
                if kind == "write":
                    self._pump(self.rng.randbytes(arg))
                elif kind == "flood":
                    self._flood(self.rng.randbytes(arg))
                elif kind == "pause":
                    time.sleep(arg)
                else:
                    self._pump(read_for=arg)
            if self.ending == "half-close":
                self._half_close()
            else:
                self._settle()
                if self.ending == "reset":
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            if self.sel:
                self.sel.close()
            self.sock.close()
        return self

    def _half_close(self):
        self.sock.shutdown(socket.SHUT_WR)
        while not self.eof:
            self.check_deadline()
            self.sel.modify(self.sock, selectors.EVENT_READ)
            if self.sel.select(0.2):
                self._recv_ready()
        if self.got != len(self.sent):
            self.fail("the server closed after echoing %d of %d byte(s)" % (self.got, len(self.sent)))

    def _settle(self):
        if self.settle == "all":
            while self.got < len(self.sent):
                self._pump(read_for=0.05)
        elif self.settle == "some" and self.got < len(self.sent):
            self._pump(read_for=self.rng.uniform(0, 0.02))


# -- the run -------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=None, help="PRNG seed (default: random, printed)")
    ap.add_argument("--sessions", type=int, default=300, help="number of sessions (default 300)")
    ap.add_argument("--concurrency", type=int, default=8, help="sessions at a time (default 8)")
    ap.add_argument("--seconds", type=float, default=25,
                    help="no session starts after this many seconds (default 25; a session may "
                    "then take %d s more, the shutdown 15 s)" % SESSION_LIMIT)
    ap.add_argument("--max-clients", type=int, default=None,
                    help="the daemon's max_clients (default: drawn from the seed, mostly 200)")
    ap.add_argument("--only", type=int, default=None, metavar="INDEX",
                    help="run only session INDEX of the seed (to reproduce one failure)")
    args = ap.parse_args()

    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    sessions = max(1, int(args.sessions * SCALE))
    indices = [args.only] if args.only is not None else list(range(sessions))
    rng = random.Random(seed)
    buffer_size = rng.choice((1024, 4096, 65536, MIB))
    # Now and then fewer slots than concurrent clients: the rest wait in
    # the kernel backlog until a worker exits.
    max_clients = args.max_clients or rng.choice((200, 200, rng.randint(2, 8)))
    print("protocol-fuzz: seed %d, %d session(s), %d at a time, max_clients %d, buffer_size %d, binary %s"
          % (seed, len(indices), args.concurrency, max_clients, buffer_size, DAEMON), flush=True)
    print("protocol-fuzz: reproduce with: tests/fuzz/protocol_fuzz.py --seed %d --sessions %d"
          % (seed, args.sessions), flush=True)

    if not os.access(DAEMON, os.X_OK):
        print("protocol-fuzz: %s is not an executable; set ECHO_MPSERV" % DAEMON, file=sys.stderr)
        return 1

    # Every client here is 127.0.0.1 and every session needs its own
    # record: the Daemon lifts the per-source limits and the record budget.
    config = ('listen = [ "%s" ];\nmax_clients = %d;\nlog_level = "info";\n'
              "idle_timeout = 60;\nwrite_timeout = 60;\nmax_session_time = 600;\n"
              "max_session_bytes = 0;\nbuffer_size = %d;\ndrain_timeout = 5;\n"
              % (HOST, max_clients, buffer_size))

    failures = []
    started = time.monotonic()
    port = free_port()
    daemon = Daemon(config, args=["-p", str(port)], activation=False)
    # SIGTERM (meson's timeout) must also end the daemon: make it an exception.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        daemon.start()
        done = []
        skipped = 0
        lock = threading.Lock()

        def one(index):
            nonlocal skipped
            if time.monotonic() - started > args.seconds:
                with lock:
                    skipped += 1
                return
            s = Session(index, seed, port)
            try:
                s.run()
            except SessionFailure as e:
                with lock:
                    failures.append(str(e))
            except OSError as e:
                with lock:
                    failures.append("%s: %s" % (s.describe(), e))
            with lock:
                done.append(s)

        with ThreadPoolExecutor(max_workers=max(1, args.concurrency)) as pool:
            list(pool.map(one, indices))
        elapsed_sessions = time.monotonic() - started

        # Every worker has ended or is about to: the client side is closed.
        # Wait for the records (the parent writes one as it reaps a worker).
        deadline = time.monotonic() + 5 * SLOW
        while time.monotonic() < deadline:
            if len(daemon.records()) >= len(done):
                break
            time.sleep(0.05)
        status = daemon.stop(15)
        lines = daemon.log.snapshot()
    finally:
        daemon.cleanup()
    elapsed = time.monotonic() - started

    # -- the daemon's side ----------------------------------------------------
    if status != 0:
        failures.append("the daemon exited with status %s after SIGTERM (expected 0)" % status)
    records = parse_records(lines)
    by_port = collections.defaultdict(list)
    for r in records:
        client_port = int(r["client"].rsplit(":", 1)[1])
        by_port[client_port].append(r)
        if r["reason"] == "error":
            failures.append("record with reason error: %s" % r)
        if r["detail"] and "killed by" in r["detail"]:
            failures.append("a worker died by a signal: %s" % r)
        if r["local"] != "%s:%d" % (HOST, port):
            failures.append("record for another local address: %s" % r)
        if int(r["bytes_out"]) > int(r["bytes_in"]):
            failures.append("record with more bytes out than in: %s" % r)
    for line in lines:
        if re.search(r"killed by|^(emerg|alert|crit|error): ", line) and not RECORD_RE.search(line):
            failures.append("daemon log: %s" % line)
    if len(records) != len(done):
        failures.append("%d connection record(s) for %d session(s)" % (len(records), len(done)))
    for s in done:
        if s.client_port is None:
            continue
        candidates = by_port.get(s.client_port, [])
        if not candidates:
            failures.append("%s: no connection record for client port %d" % (s.describe(), s.client_port))
            continue
        if s.ending == "half-close":
            want = str(len(s.sent))
            match = [r for r in candidates if r["reason"] == "client-closed"
                     and r["bytes_in"] == want and r["bytes_out"] == want]
            if not match:
                failures.append("%s: expected a client-closed record with %s bytes in and out, got %s"
                                % (s.describe(), want, candidates))
                continue
            candidates.remove(match[0])
        else:
            # BYTES_SENT is what the client's TCP acknowledged: after a
            # reset it may fall short of what the client read (its
            # acknowledgement still on the way). A client that read every
            # echoed byte and then closed acknowledged them all with its FIN.
            exact = s.ending == "close" and s.got == len(s.sent)
            match = [r for r in candidates if r["reason"] in ("client-closed", "reset")
                     and int(r["bytes_in"]) <= len(s.sent) and (not exact or int(r["bytes_out"]) == s.got)]
            if not match:
                failures.append("%s: expected a client-closed or reset record with at most %d bytes in%s, got %s"
                                % (s.describe(), len(s.sent), " and %d out" % s.got if exact else "", candidates))
                continue
            candidates.remove(match[0])

    # -- figures --------------------------------------------------------------
    endings = collections.Counter(s.ending for s in done)
    reasons = collections.Counter(r["reason"] for r in records)
    sent = sum(len(s.sent) for s in done)
    verified = sum(s.got for s in done)
    half = [s for s in done if s.ending == "half-close"]
    print("protocol-fuzz: %d session(s) in %.1f s (%d not started: time budget), elapsed %.1f s in all"
          % (len(done), elapsed_sessions, skipped, elapsed))
    print("protocol-fuzz: endings: %s" % ", ".join("%s %d" % (e, endings[e]) for e in ENDINGS))
    print("protocol-fuzz: %d bytes sent, %d echoed bytes verified (%d in %d complete half-closed echoes)"
          % (sent, verified, sum(s.got for s in half), len(half)))
    print("protocol-fuzz: %d connection record(s); reasons: %s; daemon exit status %s"
          % (len(records), ", ".join("%s %d" % kv for kv in sorted(reasons.items())) or "none", status))
    if failures:
        print("protocol-fuzz: FAILED (seed %d), %d problem(s):" % (seed, len(failures)))
        for f in failures[:20]:
            print("  " + f)
        if len(failures) > 20:
            print("  ... and %d more" % (len(failures) - 20))
        return 1
    print("protocol-fuzz: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
