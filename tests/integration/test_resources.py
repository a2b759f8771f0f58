#!/usr/bin/env python3
"""Running out of resources: no free descriptor in the parent (EMFILE) and
fork() failing (RLIMIT_NPROC). The parent must not spin or die, must log at
a bounded rate, and must recover by itself."""
import os
import resource
import signal
import threading
import time

from harness import SLOW, WRAPPER, Daemon, Skip, connect, live_sessions, main, recv_exact, wait_until

# stdio, the listener, the notification socket, the signalfd and epoll.
PARENT_FDS = [0, 1, 2, 3, 4, 5, 6]


def unused_uid():
    """A uid that owns no process and names no user, drawn at random: a
    fixed one is shared by every copy of this test on the machine, and
    RLIMIT_NPROC counts all of that uid's processes (one left by another
    run makes even the daemon's exec fail)."""
    import pwd
    import random
    used = set()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            used.add(os.stat(f"/proc/{entry}").st_uid)
        except OSError:  # gone meanwhile
            pass
    while True:
        uid = random.randrange(60000, 65000)
        try:
            pwd.getpwuid(uid)
        except KeyError:
            if uid not in used:
                return uid


def fork_limited(nproc):
    """The command prefix that runs the daemon as an unused uid allowed
    nproc processes, so fork() fails past them; skips where that cannot be
    tested (see no_valgrind_for_fork_failures())."""
    no_valgrind_for_fork_failures()
    if os.geteuid() != 0:
        raise Skip("needs root to run the daemon as an otherwise unused uid")
    uid = unused_uid()
    return ["prlimit", f"--nproc={nproc}:{nproc}", "setpriv", f"--reuid={uid}", f"--regid={uid}",
            "--clear-groups"]


def no_descriptor_to_spare(d):
    """After one session served and its worker gone (the parent's
    descriptors settled), RLIMIT_NOFILE at what the parent holds: its next
    accept() fails with EMFILE. Returns the limits to restore, and when
    (time.monotonic()) accept() could start failing, not before."""
    c = connect(d.address())
    c.sendall(b"ok")
    assert recv_exact(c, 2) == b"ok"
    c.close()
    wait_until(lambda: not d.children(), 10, "the worker to exit")
    wait_until(lambda: d.fds() == PARENT_FDS, 5, "the parent's fds to settle")
    soft, hard = resource.prlimit(d.pid, resource.RLIMIT_NOFILE)
    since = time.monotonic()
    resource.prlimit(d.pid, resource.RLIMIT_NOFILE, (len(PARENT_FDS), hard))
    return soft, hard, since


def test_emfile_low_cpu_and_recovery():
    with Daemon() as d:
        soft, hard, failing_since = no_descriptor_to_spare(d)
        try:
            clients = [connect(d.address()) for _ in range(20)]  # completed by the kernel
            for i, s in enumerate(clients):
                s.sendall(b"%02d" % i)
            d.wait_log(r"accept\(\) failed .*: Too many open files")
            window = 3.0
            cpu0, t0 = d.cpu_seconds(), time.monotonic()
            time.sleep(window)
            now = time.monotonic()
            cpu = (d.cpu_seconds() - cpu0) / (now - t0) * 100
            # At most one line a second, counted over all the time accept()
            # may have failed (a busy machine stretches it; a line logged
            # before a window but read after it would blur a window's count).
            logged = len(d.log_lines(r"accept\(\) failed"))
            print(f"   EMFILE for {now - failing_since:.1f} s: parent CPU {cpu:.1f} % over the last "
                  f"{now - t0:.1f} s, {logged} log line(s)")
            assert cpu < 5.0 * SLOW, cpu
            assert logged <= int(now - failing_since) + 1, logged
            assert not d.children()  # nothing accepted, nothing lost: all still queued
        finally:
            resource.prlimit(d.pid, resource.RLIMIT_NOFILE, (soft, hard))
        t1 = time.monotonic()
        for i, s in enumerate(clients):
            assert recv_exact(s, 2) == b"%02d" % i
        print(f"   descriptors back: all 20 queued clients served within {time.monotonic() - t1:.2f} s")
        d.wait_log(r"accepting again after \d+ resource failure\(s\)")
        for s in clients:
            s.close()
        d.wait_records(21)
        assert d.stop() == 0


def test_watchdog_and_status_survive_emfile():
    # While accept() fails with EMFILE the daemon still owes systemd its
    # WATCHDOG=1 (a minute without one and systemd aborts it, and with it,
    # KillMode=mixed, every session) and a reload's READY=1: the
    # notification socket was opened at start, not per message.
    with Daemon("max_clients = 5;", env={"WATCHDOG_USEC": str(int(1e6 * SLOW))}) as d:
        soft, hard, _ = no_descriptor_to_spare(d)
        try:
            clients = [connect(d.address()) for _ in range(3)]
            d.wait_log(r"accept\(\) failed .*Too many open files")
            n0 = len(d.notes.snapshot())
            d.signal(signal.SIGHUP)  # the reload fails (no descriptor to read the file with)
            d.wait_log(r"reload failed")
            i, _ = d.wait_notify("READY=1", after=n0)
            # Two more watchdog intervals, still out of descriptors.
            i, _ = d.wait_notify("WATCHDOG=1", after=i + 1, timeout=10 * SLOW)
            d.wait_notify("WATCHDOG=1", after=i + 1, timeout=10 * SLOW)
            notes = d.notes.snapshot()[n0:]
            assert d.log_lines(r"accept\(\) failed")  # still failing: nothing was accepted
            assert not d.children()
        finally:
            resource.prlimit(d.pid, resource.RLIMIT_NOFILE, (soft, hard))
        for c in clients:
            c.close()
        print(f"   out of descriptors, WATCHDOG_USEC {SLOW:g} s, a reload: {len(notes)} notification(s) "
              f"arrived, {sum('WATCHDOG=1' in n for n in notes)} WATCHDOG=1; none lost: "
              f"{not d.log_lines('could not be sent')}")
        assert not d.log_lines("could not be sent")
        assert d.stop() == 0


