"""The machines' root file system: built once with mmdebstrap, cached as a
tarball, extracted afresh for every machine."""

import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
import time

import procfs

from . import cgroups
from .common import NAME_RE, HarnessError, env_flag, log, rm_tree, run_host

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

TAR_FLAGS = ["--numeric-owner", "--xattrs", "--xattrs-include=*"]


def _cache_key():
    h = hashlib.sha256()
    h.update(repr((SUITE, VARIANT, PACKAGES, MIRRORS, MASKED_UNITS,
                   ROOTFS_LAYOUT, HOSTNAME)).encode())
    return h.hexdigest()[:12]


def _ensure_mmdebstrap():
    if shutil.which("mmdebstrap"):
        return
    log("installing mmdebstrap with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "mmdebstrap"]
    try:
        run_host(cmd, 600, env=env)
    except HarnessError:
        run_host(["apt-get", "update"], 600, env=env)
        run_host(cmd, 600, env=env)
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
        rebuild = env_flag(ENV_REBUILD)
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
            log("building rootfs: " + shlex.join(cmd))
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
            run_host(["tar", "-C", root, *TAR_FLAGS, "-cf", part, "."], 600)
            os.replace(part, tarball)
            for old in os.listdir(cache_dir):
                if old.startswith("rootfs-") and os.path.join(cache_dir, old) != tarball:
                    os.unlink(os.path.join(cache_dir, old))
            log("rootfs built in %.1fs (mmdebstrap %.1fs), cached as %s"
                 % (time.monotonic() - t0, t1 - t0, tarball))
        finally:
            rm_tree(tmp)
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
        fstype = [m["fstype"] for m in procfs.mountinfo() if m["mountpoint"] == d]
        if fstype and fstype[-1] == "tmpfs" and st.f_bavail * st.f_frsize >= WORK_DIR_MIN_FREE:
            return d
    return WORK_DIR_CANDIDATES[-1]


def extract_rootfs(tarball, work_dir=None):
    """Extract a fresh copy of the rootfs; returns <new temp dir>/rootfs."""
    work_dir = work_dir or default_work_dir()
    os.makedirs(work_dir, exist_ok=True)
    sweep_stale(work_dir)
    top = tempfile.mkdtemp(prefix="echo-e2e-%d-" % os.getpid(), dir=work_dir)
    root = os.path.join(top, "rootfs")
    os.mkdir(root, 0o755)
    try:
        run_host(["tar", "-C", root, *TAR_FLAGS, "-xpf", tarball], 600)
    except BaseException:
        rm_tree(top)
        raise
    return root


def sweep_stale(work_dir):
    """Remove leftovers of harness processes that died (e.g. SIGKILL):
    their cgroups and their machines' directories."""
    cgroups.sweep_stale()
    try:
        names = os.listdir(work_dir)
    except OSError:
        names = []
    for n in names:
        m = NAME_RE.match(n)
        if m and not procfs.alive(int(m.group(1))):
            try:
                rm_tree(os.path.join(work_dir, n))
                log("removed stale %s/%s" % (work_dir, n))
            except (HarnessError, subprocess.SubprocessError, OSError) as e:
                log("could not remove stale %s: %s" % (n, e))
