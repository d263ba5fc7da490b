"""`halopaint train` bad input: one clear line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import write_density_file
from halopaint.cli import main
from halopaint.config import Cosmology
from halopaint.fields import standard_attrs, write_field
from train_data import synthetic_pair, write_training_file


def _fails(capsys, argv, expect: str, out) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", *argv, "--out", str(out), "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("halopaint train: error:"), err
    assert expect in err, err
    assert not out.exists()


@pytest.fixture
def good(tmp_path):
    return write_training_file(tmp_path / "good.h5", 28, seed=1, n_bins=2)


def test_data_without_halos(tmp_path, capsys):
    d = write_density_file(tmp_path / "dens.h5", n=24)
    _fails(capsys, ["--data", d], "/halos", tmp_path / "m.pt")


def test_mismatched_density_and_halo_grids(tmp_path, capsys):
    rho, _ = synthetic_pair(24, 0, 2)
    _, halos = synthetic_pair(16, 0, 2)
    path = tmp_path / "bad.h5"
    write_field(path, standard_attrs(96.0, 0.0, Cosmology(), mass_bin_edges=np.logspace(12, 14, 3)),
                density=rho, halos=halos)
    _fails(capsys, ["--data", str(path)], "differs", tmp_path / "m.pt")


def test_patch_larger_than_box(tmp_path, good, capsys):
    _fails(capsys, ["--data", good, "--patch", "21", "--validation", good], "larger than", tmp_path / "m.pt")
    _fails(capsys, ["--data", good, "--patch", "12"], "too small for the critic", tmp_path / "m.pt")


def test_unknown_mass_bin(tmp_path, good, capsys):
    _fails(capsys, ["--data", good, "--mass-bins", "5"], "mass bin 5", tmp_path / "m.pt")
    _fails(capsys, ["--data", good, "--mass-bins", "x"], "--mass-bins", tmp_path / "m.pt")


def test_unreadable_or_foreign_model(tmp_path, good, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 10)
    _fails(capsys, ["--data", good, "--patch", "20", "--validation", good, "--init", str(junk)], "not a halopaint model bundle",
           tmp_path / "m.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    _fails(capsys, ["--data", good, "--patch", "20", "--validation", good, "--init", str(foreign)], "not a halopaint model bundle",
           tmp_path / "m.pt")
    _fails(capsys, ["--data", good, "--patch", "20", "--validation", good, "--init", str(tmp_path / "none.pt")], "no such",
           tmp_path / "m.pt")


def test_corrupt_checkpoint_on_resume(tmp_path, good, capsys):
    out = tmp_path / "m.pt"
    (tmp_path / "m.pt.ckpt").write_bytes(b"not a checkpoint")
    _fails(capsys, ["--data", good, "--validation", good, "--patch", "20", "--resume"], "checkpoint", out)


def test_missing_data_file(tmp_path, capsys):
    _fails(capsys, ["--data", str(tmp_path / "nope.h5")], "no such file", tmp_path / "m.pt")


def test_cli_trains_and_writes_a_bundle(tmp_path, good, capsys):
    out = tmp_path / "m.pt"
    assert main(["train", "--data", good, "--validation", good, "--out", str(out), "--patch", "8",
                 "--steps", "2", "--mass-bins", "1", "--adversarial-weight", "0",
                 "--supervised-weight", "1", "--quiet"]) == 0
    from halopaint.model import ModelBundle
    b = ModelBundle.load(out)
    assert b.n_bins == 1 and np.isclose(b.metadata.mass_bin_edges[0], 10**13)
    assert b.metadata.training["command"].startswith("halopaint ")
