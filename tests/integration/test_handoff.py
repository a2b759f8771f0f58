#!/usr/bin/env python3
"""Restarts without a stall: workers outlive their daemon.

A worker whose daemon is gone (killed, or handed off at a restart) finishes
its session within drain_timeout and writes its own record; under systemd,
SIGTERM hands the sessions off and the daemon leaves at once, so the next
daemon accepts from the same listener while the old sessions go on."""

import os
import re
import signal
import socket
import struct
import subprocess
import time

import procfs
from harness import (SLOW, Daemon, connect, live_sessions, main, recv_all, recv_exact, served, wait_until)


def echo(s, payload):
    s.sendall(payload)
    assert recv_exact(s, len(payload)) == payload


def kill_quietly(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def alive(pid):
    """Running: neither gone nor a zombie."""
    return procfs.state(pid) not in (None, "Z")


def test_worker_outlives_a_killed_daemon():
    with Daemon("drain_timeout = 60; idle_timeout = 60;") as d:
        s = connect(d.address())
        echo(s, b"before")
        workers = [pid for pid, _ in d.children()]
        assert len(workers) == 1
        try:
            d.signal(signal.SIGKILL)
            d.wait_exit()
            # The session goes on undisturbed, then ends as the client says.
            for i in range(20):
                echo(s, b"after %d " % i * 100)
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == b""
            s.close()
            # Its record, written by the worker itself.
            rec = d.wait_records(1)[0]
            assert rec["reason"] == "client-closed" and int(rec["pid"]) == workers[0], rec
            assert int(rec["bytes_in"]) == 6 + sum(len(b"after %d " % i * 100) for i in range(20)), rec
            assert rec["bytes_in"] == rec["bytes_out"], rec
            wait_until(lambda: not alive(workers[0]), 10, "the worker to end")
            print(f"   daemon killed: worker {workers[0]} served on and wrote its record: "
                  f"{rec['reason']}, {rec['bytes_in']} bytes")
        finally:
            kill_quietly(workers)


def test_orphaned_worker_ends_at_drain_timeout():
    drain = 1.0 * SLOW
    with Daemon(f"drain_timeout = {drain:g}; idle_timeout = 600;") as d:
        s = connect(d.address(), timeout=30)
        echo(s, b"x")
        workers = [pid for pid, _ in d.children()]
        try:
            d.signal(signal.SIGKILL)
            d.wait_exit()
            killed = time.monotonic()
            # An idle session: only the drain can end it (idle_timeout is 600 s).
            assert recv_all(s) == b""
            took = time.monotonic() - killed
            rec = d.wait_records(1)[0]
            assert rec["reason"] == "shutdown" and int(rec["pid"]) == workers[0], rec
            assert took < drain + 2 * SLOW, took
            print(f"   idle session of a killed daemon ended after {took:.2f} s "
                  f"(drain_timeout {drain:g} s): {rec['reason']}")
        finally:
            kill_quietly(workers)


def test_sigterm_under_systemd_hands_off():
    drain = 30 * SLOW
    old = Daemon(f"drain_timeout = {drain:g}; idle_timeout = 60;", service=True)
    new = None
    workers = []
    try:
        old.start()
        s = connect(old.address())
        echo(s, b"long session ")
        workers = [pid for pid, _ in old.children()]
        old.signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert old.wait_exit(timeout=5) == 0
        left = time.monotonic() - t0
        # Its last word to systemd says what happened (systemctl status).
        old.wait_notify("Stopped; 1 session(s) handed over")
        # The next daemon takes the same listener at once.
        new = Daemon(f"drain_timeout = {drain:g};", passed_fds=[old.sockets[0].fileno()], service=True)
        new.start()
        t1 = time.monotonic()
        with connect(old.address()) as c:
            echo(c, b"new client")
        served = time.monotonic() - t1
        # The old session goes on undisturbed and writes its own record.
        for i in range(20):
            echo(s, b"still here %d " % i)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b""
        s.close()
        rec = [r for r in old.wait_records(1) if int(r["pid"]) == workers[0]]
        assert rec and rec[0]["reason"] == "client-closed", rec
        assert rec[0]["bytes_in"] == rec[0]["bytes_out"], rec
        print(f"   SIGTERM under systemd with a live session: daemon left after {left:.3f} s "
              f"(drain_timeout {drain:g} s), the next one served a new client in {served:.3f} s, "
              f"the old session ended by its client and was recorded by its worker")
    except Exception:
        print("\n".join(old.log.snapshot()))
        raise
    finally:
        tidy([], workers, new, old)


def test_standalone_sigterm_still_drains_in_place():
    with Daemon("drain_timeout = 30; idle_timeout = 60;") as d:
        s = connect(d.address())
        echo(s, b"x")
        d.signal(signal.SIGTERM)
        d.wait_log(r"draining 1 session\(s\)")
        assert d.proc.poll() is None  # still there: the terminal waits for the sessions
        echo(s, b"y")
        s.close()
        assert d.wait_exit() == 0
        d.wait_log(r"stopped: 1 session\(s\) drained, 0 cut")


def hand_off(old):
    """SIGTERM to a daemon started as a service: it leaves at once; returns
    the file it stored for the next daemon."""
    old.signal(signal.SIGTERM)
    assert old.wait_exit(timeout=5) == 0
    stored = [fd for name, fd in old.stored_fds if name == "handoff"]
    assert len(stored) == 1, old.stored_fds
    return stored[0]


def tidy(clients, workers, *daemons):
    """A test's end, whatever it reached: its clients closed, the workers
    it kept killed, each daemon it started cleaned up (None: not started)."""
    for c in clients:
        c.close()
    kill_quietly(workers)
    for d in daemons:
        if d:
            d.cleanup()


def not_served(client, seconds=0.5):
    """Whether a client that sent a byte still waits after seconds (times
    SLOW): neither echoed nor closed, held in the backlog by the cap. A
    negative can only be shown by waiting; what each test shows next (the
    client served once a place is free) is an event."""
    client.settimeout(seconds * SLOW)
    try:
        client.recv(1)
    except socket.timeout:
        return True
    return False


def successor(listener, config, handoff_fd):
    return Daemon(config, passed_fds=[listener.fileno(), handoff_fd], names=["echo", "handoff"], service=True)


def test_adopted_sessions_keep_the_limits():
    """max_clients = 3, max_clients_per_source = 2: two sessions from one
    source, handed over. The next daemon refuses that source a third, serves
    one more from another source, and then is at the cap until an adopted
    session ends."""
    config = "drain_timeout = 60; idle_timeout = 60; max_clients = 3; max_clients_per_source = 2; source_rate = 0;"
    old, new, workers, clients = Daemon(config, service=True), None, [], []
    try:
        old.start()
        clients = live_sessions(old.address(), 2)
        workers = [pid for pid, _ in old.children()]
        fd = hand_off(old)
        new = successor(old.sockets[0], config, fd)
        new.start()
        new.wait_log(r"adopted 2 session\(s\) of the previous daemon.*; 0 had ended.*, 0 entries ignored")
        assert not served(old.address(), source="127.0.0.1")  # its source has 2 already
        third = connect(old.address(), source="127.0.0.2")
        echo(third, b"third")
        clients.append(third)
        new.wait_notify("3 active (cap 3, AT CAP)")
        waiting = connect(old.address(), source="127.0.0.3")  # queued in the backlog
        waiting.sendall(b"w")
        clients.append(waiting)
        # An adopted session ends: its place is free, the waiting client is served.
        clients[0].close()
        assert recv_exact(waiting, 1) == b"w"
        # Every old session is still the old worker's: the one left goes on.
        echo(clients[1], b"old session")
        print("   2 sessions handed over under max_clients 3 / per source 2: the same source refused, "
              "one more served, the next served only when an adopted session ended")
    finally:
        tidy(clients, workers, new, old)


def test_second_restart_hands_adopted_sessions_on():
    config = "drain_timeout = 60; idle_timeout = 60; max_clients = 2; max_clients_per_source = 0; source_rate = 0;"
    first, second, third, workers = Daemon(config, service=True), None, None, []
    try:
        first.start()
        s = connect(first.address())
        echo(s, b"one")
        workers = [pid for pid, _ in first.children()]
        second = successor(first.sockets[0], config, hand_off(first))
        second.start()
        second.wait_log(r"adopted 1 session\(s\)")
        # The second daemon lists the adopted session with the start time it
        # was handed (it may not see it in /proc under systemd's sandbox),
        # and says how many it listed.
        listed = hand_off(second)
        assert handoff_entries(listed) == [(workers[0], procfs.start_time(workers[0]))], handoff_entries(listed)
        second.wait_log(r"handing 1 session\(s\) over.*; 1 listed for the next daemon")
        third = successor(first.sockets[0], config, listed)
        third.start()
        third.wait_log(r"adopted 1 session\(s\)")
        with connect(first.address()) as c:
            echo(c, b"new")
        third.wait_notify("2 active (cap 2, AT CAP)")
        echo(s, b"still the first worker")
        print("   a session adopted twice is still counted by the third daemon")
    finally:
        tidy([], workers, third, second, first)


def handoff_file(entries, magic=0x48504d45, version=1, entry_size=48, count=None):
    data = struct.pack("<IIII", magic, version, entry_size, len(entries) if count is None else count)
    for pid, start, family in entries:
        sa = struct.pack("<H", family) + struct.pack(">H", 7) + socket.inet_aton("127.0.0.1")
        data += struct.pack("<iIQ", pid, 0, start) + sa.ljust(28, b"\0") + b"\0" * 4
    fd = os.memfd_create("handoff")
    os.write(fd, data)
    return fd


def handoff_entries(fd):
    """(pid, start time) of each entry of a stored list of sessions (pid 0: an empty slot)."""
    data = os.pread(fd, 1 << 24, 0)
    magic, version, size, count = struct.unpack_from("<IIII", data)
    assert (magic, version, size, len(data)) == (0x48504d45, 1, 48, 16 + 48 * count), (magic, version, size)
    entries = [struct.unpack_from("<iIQ", data, 16 + 48 * i)[0::2] for i in range(count)]
    return [e for e in entries if e[0] != 0]



def test_hostile_handoff_file_is_ignored():
    me = os.getpid()
    cases = {
        "garbage": (b"\xff" * 100, r"cannot be read"),
        "truncated": (None, r"cannot be read"),
        "wrong count": (None, r"cannot be read"),
        "not ours": (None, r"adopted 0 session\(s\).*; 2 had ended.*, 1 entries ignored"),
    }
    for name, (raw, expect) in cases.items():
        if name == "garbage":
            fd = os.memfd_create("h")
            os.write(fd, raw)
        elif name == "truncated":
            full = handoff_file([(me, procfs.start_time(me), socket.AF_INET)])
            data = os.pread(full, 1000, 0)
            os.close(full)
            fd = os.memfd_create("h")
            os.write(fd, data[:-5])
        elif name == "wrong count":
            fd = handoff_file([(me, procfs.start_time(me), socket.AF_INET)], count=1 << 30)
        else:
            # A live process with the wrong start time, a pid that is no
            # process, an address of another family, and pid 0 (an empty
            # slot of a live list, skipped).
            fd = handoff_file([(me, procfs.start_time(me) + 1, socket.AF_INET), (0, 0, socket.AF_INET),
                               (me, procfs.start_time(me), socket.AF_UNIX), (4194304 - 1, 1, socket.AF_INET)])
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(16)
        d = Daemon("max_clients = 1;", passed_fds=[lst.fileno(), fd], names=["echo", "handoff"])
        try:
            d.start()
            d.wait_log(expect)
            assert served(lst.getsockname())
            print(f"   {name}: {d.log_lines(r'adopted|cannot be read')[0].group(0)[:60]}..., served")
        finally:
            d.cleanup()
            lst.close()
            os.close(fd)


def test_stray_orphan_signal_changes_nothing():
    """SIGUSR2 (the signal a worker gets when its daemon exits) sent by
    anyone else, to the worker and to the daemon (systemctl kill -s USR2
    without --kill-who=main): the daemon goes on, the session is not cut
    at drain_timeout, and it is recorded once, by the daemon."""
    drain = 0.5 * SLOW
    with Daemon(f"drain_timeout = {drain:g}; idle_timeout = 60;") as d:
        s = connect(d.address())
        echo(s, b"x")
        (worker,) = [pid for pid, _ in d.children()]
        os.kill(worker, signal.SIGUSR2)
        d.signal(signal.SIGUSR2)
        # Past the drain a real orphan would get: still served, by the same worker.
        deadline = time.monotonic() + drain + 1.0 * SLOW
        while time.monotonic() < deadline:
            echo(s, b"still here")
            time.sleep(0.05)
        assert d.proc.poll() is None, "SIGUSR2 killed the daemon"
        assert [pid for pid, _ in d.children()] == [worker]
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b""
        s.close()
        rec = d.wait_records(1)
        assert len(rec) == 1 and rec[0]["reason"] == "client-closed", rec
        # A second record would come from the worker at its exit, before the daemon reaps it.
        wait_until(lambda: not d.children(), 10, "the worker to be reaped")
        served(d.address())
        assert len([r for r in d.records() if int(r["pid"]) == worker]) == 1, d.records()
        print(f"   SIGUSR2 to the daemon and worker {worker}: both went on, the session ran "
              f"past drain_timeout ({drain:g} s), one record")


def test_stray_orphan_signals_do_not_extend_the_drain():
    """Once the daemon is gone, SIGUSR2 sent again and again by someone else
    (systemctl kill -s USR2 reaches every process of the unit) does not
    re-arm the orphan's drain: its idle session still ends at drain_timeout
    after the daemon left."""
    drain = 1.0 * SLOW
    with Daemon(f"drain_timeout = {drain:g}; idle_timeout = 600;") as d:
        s = connect(d.address(), timeout=30)
        echo(s, b"x")
        (worker,) = [pid for pid, _ in d.children()]
        try:
            d.signal(signal.SIGKILL)
            d.wait_exit()
            killed = time.monotonic()
            # A stray signal every tenth of the drain, for up to 4 drains.
            while alive(worker) and time.monotonic() - killed < 4 * drain + 2 * SLOW:
                try:
                    os.kill(worker, signal.SIGUSR2)
                except ProcessLookupError:
                    break
                time.sleep(drain / 10)
            took = time.monotonic() - killed
            assert not alive(worker), f"the orphan still runs {took:.1f} s after its daemon left"
            assert recv_all(s) == b""
            rec = d.wait_records(1)[0]
            assert rec["reason"] == "shutdown" and int(rec["pid"]) == worker, rec
            assert took < drain + 2 * SLOW, took
            print(f"   stray SIGUSR2 every {drain / 10:.2f} s: the orphan still ended after {took:.2f} s "
                  f"(drain_timeout {drain:g} s)")
        finally:
            kill_quietly([worker])


def test_adoption_past_the_descriptor_limit():
    """More sessions handed over than the next daemon has descriptors for
    a pidfd each (RLIMIT_NOFILE 48, 60 sessions): every one still counts
    under max_clients, and the cap is given back as they end."""
    n = 60
    config = f"drain_timeout = 60; idle_timeout = 60; max_clients = {n}; max_clients_per_source = 0; source_rate = 0;"
    old, new, clients, workers = Daemon(config, service=True), None, [], []
    try:
        old.start()
        for _ in range(n):
            clients.append(connect(old.address()))
            echo(clients[-1], b"x")
        workers = [pid for pid, _ in old.children()]
        assert len(workers) == n
        new = Daemon(config, passed_fds=[old.sockets[0].fileno(), hand_off(old)], names=["echo", "handoff"],
                     service=True, prefix=["prlimit", "--nofile=48:48", "--"])
        new.start()
        line = new.wait_log(r"adopted (\d+) session\(s\)")[0]
        assert line.group(1) == str(n), line.string
        unwatched = new.wait_log(r"(\d+) adopted session\(s\) have no pidfd.*still counted")[0]
        new.wait_notify(f"{n} active (cap {n}")
        waiting = connect(old.address())  # queued: the cap holds
        waiting.sendall(b"w")
        # Past a sweep or two (each second): still not served, none let go.
        assert not_served(waiting, 2.5), "served past max_clients"
        active = [int(m) for note in new.notes.snapshot() for m in re.findall(r"STATUS=(\d+) active", note)]
        assert active and min(active) == n, active
        # Every old session ends: the waiting client is served (the
        # unwatched ones are noticed by the sweep).
        for c in clients:
            c.close()
        clients = [waiting]
        waiting.settimeout(30 * SLOW)
        assert recv_exact(waiting, 1) == b"w"
        print(f"   {n} sessions handed over to a daemon with 48 descriptors: {line.group(1)} adopted, "
              f"{unwatched.group(1)} without a pidfd, the cap held until they ended")
    finally:
        tidy(clients, workers, new, old)


def test_restart_onto_a_broken_file_fails_and_the_sessions_go_on():
    """A restart whose new daemon cannot load its file, with no client
    waiting: it exits 78, so the restart reports the failure, even with
    sessions handed over: those go on with their workers (KillMode=process
    leaves them be), each ending on its own."""
    config = "drain_timeout = 60; idle_timeout = 60;"
    old, new, workers, client = Daemon(config, service=True), None, [], None
    try:
        old.start()
        client = connect(old.address())
        echo(client, b"x")
        workers = [pid for pid, _ in old.children()]
        fd = hand_off(old)
        new = successor(old.sockets[0], config + "\nidle_timeot = 10;\n", fd)  # a typo
        new.start(wait_ready=False)
        assert new.wait_exit(timeout=10) == 78
        echo(client, b"still served by its worker")
        print("   restart onto a broken file with 1 session handed over: exit 78, the session goes on")
    finally:
        tidy([client] if client else [], workers, new, old)


def own_record_after_reload(new_settings):
    """One session open under log_addresses = full; a reload to
    new_settings; a hand-off; the session ends. Returns the records of the
    daemon (one client served after the reload) and of the worker."""
    base = "drain_timeout = 60; idle_timeout = 60; source_prefix_ipv4 = 24; "
    d, workers = Daemon(base + 'log_addresses = "full";', service=True), []
    try:
        d.start()
        s = connect(d.address())
        echo(s, b"before the reload")
        workers = [pid for pid, _ in d.children()]
        d.write_config(base + new_settings)
        d.signal(signal.SIGHUP)
        d.wait_log(r"configuration reloaded")
        with connect(d.address()) as c:
            echo(c, b"after the reload")
        wait_until(lambda: len(d.children()) == 1, 10, "the daemon to reap the client after the reload")
        hand_off(d)
        echo(s, b"after the hand-off")
        s.close()
        # Every writer of the log gone: the worker wrote what it writes.
        wait_until(lambda: d.log.closed, 10 * SLOW, "the worker to end")
        lines = [m.string for m in d.log_lines(r"connection .* closed")]
        return ([l for l in lines if f"worker {workers[0]}" not in l],
                [l for l in lines if f"worker {workers[0]}" in l])
    finally:
        tidy([], workers, d)


def test_own_record_follows_the_reloaded_log_addresses():
    daemons, own = own_record_after_reload('log_addresses = "prefix";')
    assert daemons and "127.0.0.0/24" in daemons[0], daemons
    # The client's side, before "->" (the local address is in full).
    assert len(own) == 1 and own[0].startswith("info: connection 127.0.0.0/24 "), own
    assert "127.0.0.1" not in own[0].split("->")[0], own
    print(f"   log_addresses full -> prefix, then a hand-off: the worker's own record: {own[0][:90]}...")


def test_own_record_follows_the_reloaded_log_level():
    daemons, own = own_record_after_reload('log_addresses = "full"; log_level = "warning";')
    assert not daemons and not own, (daemons, own)
    print("   log_level = warning by a reload, then a hand-off: no connection record, the worker's neither")


# struct slot_report (children.h) on x86_64/aarch64: its size and where
# `recorder` and `policy` are; the tests below stand in for a compromised
# worker by writing, through one worker's /proc/PID/mem (as root), into
# the reports mapping every worker shares.
SLOT, RECORDER, POLICY = 88, 72, 80
RECORDER_WORKER, LOG_DEBUG = 2, 7


def reports_mapping(pid):
    """The start of the shared mapping of the slot reports in worker pid."""
    for line in open(f"/proc/{pid}/maps"):
        f = line.split()
        lo, hi = (int(x, 16) for x in f[0].split("-"))
        if f[1].startswith("rw-s") and "/dev/zero" in line and hi - lo >= 16384 * SLOT:
            return lo
    raise AssertionError(f"no shared reports mapping in {pid}")


def poke(pid, addr, data):
    with open(f"/proc/{pid}/mem", "r+b", buffering=0) as m:
        m.seek(addr)
        m.write(data)


def peek(pid, addr, n):
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as m:
        m.seek(addr)
        return m.read(n)


def test_one_worker_cannot_stall_the_hand_off():
    """20 sessions; one worker claims the record of every one (recorder =
    RECORDER_WORKER in each slot), so the daemon takes each for a worker
    that already ended. It waits for them one deadline in all, not one per
    worker: SIGTERM exits within about a second, and the 20 still running
    are handed over and listed for the next daemon."""
    n = 20
    d = Daemon("drain_timeout = 60; idle_timeout = 60; max_clients = 32; max_clients_per_source = 0; "
               "source_rate = 0;", service=True)
    workers, clients = [], []
    try:
        d.start()
        for _ in range(n):
            clients.append(connect(d.address()))
            echo(clients[-1], b"x")
        workers = [pid for pid, _ in d.children()]
        assert len(workers) == n, workers
        base = reports_mapping(workers[0])
        for slot in range(64):
            poke(workers[0], base + slot * SLOT + RECORDER, RECORDER_WORKER.to_bytes(4, "little"))
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        assert d.wait_exit(timeout=60) == 0
        took = time.monotonic() - t0
        (line,) = [m.string for m in d.log_lines(r"handing \d+ session")]
        print(f"   one worker claimed all {n} records: SIGTERM -> exit after {took:.1f} s; {line[:110]}...")
        assert took < 1 + 2 * SLOW, f"the hand-off took {took:.1f} s"
        assert f"handing {n} session(s) over" in line and f"; {n} listed" in line, line
        for c in clients:  # the sessions go on
            echo(c, b"still")
    finally:
        tidy(clients, workers, d)


def test_one_worker_cannot_raise_another_workers_log_level():
    """log_level = "warning" from the start (no connection record), a
    reload (which writes the policy of every live worker); one worker writes
    log_level = debug into its neighbour's policy. After the hand-off the
    neighbour's own record is never more verbose than at its fork: no
    connection record."""
    base = 'drain_timeout = 60; idle_timeout = 60; log_addresses = "full"; log_level = "warning"; '
    d, workers = Daemon(base, service=True), []
    try:
        d.start()
        hostile = connect(d.address())
        echo(hostile, b"hostile")
        victim = connect(d.address())
        echo(victim, b"victim")
        workers = sorted(pid for pid, _ in d.children())
        addr = reports_mapping(workers[0])
        policies = lambda: [peek(workers[0], addr + slot * SLOT + POLICY, 8) for slot in range(4)]
        d.signal(signal.SIGHUP)  # "configuration reloaded" is below warning: wait for what it writes
        wait_until(lambda: sum(p[0] == 1 for p in policies()) == 2, 10, "the reload to write both policies")
        for slot, cur in enumerate(policies()):
            if cur[0] == 1:  # a live slot: its addresses kept, its level raised
                poke(workers[0], addr + slot * SLOT + POLICY, cur[:4] + LOG_DEBUG.to_bytes(4, "little"))
        hand_off(d)
        victim.shutdown(socket.SHUT_WR)
        assert recv_all(victim) == b""
        victim.close()
        hostile.close()
        wait_until(lambda: d.log.closed, 10 * SLOW, "the workers to end")
        lines = [m.string for m in d.log_lines(r"connection .* closed")]
        assert not lines, lines
        print("   a worker wrote log_level = debug into its neighbour's report: no record under warning")
    finally:
        tidy([], workers, d)


def test_reload_after_a_restart_reaches_the_adopted_sessions():
    """log_addresses = "full", a hand-off; the next daemon, given the list
    and the shared record policy from the store, adopts the session and is
    reloaded with log_addresses = "prefix": the adopted session's own record
    shows the prefix, as the daemon's own records do."""
    base = "drain_timeout = 60; idle_timeout = 60; source_prefix_ipv4 = 24; "
    old = Daemon(base + 'log_addresses = "full";', service=True)
    new, workers = None, []
    try:
        old.start()
        s = connect(old.address())
        echo(s, b"before the restart")
        workers = [pid for pid, _ in old.children()]
        listed = hand_off(old)
        (policy,) = [fd for name, fd in old.stored_fds if name == "policy"]
        new = Daemon(base + 'log_addresses = "full";', passed_fds=[old.sockets[0].fileno(), listed, policy],
                     names=["echo", "handoff", "policy"], service=True)
        new.start()
        new.wait_log(r"adopted 1 session")
        assert not [n for n, _ in new.stored_fds if n == "policy"], "the shared policy stored twice"
        new.write_config(base + 'log_addresses = "prefix";')
        new.signal(signal.SIGHUP)
        new.wait_log(r"configuration reloaded")
        echo(s, b"after the reload")
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b""
        s.close()
        wait_until(lambda: old.log.closed, 10 * SLOW, "the adopted worker to end")
        (own,) = [m.string for m in old.log_lines(r"connection .* closed") if f"worker {workers[0]}" in m.string]
        assert own.startswith("info: connection 127.0.0.0/24 "), own
        print(f"   reload to prefix after the restart: the adopted session's own record: {own[:80]}...")
    finally:
        tidy([], workers, new, old)


def test_killed_daemon_leaves_its_live_list():
    """A daemon killed (SIGKILL, a crash) hands nothing over, but the live
    list it stored at its start names the sessions still running: the next
    daemon, started as systemd restarts it (Restart=on-failure, with the
    store), counts them under max_clients. A session that ended before is
    not listed; one the second daemon started is in its own list."""
    config = "drain_timeout = 60; idle_timeout = 60; max_clients = 3; max_clients_per_source = 0; source_rate = 0;"
    first, second, third, clients, workers = Daemon(config, service=True), None, None, [], []
    try:
        first.start()
        (listed,) = [fd for name, fd in first.stored_fds if name == "handoff"]
        clients = live_sessions(first.address(), 3)
        workers = [pid for pid, _ in first.children()]
        clients.pop().close()  # ended with its daemon there: reaped and unlisted
        wait_until(lambda: len(first.children()) == 2, 10, "the daemon to reap it")
        # Reaped, then unlisted: the list follows a moment later.
        wait_until(lambda: len(handoff_entries(listed)) == 2, 10, "the live list to name the 2 left")
        first.signal(signal.SIGKILL)
        first.wait_exit()
        second = successor(first.sockets[0], config, listed)
        second.start()
        second.wait_log(r"adopted 2 session\(s\) of the previous daemon.*; 0 had ended.*, 0 entries ignored")
        clients.append(connect(first.address()))
        echo(clients[-1], b"one more")
        workers += [pid for pid, _ in second.children()]
        second.wait_notify("3 active (cap 3, AT CAP)")
        waiting = connect(first.address())  # queued in the backlog: the cap holds
        waiting.sendall(b"w")
        clients.append(waiting)
        (listed,) = [fd for name, fd in second.stored_fds if name == "handoff"]
        wait_until(lambda: len(handoff_entries(listed)) == 3, 10, "the live list to name the 3")
        second.signal(signal.SIGKILL)
        second.wait_exit()
        third = successor(first.sockets[0], config, listed)
        third.start()
        third.wait_log(r"adopted 3 session\(s\)")
        third.wait_notify("3 active (cap 3")
        assert not_served(waiting), "served past max_clients after the second kill"
        clients[0].close()  # a session of the first daemon ends: its place is free
        waiting.settimeout(10 * SLOW)
        assert recv_exact(waiting, 1) == b"w"
        print("   two daemons SIGKILLed in a row under max_clients 3: the next one counted the 2, then the 3 "
              "sessions still running, and a client waited for a place")
    finally:
        tidy(clients, workers, third, second, first)


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

# Run as the daemon's user (as a worker is): tries to rewrite the live list
# through the daemon's /proc/PID/fd and to open its memory for writing.
REWRITE_LIST = """
import errno, os, sys
p = sys.argv[1]
try:
    names = os.listdir(f"/proc/{p}/fd")
except OSError as e:
    names = []
    print("fd:", errno.errorcode[e.errno])
for n in names:
    if os.readlink(f"/proc/{p}/fd/{n}").startswith("/memfd:handoff"):
        fd = os.open(f"/proc/{p}/fd/{n}", os.O_RDWR)
        os.pwrite(fd, bytes(os.fstat(fd).st_size - 16), 16)
        print("fd: zeroed")
try:
    open(f"/proc/{p}/mem", "r+b").close()
    print("mem: writable")
except OSError as e:
    print("mem:", errno.errorcode[e.errno])
"""


def test_the_live_list_is_the_daemons_alone():
    """A process of the service's user (a worker, compromised) can neither
    rewrite the live list through the daemon's /proc/PID/fd (the daemon is
    not dumpable) nor write the memfd once it has it (sealed: only the
    daemon's mapping writes it), nor open the daemon's memory for writing:
    the daemon killed after the attempt, the next one adopts the 3 sessions
    and a 4th client waits under max_clients = 3."""
    config = "drain_timeout = 60; idle_timeout = 60; max_clients = 3; max_clients_per_source = 0; source_rate = 0;"
    first = Daemon(config, service=True, public_binary=True, prefix=NOBODY)
    second, clients, workers = None, [], []
    try:
        first.start()
        (listed,) = [fd for name, fd in first.stored_fds if name == "handoff"]
        clients = live_sessions(first.address(), 3)
        workers = [pid for pid, _ in first.children()]
        out = subprocess.run(NOBODY + ["python3", "-c", REWRITE_LIST, str(first.proc.pid)],
                             capture_output=True, text=True)
        print(f"   a process of the daemon's uid: {' '.join(out.stdout.split())} {out.stderr.strip()[-200:]}")
        assert out.returncode == 0 and "fd: EACCES" in out.stdout and "mem: EACCES" in out.stdout, out
        # What systemd's store holds is the same memfd: sealed against writes.
        other = os.open(f"/proc/self/fd/{listed}", os.O_RDWR)
        try:
            try:
                os.pwrite(other, bytes(48), 16)
                raise AssertionError("the stored live list is writable")
            except PermissionError:
                pass
        finally:
            os.close(other)
        first.signal(signal.SIGKILL)
        first.wait_exit()
        second = Daemon(config, passed_fds=[first.sockets[0].fileno(), listed], names=["echo", "handoff"],
                        service=True, public_binary=True, prefix=NOBODY)
        second.start()
        second.wait_log(r"adopted 3 session\(s\)")
        waiting = connect(first.address())
        waiting.sendall(b"w")
        clients.append(waiting)
        assert not_served(waiting), "served past max_clients"
    finally:
        tidy(clients, workers, second, first)


def cgroup2_root():
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if os.path.exists(os.path.join(root, "cgroup.procs")) and \
           os.path.exists(os.path.join(root, "cgroup.controllers")):
            return root
    return None


def in_cgroup(cg, cmd):
    """cmd started inside the cgroup directory cg."""
    return subprocess.Popen(["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec "$@"', "sh"] + cmd)


def test_stop_then_start_counts_the_processes_left_in_the_cgroup():
    """After systemctl stop, systemd has emptied its store: the next daemon
    gets no list. Its workers are still in the service's cgroup
    (KillMode=process): the new daemon counts those of its user under
    max_clients until they end; another user's process there is not
    counted. Run as an unprivileged user in a cgroup named like a unit."""
    root = cgroup2_root()
    if os.geteuid() != 0 or not root:
        print("   skipped: needs root and a cgroup v2 hierarchy")
        return
    cg = os.path.join(root, f"echo-mpserv-test-{os.getpid()}.service")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    os.mkdir(cg)
    procs, d, clients = [], None, []
    try:
        procs = [in_cgroup(cg, nobody + ["sleep", "600"]) for _ in range(2)] + [in_cgroup(cg, ["sleep", "600"])]
        wait_until(lambda: len(open(f"{cg}/cgroup.procs").read().split()) == 3, 10, "the processes in the cgroup")
        config = "drain_timeout = 60; idle_timeout = 60; max_clients = 3; max_clients_per_source = 0; source_rate = 0;"
        d = Daemon(config, service=True, public_binary=True,
                   prefix=["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec "$@"', "sh"] + nobody)
        d.start()
        line = d.wait_log(r"counting the (\d+) process\(es\) of this user left in the service's cgroup.*; "
                          r"(\d+) other")[0]
        assert line.groups() == ("2", "1"), line.string
        clients.append(connect(d.address()))
        echo(clients[-1], b"third")
        d.wait_notify("3 active (cap 3, AT CAP)")
        waiting = connect(d.address())
        waiting.sendall(b"w")
        clients.append(waiting)
        assert not_served(waiting), "served past max_clients"
        # One of the left-over processes ends: its place is free.
        procs[0].kill()
        procs[0].wait()
        waiting.settimeout(10 * SLOW)
        assert recv_exact(waiting, 1) == b"w"
        print(f"   no list, 2 processes of the user and 1 of another in the cgroup: {line.group(1)} counted "
              f"under max_clients 3, a client waited until one ended")
    finally:
        for c in clients:
            c.close()
        if d:
            d.cleanup()
        for p in procs:
            p.kill()
            p.wait()
        wait_until(lambda: not open(f"{cg}/cgroup.procs").read().split(), 10, "the cgroup to empty")
        os.rmdir(cg)


if __name__ == "__main__":
    main([test_worker_outlives_a_killed_daemon, test_orphaned_worker_ends_at_drain_timeout,
          test_sigterm_under_systemd_hands_off, test_standalone_sigterm_still_drains_in_place,
          test_adopted_sessions_keep_the_limits, test_second_restart_hands_adopted_sessions_on,
          test_hostile_handoff_file_is_ignored, test_restart_onto_a_broken_file_fails_and_the_sessions_go_on,
          test_stray_orphan_signal_changes_nothing, test_stray_orphan_signals_do_not_extend_the_drain,
          test_adoption_past_the_descriptor_limit, test_own_record_follows_the_reloaded_log_addresses,
          test_own_record_follows_the_reloaded_log_level, test_killed_daemon_leaves_its_live_list,
          test_reload_after_a_restart_reaches_the_adopted_sessions, test_the_live_list_is_the_daemons_alone, test_one_worker_cannot_stall_the_hand_off,
          test_one_worker_cannot_raise_another_workers_log_level,
          test_stop_then_start_counts_the_processes_left_in_the_cgroup])
