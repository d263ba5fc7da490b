#!/usr/bin/env python
"""Count the k-cells of catalogue-vs-FoF multipole ratios outside the light-cone issue's bars.

    python jobs/bench/rsd_cells.py rsd-9001-r0.json … [--bin all]

Reads `jobs/bench/sample_catalogue.py --json` outputs. The bars, for 0.05 ≤ k ≤ 0.2 h/Mpc: real-space P0 and
redshift-space P0 within 15 % of the FoF halos', P2/P0 within 25 %. Prints, per file and in total, the
k-cells inside each bar and the mean ratios of the chosen bin row ('all' = every mass bin together).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

BARS = {"p0_real_ratio": 0.15, "p0_redshift_ratio": 0.15, "p2_over_p0_ratio": 0.25}


def cells(path: str, label: str) -> dict[str, np.ndarray]:
    rows = json.load(open(path))["multipoles"]["bins"]
    row = next((r for r in rows if str(r["bin"]) == label), None)
    if row is None:
        raise SystemExit(f"rsd_cells: {path} has no bin {label!r}")
    if "values" not in row["p0_real_ratio"]:
        raise SystemExit(f"rsd_cells: {path} predates per-cell values; rerun jobs/bench/sample_catalogue.py")
    return {name: np.asarray(row[name]["values"]) for name in BARS}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--bin", default="all", help="mass-bin row: 0, 1, … or all (default)")
    args = ap.parse_args(argv)
    inside = {name: 0 for name in BARS}
    total = 0
    for path in args.files:
        c = cells(path, args.bin)
        ok = {name: int(np.sum(np.abs(v - 1) <= BARS[name])) for name, v in c.items()}
        n = len(c["p0_real_ratio"])
        total += n
        for name in BARS:
            inside[name] += ok[name]
        print(f"{path}: " + ", ".join(f"{name} {ok[name]}/{n} inside (mean {c[name].mean():.3f})" for name in BARS))
    outside = sum(total - v for v in inside.values())
    print(f"bin {args.bin}: " + ", ".join(f"{name} {inside[name]}/{total}" for name in BARS)
          + f"; {outside} k-cells outside a bar")
    return 0


if __name__ == "__main__":
    sys.exit(main())
