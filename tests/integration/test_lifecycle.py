#!/usr/bin/env python3
"""Process lifecycle: reaping, draining, reloading, descriptor hygiene and
systemd notifications, all against the real binary."""
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time

import procfs
from harness import (SLOW, WRAPPER, Daemon, LateReader, connect, echo_once, live_sessions, main, recv_all, recv_exact,
                     scaled, wait_until)


class Streamer(threading.Thread):
    """A client that keeps echoing random blocks and checks every byte."""

    def __init__(self, address, block=4096):
        super().__init__(daemon=True)
        self.sock = connect(address)
        self.block = block
        self.stop_flag = threading.Event()
        self.rounds = 0
        self.error = None

    def run(self):
        try:
            while not self.stop_flag.is_set():
                payload = os.urandom(self.block)
                self.sock.sendall(payload)
                if recv_exact(self.sock, self.block) != payload:
                    raise AssertionError("corrupted echo")
                self.rounds += 1
        except Exception as e:
            self.error = e

    def finish(self):
        """Stops, checks the session stayed healthy, closes cleanly."""
        self.stop_flag.set()
        self.join(10 * SLOW)
        assert self.error is None, f"live session broke: {self.error!r}"
        self.sock.shutdown(socket.SHUT_WR)
        assert self.sock.recv(1) == b""
        self.sock.close()
        return self.rounds


def start_streams(daemon, n):
    streams = [Streamer(daemon.address()) for _ in range(n)]
    for s in streams:
        s.start()
    wait_until(lambda: all(s.rounds > 10 for s in streams), 10, "sessions to run")
    return streams


def keep_going(streams, what):
    """Waits until every stream has echoed 10 more rounds."""
    before = [s.rounds for s in streams]
    wait_until(lambda: all(s.rounds > b + 10 for s, b in zip(streams, before)), 10, what)


def test_zero_zombies_after_1000_simultaneous_disconnects():
    n = scaled(1000, 50)
    with Daemon(f"max_clients = {n + 100}; log_level = \"info\";", backlog=4096) as d:
        clients = [connect(d.address(), timeout=30) for _ in range(n)]
        for s in clients:
            s.sendall(b"z")
        for s in clients:
            assert recv_exact(s, 1) == b"z"
        assert len(d.children()) == n
        for s in clients:  # all at once
            s.close()
        # The figure asked for: zombies one second later (scaled under
        # valgrind, where every worker runs a leak check as it exits).
        time.sleep(1.0 * SLOW)
        zombies = sum(1 for _, st in d.children() if st == "Z")
        live = len(d.children())
        print(f"   {n} clients disconnected at once: {zombies} zombies and {live} children "
              f"after {1.0 * SLOW:.0f} s")
        assert zombies == 0
        wait_until(lambda: not d.children(), 10, "every worker to be gone")
        recs = d.wait_records(n, timeout=30)
        assert len(recs) == n and len({r["pid"] for r in recs}) == n  # one record each
        assert d.stop() == 0


def test_sigterm_drains_live_sessions():
    # Long enough for the sessions to echo on and end by themselves, however
    # slow the machine: a session cut at the deadline would fail the test.
    drain = 10 * SLOW
    with Daemon(f"drain_timeout = {drain:g};") as d:
        streams = start_streams(d, 3)
        listener_inode = os.fstat(d.sockets[0].fileno()).st_ino
        d.signal(signal.SIGTERM)
        _, note = d.wait_notify("STOPPING=1")
        extend = round((drain + 2 + 5) * 1e6)  # the drain + kill grace 2 s + 5 s
        assert f"EXTEND_TIMEOUT_USEC={extend}" in note, note
        d.wait_log(r"Terminated: stopped accepting; draining 3 session\(s\)")
        # The daemon's copy of the listener is closed at once ...
        def listener_closed():
            for fd in d.fds():
                try:
                    if os.stat(f"/proc/{d.pid}/fd/{fd}").st_ino == listener_inode:
                        return False
                except FileNotFoundError:
                    pass
            return True
        wait_until(listener_closed, 5, "the listener to be closed")
        # ... while the live sessions keep working until their clients leave.
        keep_going(streams, "live sessions to keep echoing during the drain")
        for s in streams:
            s.finish()
        assert d.wait_exit() == 0
        d.wait_log(r"stopped: 3 session\(s\) drained, 0 cut")
        assert not d.children()
        print("   SIGTERM with 3 live sessions: 3 drained, 0 cut, exit 0")


