#!/usr/bin/env python3
"""Admission control against the real binary: per-source limits, rates,
allow and deny lists, refusals that are reset and reported in aggregate,
counters in STATUS= and on SIGUSR1, and the address privacy modes. Loopback
aliases (127.0.0.x) stand for different clients."""
import os
import re
import signal
import subprocess
import sys
import time

import procfs
from harness import SCALE, SLOW, Daemon, Skip, connect, live_sessions, main, recv_exact, served, wait_until

NO_RATE = "source_rate = 0;\n"


def refusal_lines(d):
    return d.log_lines(r"refused (\d+) connection\(s\) from ((?:\d+ other source\(s\)|sources named above \(before "
                       r"they were forgotten\)|sources not tracked)(?: and (?:sources named above \(before they were "
                       r"forgotten\)|sources not tracked))*|\S+) in the last 10 s: (.*)")


def flush_report(d):
    """SIGUSR1 writes the pending refusal records, then the summary."""
    before = len(d.log_lines(r"summary: "))
    d.signal(signal.SIGUSR1)
    return d.wait_log(r"summary: (.*)", count=before + 1)[-1]


def test_per_source_limit_refuses_only_that_source():
    with Daemon(NO_RATE + "max_clients_per_source = 3;") as d:
        held = live_sessions(d.address(), 3, source="127.0.0.1")
        assert not served(d.address(), "127.0.0.1")      # the fourth: reset
        assert served(d.address(), "127.0.0.2")          # someone else: served
        held.pop().close()
        refused = [1]  # the fourth above; each retry below that is still refused counts too

        def retry():
            ok = served(d.address(), "127.0.0.1")
            refused[0] += not ok
            return ok
        wait_until(retry, 10, "a freed place to be usable")
        n = refused[0]
        summary = flush_report(d)
        lines = [m for m in refusal_lines(d) if m.group(2) == "127.0.0.1"]
        assert len(lines) == 1 and lines[0].group(1) == str(n) and f"per-source limit {n}" in lines[0].group(3), \
            [m.group(0) for m in refusal_lines(d)]
        assert f"{n} refused (denied 0, rate 0, per-source {n})" in summary.group(1), summary.group(0)
        d.wait_notify(f"{n} refused (denied 0, rate 0, per-source {n})")
        for s in held:
            s.close()


def test_rate_limit_blocks_a_while_then_forgives():
    with Daemon("max_clients_per_source = 0; source_rate = 1; source_burst = 3; source_block_time = 1;") as d:
        start, n = time.monotonic(), 0
        while served(d.address(), "127.0.0.1"):            # until the bucket is dry: refused and blocked
            n += 1
            # The burst, plus a token a second since the first try (a busy
            # machine may take more than a second over the burst).
            assert n <= 3 + (time.monotonic() - start) * 1, n
        assert n >= 3, n
        assert served(d.address(), "127.0.0.2")            # others unaffected
        t0 = time.monotonic()
        wait_until(lambda: served(d.address(), "127.0.0.1"), 10, "the block to end", interval=0.1)
        waited = time.monotonic() - t0
        print(f"   rate limit 1/s, burst 3: refused, blocked, served again after {waited:.1f} s")
        assert waited >= 0.8, waited


def test_allow_and_deny_reloadable():
    with Daemon(NO_RATE + 'deny = [ "127.0.0.2" ];') as d:
        assert served(d.address(), "127.0.0.1")
        assert not served(d.address(), "127.0.0.2")
        d.write_config(NO_RATE + 'allow = [ "127.0.0.0/30" ]; deny = [ "127.0.0.3" ];')
        d.signal(signal.SIGHUP)
        d.wait_log(r'allow \[\] -> \[ "127.0.0.0/30" \], deny \[ "127.0.0.2" \] -> \[ "127.0.0.3" \]')
        assert served(d.address(), "127.0.0.2")
        assert not served(d.address(), "127.0.0.3")         # deny wins over allow
        assert not served(d.address(), "127.0.0.9")         # not in a non-empty allow list
        flush_report(d)
        reasons = {m.group(2): m.group(3) for m in refusal_lines(d)}
        assert reasons.get("127.0.0.3") == "denied 1" and reasons.get("127.0.0.9") == "denied 1", reasons


