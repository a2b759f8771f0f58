"""What both benchmark programs share: where the tree is, progress output,
the libc calls Python lacks, and the load generator's key=value lines."""

import ctypes
import os
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)


def log(msg=""):
    print(msg, flush=True)


def warn(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


_libc = None


def libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def set_pdeathsig(sig):
    """Returns a preexec_fn: the child gets sig when its parent dies."""
    def fn():
        libc().prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
    return fn


def parse_kv(line):
    out = {}
    for tok in line.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            try:
                out[k] = float(v) if any(c in v for c in ".e") and not v.isalpha() else int(v)
            except ValueError:
                out[k] = v
    return out

