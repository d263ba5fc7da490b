#!/usr/bin/env python
"""Scale each mass bin of a model bundle so that its painted mean count equals the true one on training data.

    python jobs/calibrate_counts.py --model MODEL.pt --data A.h5 [B.h5 …] --out CALIBRATED.pt

Paints every --data box whole (periodic) with the bundle, fits one factor per bin c_b = Σ true / Σ painted,
and multiplies the output layer (1×1×1 conv before the final ReLU) by c_b — exact, since ReLU is positively
homogeneous: the new bundle paints c_b × the old field. Use training boxes only (never the held-out ones).
The factors, the means before and the files' SHA-256 go to metadata.training["count_calibration"].
Written atomically; the result is loaded back and checked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from halopaint.calibrate import calibrate_counts  # noqa: E402
from halopaint.errors import HalopaintError  # noqa: E402
from halopaint.model import ModelBundle  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="bundle to calibrate ('default' = the shipped one)")
    ap.add_argument("--data", nargs="+", required=True, help="training field files (/density and /halos)")
    ap.add_argument("--out", required=True, help="calibrated bundle to write")
    args = ap.parse_args(argv)
    try:
        command = " ".join(["python jobs/calibrate_counts.py", *(argv if argv is not None else sys.argv[1:])])
        bundle, true, painted = calibrate_counts(ModelBundle.load(args.model), args.data, command)
        bundle.save(args.out)
        ModelBundle.load(args.out)
    except HalopaintError as exc:
        print(f"calibrate_counts: error: {exc}", file=sys.stderr)
        return 2
    for b, (t, p) in enumerate(zip(true, painted)):
        print(f"bin {b}: true mean {t:.5f}, painted {p:.5f} per voxel → factor {t / p:.4f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
