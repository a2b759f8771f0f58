#!/usr/bin/env python3
"""Restarts without a stall: workers outlive their daemon.

A worker whose daemon is gone (killed, or handed off at a restart) finishes
its session within drain_timeout and writes its own record; under systemd,
SIGTERM hands the sessions off and the daemon leaves at once, so the next
daemon accepts from the same listener while the old sessions go on."""

import os
import signal
import socket
import time

from harness import (SLOW, Daemon, main, process_children, recv_all, recv_exact, wait_until)
from harness import connect


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
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


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
        kill_quietly(workers)
        if new:
            new.cleanup()
        old.cleanup()


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


if __name__ == "__main__":
    main([test_worker_outlives_a_killed_daemon, test_orphaned_worker_ends_at_drain_timeout,
          test_sigterm_under_systemd_hands_off, test_standalone_sigterm_still_drains_in_place])
