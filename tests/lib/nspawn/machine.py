"""The machine: a systemd 252 booted as PID 1 in fresh namespaces from a
rootfs copy (the mounts it gets are boot.sh's), powered off and cleaned up.
What runs in it while it is up: inside.py."""

import errno
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tty

import procfs

from .cgroups import Cgroups, hierarchies
from .common import BootError, HarnessError, env_flag, log, rm_tree, wait_until
from .inside import MACHINE_PATH, Inside
from .jobs import JOIN_CGROUPS, LIVE, communicate, install_handlers, kill_group
from .rootfs import HOSTNAME, default_work_dir, ensure_rootfs, extract_rootfs

ENV_KEEP = "ECHO_E2E_KEEP"                # "1": keep a machine's dir (debug)

# Capability bounding set of the nested systemd: the set systemd-nspawn
# keeps by default, plus net_admin (the machine has its own network
# namespace).  Left out on purpose: sys_module, sys_time, sys_rawio,
# syslog, wake_alarm, mac_*, block_suspend, ... (host-wide effects).
# A capability the host's own bounding set lacks cannot be kept (on the
# development machines that is sys_resource: see README.md).
MACHINE_CAPS = (
    "audit_control", "audit_write", "chown", "dac_override",
    "dac_read_search", "fowner", "fsetid", "ipc_owner", "kill", "lease",
    "linux_immutable", "mknod", "net_bind_service", "net_broadcast",
    "net_raw", "setfcap", "setgid", "setpcap", "setuid", "sys_admin",
    "sys_boot", "sys_chroot", "sys_nice", "sys_ptrace", "sys_resource",
    "sys_tty_config", "net_admin",
)

BOOT_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "boot.sh")


def environment_problem():
    """Return None if machines can be booted here, else a reason to skip."""
    if os.geteuid() != 0:
        return "needs root"
    if procfs.read("/proc/self/uid_map").split() != ["0", "0", "4294967295"]:
        return "needs root in the initial user namespace (this is a user namespace)"
    for tool in ("unshare", "nsenter", "setpriv", "chroot", "tar"):
        if shutil.which(tool) is None:
            return "%s(1) not found" % tool
    try:
        p = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc",
             "--net", "--cgroup", "--propagation", "private", "true"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "unshare not usable: %s" % e
    if p.returncode != 0:
        return "namespaces not permitted: %s" % p.stdout.strip()
    try:
        hs = hierarchies()
    except HarnessError as e:
        return str(e)
    for h in hs:
        if not os.access(h.base, os.W_OK):
            return "cgroup hierarchy %s not writable" % h.base
    return None


_COUNTER = [0]


