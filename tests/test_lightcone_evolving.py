"""Light-cone catalogues with velocities, masses and observed redshifts; sampled (integer) snapshots; FITS
maps and tables; density files that do not match. (Geometry and maps: test_lightcone.py; MPI:
test_lightcone_mpi.py.)"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from halopaint.config import Cosmology, LightconeConfig, default_mass_bin_edges
from halopaint.errors import HalopaintError
from halopaint.fields import atomic_h5, standard_attrs, write_field
from halopaint.sim.grids import cic_readout

hp = pytest.importorskip("healpy")
from halopaint import lightcone  # noqa: E402

C_KMS = 299792.458


def write_sampled(path, counts: np.ndarray, box: float, z: float, seed: int = 5):
    """A sampled realization: integer /halos (bins, N, N, N)."""
    bins = counts.shape[0]
    with atomic_h5(path, standard_attrs(box, z, Cosmology(), mass_bin_edges=default_mass_bin_edges()[:bins + 1],
                                        seed=seed)) as f:
        f.create_dataset("halos", data=counts.astype(np.int32))


def write_density(path, n: int, box: float, z: float, velocity: np.ndarray | None, seed: int = 5):
    extra = {} if velocity is None else {"velocity": velocity.astype(np.float32)}
    write_field(path, standard_attrs(box, z, Cosmology(), seed=seed), density=np.ones((n, n, n)), extra=extra)


def test_observed_redshift_formula():
    z, v = np.array([0.0, 0.3, 1.0]), np.array([300.0, -150.0, 0.0])
    np.testing.assert_allclose(lightcone.observed_redshift(z, v), (1 + z) * (1 + v / C_KMS) - 1, rtol=0, atol=1e-15)


def test_velocity_slab_is_periodic_cic(tmp_path):
    n, box = 12, 60.0
    rng = np.random.default_rng(2)
    vel = rng.normal(size=(3, n, n, n)).astype(np.float32) * 100
    write_density(tmp_path / "d.h5", n, box, 0.0, vel)
    for x0, x1 in ((0, n), (0, 4), (5, 9), (8, 12)):
        slab = lightcone.VelocitySlab(str(tmp_path / "d.h5"), n, box, x0, x1)
        pos = rng.random((500, 3)) * box
        pos[:, 0] = (x0 + rng.random(500) * (x1 - x0)) * box / n
        want = np.stack([cic_readout(vel[c].astype(np.float64), pos, box) for c in range(3)], axis=1)
        np.testing.assert_allclose(slab.at(pos), want, rtol=1e-5, atol=1e-3)


def test_catalogue_columns_from_a_sampled_snapshot_and_its_velocities(tmp_path):
    """One voxel holding 7 halos of bin 1, a constant velocity field: every v_los is v·r̂ exactly, z_obs
    follows from it, masses are inside bin 1's edges, and the 7 halos of each replica in the shells appear."""
    n, box = 8, 32.0
    counts = np.zeros((2, n, n, n), np.int32)
    counts[1, 6, 1, 5] = 7
    write_sampled(tmp_path / "s.h5", counts, box, 0.0)
    v = np.array([300.0, -200.0, 100.0])
    write_density(tmp_path / "d.h5", n, box, 0.0, np.broadcast_to(v[:, None, None, None], (3, n, n, n)).copy())
    obs = np.array([2.0, 2.0, 2.0])
    cfg = LightconeConfig(inputs=(str(tmp_path / "s.h5"),), densities=(str(tmp_path / "d.h5"),),
                          out=str(tmp_path / "lc.h5"), z_edges=(0.0, 0.012), nside=16, observer=tuple(obs),
                          figure=False, catalogue=True, velocity_dispersion=(0.0,))
    summary = lightcone.build(cfg, comm=None, progress=False)
    with h5py.File(cfg.out) as f:
        cat = {k: f[f"catalogue/{k}"][:] for k in lightcone.CATALOGUE_COLUMNS}
        maps = f["maps"][0]
        assert f.attrs["complete"] and "density" in f.attrs["velocities"]
    assert summary["catalogue_halos"] == len(cat["ra"]) >= 14
    # integer counts are used as they are: 7 per voxel copy whose centre is in the shell (maps); the halos,
    # uniform in the voxel, differ only by those of the copy straddling the outer edge
    assert maps[1].sum() % 7 == 0 and abs(len(cat["ra"]) - maps[1].sum()) < 7
    assert np.all(cat["mass_bin"] == 1)
    edges = default_mass_bin_edges()
    assert np.all((cat["mass"] >= edges[1]) & (cat["mass"] < edges[2]))
    ra, dec = np.radians(cat["ra"]), np.radians(cat["dec"])
    rhat = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)
    np.testing.assert_allclose(cat["v_los"], rhat @ v, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(cat["z_obs"], (1 + cat["z_cos"]) * (1 + cat["v_los"] / C_KMS) - 1, atol=1e-12)
    assert np.all(np.abs(cat["z_obs"] - cat["z_cos"]) > 0)


def test_sampled_snapshots_carry_their_velocity_law(tmp_path):
    """Without --velocity-dispersion, a sampled snapshot's count model (g_b, σ_b fitted at its redshift)
    sets the velocities: σ = 0 and g = 1.5 in bin 1 give v_los = 1.5 v·r̂ exactly; recorded in the attrs."""
    import json
    from halopaint.model import CountModel
    n, box = 8, 32.0
    counts = np.zeros((2, n, n, n), np.int32)
    counts[1, 6, 1, 5] = 7
    write_sampled(tmp_path / "s.h5", counts, box, 0.0)
    law = CountModel(alpha=[[0.0], [0.0]], mu_breaks=[[], []], velocity_dispersion=[90.0, 0.0],
                     velocity_bias=[1.1, 1.5])
    with h5py.File(tmp_path / "s.h5", "a") as f:
        f.attrs["count_model"] = json.dumps(law.to_dict())
    v = np.array([300.0, -200.0, 100.0])
    write_density(tmp_path / "d.h5", n, box, 0.0, np.broadcast_to(v[:, None, None, None], (3, n, n, n)).copy())
    cfg = LightconeConfig(inputs=(str(tmp_path / "s.h5"),), densities=(str(tmp_path / "d.h5"),),
                          out=str(tmp_path / "lc.h5"), z_edges=(0.0, 0.012), nside=16, observer=(2.0, 2.0, 2.0),
                          figure=False, catalogue=True)
    lightcone.build(cfg, comm=None, progress=False)
    with h5py.File(cfg.out) as f:
        ra, dec, v_los = (np.radians(f["catalogue/ra"][:]), np.radians(f["catalogue/dec"][:]),
                          f["catalogue/v_los"][:])
        np.testing.assert_allclose(f.attrs["velocity_gain"], [[1.1, 1.5]])
        np.testing.assert_allclose(f.attrs["velocity_dispersion"], [[90.0, 0.0]])
    rhat = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)
    np.testing.assert_allclose(v_los, 1.5 * (rhat @ v), rtol=1e-6, atol=1e-3)


