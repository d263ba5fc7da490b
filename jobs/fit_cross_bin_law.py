#!/usr/bin/env python
"""Add the cross-bin count law to a bundle's count model, fitted on N-body training boxes.

    python jobs/fit_cross_bin_law.py BUNDLE.pt --boxes a.h5 b.h5 … --out NEW.pt [--draws 4]

BUNDLE's count model must keep totals in cells (`jobs/fit_count_model.py … --mean-cell C`). Paints every box
whole and fits `CountModel.exclusion` (halopaint.sample.joint.fit_exclusion): per pair of bins a > b, the
factor q_ab by which a halo of bin a in a voxel lowers bin b's mean there (bin b keeps its cell totals), so
that the law's expected Σ n_a n_b on the boxes is the truth's; α_b is refitted about the lowered means. The
rest of the count model and the generators are unchanged (checked: NEW.pt paints bit-identically). The
command, the boxes' SHA-256 and the cross moments (truth, independent draws, joint draws) go to
metadata.count_model.provenance["cross_bin_law"]. Use training boxes only.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from halopaint.calibrate import file_bins_for  # noqa: E402
from halopaint.errors import HalopaintError  # noqa: E402
from halopaint.fields import FieldFile, file_provenance  # noqa: E402
from halopaint.model import ModelBundle  # noqa: E402
from halopaint.paint import paint_whole_box  # noqa: E402
from halopaint.sample.joint import fit_exclusion  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", help="bundle with a count model in cells ('default' = the shipped z = 0 one)")
    ap.add_argument("--boxes", nargs="+", required=True, help="N-body training boxes (/density, /halos)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--draws", type=int, default=4, help="fitting draws of the heavier bins per box")
    args = ap.parse_args(argv)
    command = " ".join(["python jobs/fit_cross_bin_law.py", *(argv if argv is not None else sys.argv[1:])])
    try:
        bundle = ModelBundle.load(args.bundle)
        law = bundle.metadata.count_model
        if law is None or law.mean_cell is None:
            raise HalopaintError(f"{args.bundle}: its count model has no cells (mean_cell); refit it with "
                                 "jobs/fit_count_model.py --mean-map where-needed --mean-cell 4 first")
        painted, true, data, first_density = [], [], [], None
        for path in args.boxes:
            with FieldFile(path, require=("density", "halos")) as f:
                true.append(np.asarray(f.read_halos(file_bins_for(bundle, f.info.mass_bin_edges, path)), np.float64))
                rho = f.read_density()
                painted.append(paint_whole_box(bundle, rho))
                data.append(file_provenance(path, f.info.attrs))
                first_density = rho if first_density is None else first_density
        fitted, diag = fit_exclusion(painted, true, law, draws=args.draws)
        provenance = dict(law.provenance, cross_bin_law=dict(diag, command=command, data=data,
                                                             alpha_before=law.alpha))
        new = replace(bundle, metadata=replace(bundle.metadata,
                                               count_model=replace(fitted, provenance=provenance)))
        new.save(args.out)
        back = ModelBundle.load(args.out)
        if not np.array_equal(paint_whole_box(back, first_density), painted[0]):
            raise HalopaintError(f"{args.out} does not paint identically to {args.bundle}")
    except (HalopaintError, ValueError) as exc:
        print(f"fit_cross_bin_law: error: {exc}", file=sys.stderr)
        return 2
    print("q_ab (row b, column a):")
    for row in fitted.exclusion:
        print("  " + " ".join(f"{v:6.3f}" for v in row))
    for name in ("truth", "independent_draw", "joint_draw"):
        print(f"{name}: <n_a n_b>/(n_a n_b) (diagonal <n(n-1)>/n^2)")
        for row in diag[name]:
            print("  " + " ".join(f"{v:6.2f}" for v in row))
    print(f"alpha: {[np.round(a, 4).tolist() for a in fitted.alpha]}")
    print(f"wrote {args.out} (paints identically to {args.bundle})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
