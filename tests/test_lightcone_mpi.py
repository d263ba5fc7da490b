"""The light cone on R MPI ranks (CI: mpiexec -n 2 and -n 3) against the same build on one rank.

Both snapshot blends (the linear blend's draws belong to (plane, replica), not ranks). Criteria: maps
within 1e-6 of the one-rank maps (float64 sums in another order, stored float32); the
catalogue (positions, velocities from the density files, masses, z_obs) identical row for row after
sorting (its random streams belong to x-planes, not ranks), read through the master's virtual datasets
over the per-rank part files.
"""

import os

import h5py
import numpy as np
import pytest

pytest.importorskip("healpy")

from conftest import mpi_shared_dir  # noqa: E402
from halopaint import lightcone  # noqa: E402
from halopaint.config import Cosmology, LightconeConfig, default_mass_bin_edges  # noqa: E402
from halopaint.fields import standard_attrs, write_field  # noqa: E402


@pytest.fixture(scope="module")
def shared_dir():
    from mpi4py import MPI
    comm = MPI.COMM_WORLD

    def populate(d):
        rng = np.random.default_rng(21)
        for name, z in (("a", 0.0), ("b", 0.03)):
            halos = rng.gamma(2.0, 0.5, (2, 17, 17, 17)).astype(np.float32)    # 17 planes: uneven slabs
            write_field(os.path.join(d, f"{name}.h5"), standard_attrs(
                68.0, z, Cosmology(), mass_bin_edges=default_mass_bin_edges()[:3]), halos=halos)
            velocity = rng.normal(scale=300.0, size=(3, 17, 17, 17)).astype(np.float32)
            write_field(os.path.join(d, f"{name}-dens.h5"), standard_attrs(68.0, z, Cosmology()),
                        density=np.ones((17, 17, 17)), extra={"velocity": velocity})

    with mpi_shared_dir(comm, "halopaint-lc-", populate) as d:
        yield d, comm


def _read(path):
    with h5py.File(path) as f:
        cat = {k: f[f"catalogue/{k}"][:] for k in lightcone.CATALOGUE_COLUMNS}
        order = np.lexsort([cat["ra"], cat["chi"]])
        return f["maps"][:], {k: v[order] for k, v in cat.items()}, int(f.attrs["ranks"])


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("blend", ["linear", "nearest"])
def test_distributed_lightcone_equals_one_rank(shared_dir, monkeypatch, blend):
    from mpi4py import MPI
    d, comm = shared_dir
    monkeypatch.setattr(lightcone.maps, "REDUCE_CHUNK", 10_000)      # the maps are summed in many chunks
    size = comm.Get_size()
    common = dict(inputs=(os.path.join(d, "a.h5"), os.path.join(d, "b.h5")),
                  densities=(os.path.join(d, "a-dens.h5"), os.path.join(d, "b-dens.h5")),
                  velocity_dispersion=(50.0, 80.0), z_min=0.005, z_max=0.05, shells=3,
                  nside=16, observer=(3.0, -5.0, 40.0), subsample=2, catalogue=True, seed=4, figure=False,
                  snapshot_blend=blend, planes_per_read=2)
    one = os.path.join(d, f"one-{size}-{blend}.h5")
    many = os.path.join(d, f"many-{size}-{blend}.h5")
    if comm.Get_rank() == 0:
        lightcone.build(LightconeConfig(out=one, **common), comm=MPI.COMM_SELF, progress=False)
    comm.Barrier()
    summary = lightcone.build(LightconeConfig(out=many, **common), comm=comm, progress=False)
    assert (summary is None) == (comm.Get_rank() != 0)
    comm.Barrier()
    if comm.Get_rank() == 0:
        maps1, cat1, r1 = _read(one)
        maps_r, cat_r, rr = _read(many)
        assert (r1, rr) == (1, size)
        with h5py.File(many) as f:
            assert f["catalogue/ra"].is_virtual and f.attrs["complete"] and f.attrs["snapshot_choice"] == blend
            fraction = f["shells/snapshot_fraction"][:]
        with h5py.File(one) as f:
            assert np.array_equal(f["shells/snapshot_fraction"][:], fraction)
        if blend == "linear":                       # the shells between z = 0 and 0.03 mix both snapshots
            assert np.all((fraction[:2] > 0) & (fraction[:2] < 1))
        assert np.abs(maps_r - maps1).max() <= 1e-6 * maps1.max()
        assert len(cat1["ra"]) > 1000
        for k in lightcone.CATALOGUE_COLUMNS:
            assert np.array_equal(cat1[k], cat_r[k]), k
