#!/bin/sh
# PID 1 of a machine's new namespaces (Machine.boot runs it under unshare):
# mounts the machine's /proc, /sys, cgroup file systems, /dev, /run and
# /tmp, waits until the harness has moved unshare out of what becomes
# systemd's root cgroup, pivots into the rootfs and execs systemd.
#
# Usage: boot.sh ROOT CONSOLE HOSTNAME GO_FIFO PATH CAPS HIERARCHY...
#   CONSOLE    the pty that becomes /dev/console
#   GO_FIFO    read "go" from it before pivoting
#   PATH       the machine's PATH for systemd
#   CAPS       capabilities systemd keeps, comma-separated (+name,...)
#   HIERARCHY  one per cgroup hierarchy the harness is in: "cgroup2" for
#              the unified one, else the v1 controllers ("cpu,cpuacct",
#              "name=systemd", ...)
set -eu
R="$1"; CONSOLE="$2"; HN="$3"; GO="$4"; MACHINE_PATH="$5"; CAPS="$6"
shift 6

mount --make-rprivate /
mount --bind "$R" "$R"
# The work dir may be a nosuid/nodev tmpfs: not inside the machine.
mount -o remount,bind,suid,dev,exec "$R"
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
# Keep the host's kernel settings out of reach: /proc/sys read-only
# (systemd-sysctl then skips itself), except the machine's own network
# namespace.
mount --bind "$R/proc/sys" "$R/proc/sys"
mount --bind "$R/proc/sys/net" "$R/proc/sys/net"
mount -o remount,bind,ro "$R/proc/sys"
if [ -e "$R/proc/sysrq-trigger" ]; then
  mount --bind "$R/proc/sysrq-trigger" "$R/proc/sysrq-trigger"
  mount -o remount,bind,ro "$R/proc/sysrq-trigger"
fi
# A fresh sysfs of this network namespace, read-only (udev skips).
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"

# cgroups: the unified hierarchy alone, or a tmpfs with one directory per
# hierarchy (v1 controllers, and the unified one as "unified").
CG="$R/sys/fs/cgroup"
if [ "$*" = cgroup2 ]; then
  mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$CG"
else
  mount -t tmpfs -o nosuid,nodev,noexec,mode=755 tmpfs "$CG"
  for h in "$@"; do
    if [ "$h" = cgroup2 ]; then
      mkdir "$CG/unified"
      mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$CG/unified"
      continue
    fi
    named=$(printf '%s\n' "$h" | tr , '\n' | sed -n 's/^name=//p' | head -n 1)
    if [ -n "$named" ]; then
      mkdir "$CG/$named"
      mount -t cgroup -o "nosuid,nodev,noexec,none,$h" cgroup "$CG/$named"
    else
      mkdir "$CG/$h"
      mount -t cgroup -o "nosuid,nodev,noexec,$h" cgroup "$CG/$h"
      # Joint controllers ("cpu,cpuacct"): a link by each name.
      case "$h" in
      *,*) for c in $(printf '%s\n' "$h" | tr , ' '); do ln -s "$h" "$CG/$c"; done ;;
      esac
    fi
  done
fi

# A private /dev.
mount -t tmpfs -o nosuid,mode=755,size=4m tmpfs "$R/dev"
for n in null zero full random urandom tty; do
  touch "$R/dev/$n"; mount --bind "/dev/$n" "$R/dev/$n"
done
mkdir -m 755 "$R/dev/pts"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5,nosuid,noexec devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mkdir -m 1777 "$R/dev/shm"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
touch "$R/dev/console"; mount --bind "$CONSOLE" "$R/dev/console"
mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs "$R/run"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$R/tmp"
hostname "$HN"
ip link set lo up

# Wait until the harness has moved our parent (unshare) out of what
# becomes systemd's root cgroup.
read go < "$GO"; [ "$go" = go ]
mkdir "$R/run/.e2e-oldroot"
cd "$R"
pivot_root . run/.e2e-oldroot
cd /
# From here on only the machine's own binaries are reachable.
umount -l /run/.e2e-oldroot
rmdir /run/.e2e-oldroot
# Shared propagation, as systemd-nspawn sets up: systemd (told it runs in a
# container) leaves it alone, and services need it. A service's credentials
# (LoadCredential=) are mounted in a helper's private namespace and moved
# into /run/credentials, which only reaches systemd's namespace when /run
# propagates.
mount --make-rshared /
exec env -i container=other PATH="$MACHINE_PATH" setpriv --bounding-set "-all,$CAPS" \
  /lib/systemd/systemd --system
