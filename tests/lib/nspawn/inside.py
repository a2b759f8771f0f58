"""Running things in a booted machine: commands (nsenter into all of its
namespaces, or only its network namespace), background jobs, and what
tests ask of systemd, journald and the machine's files. A mixin of
Machine, which provides pid, cgroups, state_dir, root and booted."""

import json
import os
import re
import subprocess

from .common import CommandFailed, HarnessError, wait_until
from .jobs import JOIN_CGROUPS, Background, communicate

MACHINE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Inside:
    """What a test runs in a booted machine (mixed into Machine)."""

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
        full = ["/bin/sh", "-c", JOIN_CGROUPS, "sh",
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
        out, err = communicate(p, input, timeout, not net_only)
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
        return wait_until(pred, timeout, what=what)

    def wait_unit_state(self, unit, states, timeout=30.0):
        if isinstance(states, str):
            states = (states,)
        def check():
            st = self.is_active(unit)
            return st if st in states else None
        return wait_until(check, timeout, what="%s to be %s" % (unit, "/".join(states)))

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
        return wait_until(found, timeout, what="journal line %r" % pattern)
