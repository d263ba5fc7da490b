"""3D real FFTs of an n³ periodic field split in slabs over MPI ranks (or one process), one axis at a time.

Layouts (the `numpy.fft.rfftn` layout, axes (x, y, z)):
- real space: rank r holds the x-slab [x0, x1) of the real (n, n, n) field: (x1−x0, n, n) float32;
- Fourier space: rank r holds the y-slab [y0, y1) of the (n, n, n//2+1) spectrum with the whole kx axis:
  (n, y1−y0, n//2+1) complex64.
Both splits follow halopaint.decomposition's rule (thicknesses differ by ≤ 1, the first n mod R get one more).

Inverse transform = ifft along x (local: the y-slab has every kx) → slab transpose (y-slab → x-slab) →
ifft along y + irfft along z (local). The forward one is the mirror image. The transpose is one
`Alltoallw` per chunk of kz columns whose receive (or send) side is an MPI subarray datatype, so no
packing buffer is needed and the full-size memory is only the input and the output array; with one
process the transpose is a plain copy of the chunk. Every 1D transform is scipy.fft (pocketfft) on whole
lines, so the result is bit-identical for any rank count, chunking and thread count.
Normalisation is numpy's: forward unnormalised, inverse divided by n³.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.fft

from halopaint.partition import even_split

#: elements per chunk of planes/rows/columns: ~16 MB temporaries (freshly mapped large allocations cost
#: page faults that dominate on some VMs, so chunks stay in the allocator's reuse range).
CHUNK_ELEMENTS = 1 << 21


def chunk_planes(n: int, chunk: int | None = None, cross_section: int | None = None) -> int:
    """Planes per chunk: `chunk` if given, else ~CHUNK_ELEMENTS / cross_section (default n²) elements."""
    return int(chunk) if chunk else max(1, CHUNK_ELEMENTS // (cross_section or n * n))


def fft_workers() -> int:
    """Threads for scipy.fft: torch's intra-op thread count (set by the launcher / OMP_NUM_THREADS)."""
    import torch
    return max(1, torch.get_num_threads())


def split_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """[0, n) in `parts` contiguous ranges differing by ≤ 1 (the first n mod parts one longer)."""
    return even_split(n, parts)


def _mpi_type(dtype: np.dtype):
    from mpi4py import MPI
    return {np.dtype(np.complex64): MPI.C_FLOAT_COMPLEX, np.dtype(np.complex128): MPI.C_DOUBLE_COMPLEX,
            np.dtype(np.float32): MPI.FLOAT, np.dtype(np.float64): MPI.DOUBLE}[np.dtype(dtype)]


