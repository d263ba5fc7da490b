"""analysis.rsd: catalogue reading, real/redshift-space comparison of two catalogues, and its figure."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from halopaint.analysis import rsd
from halopaint.analysis.plots import multipoles_figure
from halopaint.config import Cosmology
from halopaint.errors import HalopaintError
from halopaint.fields import atomic_h5, standard_attrs

BOX = 200.0


def _write_catalogue(path, group: str, pos, vel, mass):
    with atomic_h5(path, standard_attrs(BOX, 0.5, Cosmology())) as f:
        f.create_dataset("density", data=np.ones((8, 8, 8), np.float32))
        g = f.create_group(group)
        g.create_dataset("pos", data=pos)
        g.create_dataset("vel", data=vel)
        g.create_dataset("mass", data=mass)


def test_same_catalogue_gives_unit_ratios_and_velocities_matter(tmp_path):
    rng = np.random.default_rng(3)
    n = 40000
    pos = rng.random((n, 3)) * BOX
    vel = rng.normal(scale=400.0, size=(n, 3))
    mass = 10 ** rng.uniform(12, 14, n)
    _write_catalogue(tmp_path / "truth.h5", "catalog", pos, vel, mass)
    _write_catalogue(tmp_path / "sampled.h5", "catalogue", pos, vel, mass)
    _write_catalogue(tmp_path / "still.h5", "catalogue", pos, np.zeros_like(vel), mass)
    ref = rsd.read_catalogue(str(tmp_path / "truth.h5"), 1e12, 1e13)
    assert ref.source.endswith("/catalog") and len(ref.mass) == np.count_nonzero(mass < 1e13)
    same = rsd.compare(rsd.read_catalogue(str(tmp_path / "sampled.h5"), 1e12, 1e13), ref, grid=32)
    band = same.band()
    assert band["bins"] >= 4                                   # k_F = 0.031 h/Mpc: bins 2–6
    for name in ("p0_real_ratio", "p0_redshift_ratio", "p2_over_p0_ratio"):
        assert band[name]["max_dev"] < 1e-9 and len(band[name]["values"]) == band["bins"]
    still = rsd.compare(rsd.read_catalogue(str(tmp_path / "still.h5"), 1e12, 1e13), ref, grid=32)
    assert np.allclose(still.p0_real_ratio, 1.0)              # real space ignores velocities
    assert not np.allclose(still.p0_redshift_ratio, 1.0)      # redshift space does not
    with h5py.File(tmp_path / "out.h5", "w") as f:
        rsd.write(f.create_group("multipoles"), same)
        assert f["multipoles/pred/redshift/P2"].shape == same.k.shape
    assert multipoles_figure(same, tmp_path / "m.png").stat().st_size > 1000


def test_bad_catalogues_are_refused(tmp_path):
    with atomic_h5(tmp_path / "none.h5", standard_attrs(BOX, 0.0, Cosmology())) as f:
        f.create_dataset("density", data=np.ones((8, 8, 8), np.float32))
    with pytest.raises(HalopaintError, match="no halo catalogue"):
        rsd.read_catalogue(str(tmp_path / "none.h5"))
    _write_catalogue(tmp_path / "c.h5", "catalog", np.zeros((3, 3)), np.zeros((3, 3)), np.full(3, 1e12))
    with pytest.raises(HalopaintError, match="no halo with mass"):
        rsd.read_catalogue(str(tmp_path / "c.h5"), 1e13, 1e14)


def test_lines_of_sight_are_averaged(tmp_path):
    """compare(axes=(0, 1, 2)) is the mean of the single-axis multipoles; the axes are recorded."""
    rng = np.random.default_rng(5)
    n = 20000
    pos, vel, mass = rng.random((n, 3)) * BOX, rng.normal(scale=300.0, size=(n, 3)), np.full(n, 5e12)
    _write_catalogue(tmp_path / "t.h5", "catalog", pos, vel, mass)
    cat = rsd.read_catalogue(str(tmp_path / "t.h5"))
    single = [rsd.multipoles_of(cat, 32, axes=(a,))["redshift"] for a in (0, 1, 2)]
    mean = rsd.multipoles_of(cat, 32, axes=(0, 1, 2))["redshift"]
    np.testing.assert_allclose(mean.P2, np.mean([m.P2 for m in single], axis=0), rtol=1e-12)
    np.testing.assert_allclose(mean.P0, np.mean([m.P0 for m in single], axis=0), rtol=1e-12)
    assert mean.attrs["axes"] == [0, 1, 2]
    assert not np.allclose(single[0].P2, single[2].P2)
