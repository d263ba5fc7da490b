"""halopaint.validation and the issue-21 findings that are not a single refused command line (those are in
tests/test_bad_input.py): part folders of two outputs, the cosmology mismatch recorded under
--allow-mismatch, simulate's physical ranges as functions, the attr checks, the density scan, the lock."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from mpi4py import MPI

from conftest import lognormal_density, random_bundle, write_density_file
from halopaint.config import Cosmology, DensityRecipe, PaintConfig, SimulateConfig
from halopaint.fields import FieldFile, standard_attrs, write_field
from halopaint.paint import paint, paint_whole_box, parts_dir
from halopaint.validation import (DENSITY_MAX, PHYSICAL_RANGES, DensityStats, FieldFileError, ValidationError,
                                  check_complete, check_density_stats, check_output_dir, check_output_not_input,
                                  scalar_attr, validate_simulate_config)

N = 28


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("validation")
    random_bundle(n_bins=1, seed=3).save(d / "model.pt")
    return d / "model.pt"


def _paint(model, density, out, **kw):
    paint(PaintConfig(model=str(model), density=str(density), out=str(out), kernels="reference", **kw),
          MPI.COMM_SELF)
    with FieldFile(out, require=("halos",)) as f:
        return f.read_halos(), dict(f.info.attrs)


def test_x_h5_and_x_hdf5_do_not_share_a_part_folder(model, tmp_path):
    """Finding: painting x.h5 then x.hdf5 shared x.parts/, so x.h5 (still complete) held the second run's data."""
    a = write_density_file(tmp_path / "a.h5", n=N, seed=1)
    b = write_density_file(tmp_path / "b.h5", n=N, seed=2)
    first, _ = _paint(model, a, tmp_path / "x.h5")
    second, _ = _paint(model, b, tmp_path / "x.hdf5")
    assert not np.array_equal(first, second)
    with FieldFile(tmp_path / "x.h5", require=("halos",)) as f:
        np.testing.assert_array_equal(f.read_halos(), first)     # still its own data after the second paint
    assert parts_dir(tmp_path / "x.h5") != parts_dir(tmp_path / "x.hdf5")


def test_cosmology_mismatch_is_refused_unless_allowed_then_recorded(model, tmp_path):
    from halopaint.model import ModelBundle
    from halopaint.paint import PaintError
    rho = lognormal_density(N, 4)
    attrs = standard_attrs(4.0 * N, 0.0, Cosmology(Omega_m=0.25, sigma8=0.9), seed=0,
                           density_recipe=DensityRecipe().to_json())
    write_field(tmp_path / "c.h5", attrs, density=rho)
    with pytest.raises(PaintError, match=r"cosmology differs .*Omega_m 0\.25 vs 0\.315.*--allow-mismatch"):
        _paint(model, tmp_path / "c.h5", tmp_path / "o.h5")
    halos, attrs = _paint(model, tmp_path / "c.h5", tmp_path / "o.h5", allow_mismatch=True)
    warnings = attrs["mismatch_warnings"]
    warnings = json.loads(warnings) if isinstance(warnings, str) else list(warnings)
    assert any("cosmology differs" in w and "sigma8 0.9 vs 0.81" in w for w in warnings)
    ref = paint_whole_box(ModelBundle.load(model), rho)
    assert np.abs(halos - ref).max() <= 1e-6 * np.abs(ref).max()


@pytest.mark.parametrize("field, value, option", [
    ("box_size", 1e-6, "--box"), ("box_size", 1e12, "--box"), ("box_size", float("nan"), "--box"),
    ("sigma8", 50.0, "--sigma8"), ("sigma8", 0.0, "--sigma8"), ("Omega_m", -0.3, "--omega-m"),
    ("Omega_m", 1.5, "--omega-m"), ("h", 0.0, "--h"), ("n_s", 5.0, "--n-s"), ("redshift", -1.0, "--redshift"),
    ("redshift", 100.0, "--redshift"),
])
def test_validate_simulate_config_refuses_outside_the_physical_range(field, value, option):
    cfg = SimulateConfig(grid=16)
    if field in ("box_size", "redshift"):
        cfg = replace(cfg, **{field: value})
    else:
        cfg = replace(cfg, cosmology=replace(cfg.cosmology, **{field: value}))
    lo, hi, _, _ = PHYSICAL_RANGES[field]
    with pytest.raises(ValidationError, match=rf"{option}.*\[{lo:g}, {hi:g}\]"):
        validate_simulate_config(cfg)


