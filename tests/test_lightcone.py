"""Light cones (engine/lightcone.py): distances against colossus, geometry and maps against a brute-force
loop over every replicated voxel, snapshot choice, catalogues, and bad input. MPI: test_lightcone_mpi.py."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from halopaint.config import Cosmology, LightconeConfig, default_mass_bin_edges
from halopaint.errors import HalopaintError
from halopaint.fields import standard_attrs, write_field

hp = pytest.importorskip("healpy")
from halopaint import lightcone  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def write_painted(path, n: int, box: float, z: float, seed: int = 0, value: float | None = None, bins: int = 2):
    """A painted-field file: /halos (bins, n, n, n) Gamma(2, ½) counts (mean 1) or a constant `value`."""
    rng = np.random.default_rng(seed)
    halos = np.full((bins, n, n, n), value, np.float32) if value is not None else \
        rng.gamma(2.0, 0.5, size=(bins, n, n, n)).astype(np.float32)
    write_field(path, standard_attrs(box, z, Cosmology(), mass_bin_edges=default_mass_bin_edges()[:bins + 1]),
                halos=halos)
    return halos


def brute_force_maps(halos, box, observer, chi_edges, nside, subsample=1, reach=4):
    """Every voxel (sub-)centre of every replica within `reach` boxes, assigned one by one: (S, bins, npix)."""
    bins, n = halos.shape[0], halos.shape[1]
    h = box / n
    npix = hp.nside2npix(nside)
    out = np.zeros((len(chi_edges) - 1, bins, npix))
    idx = np.arange(n)
    offs = lightcone.subsample_offsets(subsample)
    ix, iy, iz = np.meshgrid(idx, idx, idx, indexing="ij")
    for rep in itertools.product(range(-reach, reach + 1), repeat=3):
        for off in offs:
            pos = [(i + 0.5 + off[a]) * h + rep[a] * box - observer[a] for a, i in enumerate((ix, iy, iz))]
            r = np.sqrt(pos[0] ** 2 + pos[1] ** 2 + pos[2] ** 2)
            s = np.searchsorted(chi_edges, r, side="right") - 1
            ok = (s >= 0) & (s < len(chi_edges) - 1)
            if not ok.any():
                continue
            pix = hp.vec2pix(nside, pos[0][ok], pos[1][ok], pos[2][ok])
            for b in range(bins):
                np.add.at(out[:, b], (s[ok], pix), halos[b][ok] / len(offs))
    return out


def test_comoving_distance_matches_colossus():
    cosmology_module = pytest.importorskip("colossus.cosmology.cosmology")
    c = Cosmology()
    col = cosmology_module.setCosmology("halopaint-lightcone", params=dict(
        flat=True, H0=100 * c.h, Om0=c.Omega_m, Ob0=c.Omega_b, sigma8=c.sigma8, ns=c.n_s, relspecies=False),
        persistence="")
    z = np.array([0.01, 0.1, 0.5, 1.0, 2.0, 3.0])
    dist = lightcone.DistanceRedshift(c, 3.0)
    ref = col.comovingDistance(z_min=0.0, z_max=z)                       # [Mpc/h]
    assert np.max(np.abs(dist.chi(z) / ref - 1)) < 1e-5
    assert np.max(np.abs(dist.redshift(dist.chi(z)) - z)) < 1e-6


def test_replicas_cover_every_voxel_in_the_shells():
    rng = np.random.default_rng(3)
    box, n = 40.0, 6
    centres = (np.arange(n) + 0.5) * box / n
    for _ in range(5):
        obs = rng.uniform(-30, 70, 3)
        lo, hi = sorted(rng.uniform(0, 150, 2))
        listed = set(lightcone.replicas(obs, box, lo, hi))
        for rep in itertools.product(range(-6, 7), repeat=3):
            p = np.stack(np.meshgrid(*(centres + rep[a] * box - obs[a] for a in range(3)), indexing="ij"))
            r = np.sqrt((p ** 2).sum(0))
            if np.any((r >= lo) & (r < hi)):
                assert rep in listed, (obs, lo, hi, rep)


@pytest.mark.parametrize("subsample", [1, 2])
def test_maps_equal_brute_force_assignment(tmp_path, subsample):
    """Every expected count lands in the shell and pixel of its (sub-)centre: the maps equal an independent
    loop over all replicated voxels (float32 storage: 1e-6 relative)."""
    box, n = 40.0, 8
    halos = write_painted(tmp_path / "p.h5", n, box, 0.0, seed=1)
    obs = (13.0, -7.5, 22.0)
    cfg = LightconeConfig(inputs=(str(tmp_path / "p.h5"),), out=str(tmp_path / "lc.h5"), z_max=0.03, shells=3,
                          nside=8, observer=obs, subsample=subsample, figure=False, planes_per_read=3)
    summary = lightcone.build(cfg, comm=None, progress=False)
    with h5py.File(cfg.out) as f:
        maps, edges = f["maps"][:], f["shells/chi_edges"][:]
        assert f.attrs["complete"] and f.attrs["nside"] == 8 and f.attrs["ordering"] == "RING"
    ref = brute_force_maps(halos, box, np.array(obs), edges, 8, subsample)
    assert maps.shape == ref.shape == (3, 2, hp.nside2npix(8))
    assert np.abs(maps - ref).max() <= 1e-6 * ref.max()
    assert summary["replicas"] < 9**3


def test_uniform_field_fills_shells_by_volume(tmp_path):
    box, n = 64.0, 16
    write_painted(tmp_path / "u.h5", n, box, 0.0, value=1.0, bins=1)
    cfg = LightconeConfig(inputs=(str(tmp_path / "u.h5"),), out=str(tmp_path / "lc.h5"), z_min=0.02, z_max=0.05,
                          shells=2, nside=16, observer=(5.0, 6.0, 7.0), figure=False)
    lightcone.build(cfg, comm=None, progress=False)
    with h5py.File(cfg.out) as f:
        totals, edges = f["shells/total_expected"][:, 0], f["shells/chi_edges"][:]
    volume = 4 / 3 * np.pi * np.diff(edges ** 3) / (box / n) ** 3     # voxels in each shell
    assert np.max(np.abs(totals / volume - 1)) < 0.01


def test_each_shell_uses_the_nearest_snapshot(tmp_path):
    box, n = 64.0, 16
    write_painted(tmp_path / "a.h5", n, box, 0.0, value=1.0, bins=1)
    write_painted(tmp_path / "b.h5", n, box, 0.04, value=3.0, bins=1)
    cfg = LightconeConfig(inputs=(str(tmp_path / "b.h5"), str(tmp_path / "a.h5")), out=str(tmp_path / "lc.h5"),
                          z_edges=(0.005, 0.015, 0.03, 0.05), nside=8, figure=False, snapshot_blend="nearest")
    lightcone.build(cfg, comm=None, progress=False)
    with h5py.File(cfg.out) as f:
        snap, totals, edges = f["shells/snapshot"][:], f["shells/total_expected"][:, 0], f["shells/chi_edges"][:]
        sources = f.attrs["sources"]
        assert f.attrs["snapshot_choice"] == "nearest"
        assert np.array_equal(f["shells/snapshot_fraction"][:], np.eye(2)[[1, 0, 0]])
    # inputs: b (z = 0.04) first, a (z = 0) second; middle redshifts ≈ 0.010, 0.0225, 0.040
    assert list(snap) == [1, 0, 0]
    assert "sha256" in sources
    per_voxel = totals / (4 / 3 * np.pi * np.diff(edges ** 3) / (box / n) ** 3)
    assert np.allclose(per_voxel, [1.0, 3.0, 3.0], rtol=0.02)


def test_catalogue_is_poisson_reproducible_and_consistent(tmp_path):
    box, n = 64.0, 16
    rng = np.random.default_rng(5)
    halos = (rng.gamma(2.0, 5.0, (2, n, n, n)) * (rng.random((2, n, n, n)) < 0.1)).astype(np.float32)
    write_field(tmp_path / "p.h5", standard_attrs(box, 0.0, Cosmology(), mass_bin_edges=default_mass_bin_edges()[:3]),
                halos=halos)
    base = dict(inputs=(str(tmp_path / "p.h5"),), z_min=0.01, z_max=0.04, shells=2, nside=8,
                observer=(1.0, 2.0, 3.0), catalogue=True, figure=False)
    out = {}
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        cfg = LightconeConfig(out=str(tmp_path / f"{name}.h5"), seed=seed, **base)
        lightcone.build(cfg, comm=None, progress=False)
        with h5py.File(cfg.out) as f:
            out[name] = {k: f[f"catalogue/{k}"][:] for k in lightcone.CATALOGUE_COLUMNS}
            out[name]["_maps"], out[name]["_edges"] = f["maps"][:], f["shells/chi_edges"][:]
            zedges = f["shells/z_edges"][:]
    a = out["a"]
    assert all(np.array_equal(a[k], out["b"][k]) for k in lightcone.CATALOGUE_COLUMNS)
    assert not np.array_equal(a["ra"][:1000], out["c"]["ra"][:1000])
    edges = a["_edges"]
    assert np.all((a["chi"] >= edges[0]) & (a["chi"] < edges[-1]))
    assert np.all((a["ra"] >= 0) & (a["ra"] < 360) & (np.abs(a["dec"]) <= 90))
    assert np.all((a["z_cos"] >= zedges[0] - 1e-9) & (a["z_cos"] <= zedges[-1] + 1e-9))
    # counts per shell and mass bin: Poisson around the maps' expectation (sampled positions vs centres
    # differ only at the shell boundaries)
    shell = np.searchsorted(edges, a["chi"], side="right") - 1
    for s in range(2):
        for b in range(2):
            expected = a["_maps"][s, b].sum()
            got = np.count_nonzero((shell == s) & (a["mass_bin"] == b))
            assert abs(got - expected) < 5 * np.sqrt(expected) + 0.01 * expected, (s, b, got, expected)
    # directions: each halo's (RA, Dec, χ) points back into an occupied voxel (90 % of voxels are empty)
    obs = np.array(base["observer"])
    pos = obs[:, None] + a["chi"] * np.stack([np.cos(np.radians(a["dec"])) * np.cos(np.radians(a["ra"])),
                                     np.cos(np.radians(a["dec"])) * np.sin(np.radians(a["ra"])),
                                     np.sin(np.radians(a["dec"]))])
    vox = np.floor(np.mod(pos, box) / (box / n)).astype(int) % n
    assert np.all(halos[a["mass_bin"], vox[0], vox[1], vox[2]] > 0)


def test_direction_convention_of_a_single_voxel(tmp_path):
    """One occupied voxel seen from a known observer: its count lands in healpy's pixel of its direction,
    RA = atan2(y, x), Dec = asin(z/r)."""
    box, n = 32.0, 8
    halos = np.zeros((1, n, n, n), np.float32)
    halos[0, 6, 1, 5] = 50.0
    write_field(tmp_path / "one.h5", standard_attrs(box, 0.0, Cosmology(),
                                                    mass_bin_edges=default_mass_bin_edges()[:2]), halos=halos)
    obs = np.array([2.0, 2.0, 2.0])
    cfg = LightconeConfig(inputs=(str(tmp_path / "one.h5"),), out=str(tmp_path / "lc.h5"), z_edges=(0.0, 0.012),
                          nside=16, observer=tuple(obs), figure=False, catalogue=True)
    lightcone.build(cfg, comm=None, progress=False)
    centre = (np.array([6, 1, 5]) + 0.5) * box / n - obs
    with h5py.File(cfg.out) as f:
        m = f["maps"][0, 0]
        ra, dec = f["catalogue/ra"][:], f["catalogue/dec"][:]
    # χ(0.012) ≈ 35.9 Mpc/h: this copy (r = 31.5) and nearer periodic copies are inside, 50 counts each
    assert m[hp.vec2pix(16, *centre)] == pytest.approx(50.0)
    assert m.sum() % 50.0 == 0 and m.sum() >= 100.0
    r = np.linalg.norm(centre)
    ra0, dec0 = np.degrees(np.arctan2(centre[1], centre[0])) % 360, np.degrees(np.arcsin(centre[2] / r))
    near = (np.abs(ra - ra0) < 6) & (np.abs(dec - dec0) < 6)            # the voxel subtends ~7° at 31.5 Mpc/h
    assert 20 < near.sum() < 100                                        # Poisson(50) halos from this copy


def run_cli(*args):
    """`halopaint lightcone ARGS` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "halopaint.cli", "lightcone", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_bad_input_is_refused_before_any_output(tmp_path):
    write_painted(tmp_path / "p.h5", 8, 32.0, 0.0)
    write_painted(tmp_path / "q.h5", 8, 40.0, 0.1)
    write_field(tmp_path / "d.h5", standard_attrs(32.0, 0.0, Cosmology()), density=np.ones((8, 8, 8)))
    out = str(tmp_path / "lc.h5")
    p, q, d = (str(tmp_path / f"{x}.h5") for x in "pqd")
    cases = [
        (dict(nside=0), "nside must be a power of two"),
        (dict(nside=12), "nside must be a power of two"),
        (dict(nside=1 << 20), "nside 1048576 is above"),
        (dict(z_min=0.2, z_max=0.1), "z_min < z_max"),
        (dict(z_max=2.0, snapshot_tolerance=5.0), "copies of the 32 Mpc/h box"),
        (dict(z_max=2.0), "from its nearest snapshot"),
        (dict(snapshot_tolerance=-1.0), "--snapshot-tolerance"),
        (dict(snapshot_blend="cubic"), "--snapshot-blend must be one of linear, nearest"),
        (dict(velocity_dispersion=(1.0, 2.0, 3.0)), "--velocity-dispersion"),
        (dict(out=p), "would overwrite the input"),
        (dict(densities=(d, d)), "2 density files for 1 snapshots"),
        (dict(mass_bins=(5,)), "mass bin 5 does not exist"),
        (dict(z_edges=(0.1, 0.05)), "--z-edges must be"),
        (dict(subsample=0), "--subsample must be"),
        (dict(seed=-1), "--seed must be"),
        (dict(inputs=(p, q)), "box_size"),
        (dict(inputs=(d,)), "/halos"),
        (dict(out=str(tmp_path / "missing" / "lc.h5")), "does not exist"),
    ]
    for change, message in cases:
        cfg = LightconeConfig(**{**dict(inputs=(p,), out=out, figure=False), **change})
        with pytest.raises(HalopaintError, match=message.replace("(", r"\(")):
            lightcone.build(cfg, comm=None, progress=False)
    assert not Path(out).exists()


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    write_painted(tmp_path / "p.h5", 8, 32.0, 0.0)
    proc = run_cli(str(tmp_path / "p.h5"), "--out", str(tmp_path / "lc.h5"), "--z-max", "2",
                   "--snapshot-tolerance", "5")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("halopaint lightcone: error:") and "copies" in lines[0]


def test_cli_writes_file_and_figure(tmp_path):
    write_painted(tmp_path / "p.h5", 8, 32.0, 0.0)
    proc = run_cli(str(tmp_path / "p.h5"), "--out", str(tmp_path / "lc.h5"), "--z-max", "0.02", "--shells", "2",
                   "--nside", "8", "--catalogue", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "lc.png").stat().st_size > 1000
    with h5py.File(tmp_path / "lc.h5") as f:
        assert f["maps"].shape == (2, 2, 768) and f["catalogue/ra"].size > 0 and f.attrs["complete"]
