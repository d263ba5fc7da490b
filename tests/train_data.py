"""Synthetic training pairs for the training tests: lognormal density + Poisson halos.

halos[b] ~ Poisson(amplitude_b · (ρ/ρ̄)^bias_b), a density-dependent mean, so a generator can learn it.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from halopaint.config import Cosmology
from halopaint.fields import standard_attrs, write_field

AMPLITUDES = (0.4, 0.2, 0.08, 0.02)
BIASES = (1.0, 1.3, 1.7, 2.2)


def synthetic_pair(n: int, seed: int, n_bins: int = 4, sigma: float = 0.6):
    """density (n³) float32 with mean 1, halos (n_bins, n³) float32 Poisson counts."""
    rng = np.random.default_rng(seed)
    g = gaussian_filter(rng.standard_normal((n, n, n)), 1.0, mode="wrap")
    g *= sigma / g.std()
    rho = np.exp(g - 0.5 * sigma**2)
    rho = (rho / rho.mean()).astype(np.float32)
    halos = np.stack([rng.poisson(AMPLITUDES[b] * rho.astype(np.float64) ** BIASES[b])
                      for b in range(n_bins)]).astype(np.float32)
    return rho, halos


def write_training_file(path, n: int = 32, seed: int = 0, n_bins: int = 4, voxel: float = 4.0,
                        halos=True, density=None, halo_grid=None) -> str:
    rho, h = synthetic_pair(n, seed, n_bins)
    if density is not None:
        rho = density
    if halo_grid is not None:
        h = synthetic_pair(halo_grid, seed, n_bins)[1]
    edges = np.logspace(12, 14, n_bins + 1)
    attrs = standard_attrs(voxel * n, 0.0, Cosmology(), mass_bin_edges=edges if halos else None, seed=seed)
    write_field(path, attrs, density=rho, halos=h if halos else None)
    return str(path)
