#!/usr/bin/env python3
"""Side-by-side benchmark of echo-mpserv and its peers (see bench/README.md).

Run it through bench/run, as root, from anywhere:

    bench/run [--quick] [--reps N] [--peers a,b,...] [--no-install] ...

This is the orchestrator: it prepares (packages, build), then runs every
measurement through nsrunner.py, each in a network namespace of its own
(unshare --net) with only its loopback interface up: one server, one load
generator, both pinned to different CPUs; nothing ever listens outside.
Each server is stopped, and every process it left behind killed, before
the next test. report.py turns the results into the table.

Python 3 standard library only.
"""

import argparse
import os
import shutil
import signal
import tempfile
import time

from cgroups import Cgroups
from common import BENCH, ROOT, log, warn
from measure import PROFILES, plan_tests, run_fork_floor, run_one
from peers import DEFAULT_PEERS, PEER_BY_NAME, SUBJECT
from prepare import Ctx, build, compile_textbook, ensure_packages
from report import fmt_num, summary_of, write_report

DEFAULT_BUILD = os.path.join(ROOT, "build-bench")
DEFAULT_OUT = os.path.join(BENCH, "out")


def parse_args():
    ap = argparse.ArgumentParser(prog="bench/run", description="Benchmark echo-mpserv against its peers.")
    ap.add_argument("--quick", action="store_true", help="short smoke run (~2-3 minutes), 1 repetition")
    ap.add_argument("--reps", type=int, help="repetitions (default 3; --quick: 1); the table shows medians")
    ap.add_argument("--peers", help=f"comma-separated subset (default: {','.join(DEFAULT_PEERS)}; "
                                    "also available: socat-exec)")
    ap.add_argument("--scale-peers", default="echo-mpserv,epoll",
                    help="peers to hold the scale test's 10,000 connections on (default: echo-mpserv,epoll)")
    ap.add_argument("--tests", help="comma-separated subset of hold,pingpong,stream1,stream50,rate,hold10k")
    ap.add_argument("--build-dir", default=DEFAULT_BUILD, help="meson build directory (default: build-bench)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output directory (default: bench/out)")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get install missing packages")
    ap.add_argument("--no-build", action="store_true", help="use the build directory as it is")
    ap.add_argument("--server-cpu", type=int, help="CPU for the servers (default: the last one)")
    ap.add_argument("--client-cpu", type=int, help="CPU for the load generator (default: the first one)")
    return ap.parse_args()


def resolve_cpus(args):
    cpus = sorted(os.sched_getaffinity(0))
    if args.server_cpu is None:
        args.server_cpu = cpus[-1]
    if args.client_cpu is None:
        args.client_cpu = cpus[0]
    if args.server_cpu == args.client_cpu:
        warn("server and load generator share a CPU: figures will be meaningless")


def plan(args):
    """Returns (profile, peer names, scale peers, tests, scale test)."""
    prof = dict(PROFILES["quick" if args.quick else "full"])
    if args.reps:
        prof["reps"] = max(1, args.reps)
    names = args.peers.split(",") if args.peers else list(DEFAULT_PEERS)
    for n in names:
        if n not in PEER_BY_NAME:
            raise SystemExit(f"bench: unknown peer '{n}' (known: {', '.join(PEER_BY_NAME)})")
    if SUBJECT not in names:
        names.insert(0, SUBJECT)
    scale_peers = [n for n in args.scale_peers.split(",") if n]
    tests, scale_test = plan_tests(prof)
    if args.tests:
        want = args.tests.split(",")
        tests = [t for t in tests if t[0] in want]
        if "hold10k" not in want:
            scale_peers = []
    return prof, names, scale_peers, tests, scale_test


def available_peers(ctx, names):
    """Returns (peers to run, [(peer, why skipped)])."""
    peers, skipped = [], []
    for n in names:
        p = PEER_BY_NAME[n]
        ok, why = p.available(ctx)
        (peers if ok else skipped).append(p if ok else (p, why))
    if not any(p.name == SUBJECT for p in peers):
        raise SystemExit("bench: echo-mpserv is not built")
    return peers, skipped


def announce(prof, peers, skipped, tests, scale_test, scale_peers, outdir, logdir):
    per_peer_s = sum(t[2] for t in tests)
    est = prof["reps"] * (len(peers) * per_peer_s + 2 * prof["floor_d"] +
                          scale_test[2] * len([p for p in peers if p.name in scale_peers]))
    log(f"Peers: {', '.join(p.name for p in peers)}"
        + (f"; skipped: {', '.join(f'{p.name} ({why})' for p, why in skipped)}" if skipped else ""))
    log(f"{prof['reps']} repetition(s), about {est / 60:.0f} minutes. Raw lines go to "
        f"{os.path.relpath(outdir, ROOT)}/raw.jsonl, server logs to {os.path.relpath(logdir, ROOT)}/.")


def run_reps(ctx, cg, prof, peers, tests, scale_test, scale_peers, logdir, raw):
    """Every repetition: the fork floor, then every test on every peer.
    Returns (results[peer][test] = [runs], floors[tool] = [runs])."""
    results, floors = {}, {}
    for rep in range(1, prof["reps"] + 1):
        log(f"\n=== repetition {rep}/{prof['reps']}")
        for tool, res in run_fork_floor(ctx, prof, rep, raw).items():
            floors.setdefault(tool, []).append(res)
            log(f"  {tool:<16} {'ERROR ' + res['error'] if 'error' in res else fmt_num(res['forks_per_s']) + ' forks/s'}")
        # rotate the order each repetition so no peer always runs first
        order = peers[(rep - 1) % len(peers):] + peers[:(rep - 1) % len(peers)]
        for peer in order:
            peer_plan = list(tests)
            if peer.name in scale_peers:
                peer_plan.append(scale_test)
            for test, targs, _, cap in peer_plan:
                r = run_one(ctx, cg, peer, test, targs, cap, rep, logdir, raw)
                results.setdefault(peer.name, {}).setdefault(test, []).append(r)
                log(f"  {peer.name:<12} {test:<9} {summary_of(test, r)}")
    return results, floors


def main():
    args = parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (network namespaces, cgroups, package installation)")
    resolve_cpus(args)
    prof, names, scale_peers, tests, scale_test = plan(args)

    ensure_packages(args.no_install)
    if not args.no_build:
        log(f"Building ({os.path.relpath(args.build_dir, ROOT)}, buildtype=release) ...")
        build(args.build_dir)

    outdir = os.path.abspath(args.out)
    logdir = os.path.join(outdir, "logs")
    os.makedirs(logdir, exist_ok=True)
    for name in os.listdir(logdir):
        os.unlink(os.path.join(logdir, name))
    tmp = tempfile.mkdtemp(prefix="echo-bench.")
    cg = Cgroups()

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    try:
        ctx = Ctx(args, tmp)
        ctx.textbook = compile_textbook(tmp)
        peers, skipped = available_peers(ctx, names)
        announce(prof, peers, skipped, tests, scale_test, scale_peers, outdir, logdir)
        t_start = time.monotonic()
        with open(os.path.join(outdir, "raw.jsonl"), "w") as raw:
            results, floors = run_reps(ctx, cg, prof, peers, tests, scale_test, scale_peers, logdir, raw)
        write_report(outdir, args, prof, results, floors, peers, skipped, scale_peers,
                     time.monotonic() - t_start)
    except KeyboardInterrupt:
        # run_one has already stopped the current measurement (see run_runner)
        raise SystemExit("bench: interrupted; servers stopped")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
