"""Halo catalogues of an integer realization: one entry per sampled halo (`sample --catalogue`).

Every sampled halo gets a position uniform in its voxel [Mpc/h], a mass drawn from dn/dlnM ∝ M^−β_b inside
its bin's edges [M☉/h], and a velocity [km/s] = g_b · (the density file's /velocity CIC-interpolated at the
position) + γ_b · (h∇δ of the density file's /density at the halo's voxel: infall towards the local
overdensity) + a Gaussian of σ_b per component. β_b, g_b, γ_b and σ_b come from the bundle's count model,
fitted on N-body halos (`fit_mass_slope`, `fit_velocity_law`; jobs/fit_count_model.py). Draws use the
(seed, catalogue, bin, x-plane) stream of halopaint.sample.counts, so catalogues do not depend on ranks;
every velocity term reads only the halo's x-plane and its two neighbours.
"""

from __future__ import annotations

import numpy as np

from halopaint.count_model import CountModel
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
    return rows_cic_readout(slab_rows(field), field.shape[2], first_plane, pos, box_size)


def slab_rows(field: np.ndarray) -> np.ndarray:
    """(c, nx, N, N) → (nx·N·N, c): a slab's vectors one voxel per row, the layout rows_cic_readout gathers
    from (one gather per CIC corner instead of c). A copy: make it once per slab, not per readout."""
    c = field.shape[0]
    return np.ascontiguousarray(np.moveaxis(np.asarray(field), 0, -1).reshape(-1, c))


def rows_cic_readout(rows: np.ndarray, n: int, first_plane: int, pos: np.ndarray, box_size: float) -> np.ndarray:
    """slab_cic_readout on a slab already laid out by slab_rows: rows (nx·N·N, c), N = n. → (m, c) float64.

    sim.grids.cic_corners' global flat indices are moved to the slab's rows by an integer shift of x-planes
    (mod N³). Shifting the positions instead would round differently on every slab, and the readout of a
    halo must not depend on which rank holds it."""
    pos = np.asarray(pos, np.float64).reshape(-1, 3)
    corners = cic_corners(pos, n, box_size)
    shift, volume = first_plane * n * n, n ** 3
    out = np.zeros((len(pos), rows.shape[1]), np.float64)
    for index, weight in corners:
        index = (index - shift) % volume
        if index.size and int(index.max()) >= rows.shape[0]:
            raise ValueError("slab_cic_readout: a position needs a plane outside the given slab")
        out += rows[index] * weight[:, None]
    return out


def voxel_density_gradient(density: np.ndarray, first_plane: int, cells: np.ndarray) -> np.ndarray:
    """h·∇δ (dimensionless: δ per voxel) at integer voxels, the infall regressor of the velocity law.

    density: (nx, N, N) ρ/ρ̄ (or δ), global x-planes first_plane, first_plane+1, … (mod N), covering every
    cell's x-plane ± 1; cells (m, 3) int, global voxel indices. Along each axis the central difference
    (δ[i+1] − δ[i−1])/2, smoothed (1, 2, 1)/4 along each of the two other axes (a 3×3×3 stencil, the
    Sobel-type gradient): it needs only the planes next to the halo's, so it works on an x-slab with one
    ghost plane per side (N planes: the whole box, periodic). → (m, 3) float64.
    """
    rho = np.asarray(density, np.float64)
    nx, n = rho.shape[0], rho.shape[1]
    if nx == n:                                   # the whole box: periodic in x as well
        rho, first_plane, nx = np.concatenate([rho[-1:], rho, rho[:1]]), first_plane - 1, n + 2
    cells = np.asarray(cells, np.int64).reshape(-1, 3)
    local = (cells[:, 0] - first_plane - 1) % n + 1      # the representative with a plane on either side
    if len(cells) and (local > nx - 2).any():
        raise ValueError("voxel_density_gradient: a voxel needs a plane outside the given slab")
    smooth = ((-1, 0.25), (0, 0.5), (1, 0.25))
    out = np.zeros((len(cells), 3))
    for d in range(3):
        others = [o for o in range(3) if o != d]
        for sign in (1, -1):
            for da, wa in smooth:
                for db, wb in smooth:
                    off = np.zeros(3, np.int64)
                    off[d], off[others[0]], off[others[1]] = sign, da, db
                    x = local + off[0]
                    y, z = (cells[:, 1] + off[1]) % n, (cells[:, 2] + off[2]) % n
                    out[:, d] += 0.5 * sign * wa * wb * rho[x, y, z]
    return out


