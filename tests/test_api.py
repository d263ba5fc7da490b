"""The Python API (halopaint.api): equal to the CLI on the same input, ValueError on bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import halopaint
from halopaint.cli import main

BOX, N = 128.0, 32


def _cli(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.fixture(scope="module")
def density_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "dens.h5"
    assert _cli(["simulate", "--quiet", "--lpt-only", "--grid", str(N), "--box", str(BOX), "--seed", "41",
                 "--out", str(path)]) == 0
    return path


def test_import_is_cheap_and_lists_the_api():
    assert {"paint_density", "load_model", "simulate"} <= set(dir(halopaint))
    assert halopaint.__version__ == "0.2.0"
    with pytest.raises(AttributeError):
        halopaint.no_such_function


def test_simulate_equals_the_cli(density_file):
    sim = halopaint.simulate(grid=N, box_size=BOX, seed=41)
    with h5py.File(density_file, "r") as f:
        np.testing.assert_array_equal(sim["density"], f["density"][...])
        assert sim["attrs"]["seed"] == f.attrs["seed"] and sim["attrs"]["complete"]


@pytest.mark.parametrize("kernels", ["cpu", "reference"])
def test_paint_density_equals_the_cli(density_file, tmp_path, kernels):
    out = tmp_path / "painted.h5"
    assert _cli(["paint", "--quiet", "--model", "default", "--kernels", kernels, "--density",
                 str(density_file), "--out", str(out)]) == 0
    with h5py.File(density_file, "r") as f:
        rho = f["density"][...]
    with h5py.File(out, "r") as f:
        cli = f["halos"][...]
    api = halopaint.paint_density(rho, box_size=BOX, kernels=kernels)
    assert api.shape == cli.shape and api.dtype == np.float32
    rel = float(np.abs(api - cli).max() / np.abs(cli).max())
    assert rel <= 1e-6, rel
    np.testing.assert_array_equal(rho, halopaint.simulate(grid=N, box_size=BOX, seed=41)["density"])


def test_paint_density_mass_bins_and_bundle(density_file):
    with h5py.File(density_file, "r") as f:
        rho = f["density"][...]
    bundle = halopaint.load_model("default")
    every = halopaint.paint_density(rho, BOX, model=bundle)
    some = halopaint.paint_density(rho, BOX, mass_bins=[1, 2])
    assert every.shape == (bundle.n_bins, N, N, N)
    np.testing.assert_allclose(some, every[1:3], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("rho, box, fragment", [
    (np.ones((8, 8)), 32.0, "3D"),
    (np.ones((8, 8, 9)), 32.0, "cubic"),
    (np.full((32,) * 3, np.inf), 128.0, "NaN/Inf"),
    (-np.ones((32,) * 3), 128.0, "negative"),
    (np.ones((16,) * 3), 64.0, "too small"),
    (np.ones((32,) * 3), 100.0, "voxel size"),
    (np.ones((32,) * 3), -128.0, "box_size"),
    (np.ones((32,) * 3, complex), 128.0, "real"),
])
def test_paint_density_refuses_bad_input(rho, box, fragment):
    with pytest.raises(ValueError, match=fragment):
        halopaint.paint_density(rho, box_size=box)


def test_bad_options_and_models(tmp_path):
    rho = np.ones((28,) * 3, np.float32)
    with pytest.raises(ValueError, match="mass_bins"):
        halopaint.paint_density(rho, 112.0, mass_bins=[7])
    with pytest.raises(ValueError, match="mass_bins"):
        halopaint.paint_density(rho, 112.0, mass_bins="some")
    with pytest.raises(ValueError, match="no such model"):
        halopaint.load_model(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a halopaint model"):
        halopaint.load_model(tmp_path / "junk.pt")
    assert halopaint.paint_density(rho, 100.0, allow_mismatch=True).shape[1:] == (28, 28, 28)
    with pytest.raises(ValueError):
        halopaint.simulate(grid=0)
