"""The orchestrator's side of one measurement: what each test runs, and
running it through the namespace runner (or, for the fork floor, directly)."""

import json
import os
import signal
import subprocess
import sys

from cgroups import Cgroups
from common import BENCH, parse_kv, set_pdeathsig
from peers import SUBJECT

PROFILES = {
    # seconds unless said otherwise; warm-up comes before each timed test
    "full": dict(reps=3, rate_d=5.0, pp_d=5.0, stream_d=3.0, warmup=0.5,
                 hold_n=1000, hold_d=1.0, scale_n=10000, floor_d=2.0),
    "quick": dict(reps=1, rate_d=2.0, pp_d=2.0, stream_d=1.5, warmup=0.3,
                  hold_n=300, hold_d=0.5, scale_n=10000, floor_d=1.0),
}

CONC = 50            # concurrency of rate, pingpong and the many-connection stream
HOLD_TIMEOUT = 10    # per-connection timeout while establishing/checking held connections
PIDS_DEFAULT = 4096  # process cap of a test's cgroup (a leaking server cannot take the machine)


def plan_tests(prof):
    w = str(prof["warmup"])
    hold = ["hold", "-c", str(prof["hold_n"]), "-d", str(prof["hold_d"]), "-t", str(HOLD_TIMEOUT), "-b", "64"]
    scale = ["hold", "-c", str(prof["scale_n"]), "-d", "1", "-t", str(HOLD_TIMEOUT), "-b", "64"]
    return [
        # name, loadgen args, seconds it takes roughly, pids cap
        ("hold", hold, 4, max(PIDS_DEFAULT, 2 * prof["hold_n"] + 512)),
        ("pingpong", ["pingpong", "-c", str(CONC), "-d", str(prof["pp_d"]), "-w", w], prof["pp_d"] + 2, PIDS_DEFAULT),
        ("stream1", ["stream", "-c", "1", "-d", str(prof["stream_d"]), "-w", w], prof["stream_d"] + 2, PIDS_DEFAULT),
        ("stream50", ["stream", "-c", str(CONC), "-d", str(prof["stream_d"]), "-w", w], prof["stream_d"] + 2,
         PIDS_DEFAULT),
        ("rate", ["rate", "-c", str(CONC), "-d", str(prof["rate_d"]), "-w", w], prof["rate_d"] + 2, PIDS_DEFAULT),
    ], ("hold10k", scale, 25, 2 * prof["scale_n"] + 1024)


def make_spec(ctx, peer, test, args, rep, logdir):
    """What the namespace runner needs for one measurement (sent as JSON)."""
    timeout = (2 * 120 + 60) if test.startswith("hold") else 120
    spec = {
        "peer": peer.name, "test": test, "rep": rep, "port": peer.port,
        "cmd": peer.command(ctx),
        "loadgen": [ctx.bin("bench/loadgen")] + args + ["-l", f"{peer.name}/{test}/{rep}"],
        "server_cpu": ctx.args.server_cpu, "client_cpu": ctx.args.client_cpu,
        "timeout": timeout, "grace": 6 if peer.name == SUBJECT else 3,
        "server_log": os.path.join(logdir, f"{peer.name}.log"),
        "env": dict(os.environ, LC_ALL="C"),
    }
    for var in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID"):
        spec["env"].pop(var, None)
    return spec


def run_runner(spec, logdir):
    """Runs the namespace runner on spec; returns its result, or None. On
    any way out (timeout, Ctrl-C) the runner is terminated, which makes it
    stop its server and reap everything, and waited for."""
    inner = None
    try:
        with open(os.path.join(logdir, "inner.log"), "ab") as errf:
            inner = subprocess.Popen(
                ["unshare", "--net", "--", sys.executable, os.path.join(BENCH, "nsrunner.py")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errf,
                preexec_fn=set_pdeathsig(signal.SIGTERM))
            try:
                out, _ = inner.communicate(json.dumps(spec).encode(), timeout=spec["timeout"] + 40)
            except subprocess.TimeoutExpired:
                inner.terminate()
                out, _ = inner.communicate(timeout=30)
        result = None
        for line in out.decode(errors="replace").splitlines():
            if line.startswith("{"):
                result = json.loads(line)
        if result is None:
            result = {"peer": spec["peer"], "test": spec["test"], "rep": spec["rep"],
                      "error": f"namespace runner exited with {inner.returncode} and no result "
                               f"(see {logdir}/inner.log)"}
        return result
    finally:
        if inner is not None and inner.poll() is None:
            inner.terminate()
            try:
                inner.wait(timeout=30)
            except subprocess.TimeoutExpired:
                inner.kill()
                inner.wait()


def run_one(ctx, cg, peer, test, args, pids_cap, rep, logdir, raw):
    """One measurement in a pids cgroup of its own; appends it to raw."""
    spec = make_spec(ctx, peer, test, args, rep, logdir)
    spec["cgroup"] = cg.make(pids_cap)
    try:
        result = run_runner(spec, logdir)
    finally:
        Cgroups.remove(spec["cgroup"])
    raw.write(json.dumps(result) + "\n")
    raw.flush()
    return result


def run_fork_floor(ctx, prof, rep, raw):
    out = {}
    for tool in ("fork-floor", "fork-floor-libs"):
        r = subprocess.run(["taskset", "-c", str(ctx.args.server_cpu), ctx.bin(f"bench/{tool}"),
                            "-d", str(prof["floor_d"])], capture_output=True, text=True, timeout=120)
        line = [l for l in r.stdout.splitlines() if l.startswith("mode=")]
        if r.returncode == 0 and line:
            res = parse_kv(line[-1])
            res.update(peer=tool, test="forkfloor", rep=rep, raw=line[-1])
        else:
            res = {"peer": tool, "test": "forkfloor", "rep": rep, "error": r.stderr.strip()[-300:]}
        raw.write(json.dumps(res) + "\n")
        out[tool] = res
    return out

