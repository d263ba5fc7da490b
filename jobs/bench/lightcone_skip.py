#!/usr/bin/env python
"""Light-cone build time with and without the per-snapshot plane-replica skip (Ownership.chi_range), one
rank, interleaved repeats, median ratio; the outputs are checked identical.

    python jobs/bench/lightcone_skip.py SNAP.h5 … --density DENS.h5 … [--z-max 0.6] [--shells 4]
        [--repeats 3] [--catalogue] [--workdir DIR]

"without" replaces Ownership.chi_range by (−inf, inf), which is the code before the skip: every
plane-replica near the shells computes its distances and owners for every snapshot.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from halopaint import lightcone  # noqa: E402
from halopaint.config import LightconeConfig  # noqa: E402
from halopaint.lightcone.blend import Ownership  # noqa: E402


def build(cfg: LightconeConfig, skip: bool) -> float:
    t = time.perf_counter()
    if skip:
        lightcone.build(cfg, progress=False)
    else:
        with mock.patch.object(Ownership, "chi_range", lambda self, index: (-np.inf, np.inf)):
            lightcone.build(cfg, progress=False)
    return time.perf_counter() - t


def same(a: str, b: str) -> bool:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        keys = ["maps"] + [f"catalogue/{k}" for k in fa.get("catalogue", {})]
        return all(np.array_equal(fa[k][...], fb[k][...]) for k in keys)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--density", nargs="+", default=())
    ap.add_argument("--z-max", type=float, default=0.6)
    ap.add_argument("--shells", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--catalogue", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="lcskip-"))
    times: dict[bool, list[float]] = {True: [], False: []}
    outs = {}
    for rep in range(args.repeats):
        for skip in (False, True) if rep % 2 == 0 else (True, False):
            out = str(work / f"lc-{'skip' if skip else 'noskip'}-{rep}.h5")
            cfg = LightconeConfig(inputs=tuple(args.inputs), densities=tuple(args.density), out=out,
                                  z_max=args.z_max, shells=args.shells, catalogue=args.catalogue, figure=False)
            times[skip].append(build(cfg, skip))
            outs[skip] = out
            print(f"repeat {rep} {'with' if skip else 'without'} skip: {times[skip][-1]:.1f} s", flush=True)
    a, b = statistics.median(times[False]), statistics.median(times[True])
    print(f"median without skip {a:.1f} s, with skip {b:.1f} s: speed-up x{a / b:.2f}; "
          f"outputs identical: {same(outs[False], outs[True])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
