"""Process bookkeeping: commands run in a machine (each in its own session,
through nsenter), their stopping, and the cleanup of every live machine at
exit and on SIGTERM/SIGHUP."""

import atexit
import os
import signal
import subprocess
import threading

import procfs

from .common import log

LIVE = []
_HANDLERS_INSTALLED = False


def _cleanup_live():
    for m in list(LIVE):
        try:
            m.cleanup()
        except BaseException as e:  # keep cleaning the others
            log("cleanup of %s failed: %r" % (m.name, e))


def _on_signal(signum, _frame):
    # Turn SIGTERM/SIGHUP into an exception, so that `with` blocks,
    # finally clauses and atexit run and the machines get cleaned up.
    raise SystemExit(128 + signum)


def install_handlers():
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    _HANDLERS_INSTALLED = True
    atexit.register(_cleanup_live)
    if threading.current_thread() is not threading.main_thread():
        return
    for s in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(s) == signal.SIG_DFL:
            signal.signal(s, _on_signal)


def kill_group(p, sig=signal.SIGKILL):
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_job(p, sig, timeout, forked=True):
    """Stop a command started in its own session (leader: p.pid).

    nsenter -p forks: the command runs in the machine's pid namespace as a
    child of nsenter.  If nsenter died first, the command would be
    re-parented to the host's init, not to the machine's, and its zombie
    would linger (systemd-shutdown then waits 10 s for it).  So signal the
    group members other than the leader and let nsenter reap them and
    exit; only if that does not happen, SIGKILL the whole group.
    forked=False (net_only: nsenter does not fork): signal the whole group.
    """
    if p.poll() is not None:
        return p.returncode
    signal_job(p, sig, forked)
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p, signal.SIGKILL)
        p.wait(timeout=10)
    return p.returncode


def signal_job(p, sig, forked):
    members = [m for m in procfs.group_members(p.pid) if m != p.pid] if forked else []
    if not members:
        kill_group(p, sig)
    for pid in members:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def communicate(p, input, timeout, forked):
    """communicate() that kills the command on timeout/^C."""
    try:
        out, err = p.communicate(input, timeout=timeout)
    except BaseException:
        stop_job(p, signal.SIGKILL, 5, forked)
        try:
            p.communicate(timeout=5)
        except (subprocess.TimeoutExpired, ValueError):
            pass
        raise
    return out, err


# Written into cgroup.procs files by a tiny sh wrapper (thread-safe, unlike
# preexec_fn): "$@" is: procs files..., --, command...
JOIN_CGROUPS = ('while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; '
                 'shift; exec "$@"')


# --------------------------------------------------------------------------
# background processes

class Background:
    """A command started with Machine.spawn(); output goes to files."""

    def __init__(self, popen, name, out_path, err_path, cmd, forked=True):
        self.popen = popen
        self.forked = forked
        self.name = name
        self.cmd = cmd
        self.out_path = out_path
        self.err_path = err_path

    @property
    def pid(self):
        return self.popen.pid

    def poll(self):
        return self.popen.poll()

    def running(self):
        return self.popen.poll() is None

    def wait(self, timeout):
        """Wait for exit (raises subprocess.TimeoutExpired); returns the code."""
        return self.popen.wait(timeout=timeout)

    def send_signal(self, sig):
        """Signal the command (and its process group), not nsenter."""
        if self.popen.poll() is None:
            signal_job(self.popen, sig, self.forked)

    def stop(self, timeout=5.0, sig=signal.SIGTERM):
        """Send sig, SIGKILL after timeout; returns the exit code (negative:
        killed by that signal)."""
        stop_job(self.popen, sig, timeout, self.forked)
        return self.popen.returncode

    @property
    def stdout(self):
        return procfs.read(self.out_path)

    @property
    def stderr(self):
        return procfs.read(self.err_path)

    def __repr__(self):
        return "<Background %s pid=%d rc=%r>" % (self.name, self.pid, self.popen.poll())
