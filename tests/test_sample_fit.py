"""`jobs/fit_count_model.py` end to end on synthetic N-body-like boxes with a known count law, mass slope
and velocity law (gain, infall, dispersion): each is recovered, the bundle keeps its weights and paints identically."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import lognormal_density, random_bundle
from halopaint.config import Cosmology, DensityRecipe
from halopaint.fields import standard_attrs, write_field
from halopaint.model import CountModel, ModelBundle, generator_digest
from halopaint.paint import paint_whole_box
from halopaint.sample import catalogue_plane, sample_counts
from test_sample import smooth_velocity

N, BOX = 26, 104.0
LAW = CountModel(alpha=[[-0.3], [0.6]], mu_breaks=[[], []], mass_slope=[0.9, 1.3],
                 velocity_dispersion=[120.0, 60.0], velocity_bias=[1.2, 0.9], velocity_infall=[300.0, -150.0])


def _fit_script():
    path = Path(__file__).resolve().parents[1] / "jobs" / "fit_count_model.py"
    spec = importlib.util.spec_from_file_location("fit_count_model", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bundle():
    b = random_bundle(n_bins=2, seed=1)
    for sd, shift in zip(b.generators, (0.6, 0.3)):   # positive output everywhere (no dead ReLU)
        sd["out.bias"] = sd["out.bias"] + torch.tensor(shift)
    return b


def _box(path, bundle, seed: int) -> str:
    """A box whose truth is drawn from LAW around the bundle's own painted mean (so LAW is the answer)."""
    rho = lognormal_density(N, seed)
    mu = paint_whole_box(bundle, rho)
    truth = sample_counts(mu, 100 + seed, LAW)
    velocity = smooth_velocity(N, seed)
    edges = bundle.metadata.mass_bin_edges
    near = lambda x: [(x - 1) % N, x, (x + 1) % N]  # noqa: E731
    rows = [catalogue_plane(truth[:, x], x, 200 + seed, LAW, [0, 1], edges, BOX, velocity=velocity[:, near(x)],
                            velocity_first=x - 1, density=rho[near(x)], density_first=x - 1) for x in range(N)]
    cat = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    attrs = standard_attrs(BOX, 0.0, Cosmology(), mass_bin_edges=edges, seed=seed,
                           density_recipe=DensityRecipe().to_json())
    write_field(path, attrs, density=rho, halos=truth, extra={
        "velocity": velocity, "catalog/pos": cat["pos"], "catalog/vel": cat["vel"], "catalog/mass": cat["mass"],
        "catalog/n_part": np.full(len(cat["mass"]), 20, np.int32)})
    return str(path)


def test_fit_script_recovers_law_slopes_and_dispersion(tmp_path, capsys):
    bundle = _bundle()
    bundle.save(tmp_path / "b.pt")
    boxes = [_box(tmp_path / f"box{s}.h5", bundle, s) for s in (1, 2, 3)]
    assert _fit_script().main([str(tmp_path / "b.pt"), "--boxes", *boxes, "--out", str(tmp_path / "new.pt")]) == 0
    assert "paints identically" in capsys.readouterr().out
    new = ModelBundle.load(tmp_path / "new.pt")
    cm = new.metadata.count_model
    assert cm.provenance["mu_ranges"] in (1, 2, 4) and set(cm.provenance["cv_scores"]) == {"1", "2", "4"}
    assert [d["seed"] for d in cm.provenance["data"]] == [1, 2, 3]
    assert all(len(d["sha256"]) == 64 for d in cm.provenance["data"])
    assert cm.generator_sha256 == [generator_digest(g) for g in bundle.generators]
    mu = np.concatenate([paint_whole_box(bundle, lognormal_density(N, s))[None] for s in (1, 2, 3)])
    for b, target in enumerate((-0.3, 0.6)):       # the fitted α(μ) averaged with the μ² weight
        w = mu[:, b].ravel() ** 2
        assert np.sum(cm.alpha_of(b, mu[:, b].ravel()) * w) / w.sum() == pytest.approx(target, abs=0.12)
    np.testing.assert_allclose(cm.mass_slope, LAW.mass_slope, atol=0.15)
    np.testing.assert_allclose(cm.velocity_dispersion, LAW.velocity_dispersion, rtol=0.05)
    np.testing.assert_allclose(cm.velocity_bias, LAW.velocity_bias, rtol=0.03)
    np.testing.assert_allclose(cm.velocity_infall, LAW.velocity_infall, rtol=0.1)
    for a, b in zip(bundle.generators, new.generators):
        assert all(torch.equal(a[k], b[k]) for k in a)
