#!/usr/bin/env python3
"""The fault suite: bounded, loopback-only abuse of the real binary, each
test printing its figure. (Also part of the suite, elsewhere: 1000
simultaneous disconnects in test_lifecycle.py; the pids cap and EMFILE in
test_resources.py; reload and SIGTERM under load in test_lifecycle.py.)"""
import os
import re
import selectors
import socket
import statistics
import threading
import time

from harness import SLOW, Daemon, connect, main, recv_exact, scaled, served, wait_until


def sockstat_tcp_pages():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1])
    raise AssertionError("no TCP line in /proc/net/sockstat")


def test_storm_of_short_connections():
    n, threads = scaled(20000, 500), 8
    errors = []

    def client(count):
        try:
            for _ in range(count):
                with connect(d.address()) as s:
                    s.sendall(b"storm!!!")
                    assert recv_exact(s, 8) == b"storm!!!"
        except Exception as e:
            errors.append(e)

    with Daemon("max_clients = 1000;", backlog=4096) as d:
        start = time.monotonic()
        workers = [threading.Thread(target=client, args=(n // threads,)) for _ in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(600 * SLOW)
        took = time.monotonic() - start
        assert not errors, errors[:3]
        time.sleep(1.0 * SLOW)
        zombies = sum(1 for _, st in d.children() if st == "Z")
        assert d.stop(timeout=60) == 0
        recs = d.records()
        # Pids and client ports both come round again within 20000 forks
        # (pid_max may be 32768, and other processes fork too); a record
        # written twice would repeat both.
        sessions = {(r["pid"], r["client"]) for r in recs}
        print(f"   {n} short connections in {took:.1f} s ({n / took:.0f}/s): {zombies} zombies after {1.0 * SLOW:g} s, "
              f"{len(recs)} records for {len(sessions)} sessions")
        assert zombies == 0
        assert len(recs) == n and len(sessions) == n  # exactly one record per connection
        assert all(r["reason"] == "client-closed" and r["bytes_out"] == "8" for r in recs)


def test_3000_simultaneous_connection_attempts():
    n = scaled(3000, 300)
    with Daemon(f"max_clients = {n + 100};", backlog=4096) as d:
        sel = selectors.DefaultSelector()
        socks = []
        start = time.monotonic()
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(d.address())
            socks.append(s)
            sel.register(s, selectors.EVENT_WRITE, "connecting")
        served_n, sent = 0, 0
        deadline = start + 5 * SLOW
        while served_n < n and time.monotonic() < deadline:
            for key, ev in sel.select(timeout=0.1):
                s = key.fileobj
                if key.data == "connecting":
                    s.send(b"3")
                    sent += 1
                    sel.modify(s, selectors.EVENT_READ, "waiting")
                elif s.recv(1) == b"3":
                    served_n += 1
                    sel.unregister(s)
        took = time.monotonic() - start
        print(f"   {n} simultaneous connection attempts: {served_n} served within {took:.2f} s (limit {5 * SLOW:g} s)")
        assert served_n == n, (served_n, sent)
        for s in socks:
            s.close()
        wait_until(lambda: len(d.records()) == n, 30, "every record")


def test_slow_and_idle_clients_closed_on_time():
    with Daemon("idle_timeout = 1; max_session_time = 2.5;") as d:
        def slow(period, total):
            s = connect(d.address())
            end = time.monotonic() + total
            try:
                while time.monotonic() < end:
                    s.sendall(b".")
                    if recv_exact(s, 1) != b".":
                        return "corrupt"
                    time.sleep(period)
                return "not closed"
            except (ConnectionError, AssertionError):
                return "closed"
            finally:
                s.close()
        idle = connect(d.address())
        t0 = time.monotonic()
        results = {}
        threads = [threading.Thread(target=lambda: results.__setitem__("dribble", slow(0.3, 10))),
                   threading.Thread(target=lambda: results.__setitem__("too slow", slow(1.5, 10)))]
        for t in threads:
            t.start()
        assert idle.recv(1) == b""
        idle_after = time.monotonic() - t0
        for t in threads:
            t.join(30 * SLOW)
        recs = d.wait_records(3)
        by_reason = {}
        for r in recs:
            by_reason.setdefault(r["reason"], []).append(float(r["duration"]))
        print(f"   idle client closed after {idle_after:.2f} s; 1 byte every 1.5 s: idle-timeout after "
              f"{max(by_reason.get('idle-timeout', [0])):.2f} s; 1 byte every 0.3 s: session-time after "
              f"{max(by_reason.get('session-time', [0])):.2f} s")
        assert results == {"dribble": "closed", "too slow": "closed"}, results
        assert sorted(r["reason"] for r in recs) == ["idle-timeout", "idle-timeout", "session-time"], recs
        assert 0.9 <= idle_after < 2 * SLOW
        assert 2.4 <= by_reason["session-time"][0] < 4 * SLOW


def server_side_bytes(port):
    """Per established connection whose local port is `port`: the kernel memory
    of its receive queue and its queued send data (ss -tm: r + w)."""
    import subprocess
    out = subprocess.run(["ss", "-tmnH", "state", "established", "sport", f"= :{port}"],
                         capture_output=True, text=True, check=True).stdout
    sizes = []
    for m in re.finditer(r"skmem:\(r(\d+),rb\d+,t\d+,tb\d+,f\d+,w(\d+),", out):
        sizes.append(int(m.group(1)) + int(m.group(2)))
    return sizes


def never_reading(config, n):
    base = sockstat_tcp_pages()
    with Daemon(config) as d:
        clients = []
        for _ in range(n):
            s = connect(d.address())
            s.setblocking(False)
            clients.append(s)
        block = os.urandom(1 << 16)
        peak, per_conn = base, 0
        # When the kernel last took data from each client, and when each
        # first found its session gone: how long filling the buffers takes
        # is up to the machine, the end after the last progress is not.
        taken, gone = [None] * n, [None] * n
        end = time.monotonic() + 20 * SLOW
        while time.monotonic() < end and None in gone:
            for i, s in enumerate(clients):
                if gone[i]:
                    continue
                try:
                    s.send(block)
                    taken[i] = time.monotonic()
                except BlockingIOError:
                    pass
                except ConnectionError:
                    gone[i] = time.monotonic()
            peak = max(peak, sockstat_tcp_pages())
            per_conn = max([per_conn] + server_side_bytes(d.port))
            time.sleep(0.01)
        recs = d.wait_records(n, timeout=20)
        assert None not in gone, f"{gone.count(None)} of {n} sessions still open"
        stalled_for = [g - t for g, t in zip(gone, taken)]
        for s in clients:
            s.close()
        # The kernel counts TCP memory in per-CPU batches of up to 1 MiB (256
        # pages), so "back" means within those batches of where it started.
        slack = 256 * os.cpu_count() + 64
        wait_until(lambda: sockstat_tcp_pages() <= base + slack, 10 * SLOW, "kernel socket memory to come back")
        durations = sorted(float(r["duration"]) for r in recs)
        return ({r["reason"] for r in recs}, durations, max(stalled_for), base, peak, sockstat_tcp_pages(),
                per_conn)


def test_clients_that_never_read():
    n = scaled(50, 10)
    for config, bound in (("write_timeout = 1;", None), ("write_timeout = 1; socket_buffer = 65536;", 65536)):
        reasons, durations, stalled, base, peak, after, per_conn = never_reading(config, n)
        print(f"   {n} clients that never read, socket_buffer {bound or 'autotuned'}: all ended by "
              f"{'/'.join(reasons)} ({durations[0]:.2f}..{durations[-1]:.2f} s, at most {stalled:.2f} s "
              f"after their last progress); the daemon's side held at most {per_conn / 1024:.0f} KiB per "
              f"connection; TCP memory {base} -> peak {peak} -> {after} pages")
        assert reasons == {"write-timeout"}, reasons
        assert durations[0] >= 1, durations
        assert stalled < 1 + 2 * SLOW, stalled
        if bound:
            # The kernel doubles the value; allow one more buffer of skb overhead.
            assert per_conn <= 3 * 2 * bound, per_conn


def test_resets_mid_echo():
    n = scaled(100, 20)
    with Daemon() as d:
        for i in range(n):
            s = connect(d.address())
            s.sendall(os.urandom(200000 + i * 997))
            if i % 2:
                s.recv(1000)  # some mid-stream, some before any echo was read
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        recs = d.wait_records(n, timeout=30)
        killed = [r for r in recs if r["detail"] and "killed" in r["detail"]]
        reasons = {}
        for r in recs:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        print(f"   {n} resets mid-echo: {reasons}, {len(killed)} workers killed by a signal")
        assert not killed and set(reasons) <= {"reset", "client-closed"}, recs[:3]
        assert d.stop() == 0


def test_misbehaving_source_beside_a_good_client():
    cfg = "max_clients = 64; max_clients_per_source = 8; source_rate = 20; source_burst = 40;"
    with Daemon(cfg, backlog=4096) as d:
        stop = threading.Event()
        flood = {"attempts": 0, "served": 0}
        held = []

        def flooder():
            while not stop.is_set():
                flood["attempts"] += 1
                try:
                    if served(d.address(), "127.0.0.66"):
                        flood["served"] += 1
                except OSError:
                    pass

        def hog():  # and sessions held open at the per-source limit
            while not stop.is_set() and len(held) < 20:
                try:
                    s = connect(d.address(), source="127.0.0.67")
                    s.sendall(b"h")
                    held.append(s)
                except OSError:
                    pass
                time.sleep(0.01)

        threads = [threading.Thread(target=flooder) for _ in range(4)] + [threading.Thread(target=hog)]
        for t in threads:
            t.start()
        latencies, failures = [], 0
        end = time.monotonic() + 5
        while time.monotonic() < end:
            t0 = time.monotonic()
            try:
                with connect(d.address(), source="127.0.0.1") as s:
                    s.sendall(b"good client")
                    ok = recv_exact(s, 11) == b"good client"
            except OSError:
                ok = False
            latencies.append(time.monotonic() - t0)
            failures += not ok
            time.sleep(0.045)  # about 20 a second: within its own rate
        stop.set()
        for t in threads:
            t.join(30 * SLOW)
        for s in held:
            s.close()
        d.signal(__import__("signal").SIGUSR1)
        refusals = d.wait_log(r"refused (\d+) connection\(s\) from 127\.0\.0\.66 in the last 10 s: (.*)")[0]
        good_refused = d.log_lines(r"refused \d+ connection\(s\) from 127\.0\.0\.1 ")
        q = statistics.quantiles(latencies, n=100)
        print(f"   flooder: {flood['attempts']} attempts, {flood['served']} served, {refusals.group(1)} refused "
              f"({refusals.group(2)}); hog held {len(held)} sessions; good client: "
              f"{len(latencies) - failures}/{len(latencies)} served, latency p50 {q[49] * 1000:.1f} ms, "
              f"p99 {q[98] * 1000:.1f} ms")
        assert failures == 0 and not good_refused
        assert flood["served"] < flood["attempts"] / 2


if __name__ == "__main__":
    main([test_storm_of_short_connections, test_3000_simultaneous_connection_attempts,
          test_slow_and_idle_clients_closed_on_time, test_clients_that_never_read, test_resets_mid_echo,
          test_misbehaving_source_beside_a_good_client])