def test_sigterm_cuts_after_drain_timeout():
    with Daemon("drain_timeout = 0.5; idle_timeout = 60;") as d:
        idle = live_sessions(d.address(), 2)
        start = time.monotonic()
        d.signal(signal.SIGTERM)
        assert d.wait_exit() == 0
        took = time.monotonic() - start
        d.wait_log(r"stopped: 0 session\(s\) drained, 2 cut")
        recs = d.wait_records(2)
        assert all(r["reason"] == "shutdown" for r in recs), recs
        assert not d.children()
        print(f"   2 idle sessions cut after the 0.5 s drain; exited in {took:.2f} s")
        for s in idle:
            s.close()


def ignored_signals(pid):
    """The set of signals the process ignores (SigIgn in /proc), minus the two
    real-time signals glibc and valgrind keep for themselves."""
    return procfs.signal_mask(pid, "SigIgn") - {32, 33}


def wait_end_of(client, what):
    """Reads to the end a session the daemon ends (EOF, or a reset when the
    worker died with data unread) within the client's timeout."""
    try:
        while client.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise AssertionError(f"the session did not end after {what}") from None
    finally:
        client.close()


def test_inherited_ignored_signals_are_reset():
    # A parent that ignores SIGCHLD would have the kernel reap workers before
    # they are recorded; an ignored SIGTERM would never reach the daemon,
    # nor end a worker (without the SIGKILL at the end of the kill grace).
    with Daemon("drain_timeout = 0.3;", ignored_signals=("CHLD", "TERM", "HUP")) as d:
        # SIGPIPE, and SIGUSR2 (a worker's "daemon gone" signal, nothing to the daemon).
        assert ignored_signals(d.pid) == {signal.SIGPIPE, signal.SIGUSR2}, ignored_signals(d.pid)
        for _ in range(5):
            assert echo_once(d.address()) == b"ping"
        d.wait_records(5)
        # SIGTERM reaches a worker: sent here, outside a drain, no SIGKILL
        # follows it, so the worker's own handling of SIGTERM ends the
        # session however long its exit takes (valgrind runs a leak check
        # first, which can outlast the daemon's 2 s kill grace at a cut).
        s = connect(d.address())
        s.sendall(b"t")
        recv_exact(s, 1)
        (worker, _), = d.children()
        assert signal.SIGTERM not in ignored_signals(worker), ignored_signals(worker)
        os.kill(worker, signal.SIGTERM)
        wait_end_of(s, "SIGTERM to its worker")
        rec = d.wait_records(6)[-1]
        assert rec["pid"] == str(worker), rec
        # The worker caught it and closed the session itself.
        assert rec["reason"] == "shutdown" and not rec["detail"], rec
        # ... and at the drain, the session is cut.
        idle = connect(d.address())
        idle.sendall(b"i")
        recv_exact(idle, 1)
        (worker, _), = d.children()
        d.signal(signal.SIGTERM)
        wait_end_of(idle, "SIGTERM to the daemon")
        assert d.wait_exit() == 0
        d.wait_log(r"stopped: 0 session\(s\) drained, 1 cut")
        rec = d.wait_records(7)[-1]
        assert rec["pid"] == str(worker) and rec["reason"] == "shutdown", rec
        # Unwrapped, the worker closes and exits well within the kill grace:
        # no SIGKILL was needed.
        assert WRAPPER or not rec["detail"], rec


def test_signals_during_the_start_up_do_not_kill():
    # A signal that reaches the daemon while it is still starting (reading
    # its configuration, sockets and credential: slow on a busy machine)
    # must not kill it; each takes effect once the daemon is ready. The
    # start is held deterministically: the daemon's stderr is a full pipe,
    # so it blocks writing its "listening on" line, after everything else.
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "stderr")
        os.mkfifo(fifo)
        pipe = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        for size in (4096, 1):
            try:
                while True:
                    os.write(pipe, b"x" * size)
            except BlockingIOError:
                pass
        d = Daemon("drain_timeout = 5;", prefix=["sh", "-c", 'exec 2>"$0" && exec "$@"', fifo])
        try:
            d.start(wait_ready=False)

            def writing_stderr():
                with open(f"/proc/{d.pid}/syscall") as f:
                    call = f.read().split()
                return call[:2] == ["1", "0x2"]  # write(2, ...), blocked
            wait_until(writing_stderr, 10, "the daemon to block on its log")
            assert not d.notes.snapshot()  # not ready yet
            for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM):
                os.kill(d.pid, sig)
            log = []

            def drain():
                while True:
                    try:
                        log.append(os.read(pipe, 65536))
                    except BlockingIOError:
                        if d.proc.poll() is not None:
                            return
                        select.select([pipe], [], [], 0.1)
            t = threading.Thread(target=drain, daemon=True)
            t.start()
            status = d.wait_exit()
            t.join(10)
            text = b"".join(log).decode(errors="replace").lstrip("x")
            if status == 0:
                d.wait_notify("STOPPING=1")  # sent, maybe not read yet
            notes = d.notes.snapshot()
            print(f"   SIGHUP, SIGUSR1, SIGTERM during the start-up: exit status {status}; "
                  f"{[n.split(chr(10))[0] for n in notes]}")
            assert status == 0, (status, text)
            assert any("READY=1" in n for n in notes), notes
            # Each signal did its job, in the kernel's order.
            at = [text.find(m) for m in ("listening on", "configuration reloaded", "summary:",
                                         "stopped accepting", "stopped: 0 session(s)")]
            assert -1 not in at and at == sorted(at), (at, text)
        finally:
            d.cleanup()
            os.close(pipe)