def test_flood_is_reported_in_aggregate():
    # A token every 1000 s: each source gets exactly its burst (one), however
    # slowly the machine serves it.
    with Daemon("max_clients_per_source = 0; source_rate = 0.001; source_burst = 1; source_block_time = 60;") as d:
        t0 = time.monotonic()
        flush_report(d)  # the next periodic report is 10 s after this at the earliest
        refused = sum(not served(d.address(), "127.0.0.5") for _ in range(500))
        for i in range(30):  # thirty more sources, a few refusals each
            for _ in range(3):
                served(d.address(), f"127.0.1.{i}")
        took = time.monotonic() - t0
        flush_report(d)
        lines = refusal_lines(d)
        mine = [m for m in lines if m.group(2) == "127.0.0.5"]
        others = [m for m in lines if "other source" in m.group(2)]
        print(f"   500 connections from one source: {refused} refused, reported in {len(mine)} record; "
              f"31 refusing sources in {len(lines)} records ({took:.1f} s)")
        assert refused == 499, refused
        total = sum(int(m.group(1)) for m in lines)
        assert total == 499 + 30 * 2, total                       # every refusal counted once
        assert sum(int(m.group(1)) for m in mine) == 499, [m.group(0) for m in mine]
        if took < 10:  # one report: the aggregate as it is meant
            assert len(mine) == 1, [m.group(0) for m in mine]
            assert len(lines) == 11 and len(others) == 1, [m.group(0) for m in lines]
            assert lines[-11] is mine[0], "the loudest source is named first"
        else:  # a machine this slow also saw a periodic report in between
            assert len(lines) <= 11 * (1 + int(took // 10)), [m.group(0) for m in lines]
        assert d.stop() == 0                                      # every worker reaped and recorded
        assert len(d.records()) == 1 + 30 * 1                     # one record per served connection only


def test_one_untallied_source_is_not_many():
    # With the table full of sources that were served, a denied source gets
    # no tally (it may only take another tally's place): its refusals are
    # summed with the rest, and not counted as one source per refusal.
    with Daemon('source_table_size = 64; source_rate = 20; deny = [ "127.0.20.0/24" ];') as d:
        for i in range(70):
            assert served(d.address(), source=f"127.0.30.{i + 1}")
        wait_until(lambda: not d.children(), 10, "the sessions to end")  # their sources rest: no room
        for _ in range(50):
            assert not served(d.address(), source="127.0.20.1")
        flush_report(d)
        lines = refusal_lines(d)
        print(f"   {lines[-1].group(0)}")
        assert len(lines) == 1 and lines[0].group(1) == "50", [m.group(0) for m in lines]
        # Named, or summed: then as one source at most (its tally may have
        # been made while sessions were live and forgotten once they rested).
        who = lines[0].group(2)
        m = re.match(r"(\d+) other source", who)
        assert who in ("127.0.20.1", "sources not tracked") or (m and int(m.group(1)) <= 1), who


def test_periodic_report_without_asking():
    with Daemon(NO_RATE + 'deny = [ "127.0.0.7" ];') as d:
        for _ in range(3):
            assert not served(d.address(), "127.0.0.7")
        m = d.wait_log(r"refused 3 connection\(s\) from 127\.0\.0\.7 in the last 10 s: denied 3", timeout=15)
        assert m


def test_dual_stack_counts_mapped_as_ipv4():
    from harness import free_port
    port = free_port()
    with Daemon(NO_RATE + "max_clients_per_source = 1;", args=["-p", str(port)], activation=False) as d:
        held = connect(("127.0.0.1", port))
        held.sendall(b"a")
        recv_exact(held, 1)
        # Through the same dual-stack socket, as ::ffff:127.0.0.1: the same source.
        assert not served(("::ffff:127.0.0.1", port))
        assert served(("::1", port))
        held.close()


def test_ipv6_prefixes_never_hold_ipv4_clients():
    """IPv4 and IPv6 are separate families in allow and deny: "::/0" (any
    IPv6 client) holds no IPv4 client, through an IPv4 socket or as
    ::ffff:a.b.c.d through a dual-stack one; a prefix written in the mapped
    form (::ffff:0:0/96 and longer) is the IPv4 prefix it maps."""
    from harness import free_port
    from test_lifecycle import reload
    port = free_port()
    with Daemon(NO_RATE + 'allow = [ "192.0.2.0/24", "::/0" ];', args=["-p", str(port)],
                activation=False) as d:
        assert not served(("127.0.0.1", port)), "127.0.0.1 is in neither 192.0.2.0/24 nor IPv6"
        assert not served(("::ffff:127.0.0.1", port))
        assert served(("::1", port))
        reload(d, NO_RATE + 'deny = [ "::/0" ];')
        assert served(("127.0.0.1", port)), "deny ::/0 (no IPv6) refuses IPv4"
        assert served(("::ffff:127.0.0.1", port))
        assert not served(("::1", port))
        reload(d, NO_RATE + 'allow = [ "::ffff:127.0.0.0/104" ];')
        assert served(("127.0.0.1", port))
        assert not served(("::1", port))
        assert d.stop() == 0


def test_reload_with_new_prefix_recounts_live_sessions():
    with Daemon(NO_RATE + "max_clients_per_source = 2;") as d:
        a = connect(d.address(), source="127.0.0.1")
        b = connect(d.address(), source="127.0.0.2")
        for s in (a, b):
            s.sendall(b"r")
            recv_exact(s, 1)
        assert served(d.address(), "127.0.0.3")
        d.write_config(NO_RATE + "max_clients_per_source = 2; source_prefix_ipv4 = 24;")
        d.signal(signal.SIGHUP)
        d.wait_log(r"source_prefix_ipv4 32 -> 24")
        assert not served(d.address(), "127.0.0.3")   # now the same /24 as two live sessions
        a.close()
        wait_until(lambda: served(d.address(), "127.0.0.3"), 10, "the /24 to have room again")
        b.close()


def test_reload_with_new_table_size_recounts_live_sessions():
    with Daemon(NO_RATE + "max_clients_per_source = 2;") as d:
        held = live_sessions(d.address(), 2, source="127.0.0.1")
        d.write_config(NO_RATE + "max_clients_per_source = 2; source_table_size = 64;")
        d.signal(signal.SIGHUP)
        d.wait_log(r"source_table_size 32768 -> 64")
        assert not served(d.address(), "127.0.0.1")     # its two sessions counted in the new table
        held.pop().close()
        wait_until(lambda: served(d.address(), "127.0.0.1"), 10, "the released place to be usable")
        summary = flush_report(d).group(0)
        assert "(source_table_size 64)" in summary, summary
        held[0].close()


def test_log_addresses_prefix_and_hash():
    with Daemon(NO_RATE + 'log_addresses = "prefix"; source_prefix_ipv4 = 24;') as d:
        assert served(d.address(), "127.0.0.9")
        m = d.wait_log(r"connection 127\.0\.0\.0/24 port \d+ -> 127\.0\.0\.1:\d+ closed")[0]
        assert "127.0.0.9" not in m.string
    hashes = []
    for _ in range(2):  # a configured key: the same hash across restarts
        with Daemon(NO_RATE + 'log_addresses = "hash"; log_hash_key = "0123456789abcdef0123";') as d:
            assert served(d.address(), "127.0.0.9")
            assert served(d.address(), "127.0.0.8")
            lines = d.wait_log(r"connection (hash:[0-9a-f]{16}) port \d+ -> ", count=2)
            hashes.append(sorted(m.group(1) for m in lines))  # reaping order is arbitrary
            assert "127.0.0.9" not in " ".join(m.string for m in lines)
    assert hashes[0] == hashes[1] and hashes[0][0] != hashes[0][1], hashes
    with Daemon(NO_RATE + 'log_addresses = "hash";') as d:  # random key: another hash
        assert served(d.address(), "127.0.0.9")
        other = d.wait_log(r"connection (hash:[0-9a-f]{16}) port")[0].group(1)
    assert other != hashes[0][0]


# Smaller under sanitizers and valgrind; 64 is the smallest source_table_size.
TABLE = 64 if SCALE < 1 else 1024 if SLOW <= 1 else 256
PUSHED = 3 * TABLE                      # distinct sources per kind, well over the table


def full_table_config(deny):
    # 0.001/s: no token comes back during the test; a block outlasts it.
    return (f"source_table_size = {TABLE}; max_clients_per_source = 2; source_rate = 0.001; "
            f'source_burst = 3; source_block_time = 3600; deny = [ "{deny}" ];')


def push_sources_past_a_full_table(address, source, family):
    """Fills a small table with each kind of source in turn (denied, one-shot
    admitted, blocked), many more than it holds, then checks that a fresh
    source and a blocked one still get their limits. source(kind, i) gives
    the i-th client address of a kind; kind 1 is denied by the config."""
    blocked = source(0, 1)

    def block(src):
        # Three tokens, then refused and blocked, however fast the workers
        # of the first three are reaped (each takes a token either way).
        for _ in range(3):
            served(address, src)
        assert not served(address, src)

    block(blocked)
    for i in range(PUSHED):
        assert not served(address, source(1, i)), "a denied source was served"
    assert not served(address, blocked), "a flood of denied sources ended a block"
    for i in range(PUSHED):
        assert served(address, source(2, i)), "a new source was refused in a full table"
    assert not served(address, blocked), "a flood of one-shot sources ended a block"
    for i in range(PUSHED):
        block(source(3, i))
        if i % (TABLE // 4) == 0:
            assert not served(address, blocked), "a block ended while the source kept trying"
    # A fresh source: two sessions, the third refused by the per-source cap
    # (it took the last token), the fourth by the rate, then blocked.
    fresh = source(4, 1)
    held = live_sessions(address, 2, source=fresh)
    assert not served(address, fresh), "the per-source cap did not hold in a full table"
    assert not served(address, fresh), "the rate limit did not hold in a full table"
    for s in held:
        s.close()
    assert not served(address, fresh), "a fresh source was not blocked"
    assert not served(address, blocked), "the blocked source got through"
    print(f"   {family}: source_table_size {TABLE}; pushed {PUSHED} denied, {PUSHED} one-shot and "
          f"{PUSHED} blocked sources; a fresh and a blocked source still refused")


def check_full_table_reports(d, denied):
    summary = flush_report(d).group(0)
    lines = refusal_lines(d)
    by_reason = {"denied": 0, "rate limit": 0, "per-source limit": 0}
    for m in lines:
        for part in m.group(3).split(", "):
            reason, n = part.rsplit(" ", 1)
            by_reason[reason] += int(n)
    m = re.search(r"(\d+) refused \(denied (\d+), rate (\d+), per-source (\d+)\)", summary)
    tracked = re.search(r"(\d+) source\(s\) tracked \(source_table_size (\d+)\), (\d+) forgotten", summary)
    forgotten = d.log_lines(r"source table full \(source_table_size \d+\): forgot the (\d+) least")
    print(f"   refusals by reason: {by_reason}; summary: {m.group(0)}; {tracked.group(0)}; "
          f"{len(forgotten)} 'source table full' record(s)")
    assert by_reason["denied"] == int(m.group(2)) == denied, (by_reason, summary)
    assert (by_reason["rate limit"], by_reason["per-source limit"]) == (int(m.group(3)), int(m.group(4)))
    assert int(tracked.group(1)) <= TABLE + 2 and int(tracked.group(2)) == TABLE, summary
    assert int(tracked.group(3)) >= 2 * PUSHED - TABLE, summary
    assert sum(int(f.group(1)) for f in forgotten) == int(tracked.group(3)), summary
    assert "untracked" not in " ".join(d.log.snapshot())


def test_full_source_table_ipv4():
    def source(kind, i):
        return f"127.{10 + kind}.{i >> 8}.{i & 255}"
    with Daemon(full_table_config("127.11.0.0/16")) as d:
        push_sources_past_a_full_table(d.address(), source, "IPv4 from 127.0.0.0/8")
        check_full_table_reports(d, PUSHED)
        assert d.stop() == 0


def test_denied_flood_does_not_open_the_default_table():
    """More denied one-shot sources than the default table holds, quickly
    (a table that filled with them used to admit every new source
    unchecked); then a fresh source still gets max_clients_per_source."""
    from concurrent.futures import ThreadPoolExecutor
    n = 33000  # over the default source_table_size, 32768
    with Daemon('max_clients_per_source = 1; source_rate = 0; deny = [ "127.11.0.0/16" ];') as d:
        def push(k):
            return sum(not served(d.address(), f"127.11.{i >> 8}.{i & 255}") for i in range(k, n, 8))
        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            refused = sum(pool.map(push, range(8)))
        took = time.monotonic() - t0
        held = [connect(d.address(), source="127.20.0.1")]
        held[0].sendall(b"x")
        recv_exact(held[0], 1)
        admitted = sum(served(d.address(), "127.20.0.1") for _ in range(3))
        summary = flush_report(d).group(0)
        print(f"   {n} denied sources in {took:.1f} s, {refused} refused; then a fresh source with "
              f"max_clients_per_source = 1 holding one session: {admitted} of 3 more admitted")
        print(f"   {summary}")
        assert refused == n and admitted == 0, summary
        assert f"denied {n}, rate 0, per-source 3" in summary, summary
        held[0].close()


IN_NETNS = "ECHO_MPSERV_TEST_NETNS"


def run_in_netns(name):
    """Runs test `name` of this file again, in a network namespace of its
    own (with IN_NETNS set), and passes on what it printed and whether it
    passed."""
    try:
        subprocess.run(["unshare", "--net", "true"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise Skip(f"cannot make a network namespace: {e}")
    r = subprocess.run(["unshare", "--net", sys.executable, __file__, name],
                       env=dict(os.environ, **{IN_NETNS: "1"}), capture_output=True, text=True)
    out = "\n".join(line for line in r.stdout.splitlines() if not line.startswith("-- "))
    print(out.rstrip())
    assert r.returncode == 0, r.stderr


def route_to_lo(prefix):
    """Inside run_in_netns() only: a local route makes the kernel deliver
    the whole prefix to lo; binding to an address of it that is not
    configured needs ip_nonlocal_bind."""
    v6 = ":" in prefix
    for cmd in (["ip", "link", "set", "lo", "up"],
                ["ip"] + (["-6"] if v6 else []) + ["route", "add", "local", prefix, "dev", "lo"]):
        subprocess.run(cmd, check=True)
    with open(f"/proc/sys/net/ipv{6 if v6 else 4}/ip_nonlocal_bind", "w") as f:
        f.write("1")


def test_full_source_table_ipv6():
    """IPv6 sources, one /64 each, from a 2001:db8::/48 routed to the
    loopback of a network namespace this test makes for itself."""
    if not os.environ.get(IN_NETNS):
        run_in_netns("test_full_source_table_ipv6")
        return
    route_to_lo("2001:db8::/48")

    def source(kind, i):
        return f"2001:db8:0:{kind << 12 | i:x}::{kind + 1:x}"
    with Daemon(full_table_config("2001:db8:0:1000::/52"), listen=(("2001:db8::1", 0),)) as d:
        push_sources_past_a_full_table(d.address(), source, "IPv6 /64s of 2001:db8::/48")
        check_full_table_reports(d, PUSHED)
        assert d.stop() == 0


LOOP = 200  # connections in a row from one address: five times the default burst
# Names the keys, so the harness keeps their defaults (see write_config).
DEFAULT_LIMITS = "# max_clients_per_source, source_rate, source_limits_exempt: the defaults\n"


def refused_in_a_loop(address, source):
    return sum(not served(address, source) for _ in range(LOOP))


def test_loopback_exempt_by_default():
    """A local loop is served in full with the default limits (loopback is
    in the default source_limits_exempt, IPv4-mapped loopback too); with
    the exemption emptied the same loop is refused; a source that is not
    loopback (an address of 192.0.2.0/24 in a network namespace this test
    makes) is limited with the defaults."""
    if not os.environ.get(IN_NETNS):
        from harness import free_port
        port = free_port()
        with Daemon(DEFAULT_LIMITS, args=["-p", str(port)], activation=False):  # "::": dual-stack
            for host in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
                n = refused_in_a_loop((host, port), None)
                print(f"   defaults, {LOOP} connections in a row from {host}: {n} refused")
                assert n == 0, (host, n)
        with Daemon(DEFAULT_LIMITS + "source_limits_exempt = [];\n") as d:
            n = refused_in_a_loop(d.address(), "127.0.0.1")
            print(f"   source_limits_exempt = [], {LOOP} connections from 127.0.0.1: {n} refused")
            assert n >= LOOP // 2, n
        run_in_netns("test_loopback_exempt_by_default")
        return
    route_to_lo("192.0.2.0/24")
    with Daemon(DEFAULT_LIMITS, listen=(("192.0.2.1", 0),)) as d:
        n = refused_in_a_loop(d.address(), "192.0.2.2")
        print(f"   defaults, {LOOP} connections from 192.0.2.2: {n} refused")
        assert n >= LOOP // 2, n


def sigusr1_taken(d):
    """Waits until the daemon has read a SIGUSR1 sent to it (blocked, it
    stays pending until read from its signalfd, and is handled at once)."""
    wait_until(lambda: signal.SIGUSR1 not in procfs.signal_mask(d.pid, "SigPnd", "ShdPnd"), 10,
               "the daemon to read SIGUSR1")


def test_refusals_held_while_their_reports_are_filtered():
    """At log_level = "error" the refusal reports (warnings) are filtered
    out: a report falling due then (SIGUSR1 here; the 10 s timer alike)
    holds the counts, never resets them, and the first report written once
    the level allows it counts every refusal, over the whole time."""
    from test_lifecycle import reload
    conf = NO_RATE + 'deny = [ "127.0.0.2" ];'
    with Daemon(conf + ' log_level = "error";') as d:
        for _ in range(3):
            assert not served(d.address(), "127.0.0.2")
        d.wait_notify("3 refused")
        d.signal(signal.SIGUSR1)
        sigusr1_taken(d)
        assert refusal_lines(d) == []
        reload(d, conf)
        assert not served(d.address(), "127.0.0.2")
        flush_report(d)
        lines = d.log_lines(r"refused (\d+) connection\(s\) from 127\.0\.0\.2 in the last (\d+) s: (.*)")
        print(f"   3 refusals at error, 1 after: {[m.group(0) for m in lines]}")
        assert [(m.group(1), m.group(3)) for m in lines] == [("4", "denied 4")], [m.group(0) for m in lines]

def test_refusals_of_a_named_source_are_not_sources_not_tracked():
    # One source, 127.0.40.1, tracked throughout: refused 3 times, its
    # entry forgotten when served sources fill the table, back with a new
    # entry, refused 5 times. It is named with its 5; the 3 counted under
    # its forgotten entry stay in the sum (the tally cannot tell how many
    # were its), which says so rather than "sources not tracked".
    with Daemon("source_table_size = 64; source_rate = 0; max_clients_per_source = 1;") as d:
        flush_report(d)
        a, = live_sessions(d.address(), 1, source="127.0.40.1")
        for _ in range(3):
            assert not served(d.address(), source="127.0.40.1")
        a.close()
        wait_until(lambda: not d.children(), 10, "its session to end")
        for i in range(70):
            assert served(d.address(), source=f"127.0.30.{i + 1}")
        wait_until(lambda: not d.children(), 10, "the sessions to end")
        a, = live_sessions(d.address(), 1, source="127.0.40.1")
        for _ in range(5):
            assert not served(d.address(), source="127.0.40.1")
        a.close()
        flush_report(d)
        lines = refusal_lines(d)
        for m in lines:
            print("  ", m.group(0))
        who = sorted((m.group(2), m.group(1)) for m in lines)
        assert who == [("127.0.40.1", "5"), ("sources named above (before they were forgotten)", "3")], who


def test_reload_that_changes_the_exemption_recounts_live_sessions():
    """A reload decides at once which live sessions count: emptying
    source_limits_exempt counts the loopback sessions already running (4
    held against max_clients_per_source = 2: the next is refused), and
    exempting their source again frees them (served)."""
    base = "source_rate = 0;\nmax_clients_per_source = 2;\n"
    exempt = base + 'source_limits_exempt = [ "127.0.0.0/8", "::1" ];\n'
    with Daemon(exempt) as d:
        held = []
        for _ in range(4):
            s = connect(d.address(), source="127.0.0.1")
            s.sendall(b"h")
            assert recv_exact(s, 1) == b"h"
            held.append(s)

        def reload(text):
            d.write_config(text)
            n = len(d.notes.snapshot())
            d.signal(signal.SIGHUP)
            d.wait_notify("READY=1", after=n)

        reload(base + "source_limits_exempt = [];\n")
        limited = [served(d.address(), "127.0.0.1") for _ in range(2)]
        reload(exempt)
        freed = [served(d.address(), "127.0.0.1") for _ in range(2)]
        for s in held:
            s.close()
        print(f"   4 live sessions from 127.0.0.1, limit 2: exemption removed: served {limited}; "
              f"exempt again: served {freed}")
        assert limited == [False, False] and freed == [True, True], (limited, freed)


if __name__ == "__main__":
    main([test_per_source_limit_refuses_only_that_source, test_rate_limit_blocks_a_while_then_forgives,
          test_allow_and_deny_reloadable, test_flood_is_reported_in_aggregate, test_one_untallied_source_is_not_many,
          test_periodic_report_without_asking, test_dual_stack_counts_mapped_as_ipv4,
          test_ipv6_prefixes_never_hold_ipv4_clients,
          test_reload_with_new_prefix_recounts_live_sessions,
          test_reload_with_new_table_size_recounts_live_sessions, test_log_addresses_prefix_and_hash,
          test_denied_flood_does_not_open_the_default_table, test_full_source_table_ipv4,
          test_full_source_table_ipv6, test_refusals_held_while_their_reports_are_filtered,
          test_refusals_of_a_named_source_are_not_sources_not_tracked, test_loopback_exempt_by_default,
          test_reload_that_changes_the_exemption_recounts_live_sessions])
