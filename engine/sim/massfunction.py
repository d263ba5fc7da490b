"""Binned halo mass function dn/dlnM of a catalogue (for the simulator's checks and figures)."""

from __future__ import annotations

import numpy as np


def mass_function(mass: np.ndarray, box_size: float, edges: np.ndarray):
    """dn/dlnM [(Mpc/h)⁻³] in bins `edges` [M☉/h] → (geometric bin centres, dn/dlnM, counts)."""
    edges = np.asarray(edges, dtype=np.float64)
    counts, _ = np.histogram(np.asarray(mass, dtype=np.float64), bins=edges)
    dlnm = np.diff(np.log(edges))
    return np.sqrt(edges[:-1] * edges[1:]), counts / box_size**3 / dlnm, counts


# Watson et al. (2013, MNRAS 433, 1230) FoF universal fit, their eq. 12: f(σ) = A[(β/σ)^α + 1] e^(−γ/σ²)
WATSON13_FOF = dict(A=0.282, alpha=2.163, beta=1.406, gamma=1.210)


def sigma_of_mass(linear, masses, a: float = 1.0) -> np.ndarray:
    """σ(M) of the linear field at scale factor a: top hat enclosing mass M [M☉/h] at the mean matter
    density. `linear` is a halopaint.sim.cosmology.LinearCosmology."""
    from halopaint.sim.cosmology import RHO_CRIT, tophat_window
    rho_m = linear.cosmo.Omega_m * RHO_CRIT
    radii = np.cbrt(3.0 * np.atleast_1d(np.asarray(masses, dtype=np.float64)) / (4.0 * np.pi * rho_m))
    # one trapezoid in ln k for every radius at once (agrees with sigma_r's adaptive quad to < 1e-6)
    lnk = np.linspace(np.log(1e-5), np.log(1e3), 8001)
    k = np.exp(lnk)
    integrand = k**3 * linear.power(k) * tophat_window(k[None, :] * radii[:, None]) ** 2 / (2.0 * np.pi**2)
    return np.sqrt(np.trapezoid(integrand, lnk, axis=1)) * float(linear.D1(a))


def watson13_dndlnm(linear, masses, redshift: float = 0.0) -> np.ndarray:
    """Watson13 FoF dn/dlnM [(Mpc/h)⁻³] at masses [M☉/h] (≥ 2 increasing values: the slope is taken
    from a spline through them, so pass a fine grid)."""
    from halopaint.sim.cosmology import RHO_CRIT
    m = np.asarray(masses, dtype=np.float64)
    sig = sigma_of_mass(linear, m, 1.0 / (1.0 + redshift))
    p = WATSON13_FOF
    f = p["A"] * ((p["beta"] / sig) ** p["alpha"] + 1.0) * np.exp(-p["gamma"] / sig**2)
    dlnsig_dlnm = np.gradient(np.log(sig), np.log(m))
    return f * linear.cosmo.Omega_m * RHO_CRIT / m * np.abs(dlnsig_dlnm)


class MassSampler:
    """Draw halo masses inside [lo, hi) [M☉/h] from dn/dlnM tabulated on `points` log-spaced masses
    (inverse CDF, linear in ln M between table points)."""

    def __init__(self, lo: float, hi: float, dndlnm_of, points: int = 64):
        if not 0 < lo < hi:
            raise ValueError(f"mass bin [{lo}, {hi}) is not a positive interval")
        self.lnm = np.linspace(np.log(lo), np.log(hi), points)
        w = np.asarray(dndlnm_of(np.exp(self.lnm)), dtype=np.float64)
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"mass function in [{lo:.3g}, {hi:.3g}) is not positive and finite")
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(self.lnm))])
        self.cdf = cdf / cdf[-1]

    def draw(self, u: np.ndarray) -> np.ndarray:
        """Masses [M☉/h] for uniform deviates u ∈ [0, 1) (so the caller owns the random stream)."""
        return np.exp(np.interp(np.asarray(u, dtype=np.float64), self.cdf, self.lnm))