def test_second_sigterm_ends_drain_now():
    with Daemon("drain_timeout = 60;") as d:
        s = connect(d.address())
        s.sendall(b"i")
        recv_exact(s, 1)
        d.signal(signal.SIGTERM)
        # What echo-mpserv(8) promises: a signal received after the drain
        # began (two sent back to back may merge into one pending signal).
        d.wait_notify("STOPPING=1")
        d.wait_log(r"draining 1 session")
        d.signal(signal.SIGINT)
        assert d.wait_exit(timeout=10) == 0
        d.wait_log(r"stopped: 0 session\(s\) drained, 1 cut")
        s.close()


def test_reload_good_config_under_load():
    with Daemon("max_session_bytes = 0;") as d:
        streams = start_streams(d, 4)
        d.write_config("max_session_bytes = 3000; max_clients = 40;")
        n_before = len(d.notes.snapshot())
        d.signal(signal.SIGHUP)
        i, note = d.wait_notify("RELOADING=1", after=n_before)
        assert "MONOTONIC_USEC=" in note, note
        d.wait_notify("READY=1", after=i + 1)
        d.wait_log(r"configuration reloaded: max_clients 256 -> 40, max_session_bytes 0 -> 3000")
        # New connections get the new limit ...
        s = connect(d.address())
        s.sendall(b"n" * 5000)
        got = recv_all(s)
        assert len(got) == 3000, len(got)
        s.close()
        # ... live sessions keep the limit they started with, and are not reset.
        keep_going(streams, "old sessions to go past the new byte limit")
        total = sum(st.finish() for st in streams)
        recs = d.wait_records(5)
        old = [r for r in recs if int(r["bytes_in"]) > 3000]
        assert len(old) == 4 and all(r["reason"] == "client-closed" for r in old), recs
        print(f"   reload under load: 4 live sessions, {total} echoes, 0 reset")


def test_reload_broken_config_keeps_serving():
    with Daemon("idle_timeout = 30;") as d:
        streams = start_streams(d, 3)
        # Says the per-source keys itself, so the harness adds no lines above.
        d.write_config("max_clients_per_source = 0; source_rate = 0; idle_timeout = 30;\n"
                       "max_clients = \"many\";\n")
        n_before = len(d.notes.snapshot())
        d.signal(signal.SIGHUP)
        m = d.wait_log(r"reload failed, keeping the running configuration: (\S+):(\d+): (.*)")[0]
        assert m.group(1) == d.config_path and m.group(2) == "2", m.group(0)
        d.wait_notify("READY=1", after=n_before)
        assert echo_once(d.address(), b"still here") == b"still here"
        keep_going(streams, "sessions to keep going")
        for s in streams:
            s.finish()
        assert d.stop() == 0


def reload(d, text):
    """Writes the file, sends SIGHUP and returns the READY=1 notification
    that ends the reload (it carries STATUS=)."""
    d.write_config(text)
    n = len(d.notes.snapshot())
    d.signal(signal.SIGHUP)
    i, _ = d.wait_notify("RELOADING=1", after=n)
    return d.wait_notify("READY=1", after=i + 1)[1]


