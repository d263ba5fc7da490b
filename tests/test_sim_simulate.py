"""`halopaint simulate` end to end: file contract, recipe attrs, determinism, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from halopaint.cli import main
from halopaint.config import DensityRecipe, SimulateConfig
from halopaint.errors import HalopaintError
from halopaint.simulation import run_nbody
from halopaint.fields import FieldFile, read_info
from halopaint.simulation import simulate, validate_config

SMALL = ["--grid", "8", "--box", "64", "--particles-per-side", "16", "--pm-steps", "4"]


def _run(argv):
    try:
        return main(["simulate", "--quiet"] + argv)
    except SystemExit as exc:
        return exc.code


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    paths = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        paths[name] = str(d / f"{name}.h5")
        assert _run(SMALL + ["--seed", str(seed), "--out", paths[name]]) == 0
    paths["lpt"] = str(d / "lpt.h5")
    assert _run(SMALL + ["--seed", "5", "--lpt-only", "--out", paths["lpt"]]) == 0
    return paths


def test_file_contract_and_attrs(small_runs):
    with FieldFile(small_runs["a"], require=("density", "halos")) as f:
        info = f.info
        assert info.grid == 8 and info.n_bins == 4 and info.box_size == 64.0
        np.testing.assert_allclose(info.mass_bin_edges, np.logspace(12, 14, 5))
        rho = f.read_density()
        assert abs(rho.mean(dtype=np.float64) - 1) < 1e-5 and rho.min() >= 0
        halos = f.read_halos()
        cat_mass = f.h5["catalog/mass"][:]
        cat_pos = f.h5["catalog/pos"][:]
        nbody = f.h5["nbody_density"][:]
        vel, lpt_vel, cat_vel = f.h5["velocity"][:], f.h5["lpt_velocity"][:], f.h5["catalog/vel"][:]
        attrs = info.attrs
    assert DensityRecipe.from_json(attrs["density_recipe"]) == DensityRecipe(particles_per_voxel=2)
    assert attrs["seed"] == 5 and attrs["n_particles_side"] == 16 and attrs["pm_steps"] == 4
    assert attrs["particle_mass"] == pytest.approx(0.315 * 2.77536627e11 * 4.0**3)
    assert json.loads(attrs["cosmology"])["sigma8"] == 0.81
    assert np.all(cat_mass >= 10 * attrs["particle_mass"])
    assert np.all((cat_pos >= 0) & (cat_pos < 64))
    assert nbody.shape == (8, 8, 8) and abs(nbody.mean(dtype=np.float64) - 1) < 1e-5
    assert nbody.std() > rho.std()                     # N-body is more clustered than 2LPT
    # velocities [km/s]: N-body in /velocity, 2LPT in /lpt_velocity, FoF means in /catalog/vel
    assert vel.shape == lpt_vel.shape == (3, 8, 8, 8) and vel.dtype == np.float32
    assert cat_vel.shape == (cat_mass.size, 3) and attrs["velocity_unit"] == "km/s"
    assert 50 < vel.std() < 2000 and 50 < lpt_vel.std() < 2000
    assert np.corrcoef(vel.ravel(), lpt_vel.ravel())[0, 1] > 0.5      # same large-scale flows
    assert list(attrs["peak_rss_bytes"]) and attrs["peak_rss_bytes"][0] > 0
    in_bins = ((cat_mass >= 1e12) & (cat_mass < 1e14)).sum()
    assert halos.sum() == in_bins > 0


def test_same_seed_identical_different_seed_differs(small_runs):
    with h5py.File(small_runs["a"]) as a, h5py.File(small_runs["b"]) as b, h5py.File(small_runs["c"]) as c:
        np.testing.assert_array_equal(a["density"][:], b["density"][:])
        np.testing.assert_array_equal(a["halos"][:], b["halos"][:])
        np.testing.assert_array_equal(a["catalog/pos"][:], b["catalog/pos"][:])
        assert not np.array_equal(a["density"][:], c["density"][:])
        assert not np.array_equal(a["catalog/mass"][:], c["catalog/mass"][:])


def test_lpt_only_has_the_same_density_and_no_halos(small_runs):
    info = read_info(small_runs["lpt"], require=("density",))
    assert not info.has_halos and "mass_bin_edges" not in info.attrs
    assert info.attrs["density_recipe"] == read_info(small_runs["a"]).attrs["density_recipe"]
    with h5py.File(small_runs["lpt"]) as l, h5py.File(small_runs["a"]) as a:
        np.testing.assert_array_equal(l["density"][:], a["density"][:])


@pytest.mark.parametrize("argv, message", [
    (["--grid", "4"], "--grid"),
    (["--box", "0"], "--box"),
    (["--box", "-5"], "--box"),
    (["--particles-per-side", "4"], "particles-per-side"),
    (["--mass-bin-edges", "1e13,1e12"], "strictly increasing"),
    (["--mass-bin-edges", "1e12"], "at least two"),
    (["--mass-bin-edges", "0,1e12"], "positive"),
    (["--pm-steps", "0"], "--pm-steps"),
    (["--lpt-particles-per-voxel", "0"], "lpt-particles-per-voxel"),
    (["--redshift", "-0.5"], "redshift"),
    (["--omega-b", "0.5"], "Omega_b"),
    (["--sigma8", "-1"], "sigma8"),
    (["--grid", "4096", "--box", "16384", "--lpt-only"], "GiB"),
    (["--particles-per-side", "4096"], "GiB"),
])
def test_bad_input_one_line_error_and_no_file(tmp_path, capsys, argv, message):
    out = tmp_path / "x.h5"
    assert _run(["--grid", "8", "--box", "64", "--out", str(out)] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("halopaint simulate: error:") and "\n" not in err and message in err
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output(tmp_path, capsys):
    assert _run(SMALL + ["--out", str(tmp_path / "missing" / "x.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err
    os.chmod(tmp_path, 0o500)
    try:
        if os.access(tmp_path, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        assert _run(SMALL + ["--out", str(tmp_path / "x.h5")]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        os.chmod(tmp_path, 0o700)


def test_interrupted_run_leaves_no_file(tmp_path, monkeypatch):
    import halopaint.sim.grids as grids

    def boom(*args, **kwargs):
        raise RuntimeError("killed mid-run")
    monkeypatch.setattr(grids, "ngp_counts", boom)
    out = tmp_path / "x.h5"
    with pytest.raises(RuntimeError):
        simulate(SimulateConfig(grid=8, box_size=64.0, particles_per_side=16, pm_steps=2, out=str(out)), quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_validate_config_direct():
    validate_config(SimulateConfig())
    with pytest.raises(HalopaintError, match="a_initial"):
        validate_config(SimulateConfig(a_initial=1.5))
    with pytest.raises(HalopaintError, match="seed"):
        validate_config(SimulateConfig(seed=-1))


def test_cli_help_lists_the_issue_options():
    out = subprocess.run([sys.executable, "-m", "halopaint.cli", "simulate", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for opt in ("--grid", "--box", "--seed", "--out", "--lpt-only", "--lpt-particles-per-voxel",
                "--particles-per-side", "--pm-steps", "--redshift", "--mass-bin-edges", "--omega-m",
                "--omega-b", "--h", "--sigma8", "--n-s"):
        assert opt in out


def test_nbody_halos_independent_of_thread_count():
    import numba
    import torch

    from halopaint.sim.cosmology import LinearCosmology
    config = SimulateConfig(grid=8, box_size=64.0, particles_per_side=16, pm_steps=4, seed=9)
    old_t, old_n = torch.get_num_threads(), numba.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            results.append(run_nbody(config, LinearCosmology(config.cosmology)))
    finally:
        torch.set_num_threads(old_t)
        numba.set_num_threads(old_n)
    (cat1, rho1), (cat2, rho2) = [(r.catalog, r.density) for r in results]
    np.testing.assert_array_equal(rho1, rho2)
    np.testing.assert_array_equal(results[0].velocity, results[1].velocity)
    np.testing.assert_array_equal(cat1.vel, cat2.vel)
    np.testing.assert_array_equal(cat1.pos, cat2.pos)
    np.testing.assert_array_equal(cat1.mass, cat2.mass)
