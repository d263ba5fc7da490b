"""`halopaint sample` refuses bad input: one line naming the problem, exit 2, no complete output, inputs untouched.

The table is (case, argv with {placeholders}, message fragment); files are made once per module.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import replace

import h5py
import numpy as np
import pytest

from conftest import random_bundle
from halopaint.cli import main
from halopaint.config import Cosmology, DensityRecipe
from halopaint.fields import standard_attrs, write_field
from test_sample import (EDGES, expected_field, make_count_model, write_density_velocity,
                         write_painted)

N = 26


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("samplebad")
    mu = expected_field(3, N, seed=1)
    cm = make_count_model()
    f = {"dir": str(d)}
    f["painted"] = write_painted(d / "painted.h5", mu, cm)
    f["nocm"] = write_painted(d / "nocm.h5", mu, None)
    f["noslope"] = write_painted(d / "noslope.h5", mu, replace(cm, mass_slope=None))
    bad = mu.copy()
    bad[1, 5, 6, 7] = np.nan
    f["nan"] = write_painted(d / "nan.h5", bad, cm)
    bad = mu.copy()
    bad[0, 20, 1, 2] = -0.5
    f["negative"] = write_painted(d / "negative.h5", bad, cm)
    attrs = standard_attrs(4.0 * N, 0.0, Cosmology(), mass_bin_edges=EDGES, seed=5,
                           density_recipe=DensityRecipe().to_json())
    write_field(d / "truth.h5", attrs, density=np.ones((N,) * 3, np.float32), halos=mu.round())
    f["truth"] = str(d / "truth.h5")
    f["density"] = write_density_velocity(d / "density.h5", N)
    f["novel"] = write_density_velocity(d / "novel.h5", N, velocity=False)
    f["otherseed"] = write_density_velocity(d / "otherseed.h5", N, seed=6)
    f["otherbox"] = write_density_velocity(d / "otherbox.h5", N, box=200.0)
    f["othergrid"] = write_density_velocity(d / "othergrid.h5", N + 2)
    attrs = standard_attrs(4.0 * N, 0.0, Cosmology(Omega_m=0.3), seed=5, density_recipe=DensityRecipe().to_json())
    from test_sample import smooth_velocity
    write_field(d / "othercosmo.h5", attrs, density=np.ones((N,) * 3, np.float32),
                extra={"velocity": smooth_velocity(N, 1)})
    f["othercosmo"] = str(d / "othercosmo.h5")
    with h5py.File(d / "incomplete.h5", "w") as h:
        h.create_dataset("halos", data=mu)
    f["incomplete"] = str(d / "incomplete.h5")
    f["existing"] = str(d / "existing.h5")
    with open(f["existing"], "w") as h:
        h.write("keep me")
    assert main(["sample", f["painted"], "--out", str(d / "real.h5"), "--seed", "1"]) == 0
    f["realization"] = str(d / "real.h5")
    f["badmeta"] = write_painted(d / "badmeta.h5", mu, cm)
    with h5py.File(f["badmeta"], "r+") as h:
        h.attrs["model_metadata"] = '{"voxel_size": 4.0}'
    f["otheredges"] = write_painted(d / "otheredges.h5", mu, cm)
    with h5py.File(f["otheredges"], "r+") as h:
        h.attrs["mass_bin_edges"] = np.asarray([1e11, 1e12, 1e13, 1e14])
    random_bundle(n_bins=2, seed=0).save(d / "twobins.pt")
    f["twobins"] = str(d / "twobins.pt")
    return f


CASES = [
    ("not painted (N-body truth)", "{truth} --out {out} --seed 1", "not a painted field"),
    ("density-only file", "{density} --out {out} --seed 1", "missing required dataset '/halos'"),
    ("missing file", "{dir}/nope.h5 --out {out} --seed 1", "no such file"),
    ("incomplete file", "{incomplete} --out {out} --seed 1", "incomplete"),
    ("NaN values", "{nan} --out {out} --seed 1", "NaN/Inf or negative values"),
    ("negative values", "{negative} --out {out} --seed 1", "NaN/Inf or negative values"),
    ("negative seed", "{painted} --out {out} --seed -3", "--seed must be ≥ 0"),
    ("existing --out", "{painted} --out {existing} --seed 1", "exists; use --force"),
    ("--out is the input", "{painted} --out {painted} --seed 1", "is the painted input"),
    ("--out is the input, --force", "{painted} --out {painted} --seed 1 --force", "is the painted input"),
    ("--out is the density", "{painted} --out {density} --seed 1 --density {density} --catalogue --force",
     "is the density file"),
    ("a realization as input", "{realization} --out {out} --seed 1", "already an integer realization"),
    ("model_metadata without bins", "{badmeta} --out {out} --seed 1", "not a model's metadata"),
    ("file bins not the model's", "{otheredges} --out {out} --seed 1", "not the painting model's bins"),
    ("no count model", "{nocm} --out {out} --seed 1", "has no count model"),
    ("bundle with other bins", "{painted} --out {out} --seed 1 --model {twobins}", "mass bins differ"),
    ("bin not painted", "{painted} --out {out} --seed 1 --mass-bins 5", "bin 5 is not in"),
    ("bins not contiguous", "{painted} --out {out} --seed 1 --mass-bins 0,2", "not a contiguous range"),
    ("unparsable bins", "{painted} --out {out} --seed 1 --mass-bins x", "cannot parse"),
    ("--catalogue without --density", "{painted} --out {out} --seed 1 --catalogue", "--catalogue needs --density"),
    ("--density without --catalogue", "{painted} --out {out} --seed 1 --density {density}",
     "--catalogue needs --density"),
    ("no /velocity", "{painted} --out {out} --seed 1 --density {novel} --catalogue", "no /velocity dataset"),
    ("density of another seed", "{painted} --out {out} --seed 1 --density {otherseed} --catalogue", "seed 6 vs 5"),
    ("density of another box", "{painted} --out {out} --seed 1 --density {otherbox} --catalogue", "box 200"),
    ("density of another grid", "{painted} --out {out} --seed 1 --density {othergrid} --catalogue", "grid 28 vs 26"),
    ("density of another cosmology", "{painted} --out {out} --seed 1 --density {othercosmo} --catalogue",
     "cosmology"),
    ("no mass function", "{noslope} --out {out} --seed 1 --density {density} --catalogue", "no mass function"),
    ("output directory missing", "{painted} --out {dir}/no/such/r.h5 --seed 1", "does not exist"),
]


def _digest(path: str) -> str | None:
    return hashlib.sha256(open(path, "rb").read()).hexdigest() if os.path.isfile(path) else None


@pytest.mark.parametrize("case,argv,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused(files, tmp_path, capsys, case, argv, fragment):
    out = str(tmp_path / "r.h5")
    args = argv.format(out=out, **files).split()
    inputs = [a for a in args if os.path.isfile(a)]
    before = {a: _digest(a) for a in inputs}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["sample", *args])
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("halopaint sample: error:") and fragment in err[0], err
    assert {a: _digest(a) for a in inputs} == before
    assert not os.path.exists(out)
    assert not os.listdir(tmp_path)              # no part file, no parts directory, no temporary file


def test_bad_input_exit_code_from_a_real_process(files, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "halopaint.cli", "sample", files["nan"], "--out",
                          str(tmp_path / "r.h5"), "--seed", "1"], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 2 and res.stderr.count("error:") == 1 and "NaN/Inf" in res.stderr
    assert not (tmp_path / "r.h5").exists()


def test_force_replaces_an_existing_output(files, tmp_path):
    out = tmp_path / "r.h5"
    out.write_text("old")
    assert main(["sample", files["painted"], "--out", str(out), "--seed", "2", "--force"]) == 0
    with h5py.File(out, "r") as f:
        assert bool(f.attrs["complete"]) and f["halos"].dtype == np.int32