class DaemonOnDefaultPath:
    """The daemon as the unit runs it, with no -c: its file is the default
    path, here in a DefaultConfigDir. Standalone on a free port; its log
    (stderr) is read from a file."""

    def __init__(self, conf):
        from harness import DAEMON, free_port
        import subprocess
        self.port = free_port()
        self.log_path = os.path.join(conf.tmp.name, "log")
        with open(self.log_path, "w") as log:
            self.p = subprocess.Popen(conf.prefix() + [DAEMON, "-p", str(self.port)], stdout=log, stderr=log,
                                      stdin=subprocess.DEVNULL)
        wait_until(lambda: "listening on" in self.text() or self.p.poll() is not None, 20, "listening")
        assert self.p.poll() is None, self.text()

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def reload(self, what):
        n = self.text().count(what)
        self.p.send_signal(signal.SIGHUP)
        wait_until(lambda: self.text().count(what) > n, 20, what)

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        return self.p.wait(timeout=30 * SLOW)


def test_reload_never_trades_a_vanished_file_for_the_defaults():
    """No -c: a reload while the file is missing (renamed away to be
    edited) fails and keeps the running configuration, deny list included;
    a daemon that started on the defaults for want of a file stays on them,
    takes a file that appears, and from then on a missing file is an error
    again."""
    from harness import DefaultConfigDir, served
    failed = ("reload failed, keeping the running configuration: /etc/echo-mpserv/echo-mpserv.conf: "
              "No such file or directory")
    with DefaultConfigDir() as conf:
        conf.write('deny = [ "127.0.0.2/32" ];\nmax_clients_per_source = 0;\nsource_rate = 0;\n')
        d = DaemonOnDefaultPath(conf)
        try:
            address = ("127.0.0.1", d.port)
            assert not served(address, "127.0.0.2"), d.text()
            os.rename(conf.path, conf.path + ".bak")
            d.reload(failed)
            assert not served(address, "127.0.0.2"), d.text()
            assert served(address, "127.0.0.3")
            assert "-> []" not in d.text(), d.text()
            os.rename(conf.path + ".bak", conf.path)
            d.reload("configuration reloaded: no changes")
            assert not served(address, "127.0.0.2")
        finally:
            assert d.stop() == 0
        os.unlink(conf.path)
        d = DaemonOnDefaultPath(conf)
        try:
            address = ("127.0.0.1", d.port)
            assert "no configuration file at /etc/echo-mpserv/echo-mpserv.conf; using the defaults" in d.text()
            d.reload("no configuration file at /etc/echo-mpserv/echo-mpserv.conf; the defaults stay")
            assert failed not in d.text(), d.text()
            conf.write('deny = [ "127.0.0.2/32" ];\nmax_clients_per_source = 0;\nsource_rate = 0;\n')
            d.reload('deny [] -> [ "127.0.0.2" ]')
            assert not served(address, "127.0.0.2"), d.text()
            os.unlink(conf.path)
            d.reload(failed)
            assert not served(address, "127.0.0.2"), d.text()
        finally:
            assert d.stop() == 0


def test_restart_pending_until_restart():
    with Daemon("max_clients = 50;") as d:
        # Keys that need a restart change: said at the reload and in STATUS=.
        ready = reload(d, 'max_clients = 50; port = 7777; listen = [ "127.0.0.1" ];')
        assert "STATUS=" in ready and "restart pending" in ready, ready
        d.wait_log(r'configuration reloaded: port 7 -> 7777 \(pending\), '
                   r'listen \[ "::" \] -> \[ "127.0.0.1" \] \(pending\)$')
        # The sockets are passed (as systemd does): a socket restart applies them.
        pending = (r"warning: restart pending: the file changes port, listen; port and listen take effect after "
                   r"'systemctl daemon-reload && systemctl restart echo-mpserv\.socket'")
        d.wait_log(pending)
        # A later, unrelated reload: still pending, compared with the values
        # the daemon started with.
        ready = reload(d, 'max_clients = 40; port = 7777; listen = [ "127.0.0.1" ];')
        assert "restart pending" in ready, ready
        d.wait_log(r"configuration reloaded: port 7 -> 7777 \(pending\), listen .*, max_clients 50 -> 40$")
        d.wait_log(pending, count=2)
        # A failed reload changes nothing, and says so too.
        ready = reload(d, "max_clients = 0;")
        assert "restart pending" in ready, ready
        d.wait_log(pending, count=3)
        # The summary carries it.
        d.signal(signal.SIGUSR1)
        d.wait_log(r"summary: .*; restart pending;")
        # New sessions still work, and STATUS= updates keep saying it.
        n = len(d.notes.snapshot())
        assert echo_once(d.address()) == b"ping"
        _, note = d.wait_notify("STATUS=0 active (cap 40), 1 served", after=n)
        assert "restart pending" in note, note
        # Back to the running values: no longer pending.
        ready = reload(d, "max_clients = 40;")
        assert "restart pending" not in ready, ready
        d.wait_log(r"notice: restart no longer pending")
        d.wait_log(r"configuration reloaded: no changes")
        assert len(d.log_lines(pending)) == 3
        assert d.stop() == 0
        print("   port and listen changed, then max_clients, a broken file, then reverted: "
              "restart pending said 3 times, then cleared")


