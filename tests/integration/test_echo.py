#!/usr/bin/env python3
"""Echo correctness through socket activation and standalone: exact bytes,
half-close, many clients, several sockets, inetd style, the records."""
import os
import selectors
import socket
import threading

from harness import (SLOW, Daemon, connect, echo_once, free_port, inetd_session, main, recv_all, recv_exact, scaled,
                     stream_checksum)


def test_100mb_random_with_checksum_and_half_close():
    with Daemon("log_level = \"info\";") as d:
        s = connect(d.address(), timeout=120)
        total = 100 * 1000 * 1000
        sent, got, n = stream_checksum(s, total)
        s.close()
        print(f"   100 MB echoed: {n} bytes, sha256 {got[:16]}...")
        assert n == total, n
        assert sent == got
        rec = d.wait_records(1)[0]
        assert rec["reason"] == "client-closed", rec
        assert int(rec["bytes_in"]) == total and int(rec["bytes_out"]) == total, rec


def test_message_sizes_round_trip():
    with Daemon() as d:
        s = connect(d.address())
        for size in [1, 2, 63, 64, 1000, 4096, 65535, 65536, 65537, 200000, 1]:
            payload = os.urandom(size)
            s.sendall(payload)
            assert recv_exact(s, size) == payload, size
        s.close()


def test_many_concurrent_clients():
    n = scaled(200, 20)
    size = 64 * 1024
    with Daemon("max_clients = 1000;") as d:
        sel = selectors.DefaultSelector()
        clients = []
        for i in range(n):
            s = connect(d.address())
            s.setblocking(False)
            payload = os.urandom(size)
            state = {"sock": s, "out": payload, "sent": 0, "in": bytearray()}
            clients.append(state)
            sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, state)
        done = 0
        while done < n:
            for key, ev in sel.select(timeout=30):
                st = key.data
                if ev & selectors.EVENT_WRITE and st["sent"] < size:
                    st["sent"] += st["sock"].send(st["out"][st["sent"]:st["sent"] + 65536])
                    if st["sent"] == size:
                        sel.modify(st["sock"], selectors.EVENT_READ, st)
                if ev & selectors.EVENT_READ:
                    data = st["sock"].recv(65536)
                    assert data, "closed early"
                    st["in"] += data
                    if len(st["in"]) == size:
                        sel.unregister(st["sock"])
                        done += 1
        for st in clients:
            assert bytes(st["in"]) == st["out"]
            st["sock"].close()
        recs = d.wait_records(n, timeout=30)
        assert all(r["reason"] == "client-closed" for r in recs), recs
        print(f"   {n} concurrent clients, {size} bytes each, all exact")


def test_ipv6_and_two_sockets_one_line_each():
    with Daemon(listen=(("127.0.0.1", 0), ("::1", 0)), names=("echo", "echo6")) as d:
        assert echo_once(d.address(0), b"four") == b"four"
        assert echo_once(d.address(1), b"six") == b"six"
        lines = d.log_lines(r"listening on (\S+) \(fd (\d+), (\S+)\)")
        assert [(m.group(2), m.group(3)) for m in lines] == [("3", "echo"), ("4", "echo6")], lines
        assert lines[1].group(1).startswith("[::1]:")
        recs = sorted(r["client"] for r in d.wait_records(2))
        assert recs[0].startswith("127.0.0.1:") and recs[1].startswith("[::1]:"), recs


def test_record_fields():
    with Daemon() as d:
        s = connect(d.address())
        client = "%s:%d" % s.getsockname()[:2]
        s.sendall(b"x" * 1234)
        recv_exact(s, 1234)
        worker = [p for p, _ in d.children()]
        s.shutdown(socket.SHUT_WR)
        assert s.recv(1) == b""
        s.close()
        rec = d.wait_records(1)[0]
        assert rec["client"] == client, (rec, client)
        assert rec["local"] == "127.0.0.1:%d" % d.port, rec
        assert rec["bytes_in"] == "1234" and rec["bytes_out"] == "1234", rec
        assert [int(rec["pid"])] == worker, (rec, worker)
        assert rec["reason"] == "client-closed"


