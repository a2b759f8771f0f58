"""Waiting for an event by polling it, bounded in time: the one loop behind
harness.wait_until and the e2e machine's waits."""

import time


class WaitTimeout(AssertionError, TimeoutError):
    """A wait ran out of time: a failed assertion to a test, a TimeoutError
    to code that treats it as one (both are caught the same way)."""


def poll(predicate, seconds, what="condition", interval=0.01, max_interval=None):
    """Calls predicate until it returns a true value, which is returned;
    raises WaitTimeout after `seconds`. With max_interval the pause grows
    by half each round up to it (for predicates that are costly to ask)."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {seconds:.1f} s waiting for {what}")
        time.sleep(interval)
        if max_interval:
            interval = min(interval * 1.5, max_interval)
