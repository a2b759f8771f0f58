#!/usr/bin/env python3
"""Limits a client can push on: the global cap (backpressure through the
kernel backlog, no resets), and every session bound with its own reason."""
import os
import select
import signal
import socket
import struct
import subprocess
import threading
import time

from harness import SLOW, Daemon, LateReader, connect, main, recv_all, recv_exact, scaled, tcp_socket, wait_until


def no_data_within(s, seconds):
    """True when nothing (no data, no EOF, no reset) arrives within `seconds`."""
    r, _, _ = select.select([s], [], [], seconds)
    return not r


def test_max_clients_backpressure():
    cap, extra = 3, 4
    with Daemon(f"max_clients = {cap};") as d:
        first = [connect(d.address()) for _ in range(cap)]
        for i, s in enumerate(first):
            s.sendall(b"a%d" % i)
            assert recv_exact(s, 2) == b"a%d" % i
        d.wait_log(r"max_clients \(3\) reached; new connections wait in the kernel backlog")
        d.wait_notify("AT CAP")

        waiting = [connect(d.address()) for _ in range(extra)]  # queued by the kernel
        for i, s in enumerate(waiting):
            s.sendall(b"w%d" % i)
        # Not served while at the cap, and not refused either.
        for s in waiting:
            assert no_data_within(s, 0.3), "a client past the cap was served or reset"
        assert len([p for p, st in d.children() if st != "Z"]) == cap

        # Each departure lets exactly one waiting client in, in order.
        for i in range(extra):
            first.pop(0).close()
            waiting[i].settimeout(10 * SLOW)
            assert recv_exact(waiting[i], 2) == b"w%d" % i
            first.append(waiting[i])
        for s in first:
            s.close()
        d.wait_log(r"below max_clients \(3\) again; accepting")
        recs = d.wait_records(cap + extra)
        assert all(r["reason"] == "client-closed" for r in recs), recs
        assert d.stop() == 0


def test_idle_timeout():
    with Daemon("idle_timeout = 0.3;") as d:
        s = connect(d.address())
        s.sendall(b"hi")
        assert recv_exact(s, 2) == b"hi"
        start = time.monotonic()
        assert s.recv(10) == b""  # orderly close, not a reset
        waited = time.monotonic() - start
        assert waited >= 0.25, waited
        rec = d.wait_records(1)[0]
        assert rec["reason"] == "idle-timeout", rec
        print(f"   idle client closed after {waited:.2f} s (idle_timeout 0.3 s)")


def test_write_timeout_client_never_reads():
    with Daemon("write_timeout = 0.3; buffer_size = 4096;") as d:
        s = connect(d.address())
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        block = os.urandom(65536)
        deadline = time.monotonic() + 20 * SLOW
        ended = False
        while time.monotonic() < deadline and not ended:
            try:
                s.send(block)
            except BlockingIOError:
                time.sleep(0.01)
            except (ConnectionResetError, BrokenPipeError):
                ended = True
            ended = ended or bool(d.records())
        rec = d.wait_records(1)[0]
        assert rec["reason"] == "write-timeout", rec
        s.close()


def test_max_session_time_busy_client():
    with Daemon("max_session_time = 0.5;") as d:
        s = connect(d.address())
        start = time.monotonic()
        try:
            while time.monotonic() - start < 10 * SLOW:
                s.sendall(b"0123456789")
                if s.recv(10) == b"":
                    break
        except (ConnectionResetError, BrokenPipeError):
            pass
        took = time.monotonic() - start
        rec = d.wait_records(1)[0]
        assert rec["reason"] == "session-time", rec
        assert 0.45 <= float(rec["duration"]) < 5 * SLOW, rec
        print(f"   busy client cut after {took:.2f} s (max_session_time 0.5 s)")
        s.close()


def test_max_session_bytes():
    with Daemon("max_session_bytes = 1000;") as d:
        s = connect(d.address())
        s.sendall(b"x" * 1500)
        got = recv_all(s)
        assert got == b"x" * 1000, len(got)
        rec = d.wait_records(1)[0]
        assert rec["reason"] == "session-bytes" and rec["bytes_out"] == "1000", rec
        s.close()


