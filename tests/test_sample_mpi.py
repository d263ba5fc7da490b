"""`halopaint sample` on R MPI ranks (CI: mpiexec -n 2 and -n 3) against one process: identical, bit for bit.

N = 29 gives slabs of unequal thickness for R = 2 and 3. The realization is compared with the serial pure
function `sample_counts`, the catalogue with a one-process run (same rows in the same order).
"""

from __future__ import annotations

import os
from dataclasses import replace

import h5py
import numpy as np
import pytest

from conftest import mpi_shared_dir
from halopaint.errors import HalopaintError
from halopaint.sample import SampleConfig, law_means, realization_parts_dir, sample, sample_counts
from test_sample import (expected_field, make_count_model, run_cli, write_density_velocity, write_painted)

N = 29
SEED = 17
N_CELLS = 28                    # 7 cells of 4 voxels; the slabs of 2 and 3 ranks (14 | 10, 9, 9) cut cells


def cell_count_model():
    """make_count_model with a concave mean map in bins 0 and 2, rescaled in cells of 4³ voxels."""
    knots, values = [0.1, 0.5, 1.0, 2.0], [0.15, 0.4, 0.55, 0.6]
    return replace(make_count_model(), mean_mu=[knots, [], knots], mean_n=[values, [], values], mean_cell=4)


def joint_count_model():
    """cell_count_model with a cross-bin law: bin 2's halos lower bins 0 and 1, bin 1's lower bin 0."""
    return replace(cell_count_model(), exclusion=[[1.0, 0.6, 0.3], [1.0, 1.0, 0.5], [1.0, 1.0, 1.0]])


def capped_count_model():
    """cell_count_model with its means capped inside the cells (bins 1 and 2, a cap the densest voxels pass)."""
    return replace(cell_count_model(), mean_cap=[None, 0.6, 0.25])


@pytest.fixture(scope="module")
def shared():
    from mpi4py import MPI
    comm = MPI.COMM_WORLD

    def populate(d):
        write_painted(os.path.join(d, "p.h5"), expected_field(3, N, seed=2, means=(0.8, 0.3, 0.1)),
                      make_count_model())
        write_density_velocity(os.path.join(d, "d.h5"), N)
        sample(SampleConfig(painted=os.path.join(d, "p.h5"), out=os.path.join(d, "serial.h5"), seed=SEED,
                            density=os.path.join(d, "d.h5"), catalogue=True), MPI.COMM_SELF)
        write_painted(os.path.join(d, "cells.h5"), expected_field(3, N_CELLS, seed=4, means=(0.8, 0.3, 0.1)),
                      cell_count_model())
        write_painted(os.path.join(d, "capped.h5"), expected_field(3, N_CELLS, seed=6, means=(0.8, 0.3, 0.1)),
                      capped_count_model())
        write_painted(os.path.join(d, "joint.h5"), expected_field(3, N_CELLS, seed=5, means=(0.8, 0.3, 0.1)),
                      joint_count_model())

    with mpi_shared_dir(comm, "halopaint-sample-mpi-", populate) as d:
        yield dict(dir=d, comm=comm, painted=os.path.join(d, "p.h5"), density=os.path.join(d, "d.h5"),
                   serial=os.path.join(d, "serial.h5"))


def _read(path):
    with h5py.File(path, "r") as f:
        out = {"halos": f["halos"][...]}
        if "catalogue" in f:
            out.update({k: f["catalogue"][k][...] for k in f["catalogue"]})
        out["ranks"] = int(f.attrs["ranks"])
    return out


@pytest.mark.mpi(min_size=2)
def test_distributed_realization_and_catalogue_equal_one_process(shared):
    comm = shared["comm"]
    out = os.path.join(shared["dir"], f"r{comm.Get_size()}.h5")
    sample(SampleConfig(painted=shared["painted"], out=out, seed=SEED, density=shared["density"], catalogue=True),
           comm)
    got, ref = _read(out), _read(shared["serial"])
    with h5py.File(shared["painted"], "r") as f:
        mu = f["halos"][...]
    np.testing.assert_array_equal(got["halos"], sample_counts(mu, SEED, make_count_model()))
    assert got["ranks"] == comm.Get_size() and ref["ranks"] == 1
    for key in ("halos", "pos", "vel", "mass", "mass_bin"):
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
    assert sorted(os.listdir(realization_parts_dir(out))) == [f"rank-{r:04d}.h5" for r in range(comm.Get_size())]