def test_command_line_overrides_hold_across_reloads():
    # -p and --log-level apply to every reloaded file as at start: the file
    # not naming them is no change, and no restart is pending.
    with Daemon("max_clients = 50;", args=["-p", "7777", "--log-level", "debug"]) as d:
        ready = reload(d, "max_clients = 40;")
        assert "restart pending" not in ready, ready
        d.wait_log(r"configuration reloaded: max_clients 50 -> 40$")
        assert not d.log_lines(r"\(pending\)|restart pending"), d.log.snapshot()
        assert d.stop() == 0


def test_failed_reload_logs_one_record_per_error():
    with Daemon("idle_timeout = 30;") as d:
        reload(d, "max_clients_per_source = 0; source_rate = 0;\nmax_clients = \"many\";\ncolour = 1;\n")
        rx = r"^error: reload failed, keeping the running configuration: (\S+):(\d+): (.*)$"
        found = d.wait_log(rx, count=2)
        assert [(m.group(1), m.group(2)) for m in found] == [(d.config_path, "2"), (d.config_path, "3")], found
        assert "unknown key 'colour'" in found[1].group(3)
        # Nothing else of the diagnostics went to the log unlabelled.
        assert not d.log_lines(r"^\S+:3: unknown key"), d.log.snapshot()
        assert echo_once(d.address()) == b"ping"
        assert d.stop() == 0


def test_descriptor_hygiene():
    with Daemon() as d:
        # stdio, the listener, the notification socket (never in a worker),
        # the signalfd and epoll; compare settled sets.
        wait_until(lambda: d.fds() == [0, 1, 2, 3, 4, 5, 6], 5, "the parent's fds to settle")
        base = d.fds()
        s = connect(d.address())
        s.sendall(b"a")
        recv_exact(s, 1)
        (worker, _), = d.children()
        fds = d.fds(worker)
        assert fds[-1] == 3 and len(fds) <= 4, fds  # stdio and the client, nothing else
        target = os.readlink(f"/proc/{worker}/fd/3")
        listener = os.fstat(d.sockets[0].fileno()).st_ino
        assert target.startswith("socket:") and str(listener) not in target, target
        peer_port = s.getsockname()[1]
        with open("/proc/net/tcp") as f:  # fd 3 is this very client's connection
            inode = target[len("socket:["):-1]
            rows = [line.split() for line in f.readlines()[1:]]
            assert any(r[9] == inode and int(r[2].split(":")[1], 16) == peer_port for r in rows)
        s.close()
        n = scaled(300, 30)
        for _ in range(n):
            assert echo_once(d.address(), b"fd") == b"fd"
        wait_until(lambda: not d.children(), 10, "workers to exit")
        wait_until(lambda: d.fds() == base, 5, f"the parent's fds to return to {base}")
        print(f"   parent fds stable at {len(base)} across {n} connections; worker holds {len(fds)}")


def test_status_and_watchdog():
    d = Daemon(env={"WATCHDOG_USEC": "200000"})
    try:
        d.start(wait_ready=False)
        _, ready = d.wait_notify("READY=1")
        assert "STATUS=0 active (cap 256), 0 served, 0 refused" in ready, ready
        # Without WATCHDOG_PID the interval still applies (sd_watchdog_enabled).
        i, _ = d.wait_notify("WATCHDOG=1")
        d.wait_notify("WATCHDOG=1", after=i + 1)
        s = connect(d.address())
        s.sendall(b"x")
        recv_exact(s, 1)
        d.wait_notify("STATUS=1 active (cap 256), 1 served")
        s.close()
        d.wait_notify("STATUS=0 active (cap 256), 1 served")
        assert d.stop() == 0
    finally:
        d.cleanup()


def test_lost_notifications_are_logged():
    # A notification systemd cannot take is never silent (nor a SIGPIPE):
    # failed sends are counted and logged, at most one record a second.
    with Daemon(env={"WATCHDOG_USEC": "100000"}) as d:
        d.wait_notify("WATCHDOG=1")
        d.notify.shutdown(socket.SHUT_RDWR)  # sends now fail with EPIPE
        m = d.wait_log(r"(\d+) notification\(s\) to systemd could not be sent .*: Broken pipe", count=2)
        t0 = time.monotonic()
        time.sleep(2)
        lines = len(d.log_lines("could not be sent")) - 2
        took = time.monotonic() - t0
        print(f"   notifications lost: {lines} record(s) in {took:.1f} s, the first two counting "
              f"{[x.group(1) for x in m]}")
        assert lines <= took + 1, (lines, took)
        assert d.stop() == 0