def test_validate_simulate_config_voxel_size_and_defaults():
    validate_simulate_config(SimulateConfig())                   # the defaults are inside every range
    validate_simulate_config(SimulateConfig(grid=64, box_size=256.0, redshift=1.0))
    with pytest.raises(ValidationError, match=r"voxel size .* 1250 Mpc/h .*\[0.05, 100\]"):
        validate_simulate_config(SimulateConfig(grid=8, box_size=10000.0))
    with pytest.raises(ValidationError, match="--omega-b 0.5 must be below --omega-m"):
        validate_simulate_config(SimulateConfig(cosmology=Cosmology(Omega_m=0.3, Omega_b=0.5)))


@pytest.mark.parametrize("value, ok", [(True, True), (np.bool_(True), True), ("False", False), ("True", False),
                                       (1, False), (np.array([True]), False), (False, False), (None, False)])
def test_complete_must_be_the_boolean_true(value, ok):
    if ok:
        check_complete(value, "f.h5")
    else:
        with pytest.raises(FieldFileError, match="f.h5"):
            check_complete(value, "f.h5")


@pytest.mark.parametrize("value", [np.array([1.0, 2.0]), "112", b"112", np.nan, np.inf, -3.0, 0.0, True])
def test_box_size_must_be_a_positive_finite_scalar(value):
    with pytest.raises(FieldFileError, match="'box_size'"):
        scalar_attr({"box_size": value}, "box_size", "f.h5", positive=True)
    assert scalar_attr({"box_size": np.float64(112.0)}, "box_size", "f.h5", positive=True) == 112.0


def test_density_scan_merges_over_slabs_and_checks_mean_and_range():
    rho = lognormal_density(16, 1)
    whole = DensityStats().add(rho)
    halves = DensityStats().add(rho[:7], 0) + DensityStats().add(rho[7:], 7)
    assert whole.count == halves.count and np.isclose(whole.total, halves.total, rtol=1e-12)
    check_density_stats(halves, "d.h5")
    bad = rho.copy()
    bad[9, 1, 1] = -1
    st = DensityStats().add(bad[:7], 0) + DensityStats().add(bad[7:], 7)
    assert st.first_bad == 9
    with pytest.raises(ValidationError, match="1 negative values .*x-plane 9"):
        check_density_stats(st, "d.h5")
    for field, match in ((rho * 10, "mean 10"), (rho * 0, "mean 0"), (np.where(rho > 2, DENSITY_MAX * 10, rho),
                                                                     "voxel of")):
        with pytest.raises(ValidationError, match=match):
            check_density_stats(DensityStats().add(field.astype(np.float32)), "d.h5")


def test_outputs_never_an_input_and_directory_checks(tmp_path):
    inp = tmp_path / "in.h5"
    inp.write_bytes(b"x")
    with pytest.raises(ValidationError, match="would overwrite the input"):
        check_output_not_input([tmp_path / "sub" / ".." / "in.h5"], [inp])
    with pytest.raises(ValidationError, match="side file in.h5"):
        check_output_not_input([tmp_path / "out.h5", inp], [inp])
    check_output_not_input([tmp_path / "out.h5"], [inp])
    with pytest.raises(ValidationError, match="directory of the input"):
        check_output_dir(tmp_path, [inp])
    with pytest.raises(ValidationError, match="not a directory"):
        check_output_dir(inp)
    assert check_output_dir(tmp_path / "new") == tmp_path / "new" and not (tmp_path / "new").exists()
