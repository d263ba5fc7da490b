"""Halo catalogues of an integer realization: one entry per sampled halo (`sample --catalogue`).

Every sampled halo gets a position uniform in its voxel [Mpc/h], a mass drawn from dn/dlnM ∝ M^−β_b inside
its bin's edges [M☉/h], and a velocity [km/s] = g_b · (the density file's /velocity CIC-interpolated at the
position) + a Gaussian of σ_b per component. β_b, g_b and σ_b come from the bundle's count model, fitted on
N-body halos (`fit_mass_slope`, `fit_velocity_law`; jobs/fit_count_model.py). Draws use the
(seed, catalogue, bin, x-plane) stream of halopaint.sample.counts, so catalogues do not depend on ranks.
"""

from __future__ import annotations

import numpy as np

from halopaint.model import CountModel
from halopaint.sample.counts import STREAM_CATALOGUE, plane_rng
from halopaint.sim.grids import cic_corners

CATALOGUE_COLUMNS = {"pos": (np.float32, 3), "vel": (np.float32, 3), "mass": (np.float64, 0),
                     "mass_bin": (np.int16, 0)}


# ------------------------------------------------------------------------------------------ masses

def sample_masses(n: int, lo: float, hi: float, beta: float, rng: np.random.Generator) -> np.ndarray:
    """n masses [M☉/h] in [lo, hi) from dn/dlnM ∝ M^−β (inverse CDF in t = ln(M/lo)). → (n,) float64."""
    t_max = np.log(hi / lo)
    u = rng.random(n)
    if abs(beta * t_max) < 1e-8:
        t = u * t_max
    else:
        t = -np.log1p(-u * -np.expm1(-beta * t_max)) / beta
    return np.minimum(lo * np.exp(t), np.nextafter(hi, lo))


def fit_mass_slope(mass: np.ndarray, lo: float, hi: float) -> float:
    """Maximum-likelihood β of dn/dlnM ∝ M^−β for masses [M☉/h] inside [lo, hi).

    In t = ln(M/lo) ∈ [0, T] the density ∝ e^{−βt}, whose mean 1/β − T/(e^{βT} − 1) is matched to the data's.
    """
    from scipy.optimize import brentq
    mass = np.asarray(mass, np.float64)
    mass = mass[(mass >= lo) & (mass < hi)]
    if mass.size < 2:
        raise ValueError(f"need at least 2 masses in [{lo:g}, {hi:g}) to fit a slope, got {mass.size}")
    t_max, t_mean = np.log(hi / lo), float(np.mean(np.log(mass / lo)))

    def excess(beta):
        if abs(beta * t_max) < 1e-6:
            return t_max / 2 - beta * t_max**2 / 12 - t_mean
        return 1.0 / beta - t_max / np.expm1(beta * t_max) - t_mean

    limit = 200.0 / t_max
    return float(brentq(excess, -limit, limit, xtol=1e-10))


# -------------------------------------------------------------------------------------- velocities

def slab_cic_readout(field: np.ndarray, first_plane: int, pos: np.ndarray, box_size: float) -> np.ndarray:
    """CIC interpolation of a vector field held as an x-slab, same convention as sim.grids.cic_readout.

    field: (c, nx, N, N) float, global x-planes first_plane, first_plane+1, … (mod N), covering every plane
    the CIC of `pos` touches; pos (m, 3) [Mpc/h] in [0, box_size). → (m, c) float64.
    """
    c, nx, n = field.shape[0], field.shape[1], field.shape[2]
    flat = np.moveaxis(np.asarray(field), 0, -1).reshape(nx * n * n, c)
    out = np.zeros((len(pos), c), np.float64)
    for index, weight in cic_corners(np.asarray(pos, np.float64).reshape(-1, 3), n, box_size):
        ix, rest = np.divmod(index, n * n)
        local = (ix - first_plane) % n
        if (local >= nx).any():
            raise ValueError("slab_cic_readout: a position needs a plane outside the given slab")
        out += flat[local * n * n + rest] * weight[:, None]
    return out