def test_client_reset_is_recorded_not_fatal():
    with Daemon() as d:
        for _ in range(20):
            s = connect(d.address())
            s.sendall(os.urandom(200000))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        recs = d.wait_records(20)
        assert all(r["reason"] in ("reset", "client-closed") for r in recs), recs
        assert not any("killed by" in (r["detail"] or "") for r in recs), recs
        assert sum(r["reason"] == "reset" for r in recs) > 0, recs


CAP_RE = (r"(?P<kind>max_clients \(2\) reached; new connections wait in the kernel backlog|"
          r"below max_clients \(2\) again; accepting)"
          r"(?: \(reached (?P<reached>\d+) time\(s\) and left (?P<left>\d+) time\(s\) since the last record\))?$")



def cap_changes(lines):
    """The changes at the cap that CAP_RE records stand for: (reached, left).
    A folded record counts what it stands for, a plain one counts one."""
    reached = left = 0
    for m in lines:
        if m.group("reached") is not None:
            reached += int(m.group("reached"))
            left += int(m.group("left"))
        elif "reached" in m.group("kind"):
            reached += 1
        else:
            left += 1
    return reached, left

def test_cap_changes_logged_at_a_bounded_rate():
    """A client that reaches and leaves the cap with every connection gets a
    cap record a second at most (each counting the changes it stands for),
    and STATUS= no more often than twice a second."""
    short = scaled(50, 10)
    with Daemon("max_clients = 2;") as d:
        held = connect(d.address())
        held.sendall(b"h")
        assert recv_exact(held, 1) == b"h"
        d.wait_notify("STATUS=1 active")
        notes0 = len(d.notes.snapshot())
        start = time.monotonic()
        for i in range(short):
            with connect(d.address()) as s:
                s.sendall(b"s")
                assert recv_exact(s, 1) == b"s"
        d.wait_records(short)
        held.close()
        d.wait_records(short + 1)
        assert d.stop() == 0  # owed records are written at exit
        d.wait_log(r"stopped: ")  # the last lines are read
        d.wait_notify("STOPPING=1")
        elapsed = time.monotonic() - start
        statuses = [n for n in d.notes.snapshot()[notes0:] if "STATUS=" in n and "READY=1" not in n]
        lines = d.log_lines(CAP_RE)
        reached, left = cap_changes(lines)
        print(f"   {short} short sessions beside a held one at max_clients 2 in {elapsed:.2f} s: "
              f"{len(lines)} cap record(s) for {reached} + {left} changes, {len(statuses)} STATUS= update(s)")
        assert (reached, left) == (short, short), (reached, left)   # every change counted once
        assert len(lines) <= elapsed + 2, (len(lines), elapsed)
        assert len(statuses) <= elapsed / 0.5 + 2, (len(statuses), elapsed)


def test_cap_changes_held_while_their_records_are_filtered():
    """At log_level = "error" the cap records (warning when reached, notice
    when left) are filtered out: the changes they stand for are held, not
    dropped, and the first record written once the level allows it counts
    them all."""
    from test_lifecycle import reload
    conf = "max_clients = 2;"
    rounds = 3
    with Daemon(conf + ' log_level = "error";') as d:
        def one_round():  # reaches the cap and leaves it
            n = len(d.notes.snapshot())
            s = connect(d.address())
            s.sendall(b"c")
            assert recv_exact(s, 1) == b"c"
            i, _ = d.wait_notify("STATUS=2 active", after=n)
            s.close()
            d.wait_notify("STATUS=1 active", after=i + 1)
        held = connect(d.address())
        held.sendall(b"h")
        assert recv_exact(held, 1) == b"h"
        d.wait_notify("STATUS=1 active")
        for _ in range(rounds):
            one_round()
        assert d.log_lines(CAP_RE) == []
        reload(d, conf)
        one_round()
        assert d.stop() == 0  # owed records are written at exit
        d.wait_log(r"stopped: ")
        reached, left = cap_changes(d.log_lines(CAP_RE))
        print(f"   {rounds} rounds at error, 1 after: cap records count {reached} + {left} changes")
        assert (reached, left) == (rounds + 1, rounds + 1), (reached, left)


