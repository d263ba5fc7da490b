"""Redshift-space distortions: plane-parallel positions and the power-spectrum multipoles P_ℓ(k).

Conventions (Pylians `Pk_library.Pk(delta, BoxSize, axis, MAS)`, the same binning as
halopaint.analysis.spectra, see docs/formats.md#conventions):
- the line of sight is one grid axis (`axis`, default 2 = z); μ = k_los/|k| per Fourier mode;
- P_ℓ(k) = (2ℓ + 1) · V/N⁶ · ⟨|δ_k|² L_ℓ(μ)⟩ over the independent modes of the bin ⌊|n|⌋ (DC dropped),
  L_0 = 1, L_2 = (3μ² − 1)/2, L_4 = (35μ⁴ − 30μ² + 3)/8; k = the mode-averaged |k| [h/Mpc];
- so P_0 is exactly `power_spectrum`'s P(k); mass-assignment compensation is an explicit option.
Redshift space: s = x + v_los/(a H(z)) along the line of sight, periodic in the box, with
a H(z) = 100 E(z)/(1 + z) km/s per Mpc/h; x [Mpc/h], v [km/s].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np

from halopaint.analysis import fft as dfft
from halopaint.analysis.spectra import _as_field, _block_norms, _norm_tables, mas_order, mas_window_inverse, n_bins_for
from halopaint.errors import HalopaintError
from halopaint.sim.grids import cic_paint, ngp_counts

ELLS = (0, 2, 4)
C_KMS = 299792.458


def legendre(ell: int, mu: np.ndarray) -> np.ndarray:
    """Legendre polynomial L_ℓ(μ) for ℓ ∈ {0, 2, 4}."""
    mu2 = mu * mu
    if ell == 0:
        return np.ones_like(mu)
    if ell == 2:
        return 1.5 * mu2 - 0.5
    if ell == 4:
        return (35.0 * mu2 * mu2 - 30.0 * mu2 + 3.0) / 8.0
    raise HalopaintError(f"multipole ℓ = {ell} not supported (use 0, 2, 4)")


def conformal_velocity_factor(redshift: float, omega_m: float) -> float:
    """1/(a H(z)) in (Mpc/h) per km/s for a flat ΛCDM background: s − x = v_los · this."""
    if not np.isfinite(omega_m) or not 0.0 < omega_m <= 1.0:
        raise HalopaintError(f"Omega_m = {omega_m!r} must be in (0, 1]")
    if not np.isfinite(redshift) or redshift < 0:
        raise HalopaintError(f"redshift = {redshift!r} must be ≥ 0")
    e_z = np.sqrt(omega_m * (1.0 + redshift) ** 3 + (1.0 - omega_m))
    return float((1.0 + redshift) / (100.0 * e_z))


def redshift_space_positions(pos: np.ndarray, vel: np.ndarray, box_size: float, redshift: float,
                             omega_m: float, axis: int = 2) -> np.ndarray:
    """Plane-parallel redshift-space positions: pos (n, 3) [Mpc/h] + vel (n, 3) [km/s] → (n, 3) float64
    [Mpc/h], shifted by v_axis/(aH) along `axis` and wrapped into [0, box_size)."""
    pos = np.asarray(pos, dtype=np.float64)
    vel = np.asarray(vel, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3 or vel.shape != pos.shape:
        raise HalopaintError(f"positions {pos.shape} and velocities {vel.shape} must both be (n, 3)")
    if axis not in (0, 1, 2):
        raise HalopaintError(f"line-of-sight axis {axis} must be 0, 1 or 2")
    if not (np.isfinite(pos).all() and np.isfinite(vel).all()):
        raise HalopaintError("positions or velocities hold NaN/Inf")
    out = pos.copy()
    out[:, axis] = np.mod(out[:, axis] + vel[:, axis] * conformal_velocity_factor(redshift, omega_m), box_size)
    out[:, axis] = np.where(out[:, axis] >= box_size, 0.0, out[:, axis])   # mod can round up to L
    return out


def catalogue_mesh(pos: np.ndarray, box_size: float, grid: int, mas: str = "cic") -> np.ndarray:
    """Objects per voxel of an N³ mesh by NGP or CIC: (N, N, N) float64 (sums to the number of objects)."""
    pos = np.asarray(pos, dtype=np.float64)
    if mas == "ngp":
        edges = np.array([-np.inf, np.inf])
        return ngp_counts(pos, np.ones(len(pos)), edges, grid, box_size)[0].astype(np.float64)
    if mas == "cic":
        mesh = np.zeros((grid,) * 3, dtype=np.float64)
        return cic_paint(mesh, pos, box_size)
    raise HalopaintError(f"mesh assignment {mas!r}: use 'ngp' or 'cic'")


def _bin_block_multipoles(block: np.ndarray, y0: int, n: int, axis: int, comp: int) -> np.ndarray:
    """Binned sums of one y-pencil rfft block: rows counts, Σ|n|, Σ|δ|², Σ|δ|² L_2, Σ|δ|² L_4; float64,
    (5, n_bins + 1), last column = the dump bin of dependent modes."""
    y1 = y0 + block.shape[1]
    n2 = _block_norms(n, y0, y1)
    to_bin, root = _norm_tables(n)
    full, half = dfft.wavenumbers(n)
    axes = (full[:, None, None], full[y0:y1][None, :, None], half[None, None, :])
    nlos = np.broadcast_to(axes[axis], n2.shape).astype(np.float64)
    n2f = np.maximum(n2.astype(np.float64), 1.0)
    mu = nlos / np.sqrt(n2f)
    power = np.square(block.real, dtype=np.float64) + np.square(block.imag, dtype=np.float64)
    if comp:
        power = power * (mas_window_inverse(n, full, comp)[:, None, None]
                         * mas_window_inverse(n, full[y0:y1], comp)[None, :, None]
                         * mas_window_inverse(n, half, comp)[None, None, :]) ** 2
    bins = to_bin[n2.ravel()]
    nb = n_bins_for(n) + 1
    out = np.zeros((5, nb))
    out[0] = np.bincount(bins, minlength=nb)
    out[1] = np.bincount(bins, weights=root[n2.ravel()], minlength=nb)
    flat_power = power.ravel()
    for row, ell in zip((2, 3, 4), ELLS):
        out[row] = np.bincount(bins, weights=flat_power * legendre(ell, mu).ravel(), minlength=nb)
    return out


@dataclass
class Multipoles:
    """P_ℓ(k) along one line of sight. k [h/Mpc], P0, P2, P4 [(Mpc/h)³], nmodes, all (n_bins,)."""

    k: np.ndarray
    P0: np.ndarray
    P2: np.ndarray
    P4: np.ndarray
    nmodes: np.ndarray
    box_size: float
    grid: int
    axis: int = 2
    mas: str = "none"
    shot_noise: float | None = None
    attrs: dict = field(default_factory=dict)


def multipoles(delta, box_size: float, axis: int = 2, mas: str | None = None, *,
               chunk_planes: int | None = None, scheduler=None, shot_noise: float | None = None) -> Multipoles:
    """Monopole, quadrupole and hexadecapole of a density contrast δ (numpy or Dask (N, N, N) array).

    box_size [Mpc/h]; axis: the line of sight (0, 1, 2); mas: none | ngp | cic compensation.
    Returns a `Multipoles`; P0 equals `power_spectrum(delta, box_size, mas=mas).power`.
    """
    if not box_size or box_size <= 0:
        raise HalopaintError(f"box_size must be positive, got {box_size}")
    if axis not in (0, 1, 2):
        raise HalopaintError(f"line-of-sight axis {axis} must be 0, 1 or 2")
    a = _as_field(delta, chunk_planes)
    n = a.shape[0]
    fk = dfft.rfftn(a, chunk_planes=chunk_planes or max(a.chunks[0]), method=dfft.rechunk_method(scheduler))
    comp = mas_order(mas)
    parts, y0 = [], 0
    blocks = fk.to_delayed().ravel()
    for b, ny in enumerate(fk.chunks[1]):
        parts.append(dask.delayed(_bin_block_multipoles, pure=True)(blocks[b], y0, n, axis, comp))
        y0 += ny
    sums = np.sum(dfft.compute(*parts, scheduler=scheduler), axis=0)[:, 1:-1]
    keep = sums[0] > 0
    counts = sums[0][keep]
    k = sums[1][keep] / counts * (2.0 * np.pi / box_size)
    norm = float(box_size) ** 3 / float(n) ** 6
    p = [(2 * ell + 1) * sums[row][keep] / counts * norm for row, ell in zip((2, 3, 4), ELLS)]
    return Multipoles(k=k, P0=p[0], P2=p[1], P4=p[2], nmodes=counts.astype(np.int64), box_size=float(box_size),
                      grid=n, axis=axis, mas=str(mas or "none").lower(), shot_noise=shot_noise,
                      attrs={"convention": "Pylians Pk(axis): P_l = (2l+1) V <|d_k|^2 L_l(mu)>/N^6, "
                                           "bins floor(|n|), DC dropped"})


def catalogue_multipoles(pos: np.ndarray, vel: np.ndarray | None, box_size: float, grid: int, *,
                         redshift: float = 0.0, omega_m: float = 0.315, axis: int = 2, mas: str = "cic",
                         compensate: bool = True) -> Multipoles:
    """P_ℓ(k) of a halo catalogue: in redshift space when `vel` is given (plane-parallel along `axis`),
    in real space when vel is None. pos (n, 3) [Mpc/h], vel (n, 3) [km/s]; mesh `grid`³ by `mas`,
    compensated for it when `compensate`; shot noise V/n reported in `.shot_noise`, not subtracted."""
    pos = np.asarray(pos, dtype=np.float64)
    if len(pos) == 0:
        raise HalopaintError("the catalogue is empty: its multipoles are undefined")
    if vel is not None:
        pos = redshift_space_positions(pos, vel, box_size, redshift, omega_m, axis)
    mesh = catalogue_mesh(pos, box_size, grid, mas)
    delta = mesh / mesh.mean() - 1.0
    out = multipoles(da.from_array(delta, chunks=(min(grid, 32), -1, -1)), box_size, axis=axis,
                     mas=mas if compensate else None, shot_noise=float(box_size) ** 3 / len(pos))
    out.attrs.update(space="redshift" if vel is not None else "real", n_objects=int(len(pos)),
                     redshift=float(redshift), omega_m=float(omega_m))
    return out
