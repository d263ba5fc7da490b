#!/usr/bin/env python
"""Second factorial moments of halo counts per voxel, within and across mass bins, against the N-body truth.

    python jobs/bench/voxel_moments.py --truth SIM.h5 [SIM2.h5 …] --fields R.h5 [R2.h5 …] [--label NAME]

For each mass-bin pair (a, b) it prints M_ab = ⟨n_a n_b⟩ / (⟨n_a⟩⟨n_b⟩) for a ≠ b and ⟨n_a(n_a − 1)⟩ / ⟨n_a⟩²
on the diagonal (per voxel; 1 for a Poisson field with a uniform mean), for the truth's /halos and for the
given fields (a `halopaint sample` realization, or a painted field, for which ⟨μ_a μ_b⟩ is what independent
draws give across bins), the i-th field against the i-th truth, pooled over the pairs. The off-diagonal terms
are what the summed field's small-scale power and bispectrum carry beyond the bins' own: the bins are drawn
independently given their means, so E[n_a n_b] = μ_a μ_b, and the truth's can only be matched through the
means' co-location.
"""

from __future__ import annotations

import argparse
import sys

import h5py
import numpy as np


def moments(counts: list[np.ndarray]) -> np.ndarray:
    """counts: list of (n_bins, N, N, N) arrays (pooled) → (n_bins, n_bins) factorial moment matrix M.

    Integer-valued counts (the N-body /halos are stored as floats) get the factorial diagonal ⟨n(n − 1)⟩;
    a painted mean field ⟨μ²⟩, which is what a Poisson draw's ⟨n(n − 1)⟩ would be."""
    n_bins = counts[0].shape[0]
    flat = np.concatenate([np.asarray(c, np.float64).reshape(n_bins, -1) for c in counts], axis=1)
    mean = flat.mean(1)
    second = flat @ flat.T / flat.shape[1]
    if all(np.array_equal(c, np.round(c)) for c in counts):
        second[np.diag_indices(n_bins)] -= mean
    return second / np.outer(mean, mean)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truth", nargs="+", required=True)
    ap.add_argument("--fields", nargs="+", required=True)
    ap.add_argument("--label", default="fields")
    args = ap.parse_args(argv)
    if len(args.truth) != len(args.fields):
        ap.error(f"--truth and --fields must pair up, got {len(args.truth)} and {len(args.fields)} files")

    def read(paths):
        out = []
        for p in paths:
            with h5py.File(p, "r") as f:
                out.append(f["halos"][...])
        return out

    for name, m in (("truth", moments(read(args.truth))), (args.label, moments(read(args.fields)))):
        print(f"{name}: M_ab (diagonal: ⟨n(n−1)⟩/⟨n⟩²)")
        for row in m:
            print("  " + " ".join(f"{v:8.3f}" for v in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