def fit_velocity_law(field_at_halo: np.ndarray, vel: np.ndarray, mass: np.ndarray, edges,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin velocity law of halos about the velocity field: vel ≈ g_b · u + N(0, σ_b²) per component.

    field_at_halo u (h, 3) [km/s]: the density file's /velocity CIC-interpolated at the halos
    (`slab_cic_readout`); vel (h, 3) [km/s], mass (h,) [M☉/h]: N-body halos; edges (b+1,) [M☉/h].
    g_b = Σ v·u / Σ u·u (least squares through the origin, the three components pooled) corrects for the
    2LPT field's slower bulk flow at halos; σ_b = RMS of v − g_b·u. With g_b the catalogue reproduces both
    the halos' velocity variance and their covariance with the field (an independent σ about g = 1 gets
    the covariance but not the variance). → (g (b,), σ (b,) [km/s], halos per bin (b,)); NaN for an empty
    bin (g = 1 where Σ u·u = 0).
    """
    edges = np.asarray(edges, np.float64)
    u, v = np.asarray(field_at_halo, np.float64), np.asarray(vel, np.float64)
    if u.shape != v.shape or u.ndim != 2 or u.shape[1] != 3:
        raise ValueError(f"field {u.shape} and halo velocities {v.shape} must both be (h, 3)")
    b = np.searchsorted(edges, np.asarray(mass, np.float64), side="right") - 1
    n_bins = edges.size - 1
    g, sigma, counts = np.full(n_bins, np.nan), np.full(n_bins, np.nan), np.zeros(n_bins, np.int64)
    for i in range(n_bins):
        sel = b == i
        counts[i] = int(sel.sum())
        if counts[i]:
            uu = float(np.sum(u[sel] ** 2))
            g[i] = float(np.sum(u[sel] * v[sel]) / uu) if uu > 0 else 1.0
            sigma[i] = float(np.sqrt(np.mean((v[sel] - g[i] * u[sel]) ** 2)))
    return g, sigma, counts


# ------------------------------------------------------------------------------------------ catalogue

def catalogue_plane(counts: np.ndarray, plane: int, seed: int, count_model: CountModel, bins, edges,
                    box_size: float, velocity: np.ndarray | None = None, velocity_first: int = 0,
                    ) -> dict[str, np.ndarray]:
    """One entry per halo of one x-plane's counts.

    counts: (n_sel, N, N) int, global x-plane `plane`; bins[i]: mass-bin index of counts[i] (count model
    and stream key); edges: (n_sel+1,) [M☉/h] of the selected bins; velocity: (3, nx, N, N) [km/s] planes
    velocity_first… covering plane−1 … plane+1, or None (zero velocities), scaled by the count model's
    velocity_bias g_b (1 when absent) before its σ_b is added. Order: bin, then voxel (C order
    in y, z), then halo. → {pos (h, 3) float32 [Mpc/h], vel (h, 3) float32 [km/s], mass (h,) float64
    [M☉/h], mass_bin (h,) int16}.
    """
    n = counts.shape[-1]
    h = box_size / n
    cols = {k: [] for k in CATALOGUE_COLUMNS}
    for i, b in enumerate(bins):
        c = np.asarray(counts[i]).reshape(-1).astype(np.int64)
        voxel = np.repeat(np.arange(c.size), c)
        m = voxel.size
        rng = plane_rng(seed, STREAM_CATALOGUE, b, plane)
        u = rng.random((m, 3))
        iy, iz = np.divmod(voxel, n)
        cell = np.stack([np.full(m, plane), iy, iz], axis=1)
        pos = float32_inside_voxel((cell + u) * h, cell, n, box_size)
        beta = count_model.mass_slope[b]
        mass = sample_masses(m, float(edges[i]), float(edges[i + 1]), beta, rng)
        gain, sigma = count_model.velocity_law(b)
        vel = np.zeros((m, 3))
        if velocity is not None:
            vel = gain * slab_cic_readout(velocity, velocity_first, pos, box_size)
        if sigma > 0:
            vel += sigma * rng.standard_normal((m, 3))
        cols["pos"].append(pos)
        cols["vel"].append(vel.astype(np.float32))
        cols["mass"].append(mass)
        cols["mass_bin"].append(np.full(m, b, np.int16))
    out = {}
    for k, (dtype, width) in CATALOGUE_COLUMNS.items():
        empty = np.zeros((0, width) if width else (0,), dtype)
        out[k] = np.concatenate(cols[k]).astype(dtype) if cols[k] else empty
    return out


def float32_inside_voxel(pos: np.ndarray, cell: np.ndarray, n: int, box_size: float) -> np.ndarray:
    """pos (m, 3) float64 [Mpc/h] as float32, nudged by single ulps so that floor(pos·N/L) == cell still
    holds after rounding (a float32 position can otherwise round onto the next voxel's edge)."""
    p = pos.astype(np.float32)
    for _ in range(4):
        got = np.floor(p.astype(np.float64) * (n / box_size)).astype(np.int64)
        high, low = got > cell, got < cell
        if not (high.any() or low.any()):
            return p
        p[high] = np.nextafter(p[high], np.float32(-np.inf))
        p[low] = np.nextafter(p[low], np.float32(np.inf))
    raise AssertionError("float32_inside_voxel did not converge")


def voxel_counts(pos: np.ndarray, mass_bin: np.ndarray, bins, grid: int, box_size: float) -> np.ndarray:
    """Per-voxel halo counts of a catalogue (NGP): → (len(bins), N, N, N) int64 (for checks)."""
    cell = np.floor(np.asarray(pos, np.float64) * (grid / box_size)).astype(np.int64)
    out = np.zeros((len(bins), grid, grid, grid), np.int64)
    for i, b in enumerate(bins):
        sel = np.asarray(mass_bin) == b
        np.add.at(out[i], tuple(cell[sel].T), 1)
    return out
