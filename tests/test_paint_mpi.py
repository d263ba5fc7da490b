"""The paint driver on R MPI ranks (CI: mpiexec -n 2 and -n 3) against the single-process whole-box paint.

Criterion: max|painted − whole-box| ≤ 1e-6 · max|whole-box| on N = 61 (slabs of uneven thickness).
"""

import os

import numpy as np
import pytest

from conftest import mpi_shared_dir, random_bundle, write_density_file
from halopaint.config import PaintConfig
from halopaint.errors import HalopaintError
from halopaint.fields import FieldFile
from halopaint.model import GeneratorSpec, Generator, ModelBundle
from halopaint.paint import paint, paint_whole_box, parts_dir

N = 61


@pytest.fixture(scope="module")
def shared_box():
    """One directory every rank sees (rank 0 makes it), a 1-bin bundle, a 61³ density, the reference."""
    from mpi4py import MPI
    comm = MPI.COMM_WORLD

    def populate(d):
        random_bundle(n_bins=1, seed=7).save(os.path.join(d, "model.pt"))
        write_density_file(os.path.join(d, "density.h5"), n=N, seed=13)

    with mpi_shared_dir(comm, "halopaint-mpi-", populate) as d:
        with FieldFile(os.path.join(d, "density.h5")) as f:
            reference = paint_whole_box(ModelBundle.load(os.path.join(d, "model.pt")), f.read_density())
        yield dict(dir=d, comm=comm, model=os.path.join(d, "model.pt"), density=os.path.join(d, "density.h5"),
                   reference=reference)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("tile", [None, (5, 61, 61), (7, 20, 33)])
def test_distributed_paint_equals_whole_box_paint(shared_box, tile):
    comm = shared_box["comm"]
    name = "auto" if tile is None else "x".join(map(str, tile))
    out = os.path.join(shared_box["dir"], f"out-{comm.Get_size()}-{name}.h5")
    paint(PaintConfig(model=shared_box["model"], density=shared_box["density"], out=out, kernels="reference",
                      tile=tile), comm)
    with FieldFile(out, require=("halos",)) as f:
        halos = f.read_halos()
        assert int(f.info.attrs["ranks"]) == comm.Get_size()
    ref = shared_box["reference"]
    assert np.abs(halos - ref).max() <= 1e-6 * np.abs(ref).max()
    parts = sorted(os.listdir(parts_dir(out)))
    assert parts == [f"rank-{r:04d}.h5" for r in range(comm.Get_size())]


@pytest.mark.mpi(min_size=2)
def test_slabs_thinner_than_the_ghosts_are_refused_on_every_rank(shared_box):
    """g = 14 (15³ Inception kernels) on N = 25 allows one rank only: every rank raises, collectively."""
    comm = shared_box["comm"]
    spec = GeneratorSpec(big_kernel=15, small_kernel=3)
    bundle = random_bundle(n_bins=1)
    wide = ModelBundle.from_generators([Generator(spec)], bundle.metadata)
    assert wide.ghost_width == 14
    path = os.path.join(shared_box["dir"], "wide.pt")
    dens = os.path.join(shared_box["dir"], "d25.h5")
    if comm.Get_rank() == 0:
        wide.save(path)
        write_density_file(dens, n=25, seed=1)
    comm.Barrier()
    out = os.path.join(shared_box["dir"], "wide-out.h5")
    with pytest.raises(HalopaintError, match="thinner than the ghost width") as err:
        paint(PaintConfig(model=path, density=dens, out=out, kernels="reference"), comm)
    assert getattr(err.value, "collective", False)
    comm.Barrier()
    assert not os.path.exists(out)


@pytest.mark.mpi(min_size=2)
def test_bad_density_values_on_one_rank_fail_every_rank(shared_box):
    """A NaN only in the last rank's planes: every rank raises the same collective error."""
    comm = shared_box["comm"]
    dens = os.path.join(shared_box["dir"], "nan.h5")
    if comm.Get_rank() == 0:
        from conftest import lognormal_density
        rho = lognormal_density(N, 3)
        rho[N - 1, 2, 2] = np.nan
        write_density_file(dens, n=N, density=rho)
    comm.Barrier()
    out = os.path.join(shared_box["dir"], "nan-out.h5")
    with pytest.raises(HalopaintError, match="1 NaN/Inf values \\(first at x-plane 60\\)") as err:
        paint(PaintConfig(model=shared_box["model"], density=dens, out=out, kernels="reference"), comm)
    assert getattr(err.value, "collective", False)
    comm.Barrier()
    assert not os.path.exists(out)


@pytest.mark.mpi(min_size=2)
def test_node_local_rank_from_shared_memory_split():
    """All CI ranks share one node: local ranks are 0..R−1 and agree with the launcher's environment."""
    from mpi4py import MPI
    from halopaint.launch import discover, mpi_local_placement
    comm = MPI.COMM_WORLD
    local_rank, local_size = mpi_local_placement(comm)
    assert local_size == comm.Get_size()
    assert sorted(comm.allgather(local_rank)) == list(range(comm.Get_size()))
    info = discover()
    if info.launcher != "single":
        assert (info.local_rank, info.local_world_size) == (local_rank, local_size)