def test_standalone_binds_from_config():
    port = free_port()
    with Daemon('listen = [ "127.0.0.1", "::1" ];', args=["-p", str(port)], activation=False) as d:
        assert echo_once(("127.0.0.1", port), b"v4") == b"v4"
        assert echo_once(("::1", port), b"v6") == b"v6"
        lines = d.log_lines(r"listening on (\S+) \(fd \d+, bound from the configuration\)")
        assert [m.group(1) for m in lines] == [f"127.0.0.1:{port}", f"[::1]:{port}"], lines
        assert d.stop() == 0


def test_standalone_default_is_dual_stack():
    port = free_port()
    with Daemon("", args=["-p", str(port)], activation=False) as d:
        assert echo_once(("127.0.0.1", port), b"mapped") == b"mapped"
        assert echo_once(("::1", port), b"native") == b"native"
        recs = d.wait_records(2)
        # IPv4 clients of the dual-stack socket are shown as IPv4, not ::ffff:...
        assert any(r["client"].startswith("127.0.0.1:") for r in recs), recs


def test_inetd_style_connected_socket():
    d = inetd_session()
    try:
        rec = d.wait_records(1)[0]
        assert rec["reason"] == "client-closed" and rec["bytes_out"] == "5", rec
    finally:
        d.cleanup()


def test_urgent_data_is_echoed():
    # RFC 862 echoes any data received; urgent data (MSG_OOB) is data too
    # (RFC 6093), in copy mode and after bulk traffic moved to splice().
    with Daemon("buffer_size = 4096;") as d:
        for mode in ("copy", "splice"):
            s = connect(d.address(), timeout=2)
            if mode == "splice":
                bulk = os.urandom(1 << 20)  # full buffers: the worker switches to splice()
                t = threading.Thread(target=s.sendall, args=(bulk,))
                t.start()
                assert recv_exact(s, len(bulk)) == bulk
                t.join()
            s.sendall(b"abc")
            s.send(b"X", socket.MSG_OOB)
            s.sendall(b"def")
            # Before any end of stream: splice() stops at the urgent mark, and
            # a worker that waits for it to move on spins.
            got = b""
            try:
                while len(got) < 7:
                    got += s.recv(7 - len(got))
            except socket.timeout:
                pass
            s.shutdown(socket.SHUT_WR)
            got += recv_all(s)
            s.close()
            print(f"   {mode} mode: abc, X (MSG_OOB), def came back as {got!r}")
            assert got == b"abcXdef", got
        recs = d.wait_records(2)
        assert all(r["reason"] == "client-closed" for r in recs), recs


def test_urgent_byte_of_a_connection_queued_before_start():
    # A connection the kernel completed before the daemon set up its
    # listener (the one that activated the service, or any queued during a
    # restart) was cloned without SO_OOBINLINE: its urgent byte is still
    # echoed.
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    c = socket.socket()
    c.connect(ls.getsockname())  # queued before the daemon runs
    c.sendall(b"abc")
    c.send(b"X", socket.MSG_OOB)
    c.sendall(b"def")
    c.shutdown(socket.SHUT_WR)
    with Daemon(passed_fds=[ls.fileno()]) as d:
        c.settimeout(10 * SLOW)
        got = recv_all(c)
        rec = d.wait_records(1)[0]
        print(f"   echoed {got!r}; record: {rec['bytes_in']} bytes in, {rec['bytes_out']} out")
        c.close()
        assert got == b"abcXdef", got
        assert rec["bytes_in"] == rec["bytes_out"] == "7", rec
    ls.close()


if __name__ == "__main__":
    main([test_100mb_random_with_checksum_and_half_close, test_message_sizes_round_trip,
          test_many_concurrent_clients, test_ipv6_and_two_sockets_one_line_each, test_record_fields,
          test_standalone_binds_from_config, test_standalone_default_is_dual_stack,
          test_inetd_style_connected_socket, test_urgent_data_is_echoed,
          test_urgent_byte_of_a_connection_queued_before_start])
