"""Before measuring: the packages, the build, the textbook server, and the
paths the peers' command lines need."""

import os
import shutil
import subprocess
import sys

from common import ROOT, log, warn
from peers import MPSERV_CONF, SEED

# command -> Debian package
COMMANDS = {
    "socat": "socat",
    "tcpserver": "ucspi-tcp",
    "ncat": "ncat",
    "xinetd": "xinetd",
    "gnuplot": "gnuplot-nox",
    "meson": "meson",
    "ninja": "ninja-build",
    "gcc": "gcc",
    "cc": "gcc",
    "pkg-config": "pkg-config",
    "unshare": "util-linux",
    "taskset": "util-linux",
}
PKGCONFIG = {"libsystemd": "libsystemd-dev", "libconfig": "libconfig-dev"}


def ensure_packages(no_install):
    missing = set()
    for cmd, pkg in COMMANDS.items():
        if not shutil.which(cmd):
            missing.add(pkg)
    if shutil.which("pkg-config"):
        for lib, pkg in PKGCONFIG.items():
            if subprocess.run(["pkg-config", "--exists", lib]).returncode != 0:
                missing.add(pkg)
    else:
        missing.update(PKGCONFIG.values())
    if not missing:
        return
    pkgs = sorted(missing)
    if no_install:
        warn(f"missing packages (not installing, --no-install): {' '.join(pkgs)}")
        return
    log(f"Installing: {' '.join(pkgs)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q"] + pkgs
    if subprocess.run(cmd, env=env).returncode != 0:
        log("apt-get install failed; running apt-get update first")
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(cmd, env=env, check=True)


def build(build_dir):
    if not os.path.exists(os.path.join(build_dir, "build.ninja")):
        if os.path.exists(build_dir):
            shutil.rmtree(build_dir)
        subprocess.run(["meson", "setup", build_dir, ROOT, "--buildtype=release", "-Dbench=true"], check=True,
                       stdout=subprocess.DEVNULL)
    else:
        subprocess.run(["meson", "configure", build_dir, "-Dbuildtype=release", "-Dbench=true"], check=True,
                       stdout=subprocess.DEVNULL)
    targets = ["echo-mpserv", "loadgen", "epoll-echo", "fork-floor", "fork-floor-libs"]
    r = subprocess.run(["meson", "compile", "-C", build_dir] + targets, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
        raise SystemExit("bench: build failed")


def compile_textbook(tmp):
    if not os.path.exists(SEED):
        return None
    out = os.path.join(tmp, "textbook-echo_mpserv")
    cc = shutil.which("cc") or shutil.which("gcc")
    r = subprocess.run([cc, "-O2", "-w", "-o", out, SEED], capture_output=True, text=True)
    if r.returncode != 0:
        warn(f"textbook server did not compile: {r.stderr.strip()[-500:]}")
        return None
    return out



class Ctx:
    def __init__(self, args, tmp):
        self.args = args
        self.build_dir = os.path.abspath(args.build_dir)
        self.tmp = tmp
        self.textbook = None
        self.mpserv_conf = os.path.join(tmp, "echo-mpserv.conf")
        with open(self.mpserv_conf, "w") as f:
            f.write(MPSERV_CONF)

    def bin(self, rel):
        return os.path.join(self.build_dir, rel)

