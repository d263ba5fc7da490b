"""`halopaint spectra` and halopaint.analysis.report.run end to end; PDFs and ensembles; bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from halopaint.analysis import bispectrum, count_pdf, power_spectrum
from halopaint.analysis.ensemble import PatchSource, patch_ensemble, read_periodic_cube
from halopaint.analysis.report import run
from halopaint.config import Cosmology, SpectraConfig
from halopaint.errors import HalopaintError
from halopaint.fields import standard_attrs, write_field
from tests.conftest import lognormal_density

N = 24
BOX = 4.0 * N


def _halo_files(tmp_path, n=N, box=BOX, empty_bin=False, seed=0):
    rho = lognormal_density(n, seed + 1, sigma=0.6).astype(np.float64)
    rng = np.random.default_rng(seed)
    lam = np.stack([0.4 * rho**1.5, 0.1 * rho**2])
    true = rng.poisson(lam).astype(np.float32)
    pred = (lam * np.exp(0.3 * rng.standard_normal(lam.shape))).astype(np.float32)
    if empty_bin:
        pred[1] = 0.0
    edges = np.logspace(12, 14, 3)
    paths = {k: str(tmp_path / f"{k}.h5") for k in ("pred", "true", "dens")}
    write_field(paths["dens"], standard_attrs(box, 0.0, Cosmology(), seed=1), density=rho.astype(np.float32))
    write_field(paths["true"], standard_attrs(box, 0.0, Cosmology(), mass_bin_edges=edges), halos=true)
    write_field(paths["pred"], standard_attrs(box, 0.0, Cosmology(), mass_bin_edges=edges), halos=pred)
    return paths, pred, true, rho


def _config(paths, out, **kw):
    base = dict(predicted=paths["pred"], reference=paths["true"], density=paths["dens"], out=str(out),
                bispectrum_configs=((0.35, 0.5),), bispectrum_thetas=3, chunk_planes=5, progress=False)
    base.update(kw)
    return SpectraConfig(**base)


def test_full_report(tmp_path):
    paths, pred, true, rho = _halo_files(tmp_path)
    summary = run(_config(paths, tmp_path / "out", patches=3, patch_size=BOX / 2))
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["grid"] == N
    for name in ("statistics", "slices", "power", "power_bins", "pdf", "bispectrum", "bispectrum_bins"):
        assert (tmp_path / "out").joinpath(summary["files"][name].split("/")[-1]).stat().st_size > 0
    s = summary["bins"]["sum"]
    # k ≈ 0.05 h/Mpc is below this small box's first bin; 0.1 and 0.2 are quoted for both
    assert {"0.1", "0.2"} <= set(s["prediction"]) and set(s["lpt_baseline"]) == set(s["prediction"])
    with h5py.File(summary["files"]["statistics"], "r") as f:
        assert f.attrs["complete"]
        node = f["power/sum"]
        # the file's spectra are the API's spectra of δ = n/n̄ − 1 (summed over the mass bins)
        n_sum = pred.sum(axis=0)
        want = power_spectrum(n_sum / n_sum.mean() - 1.0, BOX)
        np.testing.assert_allclose(node["P_pred"][:], want.power, rtol=1e-5)
        np.testing.assert_array_equal(node["nmodes"][:], want.nmodes)
        np.testing.assert_allclose(node.attrs["poisson_ref"], BOX**3 / true.sum(), rtol=1e-6)
        for key in ("T", "r_c", "s", "T_lpt", "r_c_lpt", "s_lpt"):
            assert np.all(np.isfinite(node[key][:]))
        assert "config0" in f["bispectrum/sum"] and "Q_lpt" in f["bispectrum/sum/config0"]
        # per-bin bispectra (Fig. 14) are the API's bispectra of each bin's δ, baseline with that bin's bias
        for b in range(pred.shape[0]):
            got = f[f"bispectrum/bin{b}/config0"]
            want_b = bispectrum(pred[b] / pred[b].mean() - 1.0, BOX, 0.35, 0.5, got["theta"][:])
            np.testing.assert_allclose(got["B_pred"][:], want_b.B, rtol=1e-5)
            np.testing.assert_allclose(got["Q_lpt"][:] * f[f"power/bin{b}"].attrs["bias"],
                                       got["Q_matter"][:], rtol=1e-6)
        assert f["ensemble/sum"].attrs["n_patches"] == 3
        frac = np.mean(np.abs(n_sum - true.sum(axis=0)) > 3)
        np.testing.assert_allclose(f["pdf/sum"].attrs["frac_off_by_3"], frac)


def test_without_reference_and_without_density(tmp_path):
    paths, *_ = _halo_files(tmp_path)
    s1 = run(_config(paths, tmp_path / "a", reference=None, density=None, output_format="json"))
    assert "slices" in s1["files"] and "pdf" not in s1["files"]          # figures without a reference
    data = json.loads(open(s1["files"]["statistics"]).read())
    assert "P_pred" in data["power"]["sum"] and "T" not in data["power"]["sum"]
    s2 = run(_config(paths, tmp_path / "b", density=None, bispectrum_thetas=0, figures=False))
    with h5py.File(s2["files"]["statistics"], "r") as f:
        assert "T" in f["power/sum"] and "T_lpt" not in f["power/sum"] and "bispectrum" not in f
    assert "lpt_baseline" not in s2["bins"]["sum"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "halopaint.cli", "spectra", *args], capture_output=True, text=True)


def test_cli_bad_inputs_give_one_line_errors(tmp_path):
    paths, *_ = _halo_files(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    small, *_ = _halo_files(other, n=16, box=64.0)
    wrongbox = tmp_path / "wrongbox.h5"
    write_field(wrongbox, standard_attrs(2 * BOX, 0.0, Cosmology(), mass_bin_edges=np.logspace(12, 14, 3)),
                halos=np.ones((2, N, N, N), np.float32))
    incomplete = tmp_path / "incomplete.h5"
    with h5py.File(incomplete, "w") as f:
        f.create_dataset("halos", data=np.ones((2, N, N, N), np.float32))
    cases = {"grid": dict(reference=small["true"]), "box_size": dict(reference=str(wrongbox)),
             "incomplete": dict(reference=str(incomplete)), "differs": dict(density=small["dens"])}
    for expect, kw in cases.items():
        out = tmp_path / f"out-{expect}"
        with pytest.raises(HalopaintError, match=expect):
            run(_config(paths, out, **kw))
        assert not out.exists()
    # through the CLI: one line on stderr, exit code 2, nothing written
    out = tmp_path / "out-cli"
    r = _cli(paths["pred"], "--density", "missing.h5", "--out", str(out), "--quiet")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("halopaint spectra: error:") and "no such file" in lines[0]
    assert not out.exists()


def test_empty_mass_bin_is_a_clear_error_and_nothing_written(tmp_path):
    paths, *_ = _halo_files(tmp_path, empty_bin=True)
    with pytest.raises(HalopaintError, match="bin1.*empty"):
        run(_config(paths, tmp_path / "out", bispectrum_thetas=0))
    assert not (tmp_path / "out").exists()


def test_cli_runs(tmp_path):
    paths, *_ = _halo_files(tmp_path)
    r = _cli(paths["pred"], "--reference", paths["true"], "--out", str(tmp_path / "o"), "--thetas", "2",
             "--bispectrum", "0.4,0.5", "--mas", "ngp", "--no-figures")
    assert r.returncode == 0, r.stderr
    assert "statistics:" in r.stdout and "halopaint spectra: sum: spectra" in r.stderr
    with h5py.File(tmp_path / "o" / "spectra.h5", "r") as f:
        assert f.attrs["mas"] == "ngp"


def test_count_pdf_exact():
    true = np.array([0, 0, 1, 2, 5, 9, 0, 1], dtype=np.float32).reshape(2, 2, 2)
    pred = np.array([0.2, 0.4, 1.4, 2.6, 1.0, 9.2, 0.0, 0.9], dtype=np.float32).reshape(2, 2, 2)
    pdf = count_pdf(pred, true)
    np.testing.assert_allclose(pdf.pdf_true[:3], [3 / 8, 2 / 8, 1 / 8])
    np.testing.assert_allclose(pdf.pdf_pred[:4], [3 / 8, 3 / 8, 0, 1 / 8])
    assert pdf.frac_off_by_3 == pytest.approx(1 / 8)                   # the voxel 5 → 1.0
    np.testing.assert_allclose(pdf.conditional[0, :1], [1.0])          # true 0 → pred rounds to 0
    np.testing.assert_allclose(pdf.conditional[1, :2], [0.0, 1.0])
    np.testing.assert_allclose(pdf.conditional.sum(axis=1)[pdf.has_true], 1.0)


def test_periodic_read_and_whole_box_patches_equal_full_box(tmp_path):
    paths, pred, true, rho = _halo_files(tmp_path)
    cube = read_periodic_cube(paths["pred"], "halos", (20, 3, 22), 9, bins=(0, 1))
    full = pred.sum(axis=0)
    np.testing.assert_allclose(cube, np.roll(full, (-20, -3, -22), axis=(0, 1, 2))[:9, :9, :9], rtol=1e-6)
    # patches as large as the box are periodic shifts of it: P(k) is shift invariant, so every patch
    # equals the full box and the ensemble's σ vanishes
    ens = patch_ensemble(PatchSource(paths["pred"], "halos", (0, 1)), PatchSource(paths["true"], "halos", (0, 1)),
                         BOX, N, count=3, patch_size=BOX, seed=4)
    want = power_spectrum(full / full.mean() - 1, BOX)
    np.testing.assert_allclose(ens.mean["P_pp"], want.power, rtol=1e-6)   # float32 vs float64 sums
    assert np.all(ens.std["P_pp"] <= 1e-6 * want.power)


def test_scheduler_address_gives_the_same_statistics(tmp_path):
    distributed = pytest.importorskip("distributed")
    paths, *_ = _halo_files(tmp_path)
    local = run(_config(paths, tmp_path / "local", figures=False, bispectrum_thetas=2, patches=2))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        remote = run(_config(paths, tmp_path / "remote", figures=False, bispectrum_thetas=2, patches=2,
                             scheduler=cluster.scheduler_address))
    with h5py.File(local["files"]["statistics"], "r") as a, h5py.File(remote["files"]["statistics"], "r") as b:
        def compare(ga, gb):
            for key in ga:
                if isinstance(ga[key], h5py.Group):
                    compare(ga[key], gb[key])
                else:
                    np.testing.assert_allclose(ga[key][()], gb[key][()], rtol=1e-9, atol=1e-300, err_msg=key)
        compare(a, b)
    with pytest.raises(HalopaintError, match="needs --reference"):
        run(_config(paths, tmp_path / "x", reference=None, patches=3))
