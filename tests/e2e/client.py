#!/usr/bin/env python3
"""Echo clients for the package e2e test, run in the machine's network
namespace. Every mode checks every echoed byte and prints one JSON line.

  client.py once HOST PORT NBYTES       one connection: send, half-close, read all
  client.py loop HOST PORT SECONDS      connections back to back; counts outcomes
  client.py hold HOST PORT SECONDS      one session that keeps echoing for SECONDS
  client.py from HOST PORT SOURCE       one echo from another loopback address; refused or not
"""
import json
import os
import socket
import sys
import time


def connect(host, port, timeout, source=None):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source:
        s.bind((source, 0))
    s.connect((host, port))
    return s


def from_source(host, port, source):
    """Admission control refuses by resetting the connection right away (on
    loopback, often before connect() has returned)."""
    try:
        s = connect(host, port, 30, source)
    except ConnectionResetError:
        return {"served": False}
    try:
        s.sendall(b"x")
        return {"served": recv_exact(s, 1) == b"x"}
    except (ConnectionResetError, BrokenPipeError, ConnectionError):
        return {"served": False}
    finally:
        s.close()


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def once(host, port, nbytes):
    payload = os.urandom(nbytes)
    s = connect(host, port, 30)
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    s.close()
    return {"sent": nbytes, "received": len(got), "exact": got == payload[:len(got)],
            "local_port": None}


def probe(host, port, timeout):
    """Whether a new client is echoed within timeout (not left waiting in
    the backlog at max_clients)."""
    try:
        s = connect(host, port, timeout)
        s.sendall(b"probe")
        served = recv_exact(s, 5) == b"probe"
        s.close()
        return {"served": served}
    except OSError as e:
        return {"served": False, "error": repr(e)}


def echo_counted(host, port, timeout, counts, lat=None):
    """One short connection: 64 random bytes echoed, then a half-close
    answered by EOF; counted in `counts` as ok, refused or broken (with the
    error). With `lat`, `timeout` bounds the whole exchange, not each step,
    and the time from connect to echo is appended to it."""
    payload = os.urandom(64)
    t0 = time.monotonic()
    try:
        s = connect(host, port, timeout)
    except ConnectionRefusedError:
        counts["refused"] += 1
        time.sleep(0.01)
        return
    except OSError as e:  # a reset or a timeout while connecting
        counts["broken"] += 1
        counts["errors"].append(repr(e))
        return
    try:
        if lat is not None:
            s.settimeout(max(0.001, timeout - (time.monotonic() - t0)))
        s.sendall(payload)
        if recv_exact(s, 64) != payload:
            raise ConnectionError("corrupted echo")
        if lat is not None:
            lat.append(time.monotonic() - t0)
        s.shutdown(socket.SHUT_WR)
        if s.recv(1) != b"":
            raise ConnectionError("data after the echo")
        counts["ok"] += 1
    except OSError as e:
        counts["broken"] += 1
        counts["errors"].append(repr(e))
    finally:
        s.close()


def loop(host, port, seconds):
    """Short connections back to back. A connection may wait long (the
    daemon drains while restarting); only a refusal or a broken echo counts
    against the service."""
    counts = {"ok": 0, "refused": 0, "broken": 0, "errors": []}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        echo_counted(host, port, 60, counts)
    return counts


def timed(host, port, seconds):
    """Short connections back to back, each given 1 s in all (connect, echo,
    close), as a client with a short timeout would: one that takes longer
    counts as broken. Reports the latency of each (connect to echo)."""
    counts = {"ok": 0, "refused": 0, "broken": 0, "errors": [], "max_ms": 0.0, "p99_ms": 0.0}
    lat = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        echo_counted(host, port, 1, counts, lat)
    lat.sort()
    if lat:
        counts["max_ms"] = round(lat[-1] * 1000, 1)
        counts["p99_ms"] = round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1)
    return counts


def hold(host, port, seconds):
    s = connect(host, port, 30)
    rounds = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        payload = os.urandom(32)
        s.sendall(payload)
        if recv_exact(s, 32) != payload:
            raise ConnectionError("corrupted echo")
        rounds += 1
        time.sleep(0.05)
    s.shutdown(socket.SHUT_WR)
    tail = s.recv(1)
    s.close()
    return {"rounds": rounds, "clean_close": tail == b""}


if __name__ == "__main__":
    mode, host, port, arg = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if mode == "from":
        result = from_source(host, port, arg)
    else:
        result = {"once": once, "loop": loop, "timed": timed, "hold": hold, "probe": probe}[mode](host, port, float(arg) if mode != "once" else int(arg))
    print(json.dumps(result), flush=True)