def test_limits_deliver_what_they_count():
    # A session ended by a limit while the client is still sending and has
    # not read its echo: it gets exactly what the record counts as sent (the
    # limit itself for max_session_bytes), then an orderly end, not a reset.
    cases = (("session-bytes", "max_session_bytes = 100000;", 200000),
             ("session-time", "max_session_time = 0.5; socket_buffer = 65536;", None))
    for reason, config, total in cases:
        with Daemon(config + " write_timeout = 10;") as d:
            c = LateReader(d.address(), total)
            c.wait_server_closed(d.port)
            got, reset = c.read_to_end()
            rec = d.wait_records(1)[0]
            print(f"   {reason}: client sent {c.sent}, received {got} then "
                  f"{'a reset' if reset else 'EOF'}; record: {rec['bytes_out']} bytes out")
            assert rec["reason"] == reason, rec
            assert not reset, "the connection was reset"
            assert got == int(rec["bytes_out"]), (got, rec)
            if total:
                assert got == 100000, got


def test_limit_on_a_client_that_never_reads():
    # The lingering close is bounded by write_timeout: a client that never
    # reads gets an abortive close, and the record counts only what it got.
    with Daemon("max_session_bytes = 100000; write_timeout = 0.3;") as d:
        c = LateReader(d.address(), 200000)
        rec = d.wait_records(1)[0]  # before reading anything
        got, reset = c.read_to_end()
        print(f"   never read: record {rec['reason']}, {rec['bytes_out']} bytes out after {rec['duration']} s; "
              f"the client then read {got} and {'a reset' if reset else 'EOF'}")
        assert rec["reason"] == "session-bytes", rec
        assert got == int(rec["bytes_out"]), (got, rec)
        assert float(rec["duration"]) < 5 * SLOW, rec


