#!/usr/bin/env python
"""Merge model bundles of adjacent mass-bin ranges (bins trained by separate `halopaint train` runs) into one.

    python jobs/merge_bundles.py --out MODEL.pt PART0.pt PART1.pt … [--init-of PARTS_INIT.pt] [--summary TEXT]

Parts in mass order (part i's last edge = part i+1's first). The merged bundle's metadata.training holds
every part's own training metadata (commands, steps, data files with SHA-256, and the `--init` bundle's
record) under "parts"; with `--init-of M` also M's record under "init" (as `halopaint train --init` writes it:
name, SHA-256, training metadata) — for parts written before `halopaint train` recorded `--init` itself, so
the whole history of the weights stays in the file.
Written atomically; the result is loaded back and checked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from halopaint.errors import HalopaintError  # noqa: E402
from halopaint.model import ModelBundle, merge_bundles  # noqa: E402
from halopaint.train import init_provenance  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="+", help="bundles in mass order")
    ap.add_argument("--out", required=True, help="merged bundle to write")
    ap.add_argument("--init-of", default=None, metavar="MODEL",
                    help="the bundle the parts were warm-started from (its training metadata is kept)")
    ap.add_argument("--summary", default=None, help="one-line description stored as training.summary")
    args = ap.parse_args(argv)
    try:
        extra = {}
        if args.summary:
            extra["summary"] = args.summary
        if args.init_of:
            extra["init"] = init_provenance(args.init_of, ModelBundle.load(args.init_of))
        merged = merge_bundles([ModelBundle.load(p) for p in args.parts], extra)
        merged.save(args.out)
        back = ModelBundle.load(args.out)
    except HalopaintError as exc:
        print(f"merge_bundles: error: {exc}", file=sys.stderr)
        return 2
    edges = ", ".join(f"{e:.3g}" for e in back.metadata.mass_bin_edges)
    print(f"wrote {args.out}: {back.n_bins} mass bins, edges [{edges}] M☉/h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
