"""End to end: `halopaint demo` at a reduced size through the real CLI (painting under mpiexec -n 2)."""

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
    stages = [s["stage"] for s in summary["stages"]]
    assert any("paint" in s for s in stages) and all(s["wall_s"] > 0 for s in summary["stages"])
    assert (out / "summary.txt").read_text().startswith("halopaint demo")
