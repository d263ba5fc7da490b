"""Count PDFs per voxel: predicted vs true halo counts (the paper's Fig. 9), on Dask.

Counts are binned on integers: bin c = [c − ½, c + ½) (predicted expected counts are rounded to the
nearest integer by this binning). Everything is a single pass of Dask reductions over x-slabs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np

from halopaint.analysis import fft as dfft
from halopaint.errors import HalopaintError


@dataclass
class CountPDF:
    """counts (n_c,) integer bin centres; pdf_pred, pdf_true (n_c,) normalised histograms;
    joint (n_c true, n_c pred) voxel numbers; conditional (n_c, n_c) = P(pred | true) per true-count row
    (rows with no voxel are 0 and flagged by `has_true`); frac_off_by_3 = fraction of voxels with
    |pred − true| > 3 (pred unrounded); n_voxels."""

    counts: np.ndarray
    pdf_pred: np.ndarray
    pdf_true: np.ndarray
    joint: np.ndarray
    conditional: np.ndarray
    has_true: np.ndarray
    frac_off_by_3: float
    n_voxels: int
    attrs: dict = field(default_factory=dict)


def _slab_histogram(t: np.ndarray, p: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Joint (true, pred) voxel histogram of one slab: (n_c, n_c) float64."""
    h, _, _ = np.histogram2d(t.ravel(), p.ravel(), bins=[edges, edges])
    return h


def count_pdf(pred, true, *, max_count: int | None = None, scheduler=None, progress: bool = False) -> CountPDF:
    """Histograms of predicted and true counts per voxel ((N, N, N) numpy or Dask arrays, same grid)."""
    p = pred if isinstance(pred, da.Array) else da.from_array(np.asarray(pred), chunks=(32, -1, -1))
    t = true if isinstance(true, da.Array) else da.from_array(np.asarray(true), chunks=(32, -1, -1))
    if p.shape != t.shape:
        raise HalopaintError(f"count PDF: prediction grid {p.shape} differs from reference grid {t.shape}")
    t = t.rechunk(p.chunks)
    if max_count is None:
        pmax, tmax, pmin, tmin = dfft.compute(p.max(), t.max(), p.min(), t.min(), scheduler=scheduler)
        if not (np.isfinite(pmax) and np.isfinite(tmax)):
            raise HalopaintError("count PDF: the fields contain NaN or infinite counts")
        if min(pmin, tmin) < -0.5:
            raise HalopaintError(f"count PDF: negative counts ({min(pmin, tmin):g}) in a count field")
        max_count = int(np.floor(max(pmax, tmax) + 0.5))
    edges = np.arange(-0.5, max_count + 1.0, 1.0)
    n_c = edges.size - 1
    hist = dask.delayed(_slab_histogram, pure=True)
    parts = [hist(tb, pb, edges) for tb, pb in zip(t.to_delayed().ravel(), p.to_delayed().ravel())]
    joint = dask.delayed(sum)(parts)
    off = (abs(p - t) > 3).sum()
    joint, off = dfft.compute(joint, off, scheduler=scheduler, progress=progress)
    n_vox = int(np.prod(p.shape))
    joint = np.asarray(joint, dtype=np.float64)
    rows = joint.sum(axis=1)
    cond = np.divide(joint, rows[:, None], out=np.zeros_like(joint), where=rows[:, None] > 0)
    return CountPDF(counts=np.arange(n_c), pdf_pred=joint.sum(axis=0) / n_vox, pdf_true=rows / n_vox,
                    joint=joint, conditional=cond, has_true=rows > 0, frac_off_by_3=float(off) / n_vox,
                    n_voxels=n_vox, attrs={"binning": "integer bins [c-1/2, c+1/2)"})