class SlabFFT:
    """Slab-decomposed rfft of an n³ grid over `comm` (None: one process, no MPI).

    Attributes: n, nh = n//2+1, ranks, rank, x_bounds / y_bounds (per rank), x0, x1, y0, y1 (this rank).
    """

    def __init__(self, n: int, comm=None, chunk: int | None = None):
        self.n, self.nh = int(n), int(n) // 2 + 1
        self.comm = comm if comm is not None and comm.Get_size() > 1 else None
        self.ranks = 1 if self.comm is None else self.comm.Get_size()
        self.rank = 0 if self.comm is None else self.comm.Get_rank()
        if self.ranks > self.n:
            raise ValueError(f"{self.ranks} ranks cannot split {self.n} planes")
        self.x_bounds = split_bounds(self.n, self.ranks)
        self.y_bounds = self.x_bounds
        self.x0, self.x1 = self.x_bounds[self.rank]
        self.y0, self.y1 = self.y_bounds[self.rank]
        self.chunk = chunk

    # ------------------------------------------------------------------------------------ shapes
    @property
    def nx(self) -> int:
        return self.x1 - self.x0

    @property
    def ny(self) -> int:
        return self.y1 - self.y0

    @property
    def spectral_shape(self) -> tuple[int, int, int]:
        return (self.n, self.ny, self.nh)

    @property
    def real_shape(self) -> tuple[int, int, int]:
        return (self.nx, self.n, self.n)

    def _kz_chunks(self) -> list[tuple[int, int]]:
        width = chunk_planes(self.nh, self.chunk, cross_section=self.n * max(self.nx, self.ny))
        return [(c, min(self.nh, c + width)) for c in range(0, self.nh, width)]

    # ---------------------------------------------------------------------------- transposes
    def _alltoallw(self, send, recv, send_blocks, recv_blocks) -> None:
        """send_blocks / recv_blocks: per rank (array, sizes, subsizes, starts) → subarray Alltoallw."""
        from mpi4py import MPI
        base = _mpi_type(send.dtype)
        types = []

        def sub(sizes, subsizes, starts):
            t = base.Create_subarray(sizes, subsizes, starts, order=MPI.ORDER_C).Commit()
            types.append(t)
            return t
        try:
            st = [sub(*b) for b in send_blocks]
            rt = [sub(*b) for b in recv_blocks]
            one, zero = [1] * self.ranks, [0] * self.ranks
            self.comm.Alltoallw([send, (one, zero), st], [recv, (one, zero), rt])
        finally:
            for t in types:
                t.Free()

    def backward_x(self, spec: np.ndarray, multiplier: Callable | None = None) -> np.ndarray:
        """y-slab spectrum (n, ny, nh) → ifft along x → x-slab (nx, n, nh), x in real space, y/z still
        Fourier. `multiplier(c0, c1)` → array broadcastable to (n, ny, c1−c0) applied before the ifft
        (e.g. −i·kx). `spec` is not modified. Collective."""
        out = np.empty((self.nx, self.n, self.nh), dtype=spec.dtype)
        w = fft_workers()
        for c0, c1 in self._kz_chunks():
            block = spec[:, :, c0:c1] if multiplier is None else spec[:, :, c0:c1] * multiplier(c0, c1)
            block = np.ascontiguousarray(scipy.fft.ifft(block, axis=0, workers=w), dtype=spec.dtype)
            if self.comm is None:
                out[:, :, c0:c1] = block
                continue
            cw = c1 - c0
            send = [(block.shape, (x1 - x0, self.ny, cw), (x0, 0, 0)) for x0, x1 in self.x_bounds]
            recv = [((self.nx, self.n, self.nh), (self.nx, y1 - y0, cw), (0, y0, c0)) for y0, y1 in self.y_bounds]
            self._alltoallw(block, out, send, recv)
        return out

    def forward_x(self, half: np.ndarray) -> np.ndarray:
        """x-slab (nx, n, nh), already transformed along y and z → y-slab spectrum (n, ny, nh) (fft
        along x). `half` is not modified. Collective."""
        out = np.empty(self.spectral_shape, dtype=half.dtype)
        w = fft_workers()
        for c0, c1 in self._kz_chunks():
            cw = c1 - c0
            if self.comm is None:
                block = half[:, :, c0:c1]
            else:
                block = np.empty((self.n, self.ny, cw), dtype=half.dtype)
                send = [((self.nx, self.n, self.nh), (self.nx, y1 - y0, cw), (0, y0, c0)) for y0, y1 in self.y_bounds]
                recv = [(block.shape, (x1 - x0, self.ny, cw), (x0, 0, 0)) for x0, x1 in self.x_bounds]
                self._alltoallw(half, block, send, recv)
            out[:, :, c0:c1] = scipy.fft.fft(block, axis=0, workers=w)
        return out

    # --------------------------------------------------------------------- local yz transforms
    def irfft_yz(self, slab: np.ndarray) -> np.ndarray:
        """(m, n, nh) complex, already inverse-transformed along x → (m, n, n) real."""
        w = fft_workers()
        return scipy.fft.irfft(scipy.fft.ifft(slab, axis=1, workers=w), n=self.n, axis=2, workers=w)

    def rfft_yz(self, slab: np.ndarray) -> np.ndarray:
        """(m, n, n) real → (m, n, nh) complex, transformed along y and z (not yet x)."""
        w = fft_workers()
        return scipy.fft.fft(scipy.fft.rfft(slab, axis=2, workers=w), axis=1, workers=w)

    def plane_chunks(self, m: int | None = None) -> list[tuple[int, int]]:
        """Local x-plane chunks [i0, i1) of this rank's x-slab (m planes; default nx)."""
        m = self.nx if m is None else m
        step = chunk_planes(self.n, self.chunk)
        return [(i, min(m, i + step)) for i in range(0, m, step)]

    # ------------------------------------------------------------------------------ whole 3D
    def rfft_yz_slab(self, real: np.ndarray) -> np.ndarray:
        """Real x-slab (nx, n, n) → (nx, n, nh) transformed along y and z, chunk by chunk."""
        dtype = np.complex128 if real.dtype == np.float64 else np.complex64
        half = np.empty((self.nx, self.n, self.nh), dtype=dtype)
        for i0, i1 in self.plane_chunks():
            half[i0:i1] = self.rfft_yz(real[i0:i1])
        return half

    def forward(self, real: np.ndarray) -> np.ndarray:
        """Real x-slab (nx, n, n) → y-slab spectrum (n, ny, nh) (numpy rfftn convention). Collective."""
        return self.forward_x(self.rfft_yz_slab(real))

    def backward(self, spec: np.ndarray) -> np.ndarray:
        """y-slab spectrum (n, ny, nh) → real x-slab (nx, n, n) (numpy irfftn convention). Collective."""
        half = self.backward_x(spec)
        dtype = np.float64 if spec.dtype == np.complex128 else np.float32
        out = np.empty(self.real_shape, dtype=dtype)
        for i0, i1 in self.plane_chunks():
            out[i0:i1] = self.irfft_yz(half[i0:i1])
        return out
