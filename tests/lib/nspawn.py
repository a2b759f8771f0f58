"""Boot a real systemd as PID 1 in fresh namespaces, for end-to-end tests.

Stdlib only.  Needs root, unshare(1)/nsenter(1)/setpriv(1) from util-linux,
mmdebstrap (installed with apt-get when missing) and writable cgroup
filesystems.  See README.md in this directory.

Typical use::

    import nspawn
    tarball = nspawn.ensure_rootfs()              # cached bookworm rootfs
    with nspawn.Machine.from_tarball(tarball) as m:
        m.prepare_debs([DEB_V1, DEB_V2])          # before boot (network)
        m.boot()
        m.install_debs([os.path.basename(DEB_V1)])   # offline, inside
        m.run(["systemctl", "is-active", "echo-mpserv.socket"])
        client = m.spawn(["python3", "-c", CLIENT])  # background, in the machine
        ...
        client.wait(timeout=30); print(client.stdout)
        print(m.journal(unit="echo-mpserv.service"))
        m.poweroff()
    # leaving the block powers off (if needed), kills what is left, removes
    # the child cgroups and deletes the machine's copy of the rootfs.

Layout of one machine on the host, under the work dir (default_work_dir():
/dev/shm when it is a roomy tmpfs, else /var/tmp):
    echo-e2e-<pid>-XXXX/rootfs     the machine's own copy of the rootfs
    echo-e2e-<pid>-XXXX/state/     boot script, console.log, boot.log,
                                   output files of background processes
and, in every cgroup hierarchy the test process is in, a child cgroup
``echo-e2e-<pid>-<n>`` with ``machine/`` (the nested systemd; root of its
cgroup namespace), ``exec/`` (commands the harness runs inside it) and
``supervisor/`` (the unshare process).
"""

import atexit
import errno
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

__all__ = [
    "HarnessError", "BootError", "CommandFailed", "Machine", "Background",
    "ensure_rootfs", "extract_rootfs", "environment_problem",
    "DEFAULT_CACHE_DIR", "default_work_dir",
]

# --------------------------------------------------------------------------
# configuration

DEFAULT_CACHE_DIR = "/var/cache/echo-mpserv-e2e"
# Machine copies go to a tmpfs when there is a roomy one: extracting the
# ~250 MB / 11,700-file rootfs takes ~0.5 s there against 5-10 s on disk.
WORK_DIR_CANDIDATES = ("/dev/shm", "/var/tmp")
WORK_DIR_MIN_FREE = 2 << 30
ENV_CACHE_DIR = "ECHO_E2E_CACHE_DIR"      # where the rootfs tarball is kept
ENV_WORK_DIR = "ECHO_E2E_WORK_DIR"        # where machine copies are made
ENV_REBUILD = "ECHO_E2E_REBUILD"          # "1": ignore the cached tarball
ENV_KEEP = "ECHO_E2E_KEEP"                # "1": keep a machine's dir (debug)

SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "iproute2", "python3")
# Plain Debian mirrors (the same archive the host's apt sources point at).
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# Bump when _prepare_rootfs() changes: it is part of the cache key.
ROOTFS_LAYOUT = 1

HOSTNAME = "echo-e2e"
MACHINE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Units that make no sense in a test machine: gettys (no terminals) and
# periodic maintenance timers (apt-daily could take the dpkg lock in the
# middle of a test).
MASKED_UNITS = (
    "console-getty.service",
    "getty@.service",
    "serial-getty@.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
)

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

_TAR_FLAGS = ["--numeric-owner", "--xattrs", "--xattrs-include=*"]


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


def _log(msg):
    print("[e2e] " + msg, file=sys.stderr, flush=True)


def _env_flag(name):
    return os.environ.get(name, "") not in ("", "0", "no", "false")


def _run_host(cmd, timeout, **kw):
    """Run a host command, capture its output, raise with it on failure."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=timeout, **kw)
    if p.returncode != 0:
        raise HarnessError("%s failed (exit %d):\n%s"
                           % (shlex.join(cmd), p.returncode, p.stdout[-4000:]))
    return p


def _wait_until(pred, timeout, interval=0.02, max_interval=0.2, what="condition"):
    """Poll pred() until it returns a true value; bounded by timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)
        interval = min(interval * 1.5, max_interval)


# --------------------------------------------------------------------------
# environment checks