def test_sampled_snapshots_apply_the_infall_term(tmp_path):
    """A count model with γ_b: v_los = r̂ · (g_b v + γ_b h∇δ(voxel)) with σ = 0, h∇δ of the density file's
    /density (voxel_density_gradient); the attr velocity_infall records γ."""
    import json
    from halopaint.model import CountModel
    from halopaint.sample import voxel_density_gradient
    n, box = 8, 32.0
    counts = np.zeros((2, n, n, n), np.int32)
    counts[1, 6, 1, 5], counts[1, 0, 7, 2] = 5, 3
    write_sampled(tmp_path / "s.h5", counts, box, 0.0)
    law = CountModel(alpha=[[0.0], [0.0]], mu_breaks=[[], []], velocity_dispersion=[90.0, 0.0],
                     velocity_bias=[1.1, 1.2], velocity_infall=[10.0, 400.0])
    with h5py.File(tmp_path / "s.h5", "a") as f:
        f.attrs["count_model"] = json.dumps(law.to_dict())
    v = np.array([300.0, -200.0, 100.0])
    x = np.arange(n)
    rho = (1 + 0.3 * np.cos(2 * np.pi * x / n)[:, None, None] * np.sin(2 * np.pi * x / n)[None, None, :]
           * np.ones((1, n, 1)))
    write_field(tmp_path / "d.h5", standard_attrs(box, 0.0, Cosmology(), seed=5), density=rho,
                extra={"velocity": np.broadcast_to(v[:, None, None, None], (3, n, n, n)).astype(np.float32)})
    cfg = LightconeConfig(inputs=(str(tmp_path / "s.h5"),), densities=(str(tmp_path / "d.h5"),),
                          out=str(tmp_path / "lc.h5"), z_edges=(0.0, 0.012), nside=16, observer=(2.0, 2.0, 2.0),
                          figure=False, catalogue=True)
    lightcone.build(cfg, comm=None, progress=False)
    with h5py.File(cfg.out) as f:
        ra, dec, chi, v_los = (np.radians(f["catalogue/ra"][:]), np.radians(f["catalogue/dec"][:]),
                               f["catalogue/chi"][:], f["catalogue/v_los"][:])
        np.testing.assert_allclose(f.attrs["velocity_infall"], [[10.0, 400.0]])
    assert len(v_los) > 0
    rhat = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)
    pos = np.mod(rhat * chi[:, None] + np.array([2.0, 2.0, 2.0]), box)
    grad = voxel_density_gradient(rho, 0, np.floor(pos * n / box).astype(np.int64))
    assert np.abs(grad).max() > 0.01
    np.testing.assert_allclose(v_los, np.sum(rhat * (1.2 * v + 400.0 * grad), axis=1), rtol=1e-5, atol=1e-2)


