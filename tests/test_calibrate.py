"""Mean-count calibration (engine/calibrate.py, jobs/calibrate_counts.py): exact scaling, fit, bad input."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import random_bundle
from halopaint.calibrate import CalibrationError, calibrate_counts, scale_counts
from halopaint.fields import FieldFile
from halopaint.model import ModelBundle
from halopaint.paint import paint_whole_box
from train_data import write_training_file

SCRIPT = str(Path(__file__).resolve().parents[1] / "jobs" / "calibrate_counts.py")


def _bundle_over(edges, bins, seed=5):
    """A random bundle covering file bins `bins` (adjacent) of a file with mass-bin `edges`."""
    whole = random_bundle(n_bins=4, seed=seed)
    meta = dataclasses.replace(whole.metadata, mass_bin_edges=[float(e) for e in edges[bins[0]:bins[-1] + 2]])
    return ModelBundle(spec=whole.spec, generators=whole.generators[:len(bins)], metadata=meta)


def test_scaling_the_output_layer_scales_the_painted_field_exactly():
    bundle = random_bundle(n_bins=2, seed=1)
    rho = np.random.default_rng(0).lognormal(0, 0.5, (12, 12, 12)).astype(np.float32)
    scaled = scale_counts(bundle, [0.37, 2.5], {"why": "test"})
    before, after = paint_whole_box(bundle, rho), paint_whole_box(scaled, rho)
    assert before.max() > 0
    np.testing.assert_allclose(after[0], 0.37 * before[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(after[1], 2.5 * before[1], rtol=1e-5, atol=1e-7)
    assert scaled.metadata.training["count_calibration"] == {"factors": [0.37, 2.5], "why": "test"}
    again = scale_counts(scaled, [1.0, 1.0])                       # history kept when calibrating twice
    assert again.metadata.training["count_calibration"]["previous"]["factors"] == [0.37, 2.5]
    for bad in ([1.0], [1.0, 0.0], [1.0, -2.0], [1.0, float("nan")]):
        with pytest.raises(CalibrationError):
            scale_counts(bundle, bad)


def test_calibration_matches_the_true_mean_on_the_calibration_data(tmp_path):
    paths = [write_training_file(tmp_path / f"t{s}.h5", n=16, seed=s) for s in (1, 2)]
    with FieldFile(paths[0]) as f:
        edges = f.info.mass_bin_edges
    bundle = _bundle_over(edges, [1, 2])                           # a sub-range of the file's bins
    calibrated, true, painted = calibrate_counts(bundle, paths)
    halos = np.concatenate([FieldFile(p).read_halos([1, 2]).reshape(2, -1) for p in paths], axis=1)
    np.testing.assert_allclose(true, halos.mean(axis=1), rtol=1e-12)
    after = np.mean([paint_whole_box(calibrated, FieldFile(p).read_density()).reshape(2, -1).mean(axis=1)
                     for p in paths], axis=0)
    np.testing.assert_allclose(after, true, rtol=1e-5)
    note = calibrated.metadata.training["count_calibration"]
    np.testing.assert_allclose(note["factors"], true / painted)
    assert [d["file"] for d in note["data"]] == ["t1.h5", "t2.h5"] and all(len(d["sha256"]) == 64
                                                                          for d in note["data"])


def test_cli_writes_a_loadable_bundle_and_refuses_bad_input(tmp_path):
    good = write_training_file(tmp_path / "t.h5", n=16, seed=3)
    with FieldFile(good) as f:
        edges = f.info.mass_bin_edges
    model = tmp_path / "m.pt"
    _bundle_over(edges, [0, 1, 2, 3]).save(model)
    out = tmp_path / "c.pt"
    res = subprocess.run([sys.executable, SCRIPT, "--model", str(model), "--data", good, "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "factor" in res.stdout and ModelBundle.load(out).n_bins == 4
    cases = {
        "voxel size": write_training_file(tmp_path / "v.h5", n=16, seed=3, voxel=2.0),
        "/halos": write_training_file(tmp_path / "h.h5", n=16, seed=3, halos=False),
        "do not contain": write_training_file(tmp_path / "b.h5", n=16, seed=3, n_bins=2),
        "no such file": str(tmp_path / "missing.h5"),
    }
    for expect, data in cases.items():
        bad = tmp_path / "bad.pt"
        res = subprocess.run([sys.executable, SCRIPT, "--model", str(model), "--data", data, "--out", str(bad)],
                             capture_output=True, text=True)
        assert res.returncode == 2 and expect in res.stderr, (expect, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and not bad.exists()


def test_scaling_drops_a_count_model_that_would_go_stale(tmp_path):
    """A calibrated bundle must still load: the count model (fitted for the old means) is dropped, noted."""
    from halopaint.model import CountModel, generator_digest
    bundle = random_bundle(n_bins=2, seed=1)
    cm = CountModel(alpha=[[-0.2], [0.1]], mu_breaks=[[], []],
                    generator_sha256=[generator_digest(g) for g in bundle.generators])
    with_law = dataclasses.replace(bundle, metadata=dataclasses.replace(bundle.metadata, count_model=cm))
    scaled = scale_counts(with_law, [0.9, 1.1])
    assert scaled.metadata.count_model is None
    assert "refit" in scaled.metadata.training["count_calibration"]["count_model_dropped"]
    scaled.save(tmp_path / "s.pt")
    assert ModelBundle.load(tmp_path / "s.pt").metadata.count_model is None