def no_valgrind_for_fork_failures():
    """valgrind 3.19 blocks every signal around fork() and restores the mask
    only when the fork succeeded: after a failed one its process runs on
    with SIGSEGV blocked, and the next growth of the stack onto a new page
    (which valgrind maps in its SIGSEGV handler) kills it outright, with no
    report. These tests make fork() fail on purpose, so under valgrind they
    would test valgrind; natively, under ASan+UBSan and in the busy pass
    they run."""
    if any("valgrind" in w for w in WRAPPER):
        raise Skip("valgrind 3.19 keeps every signal blocked after a failed fork(); "
                   "its next stack growth is a fatal SIGSEGV")


def test_fork_failure_backs_off_and_recovers():
    nproc = 4  # the daemon itself plus three workers
    prefix = fork_limited(nproc)
    with Daemon("max_clients = 50;", prefix=prefix, public_binary=True) as d:
        first = live_sessions(d.address(), nproc - 1)
        failing_since = time.monotonic()  # no fork() can fail before this
        waiting = [connect(d.address()) for _ in range(5)]
        for i, s in enumerate(waiting):
            s.sendall(b"w%d" % i)
        d.wait_log(r"fork\(\) failed \((\d+) failure\(s\) so far, \d+ not logged\).*Resource temporarily unavailable")
        d.wait_notify("fork failing, retrying")
        cpu0, t0 = d.cpu_seconds(), time.monotonic()
        time.sleep(2.0)
        now = time.monotonic()
        cpu = (d.cpu_seconds() - cpu0) / (now - t0) * 100
        lines = d.log_lines(r"fork\(\) failed \((\d+) failure\(s\) so far")
        failures = int(lines[-1].group(1))
        print(f"   fork failing for {now - failing_since:.1f} s: parent CPU {cpu:.1f} % over the last "
              f"{now - t0:.1f} s, {failures} failures, {len(lines)} logged")
        assert cpu < 5.0 * SLOW, cpu
        # At most one line a second, however long a busy machine made it.
        assert len(lines) <= int(now - failing_since) + 1 and failures >= len(lines), (failures, len(lines))

        # Load drops: the waiting clients are served without any help.
        t1 = time.monotonic()
        for s in first:
            s.close()
        for i, s in enumerate(waiting):
            assert recv_exact(s, 2) == b"w%d" % i
            s.close()
        took = time.monotonic() - t1
        print(f"   load dropped: 5 waiting clients served in {took:.2f} s")
        d.wait_log(r"accepting again after \d+ resource failure\(s\)")
        recs = d.wait_records(8)
        assert all(r["reason"] == "client-closed" for r in recs), recs
        assert d.stop() == 0


RECOVERED_RE = r"accepting again after (\d+) resource failure\(s\)(?: \(recovered (\d+) time\(s\) since the last record\))?$"


def test_flapping_fork_failures_logged_at_a_bounded_rate():
    """Clients that keep the daemon at the edge of its process limit make
    fork() fail and recover over and over: at most one recovery record a
    second, each counting the recoveries it stands for."""
    nproc = 3  # the daemon itself plus two workers
    prefix = fork_limited(nproc)
    with Daemon("max_clients = 50;", prefix=prefix, public_binary=True) as d:
        served, errors = [0], []

        def client(seconds):
            end = time.monotonic() + seconds
            try:
                while time.monotonic() < end:
                    with connect(d.address()) as s:
                        s.sendall(b"x")
                        assert recv_exact(s, 1) == b"x"
                    served[0] += 1
            except Exception as e:  # reported below
                errors.append(e)

        start = time.monotonic()
        threads = [threading.Thread(target=client, args=(2.0,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        d.wait_records(served[0])
        assert d.stop() == 0  # owed records are written at exit
        d.wait_log(r"stopped: ")  # the last lines are read
        elapsed = time.monotonic() - start
        lines = d.log_lines(RECOVERED_RE)
        recoveries = sum(int(m.group(2) or 1) for m in lines)
        failures = sum(int(m.group(1)) for m in lines)
        print(f"   {served[0]} sessions from 4 clients at a limit of 2 workers in {elapsed:.1f} s: "
              f"{recoveries} recoveries from {failures} fork failures in {len(lines)} record(s)")
        assert recoveries > 0 and failures >= recoveries, (recoveries, failures)
        assert len(lines) <= elapsed + 2, (len(lines), elapsed)


if __name__ == "__main__":
    main([test_emfile_low_cpu_and_recovery, test_watchdog_and_status_survive_emfile,
          test_fork_failure_backs_off_and_recovers,
          test_flapping_fork_failures_logged_at_a_bounded_rate])
