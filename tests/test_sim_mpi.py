"""Distributed `simulate --lpt-only` on R MPI ranks (CI: mpiexec -n 2 and -n 3) against the serial run.

Criteria: /density and /velocity of R ranks equal the one-process run of the same seed within 1e-5
(relative to the field's max) on N = 21 (uneven slabs for R = 2 and 3, lattice 42); a redshift list equals
single-z runs within 1e-6; `paint` of the distributed master (under mpiexec and on one process) equals the
whole-box paint of the serial file within 1e-4; the distributed P(k) at k ≤ 0.041 h/Mpc matches linear
theory × D(z)² within the ensemble error of 4 seeds.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from conftest import mpi_shared_dir, random_bundle
from halopaint.config import PaintConfig, SimulateConfig
from halopaint.fields import FieldFile, parts_dir
from halopaint.simulation import simulate

pytestmark = pytest.mark.mpi(min_size=2)
N, BOX = 21, 84.0


@pytest.fixture(scope="module")
def shared():
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    with mpi_shared_dir(comm, "halopaint-sim-mpi-") as d:
        yield dict(dir=d, comm=comm)


def _serial(cfg: SimulateConfig, comm) -> list[str]:
    """The one-process run, on rank 0 only (COMM_SELF); the other ranks wait."""
    from mpi4py import MPI
    paths = simulate(cfg, comm=MPI.COMM_SELF) if comm.Get_rank() == 0 else None
    return comm.bcast(paths, root=0)


def _on_root(comm, check) -> None:
    """Run `check()` on rank 0; every rank fails with its message if it raised."""
    err = None
    if comm.Get_rank() == 0:
        try:
            check()
        except AssertionError as exc:
            err = f"{exc}"
    err = comm.bcast(err, root=0)
    assert err is None, err


def _max_rel(a, b) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())


def test_distributed_equals_serial_on_an_uneven_grid(shared):
    comm, d = shared["comm"], shared["dir"]
    r = comm.Get_size()
    cfg = SimulateConfig(grid=N, box_size=BOX, seed=17, lpt_only=True, out=os.path.join(d, "dist.h5"))
    (path,) = simulate(cfg, comm=comm)
    (ref,) = _serial(SimulateConfig(grid=N, box_size=BOX, seed=17, lpt_only=True,
                                    out=os.path.join(d, "serial.h5")), comm)

    def check():
        with FieldFile(path, require=("density",)) as f, h5py.File(ref) as s:
            for name in ("density", "velocity"):
                assert f.h5[name].is_virtual
                diff = _max_rel(f.h5[name][:], s[name][:])
                assert diff <= 1e-5, (name, diff)
            assert int(f.info.attrs["ranks"]) == r
            peaks = np.asarray(f.info.attrs["peak_rss_bytes"])
            assert peaks.shape == (r,) and np.all(peaks > 0)
            assert np.asarray(s.attrs["peak_rss_bytes"]).shape == (1,)
        assert sorted(os.listdir(parts_dir(path))) == [f"rank-{i:04d}.h5" for i in range(r)]
    _on_root(comm, check)


def test_redshift_list_distributed_equals_single_redshift_runs(shared):
    comm, d = shared["comm"], shared["dir"]
    base = dict(grid=N, box_size=BOX, seed=5, lpt_only=True)
    paths = simulate(SimulateConfig(redshifts=(0.0, 0.5, 1.0), out=os.path.join(d, "snap_z{z}.h5"), **base), comm)
    assert [os.path.basename(p) for p in paths] == ["snap_z0.h5", "snap_z0.5.h5", "snap_z1.h5"]
    (single,) = simulate(SimulateConfig(redshift=0.5, out=os.path.join(d, "single.h5"), **base), comm)
    (serial,) = _serial(SimulateConfig(redshift=1.0, out=os.path.join(d, "serial1.h5"), **base), comm)

    def check():
        with h5py.File(paths[1]) as a, h5py.File(single) as b:
            assert a.attrs["redshift"] == 0.5
            for name in ("density", "velocity"):
                assert _max_rel(a[name][:], b[name][:]) <= 1e-6
        with h5py.File(paths[2]) as a, h5py.File(serial) as b:
            assert a.attrs["redshift"] == 1.0
            for name in ("density", "velocity"):
                assert _max_rel(a[name][:], b[name][:]) <= 1e-5
    _on_root(comm, check)


def test_paint_reads_the_distributed_output(shared):
    """paint (serial and on R ranks) of the virtual-dataset master = whole-box paint of the serial file."""
    from mpi4py import MPI
    from halopaint.model import ModelBundle
    from halopaint.paint import paint, paint_whole_box
    comm, d = shared["comm"], shared["dir"]
    n = 30                                               # voxel 4 Mpc/h, as the random bundle's metadata
    model = os.path.join(d, "model.pt")
    if comm.Get_rank() == 0:
        random_bundle(n_bins=1, seed=2).save(model)
    base = dict(grid=n, box_size=4.0 * n, seed=9, lpt_only=True)
    (dist,) = simulate(SimulateConfig(out=os.path.join(d, "paint_in.h5"), **base), comm)
    (ref_in,) = _serial(SimulateConfig(out=os.path.join(d, "paint_ref.h5"), **base), comm)
    out = os.path.join(d, "painted.h5")
    paint(PaintConfig(model=model, density=dist, out=out, kernels="reference"), comm)
    serial_out = os.path.join(d, "painted_serial.h5")
    if comm.Get_rank() == 0:
        paint(PaintConfig(model=model, density=dist, out=serial_out, kernels="reference"), MPI.COMM_SELF)
    comm.Barrier()

    def check():
        with FieldFile(ref_in) as f:
            reference = paint_whole_box(ModelBundle.load(model), f.read_density())
        for path in (out, serial_out):
            with FieldFile(path, require=("halos",)) as f:
                assert np.abs(f.read_halos() - reference).max() <= 1e-4 * np.abs(reference).max()
    _on_root(comm, check)


def test_distributed_power_spectrum_matches_linear_theory(shared):
    """P(k) (CIC-compensated) of 4 seeds at z = 0.5, 1000 Mpc/h, N = 32: every bin of k ≤ 0.041 h/Mpc
    within 3σ of P_lin D² (σ = P/√(n_modes · 4)) and χ²/bin < 3."""
    from halopaint.analysis.spectra import power_spectrum
    from halopaint.sim.cosmology import LinearCosmology
    comm, d = shared["comm"], shared["dir"]
    seeds, z, box = (1, 2, 3, 4), 0.5, 1000.0
    paths = [simulate(SimulateConfig(grid=32, box_size=box, seed=s, lpt_only=True, redshift=z,
                                     out=os.path.join(d, f"pk{s}.h5")), comm)[0] for s in seeds]

    def check():
        ratios = []
        for path in paths:
            with h5py.File(path) as f:
                delta = f["density"][:].astype(np.float64) - 1
                cosmo = FieldFile(path).info.cosmology
            ps = power_spectrum(delta, box, mas="cic")
            sel = ps.k <= 6.5 * 2 * np.pi / box
            lin = LinearCosmology(cosmo)
            ratios.append(ps.power[sel] / lin.power(ps.k[sel], a=1 / (1 + z)))
            nmodes = ps.nmodes[sel]
        mean = np.mean(ratios, axis=0)
        sigma = 1 / np.sqrt(nmodes * len(seeds))
        assert np.all(np.abs(mean - 1) < 3 * sigma), (mean, sigma)
        assert np.mean(((mean - 1) / sigma) ** 2) < 3, (mean, sigma)
    _on_root(comm, check)


@pytest.mark.parametrize("n", [12, 13])
def test_slab_fft_equals_numpy_rfftn(shared, n):
    """Each rank's y-slab of the forward transform = those rows of numpy's rfftn; backward round trips."""
    from halopaint.sim.slabfft import SlabFFT
    comm = shared["comm"]
    field = np.random.default_rng(n).standard_normal((n, n, n)).astype(np.float32)
    ref = np.fft.rfftn(field.astype(np.float64))
    fft = SlabFFT(n, comm, chunk=2)                      # small chunks: several transposes per call
    spec = fft.forward(np.ascontiguousarray(field[fft.x0:fft.x1]))
    assert spec.shape == (n, fft.y1 - fft.y0, n // 2 + 1) and spec.dtype == np.complex64
    assert np.abs(spec - ref[:, fft.y0:fft.y1]).max() <= 1e-5 * np.abs(ref).max()
    back = fft.backward(spec)
    assert np.abs(back - field[fft.x0:fft.x1]).max() <= 1e-5 * np.abs(field).max()


def test_distributed_cic_equals_serial_cic(shared):
    """Random particles (some on the box faces and slab boundaries) deposited on R ranks, each rank
    holding a different share of them = one-process CIC of all of them."""
    from halopaint.sim.assign import SlabMesh
    comm, n, box = shared["comm"], 11, 50.0
    rng = np.random.default_rng(4)
    pos = rng.random((5000, 3)) * box
    pos[:4, 0] = [0.0, box * (1 - 1e-12), box / n * 3.5, box / n * 4.0]
    vel = rng.normal(0, 100, (5000, 3))
    serial = SlabMesh(n, box)
    serial.deposit(pos, vel)
    rho_ref, v_ref = serial.finish(5000)
    mesh = SlabMesh(n, box, comm)
    share = np.array_split(np.arange(5000), comm.Get_size())[comm.Get_rank()]
    for block in np.array_split(share, 3):               # every rank deposits the same number of times
        mesh.deposit(pos[block], vel[block])
    rho, v = mesh.finish(5000)
    np.testing.assert_allclose(rho, rho_ref[mesh.g0:mesh.g1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(v, v_ref[:, mesh.g0:mesh.g1], rtol=1e-9, atol=1e-9)
    assert comm.allreduce(float(rho.sum(dtype=np.float64))) == pytest.approx(n**3)
