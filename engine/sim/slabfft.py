"""3D FFTs done one axis at a time over slabs, so a full-size temporary is never needed.

Arrays are torch tensors in the `torch.fft.rfftn` layout: real (L, L, L), complex (L, L, L//2+1),
axes (x, y, z). A 3D inverse transform = `ifft_x_inplace` (1D ifft along x, in chunks of y-rows)
followed by `irfft_yz` on chunks of x-planes; the forward one is the mirror image. Each step is a batch
of independent 1D transforms done by scipy.fft (pocketfft), which threads over whole 1D transforms, so
results are bit-identical for any thread count (torch's MKL FFTs are not: they differ by ~1 ulp).
Normalisation is numpy's: forward unnormalised, inverse divided by L³.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import torch

#: elements per chunk of planes/rows: ~16–32 MB temporaries, which stay in the allocator's reuse range
#: (fresh large allocations cost page faults that dominate on some VMs).
CHUNK_ELEMENTS = 1 << 21


def chunk_planes(n: int, chunk: int | None = None) -> int:
    """Planes (or rows) of an n×n cross-section per chunk: `chunk` if given, else ~CHUNK_ELEMENTS elements."""
    return int(chunk) if chunk else max(1, CHUNK_ELEMENTS // (n * n))


DEFAULT_CHUNK = None


def wavenumbers(n: int, box_size: float, real_last: bool = False) -> torch.Tensor:
    """Angular wavenumbers [h/Mpc] of an n-point periodic axis of length box_size [Mpc/h] (float64)."""
    k = np.fft.rfftfreq(n) if real_last else np.fft.fftfreq(n)
    return torch.from_numpy(2.0 * np.pi * n / box_size * k)


def fft_workers() -> int:
    """Threads for scipy.fft: torch's intra-op thread count (set by the launcher / OMP_NUM_THREADS)."""
    return max(1, torch.get_num_threads())


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array)


def ifft_x_inplace(a: torch.Tensor, chunk: int | None = DEFAULT_CHUNK) -> torch.Tensor:
    """a[:, j, :] ← ifft along x, for chunks of y-rows. Returns a (modified)."""
    chunk = chunk_planes(a.shape[0], chunk)
    for j0 in range(0, a.shape[1], chunk):
        a[:, j0:j0 + chunk] = _t(scipy.fft.ifft(a[:, j0:j0 + chunk].numpy(), axis=0, workers=fft_workers()))
    return a


def fft_x_inplace(a: torch.Tensor, chunk: int | None = DEFAULT_CHUNK) -> torch.Tensor:
    """a[:, j, :] ← fft along x, for chunks of y-rows. Returns a (modified)."""
    chunk = chunk_planes(a.shape[0], chunk)
    for j0 in range(0, a.shape[1], chunk):
        a[:, j0:j0 + chunk] = _t(scipy.fft.fft(a[:, j0:j0 + chunk].numpy(), axis=0, workers=fft_workers()))
    return a


def irfft_yz(slab: torch.Tensor, n: int) -> torch.Tensor:
    """(nx, n, n//2+1) complex, already inverse-transformed along x → (nx, n, n) real."""
    w = fft_workers()
    return _t(scipy.fft.irfft(scipy.fft.ifft(slab.numpy(), axis=1, workers=w), n=n, axis=2, workers=w))


def rfft_yz(slab: torch.Tensor) -> torch.Tensor:
    """(nx, n, n) real → (nx, n, n//2+1) complex, transformed along y and z (not yet x)."""
    w = fft_workers()
    return _t(scipy.fft.fft(scipy.fft.rfft(slab.numpy(), axis=2, workers=w), axis=1, workers=w))


def rfftn_slabs(real: torch.Tensor, chunk: int | None = DEFAULT_CHUNK) -> torch.Tensor:
    """Forward 3D rfft of a real (L, L, L) tensor; the only full-size allocation is the result."""
    n = real.shape[0]
    dtype = torch.complex128 if real.dtype == torch.float64 else torch.complex64
    out = torch.empty((n, n, n // 2 + 1), dtype=dtype)
    chunk = chunk_planes(n, chunk)
    for i0 in range(0, n, chunk):
        out[i0:i0 + chunk] = rfft_yz(real[i0:i0 + chunk])
    return fft_x_inplace(out, chunk)


def irfftn_slabs(a: torch.Tensor, n: int, chunk: int | None = DEFAULT_CHUNK, overwrite: bool = False) -> torch.Tensor:
    """Inverse 3D rfft → real (n, n, n). With overwrite=True `a` is used as scratch (destroyed)."""
    work = a if overwrite else a.clone()
    ifft_x_inplace(work, chunk)
    dtype = torch.float64 if a.dtype == torch.complex128 else torch.float32
    out = torch.empty((n, n, n), dtype=dtype)
    chunk = chunk_planes(n, chunk)
    for i0 in range(0, n, chunk):
        out[i0:i0 + chunk] = irfft_yz(work[i0:i0 + chunk], n)
    return out