def test_signals_for_the_daemon_spare_sessions():
    # Ctrl-C in a terminal, a hangup, or `systemctl kill -s HUP` reach the
    # whole process group or unit: the daemon reloads, reports or drains,
    # and live sessions keep echoing through all of it (a drain long enough
    # for that however slow the machine).
    with Daemon(f"drain_timeout = {10 * SLOW:g};") as d:
        streams = start_streams(d, 3)
        workers = sorted(p for p, _ in d.children())
        os.killpg(d.pid, signal.SIGHUP)
        d.wait_log(r"configuration reloaded")
        keep_going(streams, "sessions to echo after SIGHUP to the process group")
        os.killpg(d.pid, signal.SIGUSR1)
        d.wait_log(r"summary: ")
        keep_going(streams, "sessions to echo after SIGUSR1 to the process group")
        os.killpg(d.pid, signal.SIGINT)
        d.wait_log(r"draining 3 session\(s\)")
        keep_going(streams, "sessions to echo during a drain begun by SIGINT to the process group")
        assert sorted(p for p, _ in d.children()) == workers
        for s in streams:
            s.finish()
        assert d.wait_exit() == 0
        d.wait_log(r"stopped: 3 session\(s\) drained, 0 cut")
        recs = d.wait_records(3)
        assert all(r["reason"] == "client-closed" for r in recs), recs
        print("   SIGHUP, SIGUSR1, SIGINT to the process group: 3 sessions echoed on; 3 drained, 0 cut")


def test_drained_means_ended_by_itself():
    # During a drain, a session cut by a SIGTERM (ours at the end of the
    # drain, or anyone's) or killed counts as cut; only one that ended by
    # itself counts as drained. (The drain outlasts the test on a slow machine.)
    with Daemon(f"drain_timeout = {10 * SLOW:g};") as d:
        clients = [connect(d.address()) for _ in range(3)]
        for c in clients:
            c.sendall(b"d")
            assert recv_exact(c, 1) == b"d"
        workers = sorted(p for p, _ in d.children())
        d.signal(signal.SIGTERM)
        d.wait_log(r"draining 3 session\(s\)")
        os.kill(workers[0], signal.SIGTERM)   # as `systemctl kill` does to every process
        d.wait_records(1)
        os.kill(workers[1], signal.SIGKILL)
        recs = d.wait_records(2)
        for c in clients:
            c.close()
        assert d.wait_exit() == 0
        line = d.wait_log(r"stopped: \d+ session\(s\) drained, \d+ cut")[0].group(0)
        print(f"   a session cut by SIGTERM, one killed, one closed by its client: {line}")
        assert "stopped: 1 session(s) drained, 2 cut" in line, line
        assert recs[0]["reason"] == "shutdown" and not recs[0]["detail"], recs  # it closed itself
        assert "killed by SIGKILL" in recs[1]["detail"], recs


def test_cut_delivers_what_it_counts():
    # The cut at the end of a drain, while the client is still sending and
    # has not read its echo: it gets exactly what the record counts, then an
    # orderly end.
    with Daemon("drain_timeout = 0.3; write_timeout = 10; socket_buffer = 65536;") as d:
        c = LateReader(d.address())
        wait_until(lambda: c.sent > 1 << 20, 10, "the client to be sending")
        # The kernel takes that much before the daemon accepted: the cut
        # needs a worker, and a SIGTERM before it exists finds none.
        wait_until(lambda: d.children(), 10, "the worker")
        d.signal(signal.SIGTERM)
        c.wait_server_closed(d.port)
        got, reset = c.read_to_end()
        assert d.wait_exit() == 0
        rec = d.wait_records(1)[0]
        line = d.wait_log(r"stopped: .*")[0].group(0)
        print(f"   cut: client received {got} then {'a reset' if reset else 'EOF'}; record: {rec['reason']}, "
              f"{rec['bytes_out']} bytes out; {line}")
        assert rec["reason"] == "shutdown" and not rec["detail"], rec
        assert not reset, "the connection was reset"
        assert got == int(rec["bytes_out"]), (got, rec)
        assert "0 session(s) drained, 1 cut" in line, line