class Machine(Inside):
    """A systemd 252 machine booted in fresh namespaces from a rootfs copy.

    Machine(rootfs_dir) takes ownership of rootfs_dir (a private copy, e.g.
    from extract_rootfs()) and deletes it in cleanup() unless delete=False
    or $ECHO_E2E_KEEP=1.
    """

    def __init__(self, rootfs_dir, delete=True, name=None):
        if os.geteuid() != 0:
            raise HarnessError("Machine needs root")
        install_handlers()
        self.root = os.path.realpath(rootfs_dir)
        if not os.path.isfile(os.path.join(self.root, "lib/systemd/systemd")):
            raise HarnessError("%s has no lib/systemd/systemd" % self.root)
        _COUNTER[0] += 1
        self.name = name or "echo-e2e-%d-%d" % (os.getpid(), _COUNTER[0])
        self.delete = delete and not env_flag(ENV_KEEP)
        parent = os.path.dirname(self.root)
        if os.path.basename(parent).startswith("echo-e2e-%d-" % os.getpid()):
            self.state_dir = os.path.join(parent, "state")   # made by extract_rootfs
            self._top_dir = parent
        else:
            self.state_dir = tempfile.mkdtemp(
                prefix="echo-e2e-%d-state-" % os.getpid(),
                dir=default_work_dir())
            self._top_dir = None
        os.makedirs(self.state_dir, exist_ok=True)
        self.console_log = os.path.join(self.state_dir, "console.log")
        self.boot_log = os.path.join(self.state_dir, "boot.log")
        self.timings = {}
        self.cgroups = None
        self.pid = None                 # host pid of the machine's PID 1
        self.ns = {}                    # namespace inodes of the machine
        self._unshare = None
        self._console_reader = None
        self._console_slave = None
        self._background = []
        self._bg_counter = 0
        self._cleaned = False
        self._leftovers = None
        LIVE.append(self)

    # -- construction helpers ------------------------------------------------

    @classmethod
    def from_tarball(cls, tarball, work_dir=None, **kw):
        t0 = time.monotonic()
        root = extract_rootfs(tarball, work_dir)
        try:
            m = cls(root, **kw)
        except BaseException:
            rm_tree(os.path.dirname(root))
            raise
        m.timings["extract"] = time.monotonic() - t0
        return m

    @classmethod
    def from_cache(cls, cache_dir=None, work_dir=None, **kw):
        """ensure_rootfs() + a fresh copy of it + Machine()."""
        t0 = time.monotonic()
        tarball = ensure_rootfs(cache_dir)
        t1 = time.monotonic()
        m = cls.from_tarball(tarball, work_dir, **kw)
        m.timings["ensure_rootfs"] = t1 - t0
        return m

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False

    def __repr__(self):
        return "<Machine %s pid=%s root=%s>" % (self.name, self.pid, self.root)

    @property
    def booted(self):
        return self.pid is not None and self._unshare is not None \
            and self._unshare.poll() is None

    def host_path(self, path):
        """Host path of a file of the machine's rootfs (not /run, /tmp, /dev)."""
        return os.path.join(self.root, path.lstrip("/"))

    # -- before boot -----------------------------------------------------------

    def chroot(self, script, timeout=600, network=True):
        """Run a shell script chrooted into the (not booted) rootfs.

        It runs in a throwaway mount + pid namespace with /proc and /dev
        mounted, so nothing it mounts or starts outlives it.  With network
        the host's resolver config is copied in for its duration.
        """
        if self.booted:
            raise HarnessError("chroot() is for a machine that is not running")
        resolv = self.host_path("/etc/resolv.conf")
        added_resolv = False
        if network and not os.path.lexists(resolv):
            shutil.copyfile("/etc/resolv.conf", resolv)
            added_resolv = True
        inner = ('mount --bind "$1" "$1" && mount -o remount,bind,suid,dev,exec "$1" && '
                 'mount -t proc proc "$1/proc" && mount --bind /dev "$1/dev" && '
                 'exec chroot "$1" /bin/sh -ec "$2"')
        cmd = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
               "--kill-child", "sh", "-c", inner, "sh", self.root, script]
        env = {"PATH": MACHINE_PATH, "HOME": "/root", "LANG": "C.UTF-8",
               "DEBIAN_FRONTEND": "noninteractive"}
        try:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, env=env,
                                 start_new_session=True)
            out, _ = communicate(p, None, timeout, False)
        finally:
            if added_resolv:
                os.unlink(resolv)
        if p.returncode != 0:
            raise HarnessError("chroot script failed (exit %d):\n%s\n--- output:\n%s"
                               % (p.returncode, script, out[-6000:]))
        return out

    def prepare_debs(self, debs, extra_packages=(), timeout=900):
        """Copy .deb files to /root/debs and download their dependencies.

        Must run before boot(): inside the machine there is no network.
        Afterwards install_debs() installs them offline.  Each .deb is
        resolved on its own, so several versions of one package (for an
        upgrade test) can be prepared together.  extra_packages are
        archive packages to download too (install them with
        run(["apt-get", "install", "-y", ...])).
        """
        t0 = time.monotonic()
        debdir = self.host_path("/root/debs")
        os.makedirs(debdir, exist_ok=True)
        names = []
        for d in debs:
            n = os.path.basename(d)
            shutil.copyfile(d, os.path.join(debdir, n))
            names.append(n)
        lines = ["apt-get -q update"]
        for n in names:
            lines.append("apt-get -q -y --download-only install %s"
                         % shlex.quote("/root/debs/" + n))
        if extra_packages:
            lines.append("apt-get -q -y --download-only install "
                         + " ".join(shlex.quote(x) for x in extra_packages))
        out = self.chroot("\n".join(lines), timeout=timeout)
        self.timings["prepare_debs"] = time.monotonic() - t0
        return out

    # -- boot ----------------------------------------------------------------

    def boot(self, timeout=60.0):
        """Boot systemd as PID 1 in new pid/mount/uts/ipc/net/cgroup
        namespaces and wait until it is running or degraded."""
        if self._unshare is not None:
            raise HarnessError("a machine boots only once")
        if shutil.which("ip") is None:
            raise HarnessError("ip(8) (iproute2) is needed on the host")
        t0 = time.monotonic()
        deadline = t0 + timeout
        self.cgroups = Cgroups(self.name)
        self.cgroups.create()
        # Console: a pty whose master a `cat` drains into console.log.
        master, slave = os.openpty()
        tty.setraw(slave)
        self._console_slave = slave
        with open(self.console_log, "wb") as clog:
            self._console_reader = subprocess.Popen(
                ["cat"], stdin=master, stdout=clog, stderr=subprocess.DEVNULL,
                start_new_session=True)
        os.close(master)
        console = os.ttyname(slave)
        fifo = os.path.join(self.state_dir, "go.fifo")
        os.mkfifo(fifo, 0o600)
        cmd = ["/bin/sh", "-c", JOIN_CGROUPS, "sh",
               *self.cgroups.procs_files("machine"), "--",
               "setpriv", "--pdeathsig", "KILL",
               "unshare", "--pid", "--fork", "--kill-child", "--mount",
               "--propagation", "private", "--uts", "--ipc", "--net", "--cgroup",
               "/bin/sh", BOOT_SCRIPT, self.root, console, HOSTNAME, fifo, MACHINE_PATH,
               ",".join("+" + c for c in MACHINE_CAPS),
               *("cgroup2" if h.v2 else h.controllers for h in self.cgroups.hierarchies)]
        with open(self.boot_log, "wb") as blog:
            blog.write((shlex.join(cmd) + "\n").encode())
            blog.flush()
            self._unshare = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=blog, stderr=subprocess.STDOUT,
                env={"PATH": os.environ.get("PATH", MACHINE_PATH), "LANG": "C"},
                start_new_session=True)
        try:
            wait_until(self._child_of_unshare, max(deadline - time.monotonic(), 0.1),
                       what="unshare to fork")
            for f in self.cgroups.procs_files("supervisor"):
                with open(f, "w") as fh:
                    fh.write("%d\n" % self._unshare.pid)
            wait_until(lambda: self._release(fifo), max(deadline - time.monotonic(), 0.1),
                       what="the boot script to read %s" % fifo)
            self.pid = wait_until(self._find_init, max(deadline - time.monotonic(), 0.1),
                                  what="the machine's PID 1 to exec systemd")
            self.ns = {n: procfs.ns_inode(self.pid, n)
                       for n in ("pid", "mnt", "net", "uts", "ipc", "cgroup")}
            self.timings["exec_systemd"] = time.monotonic() - t0
            state = self._wait_running(deadline)
        except BaseException as e:
            if isinstance(e, (TimeoutError, HarnessError)):
                raise BootError("boot failed: %s\n%s" % (e, self.diagnostics())) from e
            raise
        self.timings["boot"] = time.monotonic() - t0
        return state

    def _child_of_unshare(self):
        if self._unshare.poll() is not None:
            raise BootError("unshare exited with %d before systemd ran"
                            % self._unshare.returncode)
        upid = self._unshare.pid
        kids = procfs.read("/proc/%d/task/%d/children" % (upid, upid)).split()
        return int(kids[0]) if kids else None

    def _release(self, fifo):
        """Tell the boot script to go on; False while it is not reading yet."""
        self._child_of_unshare()     # raises if it died
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return False
            raise
        try:
            os.write(fd, b"go\n")
        finally:
            os.close(fd)
        return True

    def _find_init(self):
        pid = self._child_of_unshare()
        if pid is None:
            return None
        exe = ""
        try:
            exe = os.readlink("/proc/%d/exe" % pid)
        except OSError:
            pass
        return pid if exe.endswith("/systemd") else None

    def _wait_running(self, deadline):
        interval = 0.02
        last = ""
        while True:
            if not self.booted:
                raise BootError("the machine died during boot (unshare exit %r)"
                                % self._unshare.poll())
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("systemctl is-system-running still says %r" % last)
            try:
                p = self.run(["systemctl", "is-system-running", "--wait"],
                             check=False, timeout=left)
                last = (p.stdout.strip() or p.stderr.strip())
            except subprocess.TimeoutExpired:
                last = "(no answer)"
                continue
            if last in ("running", "degraded"):
                return last
            if last in ("maintenance", "stopping", "offline"):
                raise BootError("the machine is %r" % last)
            time.sleep(interval)
            interval = min(interval * 1.5, 0.2)

    def diagnostics(self):
        """Boot log, console log, and (if it is up) failed units + journal tail."""
        parts = ["--- boot.log:", procfs.read(self.boot_log)[-3000:],
                 "--- console.log:", procfs.read(self.console_log).replace("\r", "")[-6000:]]
        if self.booted:
            for c in (["systemctl", "--failed", "--no-legend"],
                      ["journalctl", "-b", "-n", "60", "--no-pager"]):
                try:
                    p = self.run(c, check=False, timeout=10)
                    parts += ["--- " + shlex.join(c) + ":", p.stdout + p.stderr]
                except Exception as e:  # diagnostics must not raise
                    parts += ["--- " + shlex.join(c) + ": %r" % e]
        return "\n".join(parts)

    # -- stopping and cleaning up ------------------------------------------------

    def _stop_background(self):
        for bg in self._background:
            if bg.poll() is None:
                bg.stop(timeout=2)

    def poweroff(self, timeout=30.0):
        """systemctl poweroff, wait for PID 1 to go; SIGKILL after timeout.
        Returns "poweroff" or "killed"."""
        if self._unshare is None or self._unshare.poll() is not None:
            return "down"
        t0 = time.monotonic()
        how = "poweroff"
        self._stop_background()
        try:
            self.run(["systemctl", "poweroff"], check=False, timeout=min(timeout, 15))
        except subprocess.TimeoutExpired:
            pass
        try:
            self._unshare.wait(timeout=max(timeout - (time.monotonic() - t0), 0.1))
        except subprocess.TimeoutExpired:
            how = "killed"
            log("%s: poweroff timed out, killing PID 1" % self.name)
            self._kill_machine()
        self.timings["poweroff"] = time.monotonic() - t0
        self.timings["poweroff_how"] = how
        return how

    def _kill_machine(self):
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._unshare is not None and self._unshare.poll() is None:
            try:
                self._unshare.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill_group(self._unshare)
                self._unshare.wait(timeout=10)

    def _ns_processes(self):
        """Host pids still in any of the machine's namespaces."""
        if not self.ns:
            return []
        found = []
        for pid in procfs.all_pids():
            for n, ino in self.ns.items():
                if ino is not None and n != "cgroup" and procfs.ns_inode(pid, n) == ino:
                    found.append(pid)
                    break
        return found

    def cleanup(self):
        """Stop everything this machine made; idempotent.  Returns (and keeps
        in self.leftovers) a dict of what could not be removed."""
        if self._cleaned:
            return self._leftovers
        # Bounded (every step has a timeout), so ^C/SIGTERM/SIGHUP are held
        # back until it is done, then delivered.  (Not with a blocked signal
        # mask: children would inherit it and ignore systemd's SIGTERM.)  If
        # it is interrupted anyway, atexit runs it again.
        main = threading.current_thread() is threading.main_thread()
        pending = []
        saved = {}
        if main:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                saved[sig] = signal.signal(sig, lambda s, _f: pending.append(s))
        try:
            return self._cleanup()
        finally:
            for sig, h in saved.items():
                signal.signal(sig, h)
            for sig in pending[:1]:
                signal.raise_signal(sig)

    def _cleanup(self):
        left = {"processes": [], "mounts": [], "cgroups": [], "dirs": []}
        try:
            self._stop_background()
            if self._unshare is not None and self._unshare.poll() is None:
                self.poweroff()
            self._kill_machine()
            if self.cgroups is not None:
                stray = self.cgroups.kill_all(timeout=10)
                left["processes"] = sorted(stray | set(self._ns_processes()))
            else:
                left["processes"] = self._ns_processes()
            for bg in self._background:
                if bg.poll() is None:
                    bg.stop(timeout=2)
            if self._console_slave is not None:
                os.close(self._console_slave)
                self._console_slave = None
            if self._console_reader is not None:
                try:
                    self._console_reader.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._console_reader.kill()
                    self._console_reader.wait(timeout=5)
            if self.cgroups is not None:
                left["cgroups"] = self.cgroups.remove(timeout=10)
            left["mounts"] = procfs.mounts_under(self.root)
            if self.delete:
                if not left["mounts"]:
                    rm_tree(self._top_dir or self.root)
                    if self._top_dir is None:
                        rm_tree(self.state_dir)
                for d in (self.root, self._top_dir or self.state_dir):
                    if os.path.lexists(d):
                        left["dirs"].append(d)
            else:
                log("%s: kept %s (state in %s)" % (self.name, self.root, self.state_dir))
        except BaseException:
            # atexit gets another go at it.
            left["error"] = repr(sys.exc_info()[1])
            self._leftovers = left
            raise
        self._cleaned = True
        if self in LIVE:
            LIVE.remove(self)
        self._leftovers = left
        if any(left.values()):
            log("%s: leftovers after cleanup: %r" % (self.name, left))
        return left

    @property
    def leftovers(self):
        return self._leftovers