def server_send_queues(port):
    """(state, bytes queued for sending) of every connected server-side
    socket of `port`, orphans (sockets no process holds any more) included."""
    out = subprocess.run(["ss", "-tnH", "state", "all", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.split()]
    return [(r[0], int(r[2])) for r in rows if r[0] != "LISTEN"]


def readable(s):
    """What the client's kernel holds for it: the bytes it can still read
    before the end of stream or the reset."""
    got = 0
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return got
            got += len(chunk)
    except ConnectionResetError:
        return got


def reset(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_half_closed_non_readers_stay_within_max_clients():
    # Clients that send, half-close and never read: each session ends
    # client-closed with its echo unacknowledged. The worker keeps it (and
    # its max_clients slot) until write_timeout, then resets: what such
    # clients pin stays within max_clients x socket buffer, and nothing is
    # left to the kernel after the last session.
    clients, payload, cap, socket_buffer, write_timeout = 10, 200000, 2, 1 << 18, 1
    bound = cap * 2 * socket_buffer  # the kernel doubles socket_buffer
    with Daemon(f"max_clients = {cap}; write_timeout = {write_timeout}; socket_buffer = {socket_buffer};") as d:
        socks = [connect(d.address(), rcvbuf=4096) for _ in range(clients)]  # the rest wait in the backlog

        def send(s):
            s.sendall(b"P" * payload)
            s.shutdown(socket.SHUT_WR)
        threads = [threading.Thread(target=send, args=(s,), daemon=True) for s in socks]
        for t in threads:
            t.start()
        peak_bytes = peak_workers = 0
        deadline = time.monotonic() + 60 * SLOW
        while len(d.records()) < clients:
            assert time.monotonic() < deadline, f"{len(d.records())} of {clients} sessions ended"
            peak_bytes = max(peak_bytes, sum(q for _, q in server_send_queues(d.port)))
            peak_workers = max(peak_workers, len([p for p, st in d.children() if st != "Z"]))
        for t in threads:
            t.join(10 * SLOW)
        print(f"   {clients} half-closed non-readers, max_clients {cap}: at most {peak_workers} workers and "
              f"{peak_bytes} bytes queued (bound {bound}); after the last session: "
              f"{sum(q for _, q in server_send_queues(d.port))} bytes")
        assert peak_workers <= cap and peak_bytes <= bound, (peak_workers, peak_bytes)
        wait_until(lambda: not [q for _, q in server_send_queues(d.port) if q], 5 * SLOW,
                   "no server socket to hold unsent echo")
        recs = {int(r["client"].rsplit(":", 1)[1]): r for r in d.records()}
        for s in socks:
            rec, got = recs[s.getsockname()[1]], readable(s)
            assert rec["reason"] == "client-closed" and int(rec["bytes_out"]) <= got, (rec, got)
            s.close()


def test_half_closed_non_reader_is_reset_after_write_timeout():
    # write_timeout bounds how long a client may leave its echo unread, also
    # once it has half-closed: then the worker resets, so the kernel drops
    # the echo rather than probe the client's zero window for minutes.
    write_timeout = 0.5
    with Daemon(f"write_timeout = {write_timeout};") as d:
        s = connect(d.address(), rcvbuf=4096)
        port = s.getsockname()[1]
        s.sendall(b"A" * 1000000)
        s.shutdown(socket.SHUT_WR)
        rec = d.wait_records(1, timeout=20)[0]
        gone = tcp_socket(d.port, port)
        held = readable(s)
        print(f"   after the session ({rec['reason']}, {rec['duration']} s, {rec['bytes_out']} bytes out; "
              f"the client holds {held}): the server's socket: {gone}")
        s.close()
        assert gone is None or gone[1] == 0, gone
        assert float(rec["duration"]) >= write_timeout, rec
        assert int(rec["bytes_out"]) <= held, (rec, held)


def read_slowly(s, chunk, pause, until=None):
    """Reads `chunk` bytes every `pause` seconds, to the end of stream, a
    reset, or once `until` bytes came. Returns (bytes read, error)."""
    got = 0
    try:
        while until is None or got < until:
            c = s.recv(chunk)
            if not c:
                break
            got += len(c)
            time.sleep(pause)
    except OSError as e:
        return got, e
    return got, None


def test_half_closed_slow_but_steady_reader_gets_its_echo():
    # A client sends 250 kB (it fits the server's send buffer: the echo
    # never stalls), half-closes, then reads at a steady ~150 kB/s (3 kB
    # every 20 ms), which takes longer than write_timeout in all but never
    # leaves it 20 ms without progress. write_timeout counts time without
    # progress in the lingering close too: it gets all of its echo and an
    # end of stream, and the record counts all of it.
    total = 250000
    with Daemon("write_timeout = 1; socket_buffer = 262144;") as d:
        s = connect(d.address(), rcvbuf=4096)
        s.sendall(b"S" * total)
        s.shutdown(socket.SHUT_WR)
        t0 = time.monotonic()
        got, err = read_slowly(s, 3000, 0.02)
        rec = d.wait_records(1, timeout=60 * SLOW)[0]
        print(f"   client received {got} of {total} in {time.monotonic() - t0:.2f} s (error: {err!r}); "
              f"record {rec['reason']}, {rec['bytes_out']} bytes out after {rec['duration']} s")
        assert err is None and got == total, (got, err, rec)
        assert rec["reason"] == "client-closed" and int(rec["bytes_out"]) == total, rec


def test_half_closed_reader_that_stops_is_reset_after_write_timeout_without_progress():
    # The same client reads 60 kB slowly, then stops: the worker resets
    # write_timeout after the last progress (not after the end of its
    # input), and the record counts what the client's TCP acknowledged,
    # which is exactly what it can read.
    total, write_timeout = 250000, 1
    with Daemon(f"write_timeout = {write_timeout}; socket_buffer = 262144;") as d:
        s = connect(d.address(), rcvbuf=4096)
        s.sendall(b"S" * total)
        s.shutdown(socket.SHUT_WR)
        got = len(s.recv(3000))
        t0 = time.monotonic()  # the session began before its first echo came
        more, err = read_slowly(s, 3000, 0.02, until=60000 - got)
        got += more
        stopped = time.monotonic() - t0
        rec = d.wait_records(1, timeout=60 * SLOW)[0]
        got += readable(s)
        print(f"   stopped reading after {stopped:.2f} s; record {rec['reason']}, {rec['bytes_out']} bytes out "
              f"after {rec['duration']} s; the client got {got}")
        assert err is None and rec["reason"] == "client-closed", (err, rec)
        assert stopped + write_timeout - 0.1 <= float(rec["duration"]) < stopped + write_timeout + 5 * SLOW, rec
        assert int(rec["bytes_out"]) == got < total, (rec, got)


def test_trickling_half_closed_reader_is_bounded_by_max_session_time():
    # A client that keeps acknowledging a little (1 kB every 50 ms: 250 kB
    # would take 12 s) lingers no longer than the session could have lasted:
    # max_session_time from its start plus one write_timeout to drain,
    # then is reset.
    total, max_time, write_timeout = 250000, 1, 0.5
    with Daemon(f"max_session_time = {max_time}; write_timeout = {write_timeout}; socket_buffer = 262144;") as d:
        s = connect(d.address(), rcvbuf=4096)
        s.sendall(b"S" * total)
        s.shutdown(socket.SHUT_WR)
        got, err = read_slowly(s, 1000, 0.05)
        rec = d.wait_records(1, timeout=60 * SLOW)[0]
        print(f"   trickling reader: record {rec['reason']}, {rec['bytes_out']} bytes out after "
              f"{rec['duration']} s; the client got {got} ({err!r})")
        assert rec["reason"] == "client-closed" and isinstance(err, ConnectionResetError), (rec, err)
        assert max_time + write_timeout - 0.1 <= float(rec["duration"]) < max_time + write_timeout + 2 * SLOW, rec
        # Still reading: what was in flight at the reset may have arrived
        # unacknowledged, never the other way round.
        assert int(rec["bytes_out"]) <= got < total, (rec, got)


def test_steady_slow_reader_is_not_a_write_timeout():
    # In the echo: the client sends and reads at once, reading 3 kB every
    # 20 ms (~150 kB/s, never 20 ms without progress). The kernel reports
    # write space only once a third of the 512 kB send buffer is free,
    # which at that pace takes about a second: the worker must see the
    # client's progress while waiting for it, not cut it as write-timeout.
    total = 600000
    with Daemon("write_timeout = 1; socket_buffer = 262144;") as d:
        s = connect(d.address(), rcvbuf=4096)
        result = []
        t = threading.Thread(target=lambda: result.append(read_slowly(s, 3000, 0.02)), daemon=True)
        t.start()
        s.sendall(b"S" * total)
        s.shutdown(socket.SHUT_WR)
        t.join(60 * SLOW)
        rec = d.wait_records(1, timeout=60 * SLOW)[0]
        print(f"   client received {result}; record {rec['reason']}, {rec['bytes_out']} bytes out "
              f"after {rec['duration']} s")
        assert rec["reason"] == "client-closed" and result == [(total, None)], (rec, result)
        assert int(rec["bytes_out"]) == total, rec


def test_reset_after_half_close_counts_only_what_was_acknowledged():
    # Half-close, never read, then reset while the worker still waits for
    # the echo to be taken: the record counts what the client's TCP
    # acknowledged (its 4 kB window), not what never left the server.
    with Daemon("write_timeout = 10; socket_buffer = 65536;") as d:
        s = connect(d.address(), rcvbuf=4096)
        port = s.getsockname()[1]
        s.sendall(b"A" * 60000)
        s.shutdown(socket.SHUT_WR)
        # Both ends sent their FIN: the worker has written the whole echo.
        wait_until(lambda: (tcp_socket(d.port, port) or ("?",))[0] == "LAST-ACK", 10, "the echo to be written")
        held = tcp_socket(port, d.port)[2]
        reset(s)
        rec = d.wait_records(1, timeout=20)[0]
        print(f"   record {rec['reason']}: {rec['bytes_out']} bytes out; the client's kernel ever had {held}")
        assert rec["reason"] == "client-closed" and int(rec["bytes_out"]) <= held, (rec, held)


def test_reset_in_lingering_close_counts_only_what_was_acknowledged():
    # max_session_bytes reached, the client never reads and resets during
    # the lingering close: ~96 kB of the echo never left the server's send
    # queue (only the client's 4 kB window did), so it is not counted.
    with Daemon("max_session_bytes = 100000; write_timeout = 10;") as d:
        c = LateReader(d.address(), 200000)
        c.wait_server_closed(d.port)
        held = tcp_socket(c.port, d.port)[2]
        c.stop.set()
        reset(c.sock)
        c.thread.join(10 * SLOW)
        rec = d.wait_records(1, timeout=20)[0]
        print(f"   record {rec['reason']}: {rec['bytes_out']} bytes out; the client's kernel ever had {held}")
        assert rec["reason"] == "session-bytes" and int(rec["bytes_out"]) <= held, (rec, held)


def test_worker_killed_in_lingering_close_leaves_no_orphan_nor_over_claim():
    # max_session_bytes reached, the client never reads (4 kB window): the
    # worker lingers with ~96 kB of echo unacknowledged, and is killed by a
    # signal (here SIGKILL; the daemon's after its kill grace, the OOM
    # killer, a crash alike). Its connection must be reset at once, not left
    # to an orphan socket holding the echo outside max_clients and
    # write_timeout, and its record must not count echo the client never got.
    # Two moments: the client done sending (nothing unread on the server:
    # a normal close would leave an orphan), and still sending.
    problems = []
    for case, total in (("done sending", 200000), ("still sending", None)):
        with Daemon("max_session_bytes = 100000; write_timeout = 30;") as d:
            c = LateReader(d.address(), total)
            c.wait_server_closed(d.port)
            if total:
                c.thread.join(10 * SLOW)
                wait_until(lambda: tcp_socket(d.port, c.port)[2] == 0, 10, "the worker to discard the input")
            server = tcp_socket(d.port, c.port)
            assert server[1] > 0, server  # echo waits for the client
            worker = [p for p, st in d.children() if st != "Z"]
            assert len(worker) == 1, worker
            os.kill(worker[0], signal.SIGKILL)
            rec = d.wait_records(1, timeout=20)[0]
            # No socket of the server's side still holds echo.
            left = [None]

            def no_orphan():
                left[0] = tcp_socket(d.port, c.port)
                return left[0] is None or left[0][1] == 0
            try:
                wait_until(no_orphan, 5, "the killed worker's socket to go")
            except AssertionError:
                pass
            got, was_reset = c.read_to_end()
            print(f"   {case}: worker killed with {server[1]} bytes unacknowledged; the server's side then "
                  f"{left[0]}; the client read {got} bytes (reset: {was_reset}); record {rec['reason']} "
                  f"({rec['detail']}): {rec['bytes_out']} bytes out")
            # The reset may reach the sending thread first.
            was_reset = was_reset or any(isinstance(e, (ConnectionResetError, BrokenPipeError)) for e in c.errors)
            if rec["detail"] != "worker killed by SIGKILL":
                problems.append(f"{case}: {rec}")
            if left[0] is not None and left[0][1] > 0:
                problems.append(f"{case}: an orphan holds the echo: {left[0]}")
            if not was_reset:
                problems.append(f"{case}: the client got no reset")
            if int(rec["bytes_out"]) > got:
                problems.append(f"{case}: the record says {rec['bytes_out']} bytes out, the client got {got}")
    assert not problems, problems


def test_idle_means_waiting_for_input_in_splice_mode():
    # Idleness is time spent waiting for input, in splice mode as in copy
    # mode: a long wait for the client to take its echo is not idle time.
    idle = 1.0 * SLOW  # longer than a round of the set-up below on a busy machine
    # write_timeout outlasts the client's wait below (2 * idle), whatever SLOW.
    with Daemon(f"idle_timeout = {idle}; write_timeout = {5 * idle:g}; buffer_size = 65536; "
                "socket_buffer = 65536;") as d:
        s = connect(d.address(), rcvbuf=4096)
        port = s.getsockname()[1]
        bulk = os.urandom(1 << 20)  # full buffers: the worker switches to splice()
        t = threading.Thread(target=s.sendall, args=(bulk,))
        t.start()
        assert recv_exact(s, len(bulk)) == bulk
        t.join()
        # Blocks the worker takes whole, unread, until it holds one it cannot
        # send: its receive queue empty, bytes sent minus those the client
        # read, holds unread and the worker's send queue holds are in its pipe.
        sent = read = 0
        block = b"s" * 16384

        def held():
            server, client = tcp_socket(d.port, port), tcp_socket(port, d.port)
            assert server and server[0] == "ESTAB", f"the session ended early: {server} {d.records()}"
            return sent - read - client[2] - server[1] if server[2] == 0 else 0

        for _ in range(200):
            s.sendall(block)
            sent += len(block)
            wait_until(lambda: (tcp_socket(d.port, port) or (0, 0, 0))[2] == 0, 10, "the worker to take the block")
            # Held for good, not just between its splice() in and out.
            if all(held() > 0 and not time.sleep(0.05) for _ in range(5)):
                break
        waiting = held()
        assert waiting > 0, "the worker never had to wait to send"
        time.sleep(2 * idle)  # the client takes its time to read
        assert recv_exact(s, sent) == b"s" * sent
        s.sendall(b"ping")
        try:
            answer = s.recv(4)
        except ConnectionResetError:
            answer = b"(reset)"
        print(f"   worker waited {2 * idle:.1f} s to send {waiting} bytes (idle_timeout {idle} s); "
              f"a prompt message then got {answer!r}")
        assert answer == b"ping", answer
        s.close()
        rec = d.wait_records(1)[0]
        assert rec["reason"] == "client-closed", rec


def test_socket_buffer_past_the_kernel_limit_is_said_once():
    """The kernel caps SO_RCVBUF/SO_SNDBUF at net.core.rmem_max/wmem_max
    without a word: a socket_buffer above them gets one warning naming the
    sysctls and what sessions get, at start and at a reload that changes
    it, never per connection; a value within them gets none."""
    from harness import Skip
    from test_lifecycle import reload
    try:
        with open("/proc/sys/net/core/rmem_max") as f:
            rmem = int(f.read())
        with open("/proc/sys/net/core/wmem_max") as f:
            wmem = int(f.read())
    except OSError as e:
        raise Skip(f"the sysctls cannot be read: {e}")
    limit = min(rmem, wmem)
    warning = r"warning: socket_buffer = (\d+) is more than the kernel allows \(net\.core\.rmem_max = %d, " \
              r"net\.core\.wmem_max = %d\): sessions get (\d+) bytes for receiving and (\d+) for sending" % (rmem, wmem)
    within = min(limit, 16 * 1024 * 1024)
    with Daemon("socket_buffer = %d;" % within) as d:
        for _ in range(3):
            assert connect(d.address()).close() is None
        if limit < 16 * 1024 * 1024:
            over = min(16 * 1024 * 1024, 2 * limit)
            reload(d, "socket_buffer = %d;" % over)
            m = d.wait_log(warning)[0]
            assert (int(m.group(1)), int(m.group(2)), int(m.group(3))) == (over, min(over, rmem), min(over, wmem))
            for _ in range(3):
                with connect(d.address()) as c:
                    c.sendall(b"x")
                    assert recv_exact(c, 1) == b"x"
            d.wait_log(r"connection .* closed", count=6)
            reload(d, "socket_buffer = %d; max_clients = 100;" % over)    # unchanged: said once
        assert d.stop() == 0
        log = d.log.snapshot()
    assert sum(1 for line in log if "is more than the kernel allows" in line) == (limit < 16 * 1024 * 1024), log
    if limit < 16 * 1024 * 1024:
        with Daemon("socket_buffer = %d;" % over) as d:
            d.wait_log(warning)
            assert d.stop() == 0


if __name__ == "__main__":
    main([test_max_clients_backpressure, test_idle_timeout, test_write_timeout_client_never_reads,
          test_max_session_time_busy_client, test_max_session_bytes,
          test_client_reset_is_recorded_not_fatal, test_cap_changes_logged_at_a_bounded_rate,
          test_cap_changes_held_while_their_records_are_filtered,
          test_limits_deliver_what_they_count,
          test_limit_on_a_client_that_never_reads, test_half_closed_non_readers_stay_within_max_clients,
          test_half_closed_non_reader_is_reset_after_write_timeout,
          test_half_closed_slow_but_steady_reader_gets_its_echo,
          test_half_closed_reader_that_stops_is_reset_after_write_timeout_without_progress,
          test_trickling_half_closed_reader_is_bounded_by_max_session_time,
          test_steady_slow_reader_is_not_a_write_timeout,
          test_reset_after_half_close_counts_only_what_was_acknowledged,
          test_reset_in_lingering_close_counts_only_what_was_acknowledged,
          test_worker_killed_in_lingering_close_leaves_no_orphan_nor_over_claim,
          test_idle_means_waiting_for_input_in_splice_mode,
          test_socket_buffer_past_the_kernel_limit_is_said_once])
