"""`halopaint spectra --multipoles`: real- and redshift-space P0, P2, P4 of halo catalogue files
(analysis.rsd_report), per mass bin and summed, with and without a reference; consistency with
analysis.spectra; the one-line refusals of bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from halopaint.analysis import rsd, rsd_report
from halopaint.analysis.multipoles import catalogue_mesh, redshift_space_positions
from halopaint.analysis.spectra import power_spectrum
from halopaint.cli import main
from halopaint.config import Cosmology, MultipolesConfig
from halopaint.fields import atomic_h5, standard_attrs

BOX, N, Z = 128.0, 16, 0.5
EDGES = [1e12, 1e13, 1e14]


def catalogue(seed: int, n: int = 6000):
    """Clustered-ish halos (a few hundred Gaussian clumps) with clump-coherent velocities [km/s]."""
    rng = np.random.default_rng(seed)
    centres = rng.random((300, 3)) * BOX
    which = rng.integers(0, len(centres), n)
    pos = np.mod(centres[which] + rng.normal(scale=4.0, size=(n, 3)), BOX)
    vel = rng.normal(scale=300.0, size=(len(centres), 3))[which] + rng.normal(scale=100.0, size=(n, 3))
    mass = 10 ** rng.uniform(12, 14, n)
    return pos, vel, mass


def write_file(path, group="catalogue", seed=0, box=BOX, edges=EDGES, columns=("pos", "vel", "mass"), cat=None):
    """A field file as `sample --catalogue` (group 'catalogue') or the simulator (group 'catalog') writes it:
    /halos of the catalogue's NGP counts per mass bin, mass_bin_edges, and the catalogue."""
    pos, vel, mass = cat if cat is not None else catalogue(seed)
    pos = pos * box / BOX
    halos = np.zeros((len(edges) - 1, N, N, N), np.float32)
    idx = np.minimum((pos / box * N).astype(int), N - 1)
    b = np.clip(np.searchsorted(edges, mass, side="right") - 1, 0, len(edges) - 2)
    np.add.at(halos, (b, idx[:, 0], idx[:, 1], idx[:, 2]), 1.0)
    with atomic_h5(path, standard_attrs(box, Z, Cosmology(), mass_bin_edges=np.array(edges))) as f:
        f.create_dataset("halos", data=halos)
        g = f.create_group(group)
        for name, data in (("pos", pos), ("vel", vel), ("mass", mass)):
            if name in columns:
                g.create_dataset(name, data=data.astype(np.float32 if name != "mass" else np.float64))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("mp")
    return {"pred": write_file(d / "sampled.h5", "catalogue", seed=1),
            "truth": write_file(d / "truth.h5", "catalog", seed=2),
            "same": write_file(d / "same.h5", "catalogue", seed=2), "dir": d}


