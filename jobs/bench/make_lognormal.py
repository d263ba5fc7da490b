"""Write a large periodic lognormal density file slab by slab (benchmark input; not a simulation).

    python jobs/bench/make_lognormal.py OUT.h5 --grid 1024 [--seed 1] [--sigma 0.6] [--smoothing 1.0]

Field: white Gaussian noise drawn plane by plane (plane i from the seed sequence (seed, i), so any slab can
be made without the others), smoothed by a periodic separable Gaussian of `smoothing` voxels, scaled to
unit variance, then ρ/ρ̄ = exp(σ·δ − σ²/2) (mean 1 in expectation; measured mean printed at the end).
Memory: O(planes_per_write · N²), so 1024³ (a 4 GiB file) needs ~0.4 GB. Voxel size 4 Mpc/h (the
paper's), redshift 0, `density_recipe` = lognormal (paint it with --allow-mismatch; the warning is kept
in the painted file's attrs).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from scipy.ndimage import convolve1d

from halopaint.config import Cosmology, DensityRecipe
from halopaint.fields import atomic_h5, standard_attrs

RECIPE = DensityRecipe(method="lognormal", particles_per_voxel=0, assignment="none")


def gaussian_weights(sigma: float) -> np.ndarray:
    """Normalised 1D Gaussian taps, truncated at 4σ (length 2r+1)."""
    r = max(1, int(np.ceil(4 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def noise_planes(seed: int, n: int, planes) -> np.ndarray:
    """Unit white noise for the given global plane indices (mod n): (len(planes), n, n) float32."""
    return np.stack([np.random.default_rng([seed, int(i) % n]).standard_normal((n, n), dtype=np.float32)
                     for i in planes])


def lognormal_slab(seed: int, n: int, x0: int, x1: int, sigma: float, smoothing: float) -> np.ndarray:
    """Planes [x0, x1) of the periodic field ρ/ρ̄: (x1−x0, n, n) float32."""
    w = gaussian_weights(smoothing)
    r = len(w) // 2
    g = noise_planes(seed, n, range(x0 - r, x1 + r))
    for axis in (1, 2):
        g = convolve1d(g, w.astype(np.float32), axis=axis, mode="wrap")
    g = convolve1d(g, w.astype(np.float32), axis=0, mode="constant")[r:-r]
    g *= np.float32(1.0 / np.sqrt(np.sum(w**2) ** 3))  # unit variance
    return np.exp(np.float32(sigma) * g - np.float32(0.5 * sigma**2)).astype(np.float32)


def write_lognormal(path: str, n: int, seed: int = 1, sigma: float = 0.6, smoothing: float = 1.0,
                    planes_per_write: int = 16, verbose: bool = True) -> float:
    """Write the whole file (atomic, complete=True last); returns the measured mean of ρ/ρ̄."""
    attrs = standard_attrs(4.0 * n, 0.0, Cosmology(), seed=seed, density_recipe=RECIPE.to_json(),
                           generator=f"jobs/bench/make_lognormal.py sigma={sigma} smoothing={smoothing}")
    total = 0.0
    t0 = time.perf_counter()
    with atomic_h5(path, attrs) as f:
        ds = f.create_dataset("density", shape=(n, n, n), dtype=np.float32)
        for a in range(0, n, planes_per_write):
            b = min(n, a + planes_per_write)
            slab = lognormal_slab(seed, n, a, b, sigma, smoothing)
            ds[a:b] = slab
            total += float(slab.sum(dtype=np.float64))
            if verbose and (a // planes_per_write) % 8 == 0:
                print(f"make_lognormal: {b}/{n} planes ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        f.attrs["measured_mean"] = total / n**3
    return total / n**3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--grid", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sigma", type=float, default=0.6)
    p.add_argument("--smoothing", type=float, default=1.0, help="Gaussian smoothing [voxels]")
    a = p.parse_args(argv)
    mean = write_lognormal(a.out, a.grid, a.seed, a.sigma, a.smoothing)
    print(f"wrote {a.out}: {a.grid}³ lognormal, mean ρ/ρ̄ = {mean:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
