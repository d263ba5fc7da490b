"""Slab-decomposed distributed real FFTs on Dask arrays, with fields read straight from HDF5.

`dask.array.fft` only transforms axes held in one chunk, so a plain 3D rfftn of a chunked field is a single
serial task. Here the transform is split the way MPI slab FFT codes split it:

1. the field is chunked in x-slabs (x1−x0, N, N) — exactly how it is read from the HDF5 file;
2. each slab is transformed along its two unchunked axes (y: complex FFT, z: real FFT) → (x1−x0, N, N//2+1);
3. one rechunk (the all-to-all transpose) makes the x axis whole and splits y instead;
4. each y-pencil block (N, y1−y0, N//2+1) is transformed along x.

The result equals `scipy.fft.rfftn(field)` (numpy's unnormalised forward convention) and is chunked along
axis 1 (y). The inverse runs the same steps backwards. Sign and normalisation conventions are numpy's.

The transpose either stays in memory (Dask rechunk: threads, or the P2P shuffle of a distributed
cluster, which spills to disk by itself) or, for fields larger than memory on one machine, goes through a
temporary HDF5 file (`spill_dir`): step 2 writes x-slabs, step 4 reads y-pencils — out of core.
"""

from __future__ import annotations

import math
import os
import tempfile
import uuid
from dataclasses import dataclass

import dask
import dask.array as da
import h5py
import numpy as np
import scipy.fft

from halopaint.errors import HalopaintError
from halopaint.log import progress_enabled


# --------------------------------------------------------------------------------------------------
# Reading fields lazily from HDF5 (plain or virtual datasets)
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class H5FieldSource:
    """A picklable, lazily-opened view of a 3D field inside an HDF5 dataset.

    path: file; dataset: name ('/density' or '/halos'); index: leading index for (n_bins, N, N, N)
    datasets (None for a 3D dataset); `bins` (tuple) instead sums several leading indices.
    The file is opened per read, so the object travels to distributed workers and reads virtual datasets
    (their source files must be visible to the worker) like ordinary ones. Reads return float32.
    """

    path: str
    dataset: str
    shape: tuple
    index: int | None = None
    bins: tuple | None = None
    dtype: np.dtype = np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        return 3

    def __getitem__(self, key) -> np.ndarray:
        with h5py.File(self.path, "r") as f:
            ds = f[self.dataset]
            if self.bins is not None:
                out = None
                for b in self.bins:
                    part = np.asarray(ds[(b,) + tuple(key)], dtype=np.float64)
                    out = part if out is None else out + part
                return out.astype(np.float32)
            if self.index is not None:
                return np.asarray(ds[(self.index,) + tuple(key)], dtype=np.float32)
            return np.asarray(ds[tuple(key)], dtype=np.float32)


def field_from_h5(path: str, dataset: str = "density", index: int | None = None,
                  bins: tuple | None = None, chunk_planes: int = 32) -> da.Array:
    """A lazy (N, N, N) float32 Dask array of one field, chunked in x-slabs of `chunk_planes` planes.

    dataset 'density': the (N, N, N) `/density`; dataset 'halos' with `index=b`: mass bin b of
    `/halos`; with `bins=(b0, b1, ...)`: the sum over those bins. Virtual datasets read the same way.
    """
    with h5py.File(path, "r") as f:
        if dataset not in f:
            raise HalopaintError(f"{path}: missing dataset '/{dataset}'")
        shape = f[dataset].shape
    grid_shape = tuple(shape[-3:])
    if len(grid_shape) != 3 or len(set(grid_shape)) != 1:
        raise HalopaintError(f"{path}: /{dataset} is not a cubic field, shape {shape}")
    src = H5FieldSource(path=str(path), dataset=dataset, shape=grid_shape, index=index,
                        bins=None if bins is None else tuple(int(b) for b in bins))
    planes = max(1, min(int(chunk_planes), grid_shape[0]))
    name = f"h5field-{dataset}-{index}-{src.bins}-{uuid.uuid5(uuid.NAMESPACE_URL, os.path.abspath(path))}"
    return da.from_array(src, chunks=(planes, -1, -1), lock=False, asarray=True, name=name,
                         meta=np.empty((0, 0, 0), np.float32))


# --------------------------------------------------------------------------------------------------
# The slab transform
# --------------------------------------------------------------------------------------------------

def _complex_dtype(dtype) -> np.dtype:
    return np.dtype(np.complex64) if np.dtype(dtype) in (np.float32, np.complex64) else np.dtype(np.complex128)


def _slab_rfft2(block: np.ndarray) -> np.ndarray:
    """(nx, N, N) real → (nx, N, N//2+1) complex: FFT along y, real FFT along z."""
    return scipy.fft.rfftn(block, axes=(1, 2), workers=1)


