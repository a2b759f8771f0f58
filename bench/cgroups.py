"""The pids cgroup each measurement runs in."""

import os
import time

from common import warn


class Cgroups:
    """A pids-limited cgroup per test (v2 or v1 pids controller), so a server
    that leaks processes (the textbook one leaks zombies) cannot exhaust the
    machine's pids. Best effort: without cgroups the tests run uncapped."""

    def __init__(self):
        self.base = None
        v2 = "/sys/fs/cgroup"
        try:
            if os.path.exists(f"{v2}/cgroup.controllers"):
                if "pids" in open(f"{v2}/cgroup.controllers").read().split():
                    sub = open(f"{v2}/cgroup.subtree_control").read().split()
                    if "pids" not in sub:
                        with open(f"{v2}/cgroup.subtree_control", "w") as f:
                            f.write("+pids")
                    self.base = v2
            elif os.path.exists("/sys/fs/cgroup/pids/cgroup.procs"):
                self.base = "/sys/fs/cgroup/pids"
        except OSError as e:
            warn(f"no pids cgroup ({e}); tests run without a process cap")
            self.base = None
        self.seq = 0

    def make(self, limit):
        if not self.base:
            return None
        self.seq += 1
        path = os.path.join(self.base, f"echo-bench.{os.getpid()}.{self.seq}")
        try:
            os.mkdir(path)
            with open(os.path.join(path, "pids.max"), "w") as f:
                f.write(str(limit))
            return path
        except OSError as e:
            warn(f"cannot set up cgroup {path}: {e}")
            self.remove(path)
            return None

    @staticmethod
    def remove(path):
        if not path:
            return
        for _ in range(100):
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.05)
        warn(f"could not remove cgroup {path}")

