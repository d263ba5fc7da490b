"""Bispectrum B(k1, k2, θ) and reduced bispectrum Q with the FFT shell estimator (Pylians' `Bk` method).

For each side k_i of the triangle (k3 = |k1 + k2| = sqrt((k2 sinθ)² + (k2 cosθ + k1)²), θ the angle
between the vectors k1 and k2):
- δ_i(x) = inverse FFT of δ_k restricted to the shell k_i − k_F ≤ |k| < k_i + k_F (|k| = k_F|n|),
- I_i(x) = inverse FFT of the shell's indicator.
Then B = Σ_x δ1δ2δ3 / Σ_x I1I2I3 · L⁶/N⁹ [(Mpc/h)⁶] and P_i = Σ_x δ_i² / Σ_x I_i² · L³/N⁶ (δ_k being
numpy's unnormalised forward FFT, as for P(k)), Q = B / (P1P2 + P1P3 + P2P3). The ratios do not
depend on the normalisation of the inverse transform. `triangles` is the number of closed triangles
(q1 + q2 + q3 = 0, q_i in shell i) that the estimator averages over.
MAS compensation (none / NGP / CIC) is applied to δ_k before filtering, as Pylians does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dask.array as da
import numpy as np

from halopaint.analysis import fft as dfft
from halopaint.analysis.spectra import _as_field, mas_order, mas_window_inverse
from halopaint.errors import HalopaintError


@dataclass
class Bispectrum:
    """B and Q over θ for one (k1, k2). k1, k2 [h/Mpc]; theta [rad], k3 [h/Mpc], B [(Mpc/h)⁶], Q, P1/P2/P3
    [(Mpc/h)³] (shell powers), triangles (closed triangles per θ): arrays (n_theta,)."""

    k1: float
    k2: float
    theta: np.ndarray
    k3: np.ndarray
    B: np.ndarray
    Q: np.ndarray
    triangles: np.ndarray
    P1: float
    P2: float
    P3: np.ndarray
    box_size: float
    grid: int
    mas: str = "none"
    attrs: dict = field(default_factory=dict)


def third_side(k1: float, k2: float, theta) -> np.ndarray:
    """k3 = |k1 + k2| for an angle θ [rad] between the vectors k1 and k2."""
    theta = np.asarray(theta, dtype=np.float64)
    return np.sqrt((k2 * np.sin(theta)) ** 2 + (k2 * np.cos(theta) + k1) ** 2)


def _shell_block(block: np.ndarray, kmin: float, kmax: float, n: int, comp: int, indicator: bool,
                 scale: float, block_info=None) -> np.ndarray:
    """Keep the modes of `block` with kmin ≤ |n| < kmax (units of k_F); DC always removed."""
    y0, y1 = block_info[0]["array-location"][1]
    full, half = dfft.wavenumbers(n)
    n2 = full[:, None, None] ** 2 + full[y0:y1][None, :, None] ** 2 + half[None, None, :] ** 2
    mag = np.sqrt(n2.astype(np.float64))
    sel = (mag >= kmin) & (mag < kmax) & (n2 > 0)
    if indicator:
        return sel.astype(block.dtype)
    out = np.where(sel, block, 0).astype(block.dtype)
    if comp:
        out *= (mas_window_inverse(n, full, comp)[:, None, None]
                * mas_window_inverse(n, full[y0:y1], comp)[None, :, None]
                * mas_window_inverse(n, half, comp)[None, None, :]).astype(out.real.dtype)
    if scale != 1.0:
        out *= out.real.dtype.type(scale)
    return out


def _shell_fields(field_k: da.Array, n: int, k: float, kf: float, comp: int, scale: float, method=None):
    kmin, kmax = (k - kf) / kf, (k + kf) / kf
    planes = max(field_k.chunks[1])
    d = field_k.map_blocks(_shell_block, kmin, kmax, n, comp, False, scale, dtype=field_k.dtype)
    i = field_k.map_blocks(_shell_block, kmin, kmax, n, comp, True, 1.0, dtype=field_k.dtype)
    return (dfft.irfftn(d, n, chunk_planes=planes, method=method).astype(np.float64),
            dfft.irfftn(i, n, chunk_planes=planes, method=method).astype(np.float64))


def bispectrum_k(field_k: da.Array, box_size: float, k1: float, k2: float, thetas, *, mas: str | None = None,
                 scale: float = 1.0, scheduler=None, progress: bool = False, theta_batch: int = 8) -> Bispectrum:
    """Bispectrum from an rfft field (`halopaint.analysis.fft.rfftn`); `scale` multiplies δ_k (e.g. N³/Σn for counts)."""
    n = field_k.shape[0]
    kf = 2.0 * np.pi / box_size
    thetas = np.atleast_1d(np.asarray(thetas, dtype=np.float64))
    if k1 <= 0 or k2 <= 0:
        raise HalopaintError(f"bispectrum sides must be positive, got k1={k1}, k2={k2}")
    comp = mas_order(mas)
    k3 = third_side(k1, k2, thetas)
    method = dfft.rechunk_method(scheduler)
    d1, i1 = _shell_fields(field_k, n, k1, kf, comp, scale, method)
    d2, i2 = _shell_fields(field_k, n, k2, kf, comp, scale, method)
    p_sums = [(d1 * d1).sum(), (i1 * i1).sum(), (d2 * d2).sum(), (i2 * i2).sum()]
    B = np.zeros(thetas.size)
    P3 = np.zeros(thetas.size)
    tri = np.zeros(thetas.size)
    first = None
    for start in range(0, thetas.size, max(1, theta_batch)):
        stop = min(thetas.size, start + max(1, theta_batch))
        terms = []
        for j in range(start, stop):
            d3, i3 = _shell_fields(field_k, n, k3[j], kf, comp, scale, method)
            terms += [(d1 * d2 * d3).sum(), (i1 * i2 * i3).sum(), (d3 * d3).sum(), (i3 * i3).sum()]
        extra = p_sums if first is None else []
        values = dfft.compute(*(extra + terms), scheduler=scheduler, progress=progress)
        if first is None:
            first, values = values[:4], values[4:]
        for off, j in enumerate(range(start, stop)):
            s_ddd, s_iii, s_d3, s_i3 = values[4 * off: 4 * off + 4]
            B[j], tri[j] = s_ddd, s_iii
            P3[j] = s_d3 / s_i3 if s_i3 > 0 else np.nan
    s_d1, s_i1, s_d2, s_i2 = first
    if s_i1 <= 0 or s_i2 <= 0 or np.any(tri <= 1e-12 * max(s_i1, s_i2)) or not np.all(np.isfinite(P3)):
        raise HalopaintError(f"bispectrum k1={k1:g}, k2={k2:g} h/Mpc: a shell or triangle set is empty on "
                             f"this grid (k_F={kf:.4g}, k_Nyq={kf * (n // 2):.4g} h/Mpc); B is undefined")
    p_norm = box_size**3 / float(n) ** 6
    b_norm = box_size**6 / float(n) ** 9
    P1, P2 = s_d1 / s_i1 * p_norm, s_d2 / s_i2 * p_norm
    P3 = P3 * p_norm
    Bv = B / tri * b_norm
    denom = P1 * P2 + P1 * P3 + P2 * P3
    if np.any(denom <= 0):
        raise HalopaintError(f"bispectrum k1={k1:g}, k2={k2:g}: shell power is zero (empty field?); Q undefined")
    triangles = np.rint(tri * float(n) ** 6)  # normalised inverse FFTs: Σ I1I2I3 = (closed triangles)/N⁶
    return Bispectrum(k1=float(k1), k2=float(k2), theta=thetas, k3=k3, B=Bv, Q=Bv / denom,
                      triangles=triangles, P1=float(P1), P2=float(P2), P3=P3, box_size=float(box_size),
                      grid=n, mas=str(mas or "none").lower(),
                      attrs={"estimator": "FFT shells |k - k_i| < k_F (Pylians Bk)"})


def bispectrum(delta, box_size: float, k1: float, k2: float, thetas, mas: str | None = None, *,
               chunk_planes: int | None = None, scheduler=None) -> Bispectrum:
    """B(k1, k2, θ) and Q of a density contrast δ ((N, N, N) numpy or Dask array).

    box_size [Mpc/h]; k1, k2 [h/Mpc]; thetas [rad] (array). Returns a `Bispectrum` with B, Q, k3.
    """
    if not box_size or box_size <= 0:
        raise HalopaintError(f"box_size must be positive, got {box_size}")
    a = _as_field(delta, chunk_planes)
    planes = chunk_planes or max(a.chunks[0])
    fk = dfft.rfftn(a, chunk_planes=planes, method=dfft.rechunk_method(scheduler))
    if a.shape[0] <= 256:  # small enough to keep δ_k in memory for the 4 + 2·n_θ inverse transforms
        fk = fk.persist(scheduler=scheduler)
    return bispectrum_k(fk, box_size, k1, k2, thetas, mas=mas, scheduler=scheduler)


def paper_configurations() -> tuple[tuple[float, float], ...]:
    """Default (k1, k2) [h/Mpc] pairs (see halopaint.config.SpectraConfig.bispectrum_configs)."""
    from halopaint.config import SpectraConfig
    return SpectraConfig().bispectrum_configs


def default_thetas(count: int) -> np.ndarray:
    """`count` angles θ uniformly in [0, π] [rad] (both ends included)."""
    return np.linspace(0.0, np.pi, int(count))


__all__ = ["Bispectrum", "bispectrum", "bispectrum_k", "third_side", "default_thetas"]