def fill_datagram_queue(path):
    """Fills the receive queue of the datagram socket at `path` as a busy
    PID 1 lets it fill; returns how many datagrams it took."""
    other = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    other.setblocking(False)
    queued = 0
    try:
        while queued < 100000:
            other.sendto(b"WATCHDOG=1", path)
            queued += 1
    except BlockingIOError:
        pass
    other.close()
    return queued


def read_until(sock, prefix):
    """Reads the queue, as PID 1 does once it is back, up to a datagram
    starting with `prefix`; returns it (None when none came in time)."""
    sock.settimeout(5 * SLOW)
    try:
        while True:
            m = sock.recv(4096)
            if m.startswith(prefix):
                return m
    except socket.timeout:
        return None


def test_state_notifications_survive_a_congested_notify_socket():
    # PID 1 reads its notification socket from its event loop; while it is
    # busy (a long daemon-reload, a boot storm) the queue fills. READY=1 and
    # STOPPING=1 wait for room (up to 5 s), as sd_notify() does, rather than
    # being dropped: systemd would kill the unit at TimeoutStartSec=. PID 1
    # stays busy here until the daemon has logged what comes just before
    # the notification, and a moment more (not scaled: it must stay well
    # inside the 5 s the daemon waits), or until the daemon reports a loss.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "notify")
        pid1 = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        pid1.bind(path)
        d = Daemon(env={"NOTIFY_SOCKET": path})
        try:
            queued = fill_datagram_queue(path)
            d.start(wait_ready=False)
            d.wait_log(r"started: ")
            _busy_for(d, 1.0)
            ready = read_until(pid1, b"READY=1")
            fill_datagram_queue(path)
            d.signal(signal.SIGTERM)
            d.wait_log(r": stopped accepting")
            _busy_for(d, 1.0)
            stopping = read_until(pid1, b"STOPPING=1")
            assert d.wait_exit() == 0
            lost = [m.group(0) for m in d.log_lines(r"notification\(s\) to systemd could not be sent.*")]
            print(f"   {queued} datagrams queued before the start; READY=1 arrived: {ready is not None}, "
                  f"STOPPING=1 arrived: {stopping is not None}; losses logged: {lost}")
            assert ready is not None, "READY=1 was dropped"
            assert stopping is not None, "STOPPING=1 was dropped"
            assert not any("READY" in x or "STOPPING" in x for x in lost), lost
        finally:
            d.cleanup()
            pid1.close()


def _busy_for(d, seconds):
    """PID 1 busy: `seconds` pass, or the daemon logs a lost notification."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not d.log_lines("could not be sent"):
        time.sleep(0.02)


def test_stale_notify_socket_does_not_stop_the_daemon():
    # A NOTIFY_SOCKET that names nothing (a stale variable inherited from a
    # wrapper, a removed path, a plain file, an abstract name nobody bound,
    # a relative name) is warned about once and the daemon serves without
    # notifications, as libsystemd users do. A path that comes to exist
    # later gets the next state message (STOPPING=1 here).
    with tempfile.TemporaryDirectory() as tmp:
        plain = os.path.join(tmp, "plain")
        open(plain, "w").close()
        gone = os.path.join(tmp, "gone")
        for value in (gone, plain, "relative", "@echo-mpserv-no-such-name-%d" % os.getpid()):
            d = Daemon(env={"NOTIFY_SOCKET": value})
            try:
                d.start(wait_ready=False)
                warning = d.wait_log(r"\$NOTIFY_SOCKET.*")[0].group(0)
                d.wait_log(r"started: ")
                assert echo_once(d.address(), b"on") == b"on"
                late = None
                if value == gone:
                    late = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    late.bind(gone)
                assert d.stop() == 0
                print(f"   NOTIFY_SOCKET={value!r}: served; {warning!r}")
                if late:
                    late.settimeout(5 * SLOW)
                    assert late.recv(4096).startswith(b"STOPPING=1")
                    late.close()
            finally:
                d.cleanup()


# As systemd starts a service: SYSTEMD_EXEC_PID is the daemon's own pid.
AS_A_SERVICE = ["bash", "-c", 'export SYSTEMD_EXEC_PID=$$; exec "$@"', "bash"]
INVOCATION = {"INVOCATION_ID": "0123456789abcdef0123456789abcdef"}
BARE_WORD = "log_level = info: a string value must be in double quotes"


def accept_queue(port):
    """Connections waiting in the listener's accept queue (ss: Recv-Q)."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return sum(int(line.split()[1]) for line in out.splitlines() if line.strip())


