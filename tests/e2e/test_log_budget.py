#!/usr/bin/env python3
"""Every connection is accounted for in the journal, at any rate: the
package under a real systemd 252 and journald, with client loops running
longer than journald's rate-limit interval (30 s).

The shipped unit raises journald's limit for the service well above what
the default budget writes. For the test, a drop-in and journald's own
default lower it to 1000 records per 30 s (scaled up by free disk space, as
journald does) and the configuration sets a budget below that, so that the
daemon's budget is what keeps the records within the limit. The test then checks that the connection records plus the
CONNECTIONS of the summary records equal the connections the clients made
and the daemon's own count of served connections, that the individual
records kept to the budget, that journald suppressed nothing from the
service, and that the records saying folding started and ended are there.

Usage (as root): test_log_budget.py PACKAGE.deb
Exit status: 0 passed, 1 failed, 77 skipped (no root or no namespaces).
"""
import json
import os
import re
import sys
import time

import nspawn

from test_package import CONF, ONE_BUSY_SOURCE, RECORD_ID, boot, debs_or_exit, loop_in_background, loop_result

UNIT = "echo-mpserv.service"
SUMMARY_ID = "7f8dfbe9eb64428aaebb1bf94479cdb5"
SPENT_ID = "1f4a63ea058a4cf896d327bf2bccee01"
ENDED_ID = "f9fa98b289b648e79b0c5bc47a255a59"
JOURNAL_BURST = 1000
RATE, BURST = 20, 200       # at most 200 + 20 * 30 = 800 records in any 30 s
RATE_DEFAULT, BURST_DEFAULT = 100, 1000
LOAD_SECONDS = 35           # longer than journald's interval
LOOPS = 3


def journal_default_limit(m):
    """journald's default limit, set before boot."""
    m.write_file("/etc/systemd/journald.conf.d/50-test.conf",
                 f"[Journal]\nRateLimitIntervalSec=30s\nRateLimitBurst={JOURNAL_BURST}\n")


def journal_unit_limit(m):
    """The same limit for the service, over the unit's own setting (which
    journald honours where it can read it from the unit's cgroup)."""
    m.write_file(f"/etc/systemd/system/{UNIT}.d/50-test.conf",
                 f"[Service]\nLogRateLimitIntervalSec=30s\nLogRateLimitBurst={JOURNAL_BURST}\n")
    m.systemctl("daemon-reload")


def unit_limit_for_journald(m):
    """The rate limit journald reads for the unit (systemd exports it under
    /run/systemd/units/; none there means journald's default)."""
    def exported(what):
        r = m.run(["readlink", f"/run/systemd/units/log-rate-limit-{what}:{UNIT}"], check=False)
        return int(r.stdout) if r.returncode == 0 else None
    return exported("interval"), exported("burst")


def entries(m, msgid):
    out = m.journal(f"MESSAGE_ID={msgid}", unit=UNIT, output="json")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def count(m, msgid):
    out = m.run(["sh", "-c", f"journalctl -q --no-pager -u {UNIT} MESSAGE_ID={msgid} -o cat | wc -l"]).stdout
    return int(out.strip())


def budget_known(m):
    """The budget keys exist in this package (a build without them shows
    what journald loses)."""
    m.write_file("/tmp/budget.conf", f"log_connection_rate = {RATE};\n")
    return m.run(["echo-mpserv", "-c", "/tmp/budget.conf", "--check-config"], check=False).returncode == 0


def main():
    (deb,) = debs_or_exit(__doc__, 1)
    start = time.monotonic()
    failures = []
    with nspawn.Machine.from_cache() as m:
        journal_default_limit(m)
        boot(m, [deb], start)
        m.install_debs([os.path.basename(deb)])
        m.systemctl("start", UNIT)
        unit_limit = unit_limit_for_journald(m)
        journal_unit_limit(m)
        conf = ONE_BUSY_SOURCE
        known = budget_known(m)
        if known:
            conf += f"log_connection_rate = {RATE};\nlog_connection_burst = {BURST};\n"
        m.write_file(CONF, conf)
        m.systemctl("restart", UNIT)
        assert unit_limit_for_journald(m) == (30000000, JOURNAL_BURST), "journald does not see the test's limit"

        loops = [loop_in_background(m, LOAD_SECONDS, name=f"loop{i}") for i in range(LOOPS)]
        results = [loop_result(job, LOAD_SECONDS + 90) for job in loops]
        made = sum(r["ok"] + r["broken"] for r in results)
        refused = sum(r["refused"] for r in results)
        broken = sum(r["broken"] for r in results)

        # Stopping writes what is pending (the last summary) and the total.
        cursor = m.journal_cursor()
        m.systemctl("stop", UNIT)
        try:
            stopped = m.wait_journal(r"stopped: \d+ session\(s\) (drained, \d+ cut|handed over); \d+ served in total",
                                     unit=UNIT, cursor=cursor, timeout=20)
            served = int(re.search(r"(\d+) served in total", stopped).group(1))
        except TimeoutError:  # journald dropped it too
            served = None
        records = count(m, RECORD_ID)
        summaries = entries(m, SUMMARY_ID)
        summarized = sum(int(e["CONNECTIONS"]) for e in summaries)
        spent, ended = count(m, SPENT_ID), count(m, ENDED_ID)
        suppressed = [line for line in m.journal("-t", "systemd-journald").splitlines()
                      if "Suppressed" in line and "echo-mpserv" in line]
        took = time.monotonic() - start

        print(f"{made} connections in {LOAD_SECONDS} s from {LOOPS} client loops ({made / LOAD_SECONDS:.0f}/s), "
              f"{refused} refused, {broken} broken; journald keeps {JOURNAL_BURST} per 30 s (scaled by disk "
              f"space); the shipped unit's own limit, as journald reads it (usec, burst): {unit_limit}")
        print(f"journal: {records} connection records + {summarized} connections in {len(summaries)} "
              f"summaries = {records + summarized}; daemon: {served} served; "
              f"folding started {spent}x, ended {ended}x; journald suppressed: {suppressed or 'nothing'}")

        def expect(cond, what):
            if not cond:
                failures.append(what)
                print(f"FAIL  {what}")

        expect(known, "the package has no record budget (log_connection_rate)")
        expect(refused == 0 and broken == 0, f"{refused} refused, {broken} broken")
        expect(served is not None, "the daemon's last record (stopped: ... served in total) is not in the journal")
        expect(records + summarized == served == made,
               f"records {records} + summarized {summarized} != served {served} or made {made}")
        expect(records <= BURST + RATE * (LOAD_SECONDS + 30), f"{records} records past the budget")
        expect(not suppressed, f"journald suppressed records: {suppressed}")
        expect(spent >= 1 and ended >= 1, f"folding started {spent}x, ended {ended}x")
        if summaries:
            last = summaries[-1]
            expect(int(last["RECORDED"]) + int(last["SUMMARIZED"]) == int(last["SERVED"]) == made,
                   f"last summary does not add up: {last}")
        expect(unit_limit[0] == 30000000 and unit_limit[1] >= 2 * (BURST_DEFAULT + RATE_DEFAULT * 30),
               f"the shipped unit leaves records to journald's default limit: {unit_limit}")
        m.poweroff()
    print(f"{'passed' if not failures else 'FAILED'} ({took:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
