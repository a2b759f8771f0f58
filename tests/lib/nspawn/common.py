"""What every part of the e2e harness shares: its errors, its log, host
commands, waits and safe removal of a machine's files."""

import os
import re
import shlex
import subprocess
import sys

import procfs
from waiting import poll

# Names of what a harness process makes (work dirs, cgroups): echo-e2e-<pid>-...
NAME_RE = re.compile(r"^echo-e2e-(\d+)-")


class HarnessError(RuntimeError):
    """Something in the harness (not in the code under test) went wrong."""


class BootError(HarnessError):
    """The machine did not come up; the message carries its console log."""


class CommandFailed(subprocess.CalledProcessError):
    """CalledProcessError whose message shows the tail of the output."""

    def __str__(self):
        def tail(x):
            if x is None:
                return ""
            if isinstance(x, bytes):
                x = x.decode(errors="replace")
            return x[-3000:]
        return "%s\n--- stdout:\n%s\n--- stderr:\n%s" % (
            super().__str__(), tail(self.stdout), tail(self.stderr))


def log(msg):
    print("[e2e] " + msg, file=sys.stderr, flush=True)


def env_flag(name):
    return os.environ.get(name, "") not in ("", "0", "no", "false")


def run_host(cmd, timeout, **kw):
    """Run a host command, capture its output, raise with it on failure."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=timeout, **kw)
    if p.returncode != 0:
        raise HarnessError("%s failed (exit %d):\n%s"
                           % (shlex.join(cmd), p.returncode, p.stdout[-4000:]))
    return p


def wait_until(pred, timeout, interval=0.02, max_interval=0.2, what="condition"):
    """Poll pred() until it returns a true value; bounded by timeout
    (raises waiting.WaitTimeout, a TimeoutError)."""
    return poll(pred, timeout, what, interval, max_interval)


def rm_tree(path):
    """rm -rf that never crosses into a mount point."""
    if not os.path.lexists(path):
        return
    mounts = procfs.mounts_under(path)
    if mounts:
        raise HarnessError("refusing to delete %s: mounts below it: %s" % (path, mounts))
    subprocess.run(["rm", "-rf", "--one-file-system", path],
                   stdin=subprocess.DEVNULL, timeout=300, check=True)