def test_broken_config_under_systemd_waits_for_a_good_reload():
    """Started by systemd on a passed socket for a waiting client, with a
    file that does not load, the daemon neither exits (systemd would start it again for the queued
    client until the socket failed) nor serves: it says why in STATUS= and
    the log, leaves clients in the backlog, and serves them once a reload
    loads the file. A reload of a file still broken keeps it waiting."""
    broken = "port = 7;\nlog_level = info;\n"
    with Daemon(broken, prefix=AS_A_SERVICE, env=INVOCATION, queued=1) as d:
        status = d.wait_notify("Not serving, the configuration does not load: ")[1]
        assert BARE_WORD in status and "systemctl reload echo-mpserv" in status, status
        d.wait_log(r"not serving: the configuration does not load; clients wait in the socket's queue")
        assert d.log_lines(re.escape(BARE_WORD)), d.log.snapshot()
        client = d.queued[0]
        client.sendall(b"queued")
        port = d.address()[1]
        wait_until(lambda: accept_queue(port) == 1, 10, "the client to wait in the accept queue")
        n = len(d.notes.snapshot())
        d.signal(signal.SIGHUP)                         # still broken: still waiting
        d.wait_log(r"reload failed, still not serving: .*" + re.escape(BARE_WORD))
        d.wait_notify("Not serving, the configuration does not load: ", after=n)
        assert d.proc.poll() is None and accept_queue(port) == 1
        d.write_config("port = 7;\nlog_level = \"info\";\n")
        n = len(d.notes.snapshot())
        d.signal(signal.SIGHUP)
        assert recv_exact(client, 6) == b"queued"       # the queued client is served
        d.wait_notify("READY=1", after=n)
        d.wait_log(r"configuration loaded from .*; starting to serve")
        client.close()
        assert echo_once(d.address(), b"next") == b"next"
        assert d.stop() == 0


def test_broken_config_stopped_while_waiting_exits_78():
    """Stopped before a configuration loaded: status 78 (configuration),
    which RestartPreventExitStatus= lists, so systemd does not loop."""
    with Daemon("port = 7;\nport = 8;\n", prefix=AS_A_SERVICE, env=INVOCATION, queued=1) as d:
        d.wait_notify("Not serving, the configuration does not load: ")
        assert d.stop() == 78
        d.wait_log(r"stopping; never served, the configuration did not load")


def test_broken_config_under_systemd_with_no_client_waiting_exits_78():
    """Started by systemd with no client waiting on its sockets (systemctl
    restart, an upgrade's try-restart), a daemon whose file does not load
    exits 78 at once, so the restart reports the failure; nothing would
    start it again, and the next client starts it anew. The same start with
    a client waiting waits (see above)."""
    d = Daemon("port = 7;\nlog_level = info;\n", prefix=AS_A_SERVICE, env=INVOCATION)
    try:
        d.start(wait_ready=False)
        status = d.wait_exit()
        assert status == 78, (status, d.log.snapshot())
        d.wait_log(re.escape(BARE_WORD))
        for t in d.threads:  # everything it wrote and sent is in
            t.join(10 * SLOW)
        assert not d.log_lines("not serving"), d.log.snapshot()
        assert not any("READY=1" in n for n in d.notes.snapshot()), d.notes.snapshot()
    finally:
        d.cleanup()


if __name__ == "__main__":
    main([test_zero_zombies_after_1000_simultaneous_disconnects, test_sigterm_drains_live_sessions,
          test_reload_never_trades_a_vanished_file_for_the_defaults,
          test_sigterm_cuts_after_drain_timeout, test_inherited_ignored_signals_are_reset,
          test_signals_during_the_start_up_do_not_kill, test_second_sigterm_ends_drain_now, test_lost_notifications_are_logged,
          test_state_notifications_survive_a_congested_notify_socket,
          test_stale_notify_socket_does_not_stop_the_daemon,
          test_reload_good_config_under_load, test_reload_broken_config_keeps_serving,
          test_restart_pending_until_restart, test_command_line_overrides_hold_across_reloads,
          test_failed_reload_logs_one_record_per_error,
          test_descriptor_hygiene, test_status_and_watchdog, test_signals_for_the_daemon_spare_sessions,
          test_drained_means_ended_by_itself, test_cut_delivers_what_it_counts,
          test_broken_config_under_systemd_waits_for_a_good_reload, test_broken_config_stopped_while_waiting_exits_78,
          test_broken_config_under_systemd_with_no_client_waiting_exits_78])
