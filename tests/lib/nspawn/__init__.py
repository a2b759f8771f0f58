"""Boot a real systemd as PID 1 in fresh namespaces, for end-to-end tests.

Stdlib only.  Needs root, unshare(1)/nsenter(1)/setpriv(1) from util-linux,
mmdebstrap (installed with apt-get when missing) and writable cgroup
filesystems.  See tests/e2e/README.md.

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

The parts: rootfs.py (build, cache, extract), cgroups.py (the hierarchies
and one machine's subtree), jobs.py (commands run inside, cleanup at exit),
machine.py (Machine: boot, poweroff, cleanup), inside.py (what runs in a
booted machine) and boot.sh (PID 1 until it execs systemd).

Layout of one machine on the host, under the work dir (default_work_dir():
/dev/shm when it is a roomy tmpfs, else /var/tmp):
    echo-e2e-<pid>-XXXX/rootfs     the machine's own copy of the rootfs
    echo-e2e-<pid>-XXXX/state/     console.log, boot.log (first line: the boot
                                   command), output files of background
                                   processes
and, in every cgroup hierarchy the test process is in, a child cgroup
``echo-e2e-<pid>-<n>`` with ``machine/`` (the nested systemd; root of its
cgroup namespace), ``exec/`` (commands the harness runs inside it) and
``supervisor/`` (the unshare process).
"""

from .cgroups import hierarchies as cgroup_hierarchies
from .common import BootError, CommandFailed, HarnessError
from .jobs import Background
from .machine import ENV_KEEP, MACHINE_CAPS, MACHINE_PATH, Machine, environment_problem
from .rootfs import (DEFAULT_CACHE_DIR, ENV_CACHE_DIR, ENV_REBUILD, ENV_WORK_DIR, HOSTNAME, MASKED_UNITS,
                     MIRRORS, PACKAGES, ROOTFS_LAYOUT, SUITE, VARIANT, WORK_DIR_CANDIDATES, WORK_DIR_MIN_FREE,
                     default_work_dir, ensure_rootfs, extract_rootfs)

__all__ = [
    "HarnessError", "BootError", "CommandFailed", "Machine", "Background",
    "ensure_rootfs", "extract_rootfs", "environment_problem",
    "DEFAULT_CACHE_DIR", "default_work_dir", "cgroup_hierarchies",
    # The settings, for tests that check what the machine is.
    "ENV_CACHE_DIR", "ENV_WORK_DIR", "ENV_REBUILD", "ENV_KEEP", "HOSTNAME", "MACHINE_PATH",
    "MACHINE_CAPS", "MASKED_UNITS", "MIRRORS", "PACKAGES", "ROOTFS_LAYOUT", "SUITE", "VARIANT",
    "WORK_DIR_CANDIDATES", "WORK_DIR_MIN_FREE",
]