def test_cli_with_reference_writes_every_selection_ratios_figure_and_summary(files, tmp_path):
    out = tmp_path / "mp"
    proc = subprocess.run([sys.executable, "-m", "halopaint.cli", "spectra", files["pred"], "--multipoles",
                           "--reference", files["truth"], "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "P2/P0" in proc.stderr                       # the band summary is logged
    assert f"statistics: {out / 'multipoles.h5'}" in proc.stdout
    with h5py.File(out / "multipoles.h5", "r") as f:
        assert f.attrs["complete"] and f.attrs["los"] == "z" and f.attrs["grid"] == N
        assert sorted(f) == ["bin0", "bin1", "sum"]
        for sel in f:
            for who in ("pred", "ref"):
                for space in ("real", "redshift"):
                    g = f[f"{sel}/{who}/{space}"]
                    assert {"k", "P0", "P2", "P4", "nmodes"} <= set(g)
                    assert np.isfinite(g["P0"][:]).all() and (g["P0"][:] > 0).all()
            for name in ("k", "p0_real_ratio", "p0_redshift_ratio", "p2_over_p0_ratio"):
                assert f[f"{sel}/{name}"].shape == f[f"{sel}/pred/real/k"].shape
        assert f["bin0"].attrs["m_min"] == 1e12 and f["bin0"].attrs["m_max"] == 1e13
        np.testing.assert_allclose(f["sum/p0_real_ratio"][:], f["sum/pred/real/P0"][:] / f["sum/ref/real/P0"][:])
    summary = json.loads((out / "multipoles.json").read_text())
    band = summary["selections"]["sum"]
    assert band["k_min"] == 0.05 and band["k_max"] == 0.2 and band["ratios"]["bins"] >= 2
    assert set(band["ratios"]) >= {"p0_real_ratio", "p0_redshift_ratio", "p2_over_p0_ratio"}
    assert (out / "multipoles.png").stat().st_size > 10_000
    assert not (out / "spectra.h5").exists()             # --multipoles computes only the multipoles


def test_p0_is_the_power_spectrum_of_the_cic_mesh(files, tmp_path):
    summary = rsd_report.run(MultipolesConfig(predicted=files["pred"], out=str(tmp_path / "o"), figures=False))
    assert "figure" not in summary["files"] and "ref" not in summary["selections"]["sum"]
    cat = rsd.read_catalogue(files["pred"], 1e12, 1e14)
    with h5py.File(tmp_path / "o" / "multipoles.h5", "r") as f:
        assert "ref" not in f["sum"] and "p0_real_ratio" not in f["sum"]
        for space, pos in (("real", cat.pos),
                           ("redshift", redshift_space_positions(cat.pos, cat.vel, BOX, Z, cat.omega_m, axis=2))):
            mesh = catalogue_mesh(pos, BOX, N, "cic")
            ps = power_spectrum(mesh / mesh.mean() - 1.0, BOX, mas="cic")
            np.testing.assert_allclose(f[f"sum/pred/{space}/P0"][:], ps.power, rtol=1e-9)
            np.testing.assert_allclose(f[f"sum/pred/{space}/k"][:], ps.k, rtol=1e-12)
            np.testing.assert_array_equal(f[f"sum/pred/{space}/nmodes"][:], ps.nmodes)


def test_identical_catalogues_give_unit_ratios_and_the_line_of_sight_matters(files, tmp_path):
    z = rsd_report.run(MultipolesConfig(predicted=files["same"], reference=files["truth"], out=str(tmp_path / "z"),
                                        figures=False))
    for sel in ("sum", "bin0", "bin1"):
        for name in ("p0_real_ratio", "p0_redshift_ratio", "p2_over_p0_ratio"):
            assert z["selections"][sel]["ratios"][name]["max_dev"] < 1e-9
    x = rsd_report.run(MultipolesConfig(predicted=files["same"], out=str(tmp_path / "x"), los="x", figures=False))
    with h5py.File(tmp_path / "z" / "multipoles.h5", "r") as fz, h5py.File(tmp_path / "x" / "multipoles.h5") as fx:
        assert fx.attrs["axis"] == 0 and fz.attrs["axis"] == 2 and x["los"] == "x"
        np.testing.assert_allclose(fx["sum/pred/real/P0"][:], fz["sum/pred/real/P0"][:], rtol=1e-12)
        assert not np.allclose(fx["sum/pred/redshift/P2"][:], fz["sum/pred/redshift/P2"][:], rtol=1e-3)
    small = rsd_report.run(MultipolesConfig(predicted=files["same"], out=str(tmp_path / "g"), grid="8",
                                            figures=False))
    assert small["grid"] == 8


def test_empty_mass_bin_is_skipped_and_said(tmp_path):
    pos, vel, mass = catalogue(5)
    path = write_file(tmp_path / "lo.h5", cat=(pos, vel, np.full(len(mass), 2e12)))
    summary = rsd_report.run(MultipolesConfig(predicted=path, out=str(tmp_path / "o"), figures=False))
    assert set(summary["selections"]) == {"sum", "bin0"} and "no halo with mass" in summary["skipped"]["bin1"]


def _fails(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(["spectra", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("halopaint spectra: error: "), err
    return err[0]


@pytest.mark.parametrize("case, extra, message", [
    ("no-catalogue", {"pred": "nocat"}, "no halo catalogue"),
    ("no-velocities", {"pred": "novel"}, "no 'vel' column"),
    ("box-differs", {"ref": "bigbox"}, "box_size"),
    ("edges-differ", {"ref": "edges"}, "mass_bin_edges"),
    ("grid-zero", {"args": ["--multipole-grid", "0"]}, "positive even integer"),
    ("grid-odd", {"args": ["--multipole-grid", "15"]}, "positive even integer"),
    ("grid-negative", {"args": ["--multipole-grid", "-8"]}, "positive even integer"),
    ("grid-not-int", {"args": ["--multipole-grid", "1.5e1"]}, "positive even integer"),
    ("los", {"args": ["--los", "w"]}, "line of sight must be x, y or z"),
    ("field-only-flag", {"args": ["--thetas", "4", "--density", "d.h5"]}, "--density, --thetas"),
])
def test_bad_input_one_line_and_no_output(files, tmp_path, capsys, case, extra, message):
    d = files["dir"]
    made = {"nocat": _no_catalogue,
            "novel": lambda p: write_file(p, columns=("pos", "mass")),
            "bigbox": lambda p: write_file(p, "catalog", seed=2, box=2 * BOX),
            "edges": lambda p: write_file(p, "catalog", seed=2, edges=[1e12, 3e13, 1e14])}
    pred = made[extra["pred"]](d / f"{case}.h5") if "pred" in extra else files["pred"]
    ref = made[extra["ref"]](d / f"{case}.h5") if "ref" in extra else files["truth"]
    out = tmp_path / "out"
    line = _fails(capsys, pred, "--multipoles", "--reference", ref, "--out", str(out), *extra.get("args", []))
    assert message in line
    assert not out.exists()


def _no_catalogue(path):
    with atomic_h5(path, standard_attrs(BOX, Z, Cosmology(), mass_bin_edges=np.array(EDGES))) as f:
        f.create_dataset("halos", data=np.ones((2, N, N, N), np.float32))
    return str(path)


def test_multipole_flags_need_multipoles(files, tmp_path, capsys):
    line = _fails(capsys, files["pred"], "--los", "x", "--out", str(tmp_path / "o"))
    assert "go with --multipoles" in line
