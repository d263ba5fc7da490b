"""`halopaint train` end to end (API): outputs, and N steps straight == N/2 + resume + N/2."""

from __future__ import annotations

import json

import torch

from halopaint.config import TrainConfig
from halopaint.model import ModelBundle
from halopaint.train import TrainPaths, load_checkpoint, train
from train_data import write_training_file


def _cfg(tmp_path, out, **kw) -> TrainConfig:
    a = write_training_file(tmp_path / "a.h5", 28, seed=1, n_bins=2)
    v = write_training_file(tmp_path / "v.h5", 28, seed=2, n_bins=2)
    base = dict(data=(a,), validation=(v,), out=str(tmp_path / out), patch=20, n_critic=1, seed=3,
                checkpoint_every=2, validate_every=2, validation_patches=1, supervised_weight=0.5)
    base.update(kw)
    return TrainConfig(**base)


def test_interrupted_and_resumed_equals_straight(tmp_path):
    straight = _cfg(tmp_path, "straight.pt", steps=4, ema_decay=0.9)
    train(straight, command="test", progress=False)
    half = _cfg(tmp_path, "resumed.pt", steps=2, ema_decay=0.9)
    train(half, command="test", progress=False)
    resumed = _cfg(tmp_path, "resumed.pt", steps=4, resume=True, ema_decay=0.9)
    train(resumed, command="test", progress=False)

    p_s, p_r = TrainPaths.for_output(straight.out), TrainPaths.for_output(resumed.out)
    c_s, c_r = load_checkpoint(p_s.checkpoint), load_checkpoint(p_r.checkpoint)
    assert c_s["step"] == c_r["step"] == 4
    for bs, br in zip(c_s["per_bin"], c_r["per_bin"]):
        for part in ("generator", "critic", "ema"):
            for k in bs[part]:
                assert torch.equal(bs[part][k], br[part][k]), (part, k)
        for k, v in bs["opt_g"]["state"].items():
            assert torch.equal(v["exp_avg"], br["opt_g"]["state"][k]["exp_avg"])
    assert c_s["rng"] == c_r["rng"]
    # the log of the resumed run is the straight run's log (same losses, same steps)
    log_s = [json.loads(x) for x in p_s.log.read_text().splitlines()]
    log_r = [json.loads(x) for x in p_r.log.read_text().splitlines()]
    assert log_s == log_r
    assert {r["step"] for r in log_s if r["kind"] == "train"} == {1, 2, 3, 4}
    # outputs: a loadable bundle with the provenance, a loss plot
    b = ModelBundle.load(straight.out)
    assert b.n_bins == 2 and b.metadata.voxel_size == 4.0
    assert b.metadata.training["steps"] == 4
    # the bundle ships the EMA weights
    assert all(torch.equal(b.generators[j][k], c_s["per_bin"][j]["ema"][k]) for j in range(2)
               for k in b.generators[j])
    assert [c["to_step"] for c in ModelBundle.load(resumed.out).metadata.training["commands"]] == [2, 4]
    assert [f["seed"] for f in b.metadata.training["training_files"]] == [1]
    assert [f["seed"] for f in b.metadata.training["validation_files"]] == [2]
    assert p_s.plot.stat().st_size > 0
    assert not list(tmp_path.glob(".*tmp*"))


def test_init_provenance_is_recorded_and_survives_a_resume(tmp_path):
    from halopaint.fields import file_sha256
    base = dict(adversarial_weight=0.0, supervised_weight=1.0, steps=1)
    train(_cfg(tmp_path, "init.pt", **base), command="make init", progress=False)
    init_path = tmp_path / "init.pt"
    sha, init_training = file_sha256(init_path), ModelBundle.load(init_path).metadata.training
    train(_cfg(tmp_path, "warm.pt", init_model=str(init_path), **base), command="warm", progress=False)
    # the init file changes before the resume (as 'default' does between releases): the record must not
    train(_cfg(tmp_path, "init.pt", **{**base, "steps": 2}, resume=True), command="make init", progress=False)
    assert file_sha256(init_path) != sha
    train(_cfg(tmp_path, "warm.pt", init_model=str(init_path), resume=True, **{**base, "steps": 2}),
          command="warm", progress=False)
    rec = ModelBundle.load(tmp_path / "warm.pt").metadata.training["init"]
    assert rec["sha256"] == sha and rec["file"] == "init.pt" and rec["model"] == str(init_path)
    assert rec["training"] == init_training and rec["training"]["command"] == "make init"
    assert "init" not in ModelBundle.load(init_path).metadata.training


def test_resume_refuses_a_different_setup(tmp_path):
    import pytest

    from halopaint.errors import HalopaintError
    train(_cfg(tmp_path, "m.pt", steps=1), progress=False)
    with pytest.raises(HalopaintError, match="seed"):
        train(_cfg(tmp_path, "m.pt", steps=2, seed=4, resume=True), progress=False)


def test_held_out_region_of_one_box(tmp_path):
    a = write_training_file(tmp_path / "big.h5", 40, seed=1, n_bins=1)
    cfg = TrainConfig(data=(a,), out=str(tmp_path / "m.pt"), patch=4, steps=1, validation_fraction=0.25,
                      validation_patches=1, adversarial_weight=0.0, supervised_weight=1.0)
    # 4 + 8 = 12-voxel patches: a 10-plane validation x-range (0.25 of 40) is too thin, 16 planes (0.4) fit
    import pytest

    from halopaint.errors import HalopaintError
    with pytest.raises(HalopaintError, match="x-range"):
        train(cfg, progress=False)
    cfg = TrainConfig(**{**cfg.__dict__, "validation_fraction": 0.4})
    summary = train(cfg, progress=False)
    assert "nll_val" in summary["eval"][0]
