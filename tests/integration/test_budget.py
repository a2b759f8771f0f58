#!/usr/bin/env python3
"""The record budget: past log_connection_rate/log_connection_burst,
connections go into summary records instead of a record each; records say
when that starts and stops, and the records plus the summaries' counts are
exactly the connections served, whether pending summaries are written on
SIGUSR1 or at shutdown. On stderr here; tests/e2e checks it in the journal."""
import re
import signal
import time

from harness import Daemon, connect, main, recv_exact, scaled

BUDGET = "log_connection_rate = 5; log_connection_burst = 10;"
SUMMARY_RE = (r"summary of (?P<n>\d+) connection\(s\) closed in the last [\d.]+ s without a record each "
              r"\(over the record budget\): (?P<reasons>[^;]*); (?P<bytes_in>\d+) bytes in, (?P<bytes_out>\d+) "
              r"bytes out, [\d.]+ s in sessions; (?P<sources>[^;]*); (?P<recorded>\d+) recorded and "
              r"(?P<summarized>\d+) summarized of (?P<served>\d+) served")
SPENT_RE = r"connection records over budget \(5 a second, bursts of 10\)"
STOPPED_RE = r"stopped: \d+ session\(s\) drained, \d+ cut; (\d+) served in total"


def short_sessions(d, n, payload=b"abc"):
    for _ in range(n):
        with connect(d.address()) as s:
            s.sendall(payload)
            assert recv_exact(s, len(payload)) == payload


def summaries(d):
    return [m.groupdict() for m in d.log_lines(SUMMARY_RE)]


def test_past_the_budget_connections_are_summarized():
    n = scaled(200, 50)
    with Daemon(BUDGET) as d:
        start = time.monotonic()
        short_sessions(d, n)
        # All reaped: the individual records and the folded ones add up.
        d.wait_notify(f"STATUS=0 active (cap 256), {n} served")
        elapsed = time.monotonic() - start
        d.signal(signal.SIGUSR1)
        d.wait_log(r"summary: .*up \d+ s")
        recorded = len(d.records())
        sums = summaries(d)
        folded = sum(int(s["n"]) for s in sums)
        print(f"   {n} connections in {elapsed:.2f} s with a budget of 5 a second, bursts of 10: "
              f"{recorded} records, {folded} in {len(sums)} summary record(s)")
        assert recorded + folded == n, (recorded, folded, n)
        assert 10 <= recorded <= 10 + 5 * elapsed + 1, (recorded, elapsed)
        last = sums[-1]
        assert (int(last["recorded"]), int(last["summarized"]), int(last["served"])) == (recorded, folded, n), last
        assert last["reasons"] == f"client-closed {folded}", last
        assert int(last["bytes_in"]) == int(last["bytes_out"]) == 3 * folded, last
        assert last["sources"] == f"1 source(s): 127.0.0.1 {folded}", last
        assert len(d.log_lines(SPENT_RE)) == 1
        # A flush with nothing new folded since the last one ends the folding.
        d.signal(signal.SIGUSR1)
        d.wait_log(rf"connection records within budget again: {folded} connection\(s\) went into 1 summary record")
        assert d.stop() == 0


def test_pending_summary_written_at_shutdown():
    n = scaled(100, 30)
    with Daemon(BUDGET) as d:
        short_sessions(d, n)
        d.wait_notify(f"STATUS=0 active (cap 256), {n} served")
        assert d.stop() == 0
        served = int(d.wait_log(STOPPED_RE)[0].group(1))
        recorded, folded = len(d.records()), sum(int(s["n"]) for s in summaries(d))
        print(f"   {n} connections, stopped at once: {recorded} records + {folded} summarized = {served} served")
        assert recorded + folded == served == n, (recorded, folded, served)
        assert d.log_lines(r"connection records end with the daemon")
        # The summary comes before the record that the daemon stopped.
        lines = d.log.snapshot()
        assert max(i for i, line in enumerate(lines) if re.search(SUMMARY_RE, line)) < \
            max(i for i, line in enumerate(lines) if re.search(STOPPED_RE, line))


def test_no_budget_records_every_connection():
    n = scaled(1500, 200)  # past the default burst of 1000
    with Daemon("log_connection_rate = 0;") as d:
        short_sessions(d, n, b"x")
        d.wait_records(n)
        assert d.stop() == 0
        d.wait_log(STOPPED_RE)  # the last lines are read
        assert not summaries(d) and not d.log_lines(r"over budget")


def test_reload_changes_the_budget():
    with Daemon("log_connection_rate = 0;") as d:
        short_sessions(d, 20)
        d.wait_records(20)
        d.write_config(BUDGET)
        d.signal(signal.SIGHUP)
        d.wait_log(r"configuration reloaded: log_connection_rate 0 -> 5, log_connection_burst 1000 -> 10")
        short_sessions(d, 30)
        d.wait_notify("STATUS=0 active (cap 256), 50 served")
        assert d.stop() == 0
        d.wait_log(STOPPED_RE)  # the last lines are read
        recorded, folded = len(d.records()), sum(int(s["n"]) for s in summaries(d))
        assert recorded + folded == 50 and folded >= 10, (recorded, folded)


def test_summaries_account_for_every_connection_across_log_levels():
    """Three connections close at info over a tiny budget: one record, two
    folded. A reload lowers log_level to notice and a flush falls in that
    time (SIGUSR1; the 10 s timer alike): the summary is held, not written
    where it is filtered out. Back at info the next flush writes it, and
    records plus summaries account for all three; so does the final flush
    of a daemon stopped at notice."""
    from test_lifecycle import reload
    budget = "log_connection_rate = 0.001; log_connection_burst = 1;"
    with Daemon(budget) as d:
        short_sessions(d, 3)
        d.wait_notify("STATUS=0 active (cap 256), 3 served")
        reload(d, budget + ' log_level = "notice";')
        d.signal(signal.SIGUSR1)
        d.wait_log(r"summary: .*up \d+ s")
        assert summaries(d) == [], summaries(d)
        reload(d, budget)
        d.signal(signal.SIGUSR1)
        d.wait_log(r"summary: .*up \d+ s", count=2)
        d.wait_log(SUMMARY_RE)
        recorded = len(d.records())
        folded = [int(x["n"]) for x in summaries(d)]
        assert recorded == 1 and folded == [2], (recorded, folded)
        d.wait_log(r"1 recorded and 2 summarized of 3 served")
        assert d.stop() == 0
    with Daemon(budget) as d:
        short_sessions(d, 3)
        d.wait_notify("STATUS=0 active (cap 256), 3 served")
        reload(d, budget + ' log_level = "notice";')
        assert d.stop() == 0
        d.wait_log(r"notice: " + SUMMARY_RE)
        assert len(d.records()) + sum(int(x["n"]) for x in summaries(d)) == 3


if __name__ == "__main__":
    main([test_past_the_budget_connections_are_summarized, test_pending_summary_written_at_shutdown,
          test_no_budget_records_every_connection, test_reload_changes_the_budget,
          test_summaries_account_for_every_connection_across_log_levels])
