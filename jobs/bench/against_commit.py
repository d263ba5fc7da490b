#!/usr/bin/env python
"""Time a `halopaint` command on this checkout against the same command on an earlier commit, interleaved
repeats, median ratio, and compare the two outputs.

    python jobs/bench/against_commit.py --commit REF [--repeats 3] [--rtol 1e-12] -- lightcone A.h5 … --out LC.h5

REF's tree is checked out once (`git worktree add`, a temporary directory, removed at the end) and imported
as `halopaint` through PYTHONPATH ahead of this checkout's editable install; both runs use this venv and
OMP_NUM_THREADS=1. `--out X` in the command is replaced per run (X.ref-K / X.new-K beside it, deleted after
the comparison). Every HDF5 dataset of the two outputs is compared (numbers: allclose with --rtol, atol 0;
others: equal); a difference is an error. Prints the median wall times and reference/new.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def run(command: list[str], pythonpath: str | None) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "halopaint.cli", *command], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def differences(a: Path, b: Path, rtol: float) -> list[str]:
    """Names of the datasets that differ between two HDF5 files (or exist in one only)."""
    found: dict[str, list] = {}
    for path in (a, b):
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: found.setdefault(name, []).append(obj[...])
                         if isinstance(obj, h5py.Dataset) else None)
    bad = []
    for name, values in sorted(found.items()):
        if len(values) != 2:
            bad.append(f"{name} (in one file only)")
            continue
        x, y = values
        same = x.shape == y.shape and (np.allclose(x, y, rtol=rtol, atol=0) if np.issubdtype(x.dtype, np.number)
                                       else np.array_equal(x, y))
        if not same:
            bad.append(name)
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commit", required=True, help="the reference commit (any git revision)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rtol", type=float, default=1e-12, help="relative tolerance of the output comparison")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the halopaint command, with --out")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if "--out" not in command:
        ap.error("the command needs --out (its output is compared)")
    at = command.index("--out") + 1
    out = Path(command[at])
    tmp = Path(tempfile.mkdtemp(prefix="against-"))
    tree = tmp / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), args.commit], check=True)
    try:
        (tmp / "pkg").mkdir()
        (tmp / "pkg" / "halopaint").symlink_to(tree / "engine")
        times: dict[str, list[float]] = {"ref": [], "new": []}
        for k in range(args.repeats):
            for which, path in (("ref", str(tmp / "pkg")), ("new", None)):
                target = out.with_name(f"{out.name}.{which}-{k}")
                times[which].append(run([*command[:at], str(target), *command[at + 1:]], path))
        bad = differences(out.with_name(f"{out.name}.ref-0"), out.with_name(f"{out.name}.new-0"), args.rtol)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        for p in out.parent.glob(f"{out.name}.*-*"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    ref, new = statistics.median(times["ref"]), statistics.median(times["new"])
    print(f"reference {args.commit}: median {ref:.2f} s {[round(t, 2) for t in times['ref']]}")
    print(f"this checkout: median {new:.2f} s {[round(t, 2) for t in times['new']]}")
    print(f"reference / new: x{ref / new:.2f}")
    if bad:
        print(f"outputs differ in: {', '.join(bad)}", file=sys.stderr)
        return 1
    print(f"outputs agree (every dataset, rtol {args.rtol:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
