"""Mass assignment on periodic grids: CIC painting and readout, NGP halo counts.

Convention (docs/formats.md): voxel i of an n-grid covers [i·H, (i+1)·H), H = box_size / n, so CIC shares a
particle at x between the voxel centres (i+½)H around it. Painting accumulates in float64 sequentially
in particle order, so the result does not depend on thread count.

`cic_paint` / `cic_readout` run the compiled loops of kernels.py; `cic_paint_numpy` /
`cic_readout_numpy` are the vectorised numpy references they are tested against (chunked so that
temporaries stay ~100 MB).
"""

from __future__ import annotations

import numpy as np

from halopaint.sim.kernels import cic_paint_kernel, cic_readout_kernel

PARTICLE_CHUNK = 1 << 20


def cic_corners(pos: np.ndarray, n: int, box_size: float):
    """pos (m, 3) [Mpc/h], coordinates in [0, box_size) → list of 8 (flat index (m,) int64, weight (m,) f64)."""
    u = np.ascontiguousarray(pos.T, dtype=np.float64)
    u *= n / box_size
    u -= 0.5
    base = np.floor(u)
    u -= base                                   # u is now the fractional part
    i0 = base.astype(np.int64)
    i0[i0 < 0] += n
    i0[i0 >= n] -= n
    i1 = i0 + 1
    i1[i1 >= n] -= n
    strides = (n * n, n, 1)
    index = [(i0[d] * strides[d], i1[d] * strides[d]) for d in range(3)]
    weight = [(1.0 - u[d], u[d]) for d in range(3)]
    corners = []
    for cx in (0, 1):
        for cy in (0, 1):
            ixy = index[0][cx] + index[1][cy]
            wxy = weight[0][cx] * weight[1][cy]
            for cz in (0, 1):
                corners.append((ixy + index[2][cz], wxy * weight[2][cz]))
    return corners


def cic_paint_numpy(grid: np.ndarray, pos: np.ndarray, box_size: float, weight: float = 1.0,
              chunk: int = PARTICLE_CHUNK) -> np.ndarray:
    """Add CIC mass `weight` per particle to grid (n, n, n) float64 in place; pos (m, 3) [Mpc/h]."""
    if grid.dtype != np.float64 or not grid.flags.c_contiguous:
        raise ValueError("cic_paint needs a C-contiguous float64 grid")
    n = grid.shape[0]
    flat = grid.reshape(-1)
    pos = np.asarray(pos).reshape(-1, 3)
    for s in range(0, pos.shape[0], chunk):
        for index, w in cic_corners(pos[s:s + chunk], n, box_size):
            np.add.at(flat, index, w * weight if weight != 1.0 else w)
    return grid


def cic_readout_numpy(grid: np.ndarray, pos: np.ndarray, box_size: float, chunk: int = PARTICLE_CHUNK) -> np.ndarray:
    """CIC interpolation at pos (m, 3) [Mpc/h] of grid (n, n, n) or (n, n, n, c) → (m,) or (m, c) float64."""
    n = grid.shape[0]
    comps = grid.shape[3:]
    flat = grid.reshape((n**3,) + comps)
    pos = np.asarray(pos).reshape(-1, 3)
    out = np.empty((pos.shape[0],) + comps, dtype=np.float64)
    for s in range(0, pos.shape[0], chunk):
        acc = out[s:s + chunk]
        acc[...] = 0.0
        for index, w in cic_corners(pos[s:s + chunk], n, box_size):
            acc += flat[index] * (w[:, None] if comps else w)
    return out


def ngp_counts(pos: np.ndarray, mass: np.ndarray, edges, n: int, box_size: float) -> np.ndarray:
    """Halo counts per mass bin on the n³ grid (nearest grid point).

    pos (h, 3) [Mpc/h], mass (h,) [M☉/h], edges (b+1,) [M☉/h], bins [e_i, e_{i+1}); halos outside all
    bins are not counted. → (b, n, n, n) float32.
    """
    edges = np.asarray(edges, dtype=np.float64)
    nb = edges.size - 1
    pos = np.asarray(pos, dtype=np.float64).reshape(-1, 3)
    b = np.searchsorted(edges, np.asarray(mass, dtype=np.float64).reshape(-1), side="right") - 1
    keep = (b >= 0) & (b < nb)
    cell = np.floor(pos[keep] * (n / box_size)).astype(np.int64) % n
    flat = ((b[keep] * n + cell[:, 0]) * n + cell[:, 1]) * n + cell[:, 2]
    counts = np.bincount(flat, minlength=nb * n**3)
    return counts.reshape(nb, n, n, n).astype(np.float32)


def cic_paint(grid: np.ndarray, pos: np.ndarray, box_size: float, weight: float = 1.0) -> np.ndarray:
    """Add CIC mass `weight` per particle to grid (n, n, n) float64 in place; pos (m, 3) [Mpc/h] in [0, L)."""
    if grid.dtype != np.float64 or not grid.flags.c_contiguous or grid.ndim != 3:
        raise ValueError("cic_paint needs a C-contiguous (n, n, n) float64 grid")
    cic_paint_kernel(grid, np.ascontiguousarray(np.asarray(pos, dtype=np.float64).reshape(-1, 3)),
                     float(box_size), float(weight))
    return grid


def cic_readout(grid: np.ndarray, pos: np.ndarray, box_size: float) -> np.ndarray:
    """CIC interpolation at pos (m, 3) [Mpc/h] of grid (n, n, n) or (n, n, n, c) → (m,) or (m, c) float64."""
    vector = grid.ndim == 4
    g = np.ascontiguousarray(grid if vector else grid[..., None])
    pos = np.ascontiguousarray(np.asarray(pos, dtype=np.float64).reshape(-1, 3))
    out = np.empty((pos.shape[0], g.shape[3]), dtype=np.float64)
    cic_readout_kernel(g, pos, float(box_size), out)
    return out if vector else out[:, 0]