def _pencil_fft_x(block: np.ndarray) -> np.ndarray:
    """(N, ny, M) complex → same shape: complex FFT along x."""
    return scipy.fft.fft(block, axis=0, workers=1, overwrite_x=True)


def _pencil_ifft_x(block: np.ndarray) -> np.ndarray:
    return scipy.fft.ifft(block, axis=0, workers=1, overwrite_x=True)


def _slab_irfft2(block: np.ndarray, n: int) -> np.ndarray:
    return scipy.fft.irfftn(block, s=(n, n), axes=(1, 2), workers=1, overwrite_x=True)


def _default_pencil(n: int, nblocks_hint: int) -> int:
    return max(1, math.ceil(n / max(1, nblocks_hint)))


def rechunk_method(scheduler) -> str | None:
    """The all-to-all method for a scheduler: 'tasks' for local ones given by name ('threads', 'sync', …),
    None (Dask's default: the P2P shuffle when a distributed Client is active) otherwise."""
    return "tasks" if isinstance(scheduler, str) else None


def rfftn(field: da.Array | np.ndarray, *, chunk_planes: int | None = None,
          spill_dir: str | None = None, method: str | None = None) -> da.Array:
    """Distributed 3D real FFT of an (N, N, N) field: equals `scipy.fft.rfftn(field)`.

    Returns a lazy (N, N, N//2+1) complex array (complex64 for float32 input, complex128 for float64),
    chunked along axis 1 (y-pencils) with the x axis whole. `chunk_planes`: slab/pencil thickness (default:
    the input's x-chunking). `spill_dir`: route the transpose through a temporary HDF5 file there
    (out-of-core on one machine; on a cluster it must be a shared file system). Spill files are
    deleted by `release_spills()` and at interpreter exit. `method`: Dask rechunk method of the transpose
    (None: Dask's default — P2P shuffle under a distributed Client; 'tasks' for local schedulers).
    """
    field = da.asarray(field)
    if field.ndim != 3 or len(set(field.shape)) != 1:
        raise HalopaintError(f"rfftn needs a cubic (N, N, N) field, got shape {field.shape}")
    n = field.shape[0]
    planes = chunk_planes or max(field.chunks[0])
    slabs = field.rechunk({0: planes, 1: -1, 2: -1})
    cdtype = _complex_dtype(field.dtype)
    half = slabs.map_blocks(_slab_rfft2, chunks=(slabs.chunks[0], (n,), (n // 2 + 1,)), dtype=cdtype,
                            meta=np.empty((0, 0, 0), cdtype))
    if spill_dir is not None:
        pencils = spill_transpose(half, planes, spill_dir)
    elif method == "tasks" or (method is None and not _distributed_client_active()):
        return _local_transpose_fft_x(half, planes)
    else:
        pencils = half.rechunk({0: -1, 1: planes, 2: -1}, method=method)
    return pencils.map_blocks(_pencil_fft_x, dtype=cdtype, meta=np.empty((0, 0, 0), cdtype))


def _distributed_client_active() -> bool:
    try:
        from distributed import default_client
        default_client()
        return True
    except (ImportError, ValueError):
        return False


def _gather_pencil_fft_x(y0: int, y1: int, *slabs: np.ndarray) -> np.ndarray:
    """Copy the y-range [y0, y1) of every x-slab into one (N, y1−y0, M) pencil (one copy) and FFT along x."""
    n = sum(s.shape[0] for s in slabs)
    out = np.empty((n, y1 - y0, slabs[0].shape[2]), dtype=slabs[0].dtype)
    x = 0
    for s in slabs:
        out[x:x + s.shape[0]] = s[:, y0:y1]
        x += s.shape[0]
    return scipy.fft.fft(out, axis=0, workers=1, overwrite_x=True)


def _local_transpose_fft_x(half: da.Array, planes: int) -> da.Array:
    """Shared-memory transpose: each pencil task slices the (in-memory) slabs directly — one copy instead
    of the split + concatenate of a task rechunk. Used for local schedulers; clusters use `rechunk`."""
    n, m = half.shape[1], half.shape[2]
    slabs = list(half.to_delayed().ravel())
    gather = dask.delayed(_gather_pencil_fft_x, pure=True)
    blocks = []
    for y0 in range(0, n, planes):
        y1 = min(n, y0 + planes)
        blocks.append(da.from_delayed(gather(y0, y1, *slabs), shape=(half.shape[0], y1 - y0, m),
                                      dtype=half.dtype, meta=np.empty((0, 0, 0), half.dtype)))
    return da.concatenate(blocks, axis=1)


def irfftn(field_k: da.Array, n: int, *, chunk_planes: int | None = None, method: str | None = None) -> da.Array:
    """Inverse of `rfftn`: (N, N, N//2+1) complex (any chunking) → (N, N, N) real, chunked in x-slabs.

    Equals `scipy.fft.irfftn(field_k, s=(n, n, n))` (numpy's 1/N³ normalisation on the inverse).
    """
    field_k = da.asarray(field_k)
    planes = chunk_planes or max(field_k.chunks[1])
    rdtype = np.dtype(np.float32) if field_k.dtype == np.complex64 else np.dtype(np.float64)
    pencils = field_k.rechunk({0: -1, 1: planes, 2: -1}, method=method)
    mixed = pencils.map_blocks(_pencil_ifft_x, dtype=field_k.dtype, meta=np.empty((0, 0, 0), field_k.dtype))
    slabs = mixed.rechunk({0: planes, 1: -1, 2: -1}, method=method)
    return slabs.map_blocks(_slab_irfft2, n, chunks=(slabs.chunks[0], (n,), (n,)), dtype=rdtype,
                            meta=np.empty((0, 0, 0), rdtype))


# --------------------------------------------------------------------------------------------------
# Out-of-core transpose through a temporary HDF5 file
# --------------------------------------------------------------------------------------------------

class SpillFile:
    """A temporary HDF5 file holding one transposed array; removed by `close()` (or on context exit)."""

    def __init__(self, directory: str):
        if not os.path.isdir(directory):
            raise HalopaintError(f"spill directory {directory} does not exist")
        fd, self.path = tempfile.mkstemp(prefix=".halopaint-fft-", suffix=".h5", dir=directory)
        os.close(fd)

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass(frozen=True)
class _H5ComplexSource:
    path: str
    shape: tuple
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key):
        with h5py.File(self.path, "r") as f:
            return f["data"][key]


def spill_transpose(half: da.Array, planes: int, spill_dir: str) -> da.Array:
    """Write the x-slab array `half` to a temporary HDF5 file now, return it re-read as y-pencils.

    The write is computed immediately (slab by slab, on the current scheduler; at most a few slabs in
    memory); the returned lazy array reads pencils (N, planes, M) from disk. HDF5 allows one writer
    process: use it with local (threaded / synchronous) schedulers only. The file lives in `spill_dir`
    and is deleted when the process exits or when `release_spills()` is called.
    """
    spill = SpillFile(spill_dir)
    _SPILLS.append(spill)
    with h5py.File(spill.path, "w") as f:
        f.create_dataset("data", shape=half.shape, dtype=half.dtype,
                         chunks=(max(half.chunks[0]), min(planes, half.shape[1]), half.shape[2]))
    # h5py writes from threads are serialised by h5py's own lock; one writer file handle per task
    da.store(half, _H5Writer(spill.path), lock=True, compute=True)
    src = _H5ComplexSource(spill.path, half.shape, half.dtype)
    return da.from_array(src, chunks=(-1, planes, -1), lock=False, asarray=True,
                         name=f"spill-{uuid.uuid4().hex}", meta=np.empty((0, 0, 0), half.dtype))


class _H5Writer:
    """`da.store` target that opens the spill file for each write (safe for threads and processes)."""

    def __init__(self, path: str):
        self.path = path

    def __setitem__(self, key, value):
        with h5py.File(self.path, "r+") as f:
            f["data"][key] = value


_SPILLS: list[SpillFile] = []


def release_spills() -> None:
    """Delete every temporary transpose file made by this process."""
    while _SPILLS:
        _SPILLS.pop().close()


import atexit  # noqa: E402

atexit.register(release_spills)


def wavenumbers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer wavenumbers of an (N, N, N//2+1) rfft array: (full axis [N], half axis [N//2+1]), int64.

    Full axis follows Pylians' convention: index i > N//2 → i − N, so the Nyquist index N//2 is +N/2.
    """
    full = np.arange(n, dtype=np.int64)
    full = np.where(full > n // 2, full - n, full)
    return full, np.arange(n // 2 + 1, dtype=np.int64)


def compute(*arrays, scheduler=None, progress: bool = False):
    """`dask.compute` with an optional progress bar on stderr (local schedulers only)."""
    if progress and progress_enabled() and scheduler in (None, "threads", "sync", "synchronous", "processes"):
        import sys

        from dask.diagnostics import ProgressBar
        with ProgressBar(out=sys.stderr, minimum=1.0):
            return dask.compute(*arrays, scheduler=scheduler)
    return dask.compute(*arrays, scheduler=scheduler)
