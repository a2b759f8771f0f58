"""What the tests read from /proc: process state, children, process groups,
namespaces and the mount table. One parser of each file, for the integration
harness and the e2e machine alike."""

import os
import re


def read(path, default=""):
    """A file's text, or `default` when it cannot be read (a process gone)."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def stat(pid):
    """The fields of /proc/PID/stat after the command name (which may hold
    spaces and parentheses): [state, ppid, pgrp, session, ...]; None when
    the process is gone."""
    text = read(f"/proc/{pid}/stat")
    if not text:
        return None
    return text.rsplit(")", 1)[1].split()


def state(pid):
    """The process's state letter (R, S, D, Z, ...), None when it is gone."""
    fields = stat(pid)
    return fields[0] if fields else None


def start_time(pid):
    """When the process started, in clock ticks after boot (field 22): with
    the pid, it names one process. None when it is gone."""
    fields = stat(pid)
    return int(fields[19]) if fields else None


def signal_mask(pid, *names):
    """The union of the signal sets named (SigPnd, ShdPnd, SigBlk, SigIgn,
    SigCgt) in /proc/PID/status, as a set of signal numbers."""
    mask = 0
    for line in read(f"/proc/{pid}/status").splitlines():
        key, _, value = line.partition(":")
        if key in names:
            mask |= int(value, 16)
    return {sig for sig in range(1, 65) if mask & (1 << (sig - 1))}


def children(ppid):
    """(pid, state) of the direct children of ppid."""
    out = []
    for pid in all_pids():
        fields = stat(pid)
        if fields and int(fields[1]) == ppid:
            out.append((pid, fields[0]))
    return out


def group_members(pgid):
    """The pids of process group pgid."""
    out = []
    for pid in all_pids():
        fields = stat(pid)
        if fields and int(fields[2]) == pgid:
            out.append(pid)
    return out


def cpu_seconds(pid):
    """User plus system CPU time the process has used."""
    fields = stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ns_inode(pid, ns):
    """The inode of the process's namespace `ns` ("pid", "net", ...), None when gone."""
    try:
        return os.stat(f"/proc/{pid}/ns/{ns}").st_ino
    except OSError:
        return None


def _unescape_mount(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mountinfo():
    """This process's mounts: dicts of root, mountpoint, fstype, superopts."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, post = line.rstrip("\n").split(" - ", 1)
            a = pre.split()
            b = post.split()
            yield {"root": _unescape_mount(a[3]), "mountpoint": _unescape_mount(a[4]),
                   "fstype": b[0], "superopts": b[2] if len(b) > 2 else ""}


def mounts_under(path):
    path = os.path.realpath(path)
    return [m["mountpoint"] for m in mountinfo()
            if m["mountpoint"] == path or m["mountpoint"].startswith(path + "/")]
