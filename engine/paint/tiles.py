"""Tile assembly: the padded input of one tile from own planes and x-ghosts, input normalisation,
and the whole-box reference paint."""

from __future__ import annotations

import numpy as np
import torch

from halopaint.decomposition import periodic_ranges
from halopaint.model import ModelBundle


def read_tile_input(ds, left: np.ndarray, right: np.ndarray, x0: int, x1: int,
                    tile: tuple[int, int, int, int, int, int], grid: int, ghost: int) -> np.ndarray:
    """The padded input of one tile: (b−a+2g, y1−y0+2g, z1−z0+2g) float32.

    ds: the input /density dataset (only planes [x0, x1) are read); left/right: (g, N, N) x-ghosts for
    planes x0−g…x0−1 and x1…x1+g−1 (periodic). y and z are wrapped periodically.
    """
    a, b, y0, y1, z0, z1 = tile
    g = ghost
    out = np.empty((b - a + 2 * g, y1 - y0 + 2 * g, z1 - z0 + 2 * g), np.float32)
    ys = periodic_ranges(y0 - g, y1 + g, grid)
    zs = periodic_ranges(z0 - g, z1 + g, grid)
    gx_lo, gx_hi = x0 + a - g, x0 + b + g          # global padded x range (may leave [x0, x1))
    pieces = []                                      # (source, src x0, src x1, dst x0)
    if gx_lo < x0:
        pieces.append((left, gx_lo - (x0 - g), g, 0))
    own_lo, own_hi = max(gx_lo, x0), min(gx_hi, x1)
    pieces.append((ds, own_lo, own_hi, own_lo - gx_lo))
    if gx_hi > x1:
        pieces.append((right, 0, gx_hi - x1, x1 - gx_lo))
    for src, sa, sb, da in pieces:
        for ya, yb, dy in ys:
            for za, zb, dz in zs:
                out[da:da + sb - sa, dy:dy + yb - ya, dz:dz + zb - za] = src[sa:sb, ya:yb, za:zb]
    return out


def normalise_input(rho: np.ndarray, bundle: ModelBundle) -> np.ndarray:
    """ρ/ρ̄ → generator input, in place: x = (ρ/ρ̄ − offset)·scale (bundle.metadata.input_normalisation)."""
    norm = bundle.metadata.input_normalisation
    if norm.offset != 0.0:
        rho -= np.float32(norm.offset)
    if norm.scale != 1.0:
        rho *= np.float32(norm.scale)
    return rho


def paint_whole_box(bundle: ModelBundle, density: np.ndarray, bins=None) -> np.ndarray:
    """Reference: pad the whole (N, N, N) box periodically by g, run the generator once per bin.

    Returns (n_bins, N, N, N) float32. Whole box in memory: for tests and small boxes only.
    """
    from halopaint.kernels.reference import generator_forward
    bins = range(bundle.n_bins) if bins is None else bins
    g = bundle.ghost_width
    x = normalise_input(np.pad(np.asarray(density, np.float32), g, mode="wrap"), bundle)
    xt = torch.from_numpy(x)[None, None]
    with torch.no_grad():
        return np.stack([generator_forward(bundle.generators[b], xt, bundle.spec)[0, 0].numpy()
                         for b in bins]).astype(np.float32)