def fit_velocity_law(field_at_halo: np.ndarray, vel: np.ndarray, mass: np.ndarray, edges,
                     gradient_at_halo: np.ndarray | None = None):
    """Per-bin velocity law of halos about the velocity field: vel ≈ g_b · u [+ γ_b · ∇] + N(0, σ_b²).

    field_at_halo u (h, 3) [km/s]: the density file's /velocity CIC-interpolated at the halos
    (`slab_cic_readout`); vel (h, 3) [km/s], mass (h,) [M☉/h]: N-body halos; edges (b+1,) [M☉/h];
    gradient_at_halo ∇ (h, 3): the density file's h∇δ at each halo's voxel (`voxel_density_gradient`), or
    None for the field-only law. Least squares through the origin, the three components pooled: g_b (and
    γ_b [km/s]); σ_b = RMS of the residual. g_b alone (no ∇) is ≈ 1.12: the 2LPT flow at a halo is slower
    than the halo, and the deficit is scale dependent (it grows with k, a coherent nonlinear infall); with
    ∇, g_b is ≈ 1.02 (linear theory's 1 at large scales) and γ_b·h∇δ carries the infall towards the local
    overdensity, which the white σ_b cannot. With either, the catalogue reproduces the halos' velocity
    variance and its covariance with the regressors.
    → (g (b,), σ (b,) [km/s], halos per bin (b,)), plus γ (b,) [km/s] as a fourth item when ∇ is given;
    NaN for an empty bin (g = 1, γ = 0 where the regressors vanish).
    """
    edges = np.asarray(edges, np.float64)
    u, v = np.asarray(field_at_halo, np.float64), np.asarray(vel, np.float64)
    if u.shape != v.shape or u.ndim != 2 or u.shape[1] != 3:
        raise ValueError(f"field {u.shape} and halo velocities {v.shape} must both be (h, 3)")
    regressors = [u]
    if gradient_at_halo is not None:
        grad = np.asarray(gradient_at_halo, np.float64)
        if grad.shape != u.shape:
            raise ValueError(f"density gradient {grad.shape} must be (h, 3) like the field {u.shape}")
        regressors.append(grad)
    b = np.searchsorted(edges, np.asarray(mass, np.float64), side="right") - 1
    n_bins = edges.size - 1
    coef = np.full((n_bins, len(regressors)), np.nan)
    sigma, counts = np.full(n_bins, np.nan), np.zeros(n_bins, np.int64)
    for i in range(n_bins):
        sel = b == i
        counts[i] = int(sel.sum())
        if counts[i]:
            x = np.stack([r[sel].reshape(-1) for r in regressors], axis=1)
            y = v[sel].reshape(-1)
            gram = x.T @ x
            if np.linalg.matrix_rank(gram) == len(regressors):
                coef[i] = np.linalg.solve(gram, x.T @ y)
            else:
                coef[i] = [1.0] + [0.0] * (len(regressors) - 1)
            sigma[i] = float(np.sqrt(np.mean((y - x @ coef[i]) ** 2)))
    if gradient_at_halo is None:
        return coef[:, 0], sigma, counts
    return coef[:, 0], sigma, counts, coef[:, 1]


def halo_velocities(count_model: CountModel, mass_bin: int, pos: np.ndarray, box_size: float,
                    velocity: np.ndarray | None, velocity_first: int, density: np.ndarray | None,
                    density_first: int, rng: np.random.Generator) -> np.ndarray:
    """Catalogue velocities [km/s] (m, 3) of m halos of one bin at pos (m, 3) [Mpc/h] in [0, box_size):
    g_b · CIC(velocity) + γ_b · h∇δ(density) at the halo's voxel + σ_b · N(0, 1) per component, with
    (g_b, σ_b, γ_b) = count_model.velocity_law(mass_bin). velocity (3, nx, N, N) [km/s] and density
    (nx', N, N) ρ/ρ̄ are x-slabs from global planes velocity_first / density_first covering the halos'
    planes ± 1; velocity None: no field term (zero velocities but the dispersion); density is only read
    where γ_b ≠ 0. The only random numbers are the m × 3 normals, drawn where σ_b > 0 (the stream order of
    earlier versions)."""
    gain, sigma, infall = count_model.velocity_law(mass_bin)
    m = len(pos)
    vel = np.zeros((m, 3))
    if velocity is not None:
        vel = gain * slab_cic_readout(velocity, velocity_first, pos, box_size)
        if infall != 0.0 and m:
            if density is None:
                raise ValueError("the velocity law has an infall term: it needs the density planes")
            n = velocity.shape[-1]
            cells = np.floor(np.asarray(pos, np.float64) * (n / box_size)).astype(np.int64) % n
            vel += infall * voxel_density_gradient(density, density_first, cells)
    if sigma > 0:
        vel += sigma * rng.standard_normal((m, 3))
    return vel


# ------------------------------------------------------------------------------------------ catalogue

def catalogue_plane(counts: np.ndarray, plane: int, seed: int, count_model: CountModel, bins, edges,
                    box_size: float, velocity: np.ndarray | None = None, velocity_first: int = 0,
                    density: np.ndarray | None = None, density_first: int = 0) -> dict[str, np.ndarray]:
    """One entry per halo of one x-plane's counts.

    counts: (n_sel, N, N) int, global x-plane `plane`; bins[i]: mass-bin index of counts[i] (count model
    and stream key); edges: (n_sel+1,) [M☉/h] of the selected bins; velocity: (3, nx, N, N) [km/s] planes
    velocity_first… covering plane−1 … plane+1, or None (zero velocities); density: (nx, N, N) ρ/ρ̄ planes
    density_first… covering plane−1 … plane+1 (needed where the count model has an infall term γ_b);
    velocities by `halo_velocities` (g_b · field + γ_b · h∇δ + N(0, σ_b²)). Order: bin, then voxel (C order
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
        vel = halo_velocities(count_model, b, pos, box_size, velocity, velocity_first, density, density_first,
                              rng)
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