def test_masses_follow_the_mass_function_in_the_bin():
    from halopaint.sim.cosmology import LinearCosmology
    from halopaint.sim.massfunction import MassSampler, watson13_dndlnm
    lin = LinearCosmology(Cosmology())
    lo, hi = 1e13, 1e14
    sampler = MassSampler(lo, hi, lambda m: watson13_dndlnm(lin, m, 0.5))
    m = sampler.draw(np.random.default_rng(1).random(200_000))
    assert m.min() >= lo and m.max() < hi
    grid = np.logspace(13, 14, 6)
    counts, _ = np.histogram(m, bins=grid)
    fine = np.logspace(13, 14, 501)
    dn = watson13_dndlnm(lin, fine, 0.5)
    want = np.array([np.trapezoid(dn[(fine >= a) & (fine <= b)], np.log(fine[(fine >= a) & (fine <= b)]))
                     for a, b in zip(grid[:-1], grid[1:])])
    np.testing.assert_allclose(counts / counts.sum(), want / want.sum(), rtol=0.02)


@pytest.mark.parametrize("chunk_rows", [3, 1 << 20])
def test_fits_maps_and_table_round_trip(tmp_path, monkeypatch, chunk_rows):
    """FITS maps and the streamed catalogue table (in chunks of `chunk_rows`) read back exactly."""
    monkeypatch.setattr("halopaint.lightcone.driver.FITS_CHUNK_ROWS", chunk_rows)
    from astropy.io import fits
    n, box = 8, 32.0
    rng = np.random.default_rng(4)
    write_field(tmp_path / "p.h5", standard_attrs(box, 0.0, Cosmology(), mass_bin_edges=default_mass_bin_edges()[:3]),
                halos=rng.gamma(2.0, 0.5, (2, n, n, n)))
    cfg = LightconeConfig(inputs=(str(tmp_path / "p.h5"),), out=str(tmp_path / "LC.h5"), z_max=0.02, shells=2,
                          nside=8, figure=False, catalogue=True, fits=True)
    summary = lightcone.build(cfg, comm=None, progress=False)
    assert [p.split("/")[-1] for p in summary["fits"]] == ["LC_shell00.fits", "LC_shell01.fits"]
    with h5py.File(cfg.out) as f:
        maps, z_edges, chi = f["maps"][:], f["shells/z_edges"][:], f["shells/chi_edges"][:]
        cat = {k: f[f"catalogue/{k}"][:] for k in lightcone.CATALOGUE_COLUMNS}
    for s, path in enumerate(summary["fits"]):
        m, header = hp.read_map(path, field=None, h=True)
        header = dict(header)
        assert m.shape == (2, hp.nside2npix(8))
        np.testing.assert_allclose(m, maps[s], rtol=1e-6)
        assert header["NSIDE"] == 8 and header["ORDERING"] == "RING"
        assert header["ZMIN"] == pytest.approx(z_edges[s]) and header["ZMAX"] == pytest.approx(z_edges[s + 1])
        assert header["CHIMAX"] == pytest.approx(chi[s + 1]) and header["MLO1"] == pytest.approx(default_mass_bin_edges()[1])
    with fits.open(summary["fits_catalogue"]) as hdul:
        table = hdul["HALOS"].data
        assert len(table) == len(cat["ra"]) > 3
        for k in lightcone.CATALOGUE_COLUMNS:
            np.testing.assert_array_equal(table[k.upper()], cat[k])
        assert hdul["HALOS"].columns["RA"].unit == "deg"


def test_density_files_must_match_their_snapshots(tmp_path):
    n, box = 8, 32.0
    write_sampled(tmp_path / "s.h5", np.ones((2, n, n, n)), box, 0.0, seed=5)
    vel = np.zeros((3, n, n, n))
    write_density(tmp_path / "seed.h5", n, box, 0.0, vel, seed=6)
    write_density(tmp_path / "box.h5", n, 40.0, 0.0, vel)
    write_density(tmp_path / "z.h5", n, box, 0.5, vel)
    write_density(tmp_path / "novel.h5", n, box, 0.0, None)
    cases = [("seed.h5", "seed 6 differs"), ("box.h5", "box_size 40.0 differs"), ("z.h5", "redshift 0.5 differs"),
             ("novel.h5", "has no /velocity")]
    for name, message in cases:
        cfg = LightconeConfig(inputs=(str(tmp_path / "s.h5"),), densities=(str(tmp_path / name),),
                              out=str(tmp_path / "lc.h5"), figure=False, catalogue=True, z_max=0.02)
        with pytest.raises(HalopaintError, match=message):
            lightcone.build(cfg, comm=None, progress=False)
    assert not (tmp_path / "lc.h5").exists()