def _sample_on_all_ranks(shared, name: str, tag: str, **config):
    """Sample the shared painted file `name`.h5 on every rank into `tag`-rR.h5 → (its /halos, the painted μ)."""
    comm = shared["comm"]
    painted = os.path.join(shared["dir"], f"{name}.h5")
    out = os.path.join(shared["dir"], f"{tag}-r{comm.Get_size()}.h5")
    sample(SampleConfig(painted=painted, out=out, seed=SEED, **config), comm)
    with h5py.File(painted, "r") as f:
        return _read(out)["halos"], f["halos"][...]


@pytest.mark.mpi(min_size=2)
def test_a_mean_map_in_cells_cut_by_the_slabs_draws_the_same_realization(shared):
    """Each rank reads the whole cells its slab cuts: the counts equal the whole-box draw on any R."""
    halos, mu = _sample_on_all_ranks(shared, "cells", "cells")
    np.testing.assert_array_equal(halos, sample_counts(mu, SEED, cell_count_model()))


@pytest.mark.mpi(min_size=2)
def test_a_mean_cap_in_cells_cut_by_the_slabs_draws_the_same_realization(shared):
    halos, mu = _sample_on_all_ranks(shared, "capped", "capped")
    law = capped_count_model()
    np.testing.assert_array_equal(halos, sample_counts(mu, SEED, law))
    assert law_means(mu[2], law, 2).max() <= 0.25 + 1e-12 < mu[2].max()


@pytest.mark.mpi(min_size=2)
def test_the_cross_bin_law_cut_by_the_slabs_draws_the_same_realization(shared):
    """Heaviest bin first, lighter means lowered where it fell, kept in 4³ cells the slabs cut: any R draws the
    whole-box realization, and --mass-bins 0 draws bin 0 as the full draw does (it still sees bins 1, 2)."""
    halos, mu = _sample_on_all_ranks(shared, "joint", "joint")
    whole = sample_counts(mu, SEED, joint_count_model())
    np.testing.assert_array_equal(halos, whole)
    bin0, _ = _sample_on_all_ranks(shared, "joint", "joint0", mass_bins=(0,))
    np.testing.assert_array_equal(bin0, whole[:1])
    assert not np.array_equal(whole[0], sample_counts(mu[:1], SEED, joint_count_model(), bins=[0])[0])


@pytest.mark.mpi(min_size=2)
def test_bad_values_on_one_rank_are_refused_on_every_rank(shared):
    """A NaN in the last rank's planes only: every rank raises the same collective error, no output."""
    comm = shared["comm"]
    bad = os.path.join(shared["dir"], "bad.h5")
    if comm.Get_rank() == 0:
        mu = expected_field(3, N, seed=2)
        mu[2, N - 1, 3, 3] = np.nan
        write_painted(bad, mu, make_count_model())
    comm.Barrier()
    out = os.path.join(shared["dir"], f"bad-out-{comm.Get_size()}.h5")
    with pytest.raises(HalopaintError, match="NaN/Inf") as exc:
        sample(SampleConfig(painted=bad, out=out, seed=1), comm)
    assert getattr(exc.value, "collective", False)
    comm.Barrier()
    assert not os.path.exists(out)


def test_cli_under_mpiexec_equals_one_process(tmp_path):
    """The command as a user runs it: `mpiexec -n R halopaint sample …` == `halopaint sample …`, R = 2, 3."""
    import shutil
    if shutil.which("mpiexec") is None:
        pytest.skip("no mpiexec on PATH")
    painted = write_painted(tmp_path / "p.h5", expected_field(3, N, seed=3), make_count_model())
    dens = write_density_velocity(tmp_path / "d.h5", N)
    common = ["--seed", "5", "--density", dens, "--catalogue"]
    res = run_cli(painted, "--out", str(tmp_path / "one.h5"), *common)
    assert res.returncode == 0, res.stderr
    a = _read(tmp_path / "one.h5")
    for ranks in (2, 3):
        res = run_cli(painted, "--out", str(tmp_path / f"r{ranks}.h5"), *common, ranks=ranks)
        assert res.returncode == 0, res.stderr
        b = _read(tmp_path / f"r{ranks}.h5")
        assert b["ranks"] == ranks
        for key in ("halos", "pos", "vel", "mass", "mass_bin"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{key}, {ranks} ranks")
    res = run_cli(painted, "--out", str(tmp_path / "one.h5"), *common, ranks=3)   # exists, no --force
    errors = [line for line in res.stderr.splitlines() if "error:" in line]
    assert res.returncode != 0 and len(errors) == 1 and "--force" in errors[0], res.stderr
