"""The slab-decomposed distributed FFT against scipy.fft, from memory, HDF5 files and virtual datasets."""

from __future__ import annotations

import dask.array as da
import h5py
import numpy as np
import pytest
import scipy.fft

from halopaint.analysis import fft as dfft


def _rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


@pytest.mark.parametrize("n,planes,dtype", [(16, 4, np.float64), (15, 4, np.float32), (24, 7, np.float32),
                                            (9, 1, np.float64)])
def test_rfftn_equals_scipy(n, planes, dtype):
    a = np.random.default_rng(n).standard_normal((n, n, n)).astype(dtype)
    got = dfft.rfftn(da.from_array(a, chunks=(planes, n, n)), chunk_planes=planes).compute(scheduler="threads")
    want = scipy.fft.rfftn(a)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert _rel(got, want) < (1e-6 if dtype == np.float32 else 1e-13)


def test_irfftn_inverts():
    n = 18
    a = np.random.default_rng(2).standard_normal((n, n, n))
    fk = dfft.rfftn(da.from_array(a, chunks=(5, n, n)))
    back = dfft.irfftn(fk, n, chunk_planes=4).compute(scheduler="sync")
    np.testing.assert_allclose(back, a, atol=1e-12)
    np.testing.assert_allclose(back, scipy.fft.irfftn(scipy.fft.rfftn(a), s=(n, n, n)), atol=1e-13)


def _write_parts(tmp_path, a, parts):
    """Per-part files holding x-slabs and a master file whose /density is a virtual dataset over them."""
    n = a.shape[0]
    edges = np.linspace(0, n, parts + 1).astype(int)
    layout = h5py.VirtualLayout(shape=a.shape, dtype=np.float32)
    for i, (x0, x1) in enumerate(zip(edges[:-1], edges[1:])):
        part = tmp_path / f"part{i}.h5"
        with h5py.File(part, "w") as f:
            f.create_dataset("density", data=a[x0:x1])
        layout[x0:x1] = h5py.VirtualSource(str(part), "density", shape=(x1 - x0, n, n))
    master = tmp_path / "master.h5"
    with h5py.File(master, "w") as f:
        f.create_virtual_dataset("density", layout)
        halos = f.create_dataset("halos", data=np.stack([a, 2 * a]))
        assert halos.shape == (2, n, n, n)
    return str(master)


def test_rfftn_from_hdf5_and_vds(tmp_path):
    n = 20
    a = np.random.default_rng(5).standard_normal((n, n, n)).astype(np.float32)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f.create_dataset("density", data=a, chunks=(4, n, n))
    master = _write_parts(tmp_path, a, 3)
    want = scipy.fft.rfftn(a)
    for path in (str(plain), master):
        field = dfft.field_from_h5(path, "density", chunk_planes=6)
        assert field.chunks[0] == (6, 6, 6, 2)
        assert _rel(dfft.rfftn(field).compute(), want) < 1e-6
    # a mass bin, and the sum over bins, of a (n_bins, N, N, N) dataset
    assert _rel(dfft.rfftn(dfft.field_from_h5(master, "halos", index=1)).compute(), 2 * want) < 1e-6
    summed = dfft.field_from_h5(master, "halos", bins=(0, 1), chunk_planes=7).compute()
    np.testing.assert_allclose(summed, 3 * a, rtol=1e-6)


def test_spilled_transpose_equals_in_memory(tmp_path):
    n = 16
    a = np.random.default_rng(9).standard_normal((n, n, n)).astype(np.float32)
    field = da.from_array(a, chunks=(4, n, n))
    got = dfft.rfftn(field, spill_dir=str(tmp_path)).compute()
    assert _rel(got, scipy.fft.rfftn(a)) < 1e-6
    assert list(tmp_path.glob(".halopaint-fft-*"))          # the transpose went through a file …
    dfft.release_spills()
    assert not list(tmp_path.glob(".halopaint-fft-*"))      # … which is removed afterwards


def test_distributed_fft_on_local_cluster():
    distributed = pytest.importorskip("distributed")
    n = 16
    a = np.random.default_rng(4).standard_normal((n, n, n))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        got = client.compute(dfft.rfftn(da.from_array(a, chunks=(3, n, n)))).result()
    assert _rel(got, scipy.fft.rfftn(a)) < 1e-13
