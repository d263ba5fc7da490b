"""End to end: `halopaint demo` at a reduced size through the real CLI (painting, sampling and the light cone
under mpiexec -n 2): every stage's output exists and is complete."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from halopaint.fields import FieldFile
from halopaint.model import DEFAULT_MODEL_PATH, ModelBundle


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_MODEL_PATH.exists(), reason="shipped model not present")
def test_demo_reduced_size_end_to_end(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "halopaint.cli", "demo", "--out", str(out), "--ranks", "2",
                           "--grid", "32", "--lpt-grid", "40"], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Where everything is" in proc.stdout

    n_bins = ModelBundle.load("default").n_bins
    summary = json.loads((out / "summary.json").read_text())
    for key in ("heldout_truth", "large_2lpt", "heldout_painted", "large_painted"):
        path = summary["files"][key]
        with FieldFile(path) as f:  # refuses incomplete files
            if "painted" in key:
                halos = f.read_halos()
                assert halos.shape[0] == n_bins
                assert np.isfinite(halos).all() and (halos >= 0).all()
                assert halos.sum() > 0
            else:
                rho = f.read_density()
                assert abs(rho.mean() - 1) < 1e-4
    assert ModelBundle.load("default").ghost_width == 4
    # spectra for every bin and the sum, finite where defined
    with h5py.File(summary["heldout"]["files"]["statistics"], "r") as f:
        for sel in ["sum", *[f"bin{i}" for i in range(n_bins)]]:
            g = f["power"][sel]
            assert np.isfinite(g["P_pred"][:]).all() and np.isfinite(g["P_ref"][:]).all()
            assert (g["nmodes"][:] > 0).all()
    for name in ("heldout", "large"):
        for fig in (v for k, v in summary[name]["files"].items() if v.endswith(".png")):
            assert os.path.getsize(fig) > 10_000
    # the sampled held-out box: integer halos and a catalogue with velocities, complete
    with FieldFile(summary["files"]["heldout_sampled"]) as f:
        assert f.h5["halos"].dtype.kind == "i" and f.h5["halos"].shape[0] == n_bins
        cat = f.h5["catalogue"]
        rows = cat["pos"].shape[0]
        assert rows == int(f.read_halos().sum()) > 0 and cat["vel"].shape == (rows, 3)
        assert np.isfinite(cat["vel"][:]).all() and np.abs(cat["vel"][:]).max() > 0
    with FieldFile(summary["files"]["heldout_2lpt"]) as f:
        assert "velocity" in f.h5 and "halos" not in f.h5
    # multipoles of the sampled catalogue against the N-body FoF catalogue: every selection, ratios, figure
    rsd = summary["multipoles"]
    assert rsd["selections"]["sum"]["ratios"]["bins"] >= 1
    with h5py.File(rsd["files"]["statistics"], "r") as f:
        assert f.attrs["complete"]
        assert {"sum", *[f"bin{i}" for i in range(n_bins)]} == set(f) | set(rsd["skipped"])
        for sel in f:
            assert np.isfinite(f[f"{sel}/p2_over_p0_ratio"][:]).all()
            assert (f[f"{sel}/ref/redshift/P0"][:] > 0).all()
    assert os.path.getsize(rsd["files"]["figure"]) > 10_000
    text = (out / "summary.txt").read_text()
    assert "multipoles" in text and "Light cone" in text
    # the light cone of the large painted box: shells, catalogue, FITS maps and catalogue, figure
    cone = summary["lightcone"]
    assert cone["shells"] == 4 and cone["catalogue_halos"] > 0
    with h5py.File(summary["files"]["lightcone"], "r") as f:
        assert f.attrs["complete"] and f["maps"].shape[0] == 4 and f["catalogue/ra"].shape[0] == cone["catalogue_halos"]
    fits = [p for p in cone["files"] if p.endswith(".fits")]
    assert len(fits) == cone["shells"] + 1 and all(os.path.getsize(p) > 0 for p in cone["files"])
    stages = [s["stage"] for s in summary["stages"]]
    assert any("paint" in s for s in stages) and all(s["wall_s"] > 0 for s in summary["stages"])
    for word in ("sample", "multipoles", "light cone", "2LPT-only"):
        assert sum(word in s for s in stages) >= 1, (word, stages)
    assert (out / "summary.txt").read_text().startswith("halopaint demo")
