"""The harness's cgroups: the hierarchies this process is in, and one
machine's subtree in each of them."""

import errno
import os
import signal
import time

import procfs

from .common import NAME_RE, HarnessError, log


class Hierarchy:
    def __init__(self, hid, controllers, mountpoint, base):
        self.hid = hid                  # "0" for cgroup2
        self.controllers = controllers  # "" for cgroup2, "cpu", "name=systemd", ...
        self.mountpoint = mountpoint    # where it is mounted on the host
        self.base = base                # our current cgroup in it (host path)

    @property
    def v2(self):
        return self.hid == "0"

    def __repr__(self):
        return "<cgroup %s:%s %s>" % (self.hid, self.controllers, self.base)


def hierarchies():
    """The hierarchies listed in /proc/self/cgroup, with host paths."""
    mounts = [m for m in procfs.mountinfo() if m["fstype"] in ("cgroup", "cgroup2")]
    result = []
    with open("/proc/self/cgroup") as f:
        lines = [l.rstrip("\n") for l in f if l.strip()]
    for line in lines:
        hid, ctrls, path = line.split(":", 2)
        if hid == "0":
            cands = [m for m in mounts if m["fstype"] == "cgroup2"]
        else:
            want = set(ctrls.split(","))
            cands = [m for m in mounts if m["fstype"] == "cgroup"
                     and want <= set(m["superopts"].split(","))]
        chosen = None
        for m in cands:
            r = m["root"]
            if r == "/" or path == r or path.startswith(r.rstrip("/") + "/"):
                chosen = m
                break
        if chosen is None:
            raise HarnessError("cgroup hierarchy %r is not mounted here" % line)
        rel = path if chosen["root"] == "/" else path[len(chosen["root"]):]
        base = os.path.normpath(chosen["mountpoint"] + "/" + rel.lstrip("/"))
        result.append(Hierarchy(hid, ctrls, chosen["mountpoint"], base))
    if not result:
        raise HarnessError("no cgroup hierarchies found")
    return result


class Cgroups:
    """echo-e2e-<pid>-<n>/{machine,exec,supervisor} in every hierarchy we
    are in: machine/ is the root of the machine's cgroup namespace (systemd
    and its units), exec/ holds what the harness runs inside, supervisor/
    the unshare process (which must not sit in systemd's root cgroup)."""

    SUBS = ("machine", "exec", "supervisor")

    def __init__(self, name):
        self.name = name
        self.hierarchies = hierarchies()
        self.created = []

    def top(self, h):
        return os.path.join(h.base, self.name)

    def create(self):
        for h in self.hierarchies:
            for d in [self.top(h)] + [os.path.join(self.top(h), s) for s in self.SUBS]:
                os.mkdir(d)
                self.created.append(d)
                if "cpuset" in h.controllers.split(","):
                    # v1 cpuset children start empty and refuse tasks.
                    parent = os.path.dirname(d)
                    for f in ("cpuset.cpus", "cpuset.mems"):
                        with open(os.path.join(d, f), "w") as fh:
                            fh.write(procfs.read(os.path.join(parent, f)).strip() or "\n")

    def procs_files(self, sub):
        return [os.path.join(self.top(h), sub, "cgroup.procs") for h in self.hierarchies]

    def pids(self):
        """All pids in our subtrees, in any hierarchy."""
        found = set()
        for h in self.hierarchies:
            top = self.top(h)
            if not os.path.isdir(top):
                continue
            for dirpath, _dirs, _files in os.walk(top):
                for tok in procfs.read(os.path.join(dirpath, "cgroup.procs")).split():
                    found.add(int(tok))
        return found

    def kill_all(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                return set()
            if time.monotonic() >= deadline:
                return pids
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)

    def remove(self, timeout):
        """rmdir the subtrees bottom-up; returns the dirs that are left."""
        deadline = time.monotonic() + timeout
        while True:
            left = []
            for h in self.hierarchies:
                top = self.top(h)
                if not os.path.isdir(top):
                    continue
                for dirpath, _dirs, _files in os.walk(top, topdown=False):
                    try:
                        os.rmdir(dirpath)
                    except FileNotFoundError:
                        pass
                    except OSError as e:
                        if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                            raise
                        left.append(dirpath)
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.05)

    def existing(self):
        return [self.top(h) for h in self.hierarchies if os.path.isdir(self.top(h))]


def sweep_stale():
    """Remove the cgroups of harness processes that died (e.g. SIGKILL)."""
    try:
        hs = hierarchies()
    except HarnessError:
        hs = []
    for h in hs:
        try:
            names = os.listdir(h.base)
        except OSError:
            continue
        for n in names:
            m = NAME_RE.match(n)
            if not m or procfs.alive(int(m.group(1))):
                continue
            # Its owner is gone: whatever is still in there is an orphan.
            cg = Cgroups.__new__(Cgroups)
            cg.name, cg.hierarchies, cg.created = n, [h], []
            if cg.kill_all(timeout=5):
                log("could not kill the processes in stale cgroup %s" % n)
            elif cg.remove(timeout=2):
                log("could not remove stale cgroup %s" % n)
            else:
                log("removed stale cgroup %s/%s" % (h.base, n))
