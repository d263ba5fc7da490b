"""`--model default` resolves to the shipped model nearest the input's redshift (z = 0, 0.5, 1 shipped);
the painted file records the model used; an input far from every shipped z is refused unless
--allow-mismatch."""

from __future__ import annotations

import json

import h5py
import pytest

from halopaint.cli import main
from halopaint.model import ModelBundle, resolve_model_path, shipped_models


def _cli(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_three_shipped_models_at_their_redshifts():
    models = shipped_models()
    assert sorted(models) == [0.0, 0.5, 1.0]
    for z, path in models.items():
        meta = ModelBundle.load(path).metadata
        assert meta.redshift == pytest.approx(z)
        cm = meta.count_model                     # every shipped model can be sampled, with velocities
        assert cm is not None and cm.mass_slope is not None and cm.velocity_dispersion is not None
        assert all(1.0 < g < 1.3 for g in cm.velocity_bias)
        # fitted on the training seeds only (z = 0 and 0.5: the 16 boxes of jobs/train_z0_16.sh)
        expected = [*range(1, 16), 101] if z in (0.0, 0.5) else [1, 2, 101]
        assert [d["seed"] for d in cm.provenance["data"]] == expected
    assert resolve_model_path("default", 0.6) == models[0.5]
    assert resolve_model_path("default", 0.75) == models[0.5]          # ties → the lower z
    assert resolve_model_path("default", 2.0) == models[1.0]
    assert resolve_model_path("default") == models[0.0]


@pytest.mark.parametrize("z, used, extra, code", [(0.5, 0.5, [], 0), (1.0, 1.0, [], 0), (2.0, None, [], 2),
                                                   (2.0, 1.0, ["--allow-mismatch"], 0)])
def test_paint_uses_the_nearest_shipped_model(tmp_path, z, used, extra, code):
    dens, out = tmp_path / "d.h5", tmp_path / "p.h5"
    assert _cli(["simulate", "-q", "--lpt-only", "--grid", "28", "--box", "112", "--redshift", str(z),
                 "--out", str(dens)]) == 0
    assert _cli(["paint", "-q", "--model", "default", "--density", str(dens), "--out", str(out), *extra]) == code
    if code == 0:
        with h5py.File(out) as f:
            assert json.loads(f.attrs["model_metadata"])["redshift"] == pytest.approx(used)
            assert f.attrs["model"].endswith("default_model.pt" if used == 0 else f"default_model_z{used}.pt")
    else:
        assert not out.exists()
