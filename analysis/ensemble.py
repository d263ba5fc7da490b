"""Ensembles over random periodic sub-cubes ("patches"): mean ± 1σ of the spectra and cross statistics.

The paper reports its statistics over 1000 patches of 400 Mpc/h. Here M sub-cubes of m voxels per side
are drawn with corners uniform on the grid (seeded), read periodically (wrapping) straight from the
HDF5 files, and each patch is analysed as its own periodic box (δ relative to the patch mean, P(k) in the
conventions of `halopaint.analysis.spectra`, box = m·H) — one Dask task per patch, any scheduler.
A patch in which a field is empty (mean 0) has undefined δ and r_c: it is excluded and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dask
import h5py
import numpy as np
import scipy.fft

from halopaint.analysis import fft as dfft
from halopaint.analysis.spectra import _bin_block, _finalise, mas_order
from halopaint.errors import HalopaintError


def _ranges(start: int, size: int, n: int) -> list[tuple[int, int, int]]:
    """Periodic index range [start, start+size) mod n as ≤ 2 contiguous (src0, src1, dst0) pieces."""
    out, dst = [], 0
    s = start % n
    while dst < size:
        take = min(size - dst, n - s)
        out.append((s, s + take, dst))
        dst += take
        s = 0
    return out


def read_periodic_cube(path: str, dataset: str, corner: tuple[int, int, int], size: int,
                       bins: tuple | None = None) -> np.ndarray:
    """(size, size, size) float64 sub-cube at `corner` (wrapping), from /density or summed /halos bins."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        n = ds.shape[-1]
        out = np.zeros((size, size, size), dtype=np.float64)
        lead = [()] if bins is None else [(b,) for b in bins]
        for xa, xb, xd in _ranges(corner[0], size, n):
            for ya, yb, yd in _ranges(corner[1], size, n):
                for za, zb, zd in _ranges(corner[2], size, n):
                    for pre in lead:
                        out[xd:xd + xb - xa, yd:yd + yb - ya, zd:zd + zb - za] += \
                            ds[pre + (slice(xa, xb), slice(ya, yb), slice(za, zb))]
        return out


@dataclass(frozen=True)
class PatchSource:
    """Where a patch field comes from: file, dataset name, summed bins (None for /density), MAS scheme."""

    path: str
    dataset: str
    bins: tuple | None
    mas: str = "none"


def _patch_spectra(sources: list[PatchSource], corner, size: int, box: float, pairs: tuple):
    fields = [read_periodic_cube(s.path, s.dataset, corner, size, s.bins) for s in sources]
    means = [f.mean() for f in fields]
    if any(not (m > 0) for m in means):
        return None
    fk = [scipy.fft.rfftn(f / m - 1.0) for f, m in zip(fields, means)]
    sums = _bin_block(fk, 0, size, pairs, tuple(mas_order(s.mas) for s in sources))
    k, nmodes, powers = _finalise(sums[:2 + len(pairs)], size, box)
    return k, nmodes, np.array(powers)


@dataclass
class Ensemble:
    """Mean and standard deviation over patches. k [h/Mpc], nmodes per patch; `mean[name]`/`std[name]`
    for P_pp, P_hh, P_hp, T, r_c, s (and P_mm, r_c_lpt, … when a density is given). patch_size [Mpc/h]."""

    k: np.ndarray
    nmodes: np.ndarray
    mean: dict
    std: dict
    n_patches: int
    n_excluded: int
    patch_size: float
    patch_grid: int
    seed: int
    attrs: dict = field(default_factory=dict)


def patch_corners(grid: int, count: int, seed: int) -> np.ndarray:
    """(count, 3) random integer corners on the grid (seeded, independent of the scheduler)."""
    return np.random.default_rng(seed).integers(0, grid, size=(count, 3))


def patch_ensemble(pred: PatchSource, ref: PatchSource, box_size: float, grid: int, *, count: int,
                   patch_size: float, seed: int = 0, density: PatchSource | None = None,
                   bias: float | None = None, scheduler=None, progress: bool = False) -> Ensemble:
    """Spectra and cross statistics of `count` random periodic sub-cubes of side `patch_size` [Mpc/h].

    With `density` and `bias` (from the full-box fit) the 2LPT baseline b·δ_m is analysed per patch too.
    """
    if count < 2:
        raise HalopaintError(f"an ensemble needs at least 2 patches, got {count}")
    size = int(round(patch_size / (box_size / grid)))
    if not 4 <= size <= grid:
        raise HalopaintError(f"patch size {patch_size:g} Mpc/h is {size} voxels; need 4 … {grid} voxels")
    box = size * box_size / grid
    sources = [pred, ref] + ([density] if density is not None else [])
    pairs = ((0, 0), (1, 1), (0, 1)) + (((2, 2), (1, 2)) if density is not None else ())
    corners = patch_corners(grid, count, seed)
    task = dask.delayed(_patch_spectra, pure=True)
    results = dfft.compute(*[task(sources, tuple(int(c) for c in cn), size, box, pairs) for cn in corners],
                           scheduler=scheduler, progress=progress)
    good = [r for r in results if r is not None]
    if len(good) < 2:
        raise HalopaintError(f"ensemble: only {len(good)} of {count} patches have non-empty fields")
    k, nmodes = good[0][0], good[0][1]
    per = {name: [] for name in ("P_pp", "P_hh", "P_hp", "T", "r_c", "s")}
    if density is not None:
        per.update({n: [] for n in ("P_mm", "T_lpt", "r_c_lpt", "s_lpt")})
    excluded = count - len(good)
    for _, _, P in good:
        if np.any(P[0] <= 0) or np.any(P[1] <= 0):
            excluded += 1
            continue
        r = P[2] / np.sqrt(P[0] * P[1])
        per["P_pp"].append(P[0]); per["P_hh"].append(P[1]); per["P_hp"].append(P[2])
        per["T"].append(np.sqrt(P[0] / P[1])); per["r_c"].append(r); per["s"].append(P[1] * (1 - r * r))
        if density is not None:
            rl = P[4] / np.sqrt(P[1] * P[3])
            per["P_mm"].append(P[3]); per["r_c_lpt"].append(rl); per["s_lpt"].append(P[1] * (1 - rl * rl))
            per["T_lpt"].append((bias or 1.0) * np.sqrt(P[3] / P[1]))
    used = count - excluded
    if used < 2:
        raise HalopaintError(f"ensemble: only {used} of {count} patches have defined cross statistics")
    mean = {n: np.mean(v, axis=0) for n, v in per.items()}
    std = {n: np.std(v, axis=0, ddof=1) for n, v in per.items()}
    return Ensemble(k=k, nmodes=nmodes, mean=mean, std=std, n_patches=used, n_excluded=excluded,
                    patch_size=float(box), patch_grid=size, seed=int(seed),
                    attrs={"bias": bias if bias is not None else float("nan")})