def environment_problem():
    """Return None if machines can be booted here, else a reason to skip."""
    if os.geteuid() != 0:
        return "needs root"
    if _read("/proc/self/uid_map").split() != ["0", "0", "4294967295"]:
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
        hs = _cgroup_hierarchies()
    except HarnessError as e:
        return str(e)
    for h in hs:
        if not os.access(h.base, os.W_OK):
            return "cgroup hierarchy %s not writable" % h.base
    return None


# --------------------------------------------------------------------------
# rootfs: build, cache, extract

def _cache_key():
    h = hashlib.sha256()
    h.update(repr((SUITE, VARIANT, PACKAGES, MIRRORS, MASKED_UNITS,
                   ROOTFS_LAYOUT, HOSTNAME)).encode())
    return h.hexdigest()[:12]


def _ensure_mmdebstrap():
    if shutil.which("mmdebstrap"):
        return
    _log("installing mmdebstrap with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "mmdebstrap"]
    try:
        _run_host(cmd, 600, env=env)
    except HarnessError:
        _run_host(["apt-get", "update"], 600, env=env)
        _run_host(cmd, 600, env=env)
    if not shutil.which("mmdebstrap"):
        raise HarnessError("mmdebstrap still not found after apt-get install")


def _symlink_force(target, link):
    try:
        os.unlink(link)
    except FileNotFoundError:
        pass
    os.symlink(target, link)


def _prepare_rootfs(root):
    """Make a freshly bootstrapped tree boot cleanly as a test machine."""
    unitdir = os.path.join(root, "etc/systemd/system")
    os.makedirs(unitdir, exist_ok=True)
    for unit in MASKED_UNITS:
        _symlink_force("/dev/null", os.path.join(unitdir, unit))
    # Empty machine-id: systemd makes a transient one at every boot.
    with open(os.path.join(root, "etc/machine-id"), "w"):
        pass
    with open(os.path.join(root, "etc/hostname"), "w") as f:
        f.write(HOSTNAME + "\n")
    with open(os.path.join(root, "etc/hosts"), "w") as f:
        f.write("127.0.0.1\tlocalhost\n127.0.1.1\t%s\n"
                "::1\tlocalhost ip6-localhost ip6-loopback\n" % HOSTNAME)
    # mmdebstrap leaves the host's resolver config behind; the machine has
    # no network but loopback.  prepare_debs() puts one in temporarily.
    for f in ("etc/resolv.conf",):
        try:
            os.unlink(os.path.join(root, f))
        except FileNotFoundError:
            pass
    with open(os.path.join(root, "etc/apt/apt.conf.d/90echo-e2e"), "w") as f:
        f.write('Acquire::Languages "none";\n')
    os.makedirs(os.path.join(root, "root/debs"), exist_ok=True)


def ensure_rootfs(cache_dir=None, rebuild=None):
    """Return the path of a cached, prepared bookworm rootfs tarball.

    Builds it with mmdebstrap (installed if missing) when there is none, or
    when rebuild (default: $ECHO_E2E_REBUILD) is true.  cache_dir defaults
    to $ECHO_E2E_CACHE_DIR, else /var/cache/echo-mpserv-e2e.  Safe to call
    from several processes at once (the build holds a lock).
    """
    cache_dir = cache_dir or os.environ.get(ENV_CACHE_DIR) or DEFAULT_CACHE_DIR
    if rebuild is None:
        rebuild = _env_flag(ENV_REBUILD)
    os.makedirs(cache_dir, exist_ok=True)
    tarball = os.path.join(cache_dir, "rootfs-%s-%s.tar" % (SUITE, _cache_key()))
    with open(os.path.join(cache_dir, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(tarball) and not rebuild:
            return tarball
        _ensure_mmdebstrap()
        t0 = time.monotonic()
        tmp = tempfile.mkdtemp(prefix=".build-", dir=cache_dir)
        try:
            root = os.path.join(tmp, "rootfs")
            logfile = os.path.join(tmp, "mmdebstrap.log")
            cmd = ["mmdebstrap", "--variant=" + VARIANT,
                   "--include=" + ",".join(PACKAGES), SUITE, root, *MIRRORS]
            _log("building rootfs: " + shlex.join(cmd))
            with open(logfile, "w") as lf:
                p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=lf,
                                   stderr=subprocess.STDOUT, timeout=900)
            if p.returncode != 0:
                with open(logfile) as lf:
                    raise HarnessError("mmdebstrap failed (exit %d):\n%s"
                                       % (p.returncode, lf.read()[-4000:]))
            t1 = time.monotonic()
            _prepare_rootfs(root)
            part = tarball + ".part"
            _run_host(["tar", "-C", root, *_TAR_FLAGS, "-cf", part, "."], 600)
            os.replace(part, tarball)
            for old in os.listdir(cache_dir):
                if old.startswith("rootfs-") and os.path.join(cache_dir, old) != tarball:
                    os.unlink(os.path.join(cache_dir, old))
            _log("rootfs built in %.1fs (mmdebstrap %.1fs), cached as %s"
                 % (time.monotonic() - t0, t1 - t0, tarball))
        finally:
            _rm_tree(tmp)
        return tarball


def default_work_dir():
    """$ECHO_E2E_WORK_DIR, else /dev/shm if it is a tmpfs with >= 2 GiB
    free, else /var/tmp."""
    env = os.environ.get(ENV_WORK_DIR)
    if env:
        return env
    for d in WORK_DIR_CANDIDATES[:-1]:
        try:
            st = os.statvfs(d)
        except OSError:
            continue
        fstype = [m["fstype"] for m in _mountinfo() if m["mountpoint"] == d]
        if fstype and fstype[-1] == "tmpfs" and st.f_bavail * st.f_frsize >= WORK_DIR_MIN_FREE:
            return d
    return WORK_DIR_CANDIDATES[-1]


def extract_rootfs(tarball, work_dir=None):
    """Extract a fresh copy of the rootfs; returns <new temp dir>/rootfs."""
    work_dir = work_dir or default_work_dir()
    os.makedirs(work_dir, exist_ok=True)
    _sweep_stale(work_dir)
    top = tempfile.mkdtemp(prefix="echo-e2e-%d-" % os.getpid(), dir=work_dir)
    root = os.path.join(top, "rootfs")
    os.mkdir(root, 0o755)
    try:
        _run_host(["tar", "-C", root, *_TAR_FLAGS, "-xpf", tarball], 600)
    except BaseException:
        _rm_tree(top)
        raise
    return root


# --------------------------------------------------------------------------
# mounts, processes, removal

def _unescape_mount(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def _mountinfo():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, post = line.rstrip("\n").split(" - ", 1)
            a = pre.split()
            b = post.split()
            yield {"root": _unescape_mount(a[3]), "mountpoint": _unescape_mount(a[4]),
                   "fstype": b[0], "superopts": b[2] if len(b) > 2 else ""}


def _mounts_under(path):
    path = os.path.realpath(path)
    return [m["mountpoint"] for m in _mountinfo()
            if m["mountpoint"] == path or m["mountpoint"].startswith(path + "/")]


def _rm_tree(path):
    """rm -rf that never crosses into a mount point."""
    if not os.path.lexists(path):
        return
    mounts = _mounts_under(path)
    if mounts:
        raise HarnessError("refusing to delete %s: mounts below it: %s" % (path, mounts))
    subprocess.run(["rm", "-rf", "--one-file-system", path],
                   stdin=subprocess.DEVNULL, timeout=300, check=True)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ns_inode(pid, ns):
    try:
        return os.stat("/proc/%d/ns/%s" % (pid, ns)).st_ino
    except OSError:
        return None


def _all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


# --------------------------------------------------------------------------
# cgroups

class _Hierarchy:
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


def _cgroup_hierarchies():
    """The hierarchies listed in /proc/self/cgroup, with host paths."""
    mounts = [m for m in _mountinfo() if m["fstype"] in ("cgroup", "cgroup2")]
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
        result.append(_Hierarchy(hid, ctrls, chosen["mountpoint"], base))
    if not result:
        raise HarnessError("no cgroup hierarchies found")
    return result


def _read(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


class _Cgroups:
    """echo-e2e-<pid>-<n>/{machine,exec,supervisor} in every hierarchy we
    are in: machine/ is the root of the machine's cgroup namespace (systemd
    and its units), exec/ holds what the harness runs inside, supervisor/
    the unshare process (which must not sit in systemd's root cgroup)."""

    SUBS = ("machine", "exec", "supervisor")

    def __init__(self, name):
        self.name = name
        self.hierarchies = _cgroup_hierarchies()
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
                            fh.write(_read(os.path.join(parent, f)).strip() or "\n")

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
                for tok in _read(os.path.join(dirpath, "cgroup.procs")).split():
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


_NAME_RE = re.compile(r"^echo-e2e-(\d+)-")


def _sweep_stale(work_dir):
    """Remove leftovers of harness processes that died (e.g. SIGKILL)."""
    try:
        hs = _cgroup_hierarchies()
    except HarnessError:
        hs = []
    for h in hs:
        try:
            names = os.listdir(h.base)
        except OSError:
            continue
        for n in names:
            m = _NAME_RE.match(n)
            if not m or _pid_alive(int(m.group(1))):
                continue
            # Its owner is gone: whatever is still in there is an orphan.
            cg = _Cgroups.__new__(_Cgroups)
            cg.name, cg.hierarchies, cg.created = n, [h], []
            if cg.kill_all(timeout=5):
                _log("could not kill the processes in stale cgroup %s" % n)
            elif cg.remove(timeout=2):
                _log("could not remove stale cgroup %s" % n)
            else:
                _log("removed stale cgroup %s/%s" % (h.base, n))
    try:
        names = os.listdir(work_dir)
    except OSError:
        names = []
    for n in names:
        m = _NAME_RE.match(n)
        if m and not _pid_alive(int(m.group(1))):
            try:
                _rm_tree(os.path.join(work_dir, n))
                _log("removed stale %s/%s" % (work_dir, n))
            except (HarnessError, subprocess.SubprocessError, OSError) as e:
                _log("could not remove stale %s: %s" % (n, e))


# --------------------------------------------------------------------------
# process bookkeeping for cleanup on exit and on signals

_LIVE = []
_HANDLERS_INSTALLED = False


def _cleanup_live():
    for m in list(_LIVE):
        try:
            m.cleanup()
        except BaseException as e:  # keep cleaning the others
            _log("cleanup of %s failed: %r" % (m.name, e))


def _on_signal(signum, _frame):
    # Turn SIGTERM/SIGHUP into an exception, so that `with` blocks,
    # finally clauses and atexit run and the machines get cleaned up.
    raise SystemExit(128 + signum)


def _install_handlers():
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    _HANDLERS_INSTALLED = True
    atexit.register(_cleanup_live)
    import threading
    if threading.current_thread() is not threading.main_thread():
        return
    for s in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(s) == signal.SIG_DFL:
            signal.signal(s, _on_signal)


def _kill_group(p, sig=signal.SIGKILL):
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_members(pgid):
    found = []
    for pid in _all_pids():
        stat = _read("/proc/%d/stat" % pid)
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[2] == str(pgid):
            found.append(pid)
    return found


def _stop_job(p, sig, timeout, forked=True):
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
    _signal_job(p, sig, forked)
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(p, signal.SIGKILL)
        p.wait(timeout=10)
    return p.returncode


def _signal_job(p, sig, forked):
    members = [m for m in _group_members(p.pid) if m != p.pid] if forked else []
    if not members:
        _kill_group(p, sig)
    for pid in members:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _communicate(p, input, timeout, forked):
    """communicate() that kills the command on timeout/^C."""
    try:
        out, err = p.communicate(input, timeout=timeout)
    except BaseException:
        _stop_job(p, signal.SIGKILL, 5, forked)
        try:
            p.communicate(timeout=5)
        except (subprocess.TimeoutExpired, ValueError):
            pass
        raise
    return out, err


# Written into cgroup.procs files by a tiny sh wrapper (thread-safe, unlike
# preexec_fn): "$@" is: procs files..., --, command...
_JOIN_CGROUPS = ('while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; '
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
            _signal_job(self.popen, sig, self.forked)

    def stop(self, timeout=5.0, sig=signal.SIGTERM):
        """Send sig, SIGKILL after timeout; returns the exit code (negative:
        killed by that signal)."""
        _stop_job(self.popen, sig, timeout, self.forked)
        return self.popen.returncode

    @property
    def stdout(self):
        return _read(self.out_path)

    @property
    def stderr(self):
        return _read(self.err_path)

    def __repr__(self):
        return "<Background %s pid=%d rc=%r>" % (self.name, self.pid, self.popen.poll())


# --------------------------------------------------------------------------
# the machine

_COUNTER = [0]


class Machine:
    """A systemd 252 machine booted in fresh namespaces from a rootfs copy.

    Machine(rootfs_dir) takes ownership of rootfs_dir (a private copy, e.g.
    from extract_rootfs()) and deletes it in cleanup() unless delete=False
    or $ECHO_E2E_KEEP=1.
    """

    def __init__(self, rootfs_dir, delete=True, name=None):
        if os.geteuid() != 0:
            raise HarnessError("Machine needs root")
        _install_handlers()
        self.root = os.path.realpath(rootfs_dir)
        if not os.path.isfile(os.path.join(self.root, "lib/systemd/systemd")):
            raise HarnessError("%s has no lib/systemd/systemd" % self.root)
        _COUNTER[0] += 1
        self.name = name or "echo-e2e-%d-%d" % (os.getpid(), _COUNTER[0])
        self.delete = delete and not _env_flag(ENV_KEEP)
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
        _LIVE.append(self)

    # -- construction helpers ------------------------------------------------

    @classmethod
    def from_tarball(cls, tarball, work_dir=None, **kw):
        t0 = time.monotonic()
        root = extract_rootfs(tarball, work_dir)
        try:
            m = cls(root, **kw)
        except BaseException:
            _rm_tree(os.path.dirname(root))
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
            out, _ = _communicate(p, None, timeout, False)
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

    def _boot_script(self):
        hs = self.cgroups.hierarchies
        v1 = [h for h in hs if not h.v2]
        lines = [
            "#!/bin/sh",
            "# generated by tests/e2e/nspawn.py: runs as PID 1 of the new namespaces",
            "set -eu",
            'R="$1"; CONSOLE="$2"; HN="$3"; GO="$4"',
            "mount --make-rprivate /",
            'mount --bind "$R" "$R"',
            # The work dir may be a nosuid/nodev tmpfs: not inside the machine.
            'mount -o remount,bind,suid,dev,exec "$R"',
            'mount -t proc -o nosuid,nodev,noexec proc "$R/proc"',
            # Keep the host's kernel settings out of reach: /proc/sys read-only
            # (systemd-sysctl then skips itself), except the machine's own
            # network namespace.
            'mount --bind "$R/proc/sys" "$R/proc/sys"',
            'mount --bind "$R/proc/sys/net" "$R/proc/sys/net"',
            'mount -o remount,bind,ro "$R/proc/sys"',
            'if [ -e "$R/proc/sysrq-trigger" ]; then',
            '  mount --bind "$R/proc/sysrq-trigger" "$R/proc/sysrq-trigger"',
            '  mount -o remount,bind,ro "$R/proc/sysrq-trigger"',
            'fi',
            # A fresh sysfs of this network namespace, read-only (udev skips).
            'mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"',
        ]
        cg = '"$R/sys/fs/cgroup"'
        if not v1:
            lines.append("mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 %s" % cg)
        else:
            lines.append("mount -t tmpfs -o nosuid,nodev,noexec,mode=755 tmpfs %s" % cg)
            for h in hs:
                if h.v2:
                    lines.append('mkdir "$R/sys/fs/cgroup/unified"')
                    lines.append("mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "
                                 '"$R/sys/fs/cgroup/unified"')
                    continue
                ctrls = h.controllers.split(",")
                named = [c for c in ctrls if c.startswith("name=")]
                dirname = named[0][5:] if named else h.controllers
                opts = "nosuid,nodev,noexec," + ("none," if named else "") + h.controllers
                lines.append('mkdir "$R/sys/fs/cgroup/%s"' % dirname)
                lines.append('mount -t cgroup -o %s cgroup "$R/sys/fs/cgroup/%s"'
                             % (opts, dirname))
                if len(ctrls) > 1 and not named:
                    for c in ctrls:
                        lines.append('ln -s %s "$R/sys/fs/cgroup/%s"' % (dirname, c))
        lines += [
            # A private /dev.
            'mount -t tmpfs -o nosuid,mode=755,size=4m tmpfs "$R/dev"',
            "for n in null zero full random urandom tty; do",
            '  touch "$R/dev/$n"; mount --bind "/dev/$n" "$R/dev/$n"',
            "done",
            'mkdir -m 755 "$R/dev/pts"',
            'mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5,nosuid,noexec '
            'devpts "$R/dev/pts"',
            'ln -s pts/ptmx "$R/dev/ptmx"',
            'mkdir -m 1777 "$R/dev/shm"',
            'mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$R/dev/shm"',
            'ln -s /proc/self/fd "$R/dev/fd"',
            'ln -s /proc/self/fd/0 "$R/dev/stdin"',
            'ln -s /proc/self/fd/1 "$R/dev/stdout"',
            'ln -s /proc/self/fd/2 "$R/dev/stderr"',
            'touch "$R/dev/console"; mount --bind "$CONSOLE" "$R/dev/console"',
            'mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs "$R/run"',
            'mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$R/tmp"',
            'hostname "$HN"',
            "ip link set lo up",
            # Wait until the harness has moved our parent (unshare) out of
            # what becomes systemd's root cgroup.
            'read go < "$GO"; [ "$go" = go ]',
            'mkdir "$R/run/.e2e-oldroot"',
            'cd "$R"',
            "pivot_root . run/.e2e-oldroot",
            "cd /",
            # From here on only the machine's own binaries are reachable.
            "umount -l /run/.e2e-oldroot",
            "rmdir /run/.e2e-oldroot",
            # Shared propagation, as systemd-nspawn sets up: systemd (told it
            # runs in a container) leaves it alone, and services need it. A
            # service's credentials (LoadCredential=) are mounted in a helper's
            # private namespace and moved into /run/credentials, which only
            # reaches systemd's namespace when /run propagates.
            "mount --make-rshared /",
            "exec env -i container=other PATH=%s setpriv --bounding-set -all,%s "
            "/lib/systemd/systemd --system"
            % (MACHINE_PATH, ",".join("+" + c for c in MACHINE_CAPS)),
        ]
        return "\n".join(lines) + "\n"

    def boot(self, timeout=60.0):
        """Boot systemd as PID 1 in new pid/mount/uts/ipc/net/cgroup
        namespaces and wait until it is running or degraded."""
        if self._unshare is not None:
            raise HarnessError("a machine boots only once")
        if shutil.which("ip") is None:
            raise HarnessError("ip(8) (iproute2) is needed on the host")
        t0 = time.monotonic()
        deadline = t0 + timeout
        self.cgroups = _Cgroups(self.name)
        self.cgroups.create()
        script = os.path.join(self.state_dir, "boot.sh")
        with open(script, "w") as f:
            f.write(self._boot_script())
        # Console: a pty whose master a `cat` drains into console.log.
        master, slave = os.openpty()
        import tty
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
        cmd = ["/bin/sh", "-c", _JOIN_CGROUPS, "sh",
               *self.cgroups.procs_files("machine"), "--",
               "setpriv", "--pdeathsig", "KILL",
               "unshare", "--pid", "--fork", "--kill-child", "--mount",
               "--propagation", "private", "--uts", "--ipc", "--net", "--cgroup",
               "/bin/sh", script, self.root, console, HOSTNAME, fifo]
        with open(self.boot_log, "wb") as blog:
            self._unshare = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=blog, stderr=subprocess.STDOUT,
                env={"PATH": os.environ.get("PATH", MACHINE_PATH), "LANG": "C"},
                start_new_session=True)
        try:
            _wait_until(self._child_of_unshare, max(deadline - time.monotonic(), 0.1),
                        what="unshare to fork")
            for f in self.cgroups.procs_files("supervisor"):
                with open(f, "w") as fh:
                    fh.write("%d\n" % self._unshare.pid)
            _wait_until(lambda: self._release(fifo), max(deadline - time.monotonic(), 0.1),
                        what="the boot script to read %s" % fifo)
            self.pid = _wait_until(self._find_init, max(deadline - time.monotonic(), 0.1),
                                   what="the machine's PID 1 to exec systemd")
            self.ns = {n: _ns_inode(self.pid, n)
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
        kids = _read("/proc/%d/task/%d/children" % (upid, upid)).split()
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
        parts = ["--- boot.log:", _read(self.boot_log)[-3000:],
                 "--- console.log:", _read(self.console_log).replace("\r", "")[-6000:]]
        if self.booted:
            for c in (["systemctl", "--failed", "--no-legend"],
                      ["journalctl", "-b", "-n", "60", "--no-pager"]):
                try:
                    p = self.run(c, check=False, timeout=10)
                    parts += ["--- " + shlex.join(c) + ":", p.stdout + p.stderr]
                except Exception as e:  # diagnostics must not raise
                    parts += ["--- " + shlex.join(c) + ": %r" % e]
        return "\n".join(parts)

    # -- running things inside -------------------------------------------------

    def _require_booted(self):
        if not self.booted:
            raise HarnessError("machine %s is not running" % self.name)

    def _wrap(self, cmd, net_only, env):
        if isinstance(cmd, str):
            cmd = ["/bin/sh", "-c", cmd]
        if net_only:
            ns = ["nsenter", "-t", str(self.pid), "-n"]
            e = dict(os.environ)
        else:
            ns = ["nsenter", "-t", str(self.pid), "-m", "-p", "-u", "-i", "-n", "-C",
                  "-r", "-w"]
            e = {"PATH": MACHINE_PATH, "HOME": "/root", "LANG": "C.UTF-8",
                 "TERM": "dumb", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0",
                 "DEBIAN_FRONTEND": "noninteractive"}
        if env:
            e.update(env)
        # pdeathsig: if the test process dies without cleaning up (SIGKILL),
        # nsenter dies too (and, with net_only, the command itself).
        full = ["/bin/sh", "-c", _JOIN_CGROUPS, "sh",
                *self.cgroups.procs_files("exec"), "--",
                "setpriv", "--pdeathsig", "KILL", *ns, "--", *cmd]
        return full, e

    def run(self, cmd, check=True, timeout=120.0, input=None, env=None,
            net_only=False, text=True):
        """Run cmd (list, or str for /bin/sh -c) inside the machine.

        All namespaces are entered (mount, pid, uts, ipc, net, cgroup), so
        the machine's files, systemctl and journalctl work.  With
        net_only=True only the network namespace is entered: the command
        runs from the host's filesystem with the host's environment.
        Returns a CompletedProcess with stdout/stderr; raises
        CalledProcessError (check) or TimeoutExpired (after killing it).
        """
        self._require_booted()
        full, e = self._wrap(cmd, net_only, env)
        p = subprocess.Popen(full, stdin=subprocess.PIPE if input is not None
                             else subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=e, text=text,
                             start_new_session=True)
        out, err = _communicate(p, input, timeout, not net_only)
        cp = subprocess.CompletedProcess(cmd, p.returncode, out, err)
        if check and p.returncode != 0:
            raise CommandFailed(p.returncode, cmd, out, err)
        return cp

    def run_net(self, cmd, **kw):
        """Run a host command inside the machine's network namespace only."""
        return self.run(cmd, net_only=True, **kw)

    def spawn(self, cmd, net_only=False, env=None, name=None):
        """Start cmd in the background (inside the machine, or only in its
        network namespace); stdout/stderr go to files.  Stopped, if still
        running, by poweroff()/cleanup()."""
        self._require_booted()
        self._bg_counter += 1
        name = name or "bg%d" % self._bg_counter
        out_path = os.path.join(self.state_dir, name + ".out")
        err_path = os.path.join(self.state_dir, name + ".err")
        full, e = self._wrap(cmd, net_only, env)
        with open(out_path, "wb") as o, open(err_path, "wb") as er:
            p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=o, stderr=er,
                                 env=e, start_new_session=True)
        bg = Background(p, name, out_path, err_path, cmd, forked=not net_only)
        self._background.append(bg)
        return bg

    # -- conveniences for tests -------------------------------------------------

    def systemctl(self, *args, check=True, timeout=120.0):
        return self.run(["systemctl", *args], check=check, timeout=timeout)

    def unit_property(self, unit, prop):
        return self.run(["systemctl", "show", "-P", prop, unit]).stdout.strip()

    def is_active(self, unit):
        return self.run(["systemctl", "is-active", unit], check=False).stdout.strip()

    def wait_for(self, pred, timeout=30.0, what="condition"):
        """Poll pred() (no fixed sleeps) until true; bounded by timeout."""
        return _wait_until(pred, timeout, what=what)

    def wait_unit_state(self, unit, states, timeout=30.0):
        if isinstance(states, str):
            states = (states,)
        def check():
            st = self.is_active(unit)
            return st if st in states else None
        return _wait_until(check, timeout, what="%s to be %s" % (unit, "/".join(states)))

    def failed_units(self):
        out = self.run(["systemctl", "list-units", "--failed", "--plain",
                        "--no-legend"]).stdout
        return [l.split()[0] for l in out.splitlines() if l.strip()]

    def write_file(self, path, data, mode=0o644):
        """Write a file inside the machine (symlinks resolved inside it).
        Works before boot (chroot) and while it runs (nsenter), also for
        /run and /tmp, which are tmpfs inside the running machine."""
        if isinstance(data, str):
            data = data.encode()
        script = ('mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"')
        args = ["sh", "-c", script, "sh", path, "%o" % mode]
        if self.booted:
            self.run(args, input=data, text=False)
        else:
            p = subprocess.run(["chroot", self.root, *args], input=data,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=60)
            if p.returncode != 0:
                raise HarnessError("write_file %s: %s" % (path, p.stdout.decode(errors="replace")))

    def copy_in(self, host_file, path, mode=None):
        with open(host_file, "rb") as f:
            data = f.read()
        if mode is None:
            mode = os.stat(host_file).st_mode & 0o7777
        self.write_file(path, data, mode)

    def read_file(self, path):
        return self.run(["cat", path], text=False).stdout

    def install_debs(self, names=None, timeout=600.0, check=True):
        """apt-get install the .debs put in by prepare_debs(), offline."""
        if names is None:
            names = sorted(n for n in os.listdir(self.host_path("/root/debs"))
                           if n.endswith(".deb"))
        paths = [n if n.startswith("/") else "/root/debs/" + n for n in names]
        # No --no-download: apt 2.6 then fails on local .deb paths ("Pathname
        # to install is not absolute").  Nothing is downloaded anyway: the
        # dependencies are in /var/cache/apt/archives and there is no network.
        return self.run(["apt-get", "install", "-y", *paths],
                        timeout=timeout, check=check)

    def journal(self, *args, unit=None, cursor=None, output="cat", timeout=60.0):
        """journalctl output (text).  unit: -u UNIT; cursor: only entries
        written after this mark (see journal_cursor()).

        The mark is a realtime timestamp, and entries are filtered by their
        __REALTIME_TIMESTAMP here rather than with --after-cursor: journald
        keeps entries of dynamic users (uid >= 1000) in per-user files, and
        systemd 252's journalctl, seeking a cursor across those files with a
        match, was seen to return nothing although matching entries existed."""
        cmd = ["journalctl", "--no-pager", "-q"]
        if unit:
            cmd += ["-u", unit]
        if not cursor:
            return self.run(cmd + ["-o", output] + list(args), timeout=timeout).stdout
        # One second of margin for --since (it has second granularity);
        # the exact cut is made on the microsecond timestamps below.
        since = "@%d" % (int(cursor) // 1000000 - 1)
        out = self.run(cmd + ["-o", "json", "--since", since] + list(args), timeout=timeout).stdout
        kept = []
        for line in out.splitlines():
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            if int(entry.get("__REALTIME_TIMESTAMP", "0")) <= int(cursor):
                continue
            if output == "json":
                kept.append(line)
            else:
                message = entry.get("MESSAGE", "")
                kept.append(message if isinstance(message, str) else "")
        return "\n".join(kept) + ("\n" if kept else "")

    def journal_cursor(self):
        """A mark for journal(cursor=...): the machine's realtime clock in
        microseconds, so only entries written after this call count."""
        out = self.run(["date", "+%s%6N"]).stdout.strip()
        return out

    def wait_journal(self, pattern, timeout=30.0, **kw):
        """Wait until a journal line matches the regex pattern; returns it."""
        rx = re.compile(pattern)

        def found():
            for line in self.journal(**kw).splitlines():
                if rx.search(line):
                    return line
            return None
        return _wait_until(found, timeout, what="journal line %r" % pattern)

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
            _log("%s: poweroff timed out, killing PID 1" % self.name)
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
                _kill_group(self._unshare)
                self._unshare.wait(timeout=10)

    def _ns_processes(self):
        """Host pids still in any of the machine's namespaces."""
        if not self.ns:
            return []
        found = []
        for pid in _all_pids():
            for n, ino in self.ns.items():
                if ino is not None and n != "cgroup" and _ns_inode(pid, n) == ino:
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
        import threading
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
            left["mounts"] = _mounts_under(self.root)
            if self.delete:
                if not left["mounts"]:
                    _rm_tree(self._top_dir or self.root)
                    if self._top_dir is None:
                        _rm_tree(self.state_dir)
                for d in (self.root, self._top_dir or self.state_dir):
                    if os.path.lexists(d):
                        left["dirs"].append(d)
            else:
                _log("%s: kept %s (state in %s)" % (self.name, self.root, self.state_dir))
        except BaseException:
            # atexit gets another go at it.
            left["error"] = repr(sys.exc_info()[1])
            self._leftovers = left
            raise
        self._cleaned = True
        if self in _LIVE:
            _LIVE.remove(self)
        self._leftovers = left
        if any(left.values()):
            _log("%s: leftovers after cleanup: %r" % (self.name, left))
        return left

    @property
    def leftovers(self):
        return self._leftovers
