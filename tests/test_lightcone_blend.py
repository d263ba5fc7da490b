"""Snapshot interpolation in the light cone (halopaint.lightcone.blend): the blend weights, one snapshot
giving the nearest-snapshot output, mean counts that interpolate linearly in z, exactly one snapshot per
voxel-replica (maps and catalogue alike), the tolerance rule of each blend, and catalogue rows streamed
block by block. MPI (1 vs 2 vs 3 ranks, both blends): test_lightcone_mpi.py."""

from __future__ import annotations

import itertools

import h5py
import numpy as np
import pytest

from halopaint.config import Cosmology, LightconeConfig, default_mass_bin_edges
from halopaint.errors import HalopaintError
from halopaint.fields import atomic_h5, standard_attrs, write_field

hp = pytest.importorskip("healpy")
from halopaint import lightcone  # noqa: E402
from halopaint.lightcone import catalogue as catalogue_module  # noqa: E402


def write_constant(path, n: int, box: float, z: float, values, integer: bool = False):
    """/halos (bins, n, n, n) constant per bin: painted (float32) or sampled (int32)."""
    values = np.asarray(values)
    halos = np.broadcast_to(values[:, None, None, None], (values.size, n, n, n))
    attrs = standard_attrs(box, z, Cosmology(), mass_bin_edges=default_mass_bin_edges()[:values.size + 1])
    if integer:
        with atomic_h5(path, attrs) as f:
            f.create_dataset("halos", data=halos.astype(np.int32))
    else:
        write_field(path, attrs, halos=halos.astype(np.float32))


def read(path):
    with h5py.File(path) as f:
        cat = {k: f[f"catalogue/{k}"][:] for k in lightcone.CATALOGUE_COLUMNS} if "catalogue" in f else {}
        return f["maps"][:], cat, dict(f.attrs), {k: f[f"shells/{k}"][:] for k in f["shells"]}


def test_blend_weights():
    zs = [0.5, 0.0, 1.0]                                   # input order is not redshift order
    lower, upper, w = lightcone.blend_weights([0.0, 0.25, 0.5, 0.75, 1.0, 1.3], zs)
    assert list(lower) == [1, 1, 0, 0, 2, 2] and list(upper) == [1, 0, 2, 2, 2, 2]
    np.testing.assert_allclose(w[1:4], [0.5, 0.0, 0.5])
    owner = np.where(w >= 1, upper, lower)                 # at a snapshot's own z: that snapshot
    assert list(owner[[0, 2, 4]]) == [1, 0, 2]
    lower, upper, w = lightcone.blend_weights(np.array([[0.1, 0.3]]), [0.2])
    assert lower.shape == (1, 2) and not lower.any() and not upper.any() and not w.any()


def test_blend_draws_are_keyed_by_plane_and_replica_only():
    cfg = LightconeConfig(z_max=0.05, shells=2)
    dist = lightcone.DistanceRedshift(Cosmology(), 0.06)
    plan = lightcone.plan_shells(cfg, [0.0, 0.04], dist)
    a = lightcone.Ownership("linear", plan, dist, [0.0, 0.04], seed=3)
    b = lightcone.Ownership("linear", plan, dist, [0.0, 0.04], seed=3)
    assert np.array_equal(a.uniforms(5, (0, -1, 2), (8, 8)), b.uniforms(5, (0, -1, 2), (8, 8)))
    assert not np.array_equal(a.uniforms(5, (0, -1, 2), (8, 8)), a.uniforms(6, (0, -1, 2), (8, 8)))
    assert not np.array_equal(a.uniforms(5, (0, -1, 2), (8, 8)), a.uniforms(5, (0, -1, 3), (8, 8)))
    # z(r) between the snapshots: both own voxels, in proportion to w
    r = np.full((200, 200), float(dist.chi(0.01)))
    own = a.owners(5, (0, 0, 0), r)
    assert set(np.unique(own)) == {0, 1} and abs(own.mean() - 0.25) < 0.01
    assert a.may_own(0, 0.0, 0.03) and a.may_own(1, 0.0, 0.03) and not a.may_own(1, 0.0, 0.0)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
def test_a_snapshot_owns_nothing_outside_its_chi_range(mode):
    """Ownership.chi_range bounds every voxel-replica a snapshot owns (the driver skips plane-replicas
    beyond it): dense distances from 0 to past the shells, three snapshots, the cone ending below the top one."""
    cfg = LightconeConfig(z_max=0.8, shells=5)
    zs = [0.5, 0.0, 1.0]
    dist = lightcone.DistanceRedshift(Cosmology(), 0.8 * 1.001)
    plan = lightcone.plan_shells(cfg, zs, dist)
    own = lightcone.Ownership(mode, plan, dist, zs, seed=1)
    r = np.linspace(0.0, plan.chi_edges[-1] * 1.05, 40_000).reshape(200, 200)
    owners = own.owners(3, (0, 0, 0), r)
    for index in range(3):
        lo, hi = own.chi_range(index)
        mine = r[owners == index]
        assert np.all((mine > lo) | (mine == 0) & (lo < 0)) and np.all(mine < hi), (mode, index, lo, hi)
    if mode == "linear":     # the z = 0 snapshot owns z < 0.5 only, the z = 1 one z > 0.5 only
        assert own.chi_range(1)[1] == pytest.approx(float(dist.chi(0.5)))
        assert own.chi_range(2)[0] == pytest.approx(float(dist.chi(0.5))) and own.chi_range(2)[1] == np.inf


def test_one_snapshot_gives_the_nearest_output(tmp_path):
    rng = np.random.default_rng(4)
    n, box = 8, 32.0
    halos = (rng.gamma(2.0, 2.0, (2, n, n, n)) * (rng.random((2, n, n, n)) < 0.3)).astype(np.float32)
    write_field(tmp_path / "p.h5", standard_attrs(box, 0.02, Cosmology(),
                                                  mass_bin_edges=default_mass_bin_edges()[:3]), halos=halos)
    out = {}
    for blend in ("linear", "nearest"):
        cfg = LightconeConfig(inputs=(str(tmp_path / "p.h5"),), out=str(tmp_path / f"{blend}.h5"), z_min=0.005,
                              z_max=0.04, shells=3, nside=8, observer=(3.0, 1.0, -4.0), subsample=2, catalogue=True,
                              seed=7, figure=False, snapshot_blend=blend)
        lightcone.build(cfg, comm=None, progress=False)
        out[blend] = read(cfg.out)
    (m1, c1, a1, s1), (m2, c2, a2, s2) = out["linear"], out["nearest"]
    assert np.array_equal(m1, m2) and len(c1["ra"]) > 1000
    assert all(np.array_equal(c1[k], c2[k]) for k in lightcone.CATALOGUE_COLUMNS)
    assert all(np.array_equal(s1[k], s2[k]) for k in s1) and np.all(s1["snapshot_fraction"] == 1.0)
    assert (a1["snapshot_choice"], a2["snapshot_choice"]) == ("linear", "nearest")


def voxel_centres(n: int, box: float, observer, chi_max: float, reach: int = 4) -> np.ndarray:
    """Distances of every voxel centre of every replica within `reach` boxes (brute force), (m,) [Mpc/h]."""
    c = (np.arange(n) + 0.5) * box / n
    out = []
    for rep in itertools.product(range(-reach, reach + 1), repeat=3):
        p = np.meshgrid(*(c + rep[a] * box - observer[a] for a in range(3)), indexing="ij")
        r = np.sqrt(p[0] ** 2 + p[1] ** 2 + p[2] ** 2).ravel()
        out.append(r[r < chi_max])
    return np.concatenate(out)


def test_mean_counts_interpolate_linearly_between_two_snapshots(tmp_path):
    """Constant fields c_a = 1 (z = 0) and c_b = 3 (z = 0.04): each shell's total is Σ over its voxel-replica
    centres of c_a + w (c_b − c_a), w = z(r)/0.04 (capped at 1), within 5σ of the dithering, σ² = Σ w(1 − w)
    (c_b − c_a)² (the voxels' draws are independent); with c_a = c_b = 1 the totals equal the one-snapshot
    totals exactly (each voxel-replica is painted by exactly one snapshot)."""
    n, box, obs = 16, 64.0, np.array([5.0, 6.0, 7.0])
    write_constant(tmp_path / "a.h5", n, box, 0.0, [1.0])
    write_constant(tmp_path / "b.h5", n, box, 0.04, [3.0])
    write_constant(tmp_path / "b1.h5", n, box, 0.04, [1.0])
    base = dict(z_edges=(0.005, 0.015, 0.03, 0.05), nside=8, observer=tuple(obs), figure=False, seed=2)
    totals = {}
    for name, inputs in (("blend", ("b.h5", "a.h5")), ("ones", ("a.h5", "b1.h5")), ("one", ("a.h5",))):
        cfg = LightconeConfig(inputs=tuple(str(tmp_path / i) for i in inputs), out=str(tmp_path / f"{name}.h5"),
                              **base)
        lightcone.build(cfg, comm=None, progress=False)
        _, _, attrs, shells = read(cfg.out)
        totals[name] = shells["total_expected"][:, 0]
        if name == "blend":
            fraction, edges = shells["snapshot_fraction"], shells["chi_edges"]
    assert np.array_equal(totals["ones"], totals["one"])
    dist = lightcone.DistanceRedshift(Cosmology(), 0.06)
    r = voxel_centres(n, box, obs, edges[-1])
    shell = np.searchsorted(edges, r, side="right") - 1
    w = np.clip(dist.redshift(r) / 0.04, 0.0, 1.0)
    for s in range(3):
        sel = shell == s
        want = np.sum(1.0 + 2.0 * w[sel])
        sigma = 2.0 * np.sqrt(np.sum(w[sel] * (1 - w[sel])))
        assert abs(totals["blend"][s] - want) < 5 * sigma + 1e-6 * want, (s, totals["blend"][s], want, sigma)
        # inputs b (z = 0.04) first: fraction[:, 0] is the share painted from b, E = mean w
        assert abs(fraction[s, 0] - w[sel].mean()) < 5 * np.sqrt(np.sum(w[sel] * (1 - w[sel]))) / sel.sum() + 1e-12
    assert 0.1 < fraction[0, 0] < 0.4 and 0.9 < fraction[2, 0] < 1.0
    np.testing.assert_allclose(fraction.sum(axis=1), 1.0)


def test_maps_and_catalogue_use_the_same_owner(tmp_path):
    """Sampled snapshots whose halos sit in different mass bins (a: one halo per voxel in bin 0, z = 0; b: one
    in bin 1, z = 0.03): each halo's bin names the snapshot that painted it, which must be the owner of its
    voxel-replica; the per-bin catalogue counts follow the maps' up to the halos crossing the outer edge."""
    n, box, obs = 8, 32.0, np.array([3.0, -2.0, 9.0])
    write_constant(tmp_path / "a.h5", n, box, 0.0, [1, 0], integer=True)
    write_constant(tmp_path / "b.h5", n, box, 0.03, [0, 1], integer=True)
    cfg = LightconeConfig(inputs=(str(tmp_path / "a.h5"), str(tmp_path / "b.h5")), out=str(tmp_path / "lc.h5"),
                          z_min=0.0, z_max=0.03, shells=2, nside=8, observer=tuple(obs), catalogue=True, seed=9,
                          figure=False, planes_per_read=3)
    lightcone.build(cfg, comm=None, progress=False)
    maps, cat, _, shells = read(cfg.out)
    per_bin = maps.sum(axis=(0, 2))
    assert per_bin.min() > 500
    got = np.bincount(cat["mass_bin"], minlength=2)
    assert np.all(np.abs(got - per_bin) < 0.05 * per_bin), (got, per_bin)
    # the owner of each halo's voxel-replica, recomputed with the driver's plan
    dist = lightcone.DistanceRedshift(Cosmology(), 0.03 * 1.001)
    plan = lightcone.plan_shells(cfg, [0.0, 0.03], dist)
    geo = lightcone.Geometry(n, box, obs, plan, cfg.nside)
    own = lightcone.Ownership("linear", plan, dist, [0.0, 0.03], cfg.seed)
    ra, dec = np.radians(cat["ra"]), np.radians(cat["dec"])
    pos = obs[:, None] + cat["chi"] * np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
    cell = np.floor(pos / geo.voxel + 1e-9).astype(np.int64)
    rep, vox = np.floor_divide(cell, n), np.mod(cell, n)
    for i in range(len(cat["ra"])):
        r = geo.plane_offsets(int(vox[0, i]), tuple(rep[:, i]))[3]
        assert own.owners(int(vox[0, i]), tuple(rep[:, i]), r)[vox[1, i], vox[2, i]] == cat["mass_bin"][i]


def test_linear_blend_tolerates_shells_between_snapshots(tmp_path):
    """A shell midway between snapshots 0.6 apart is refused by the nearest rule (tolerance 0.25) and
    accepted by the blend; beyond the last snapshot both apply the tolerance."""
    write_constant(tmp_path / "a.h5", 8, 256.0, 0.0, [0.01])
    write_constant(tmp_path / "b.h5", 8, 256.0, 0.6, [0.01])
    base = dict(inputs=(str(tmp_path / "a.h5"), str(tmp_path / "b.h5")), z_edges=(0.25, 0.35), nside=4,
                figure=False)
    with pytest.raises(HalopaintError, match="from its nearest snapshot"):
        lightcone.build(LightconeConfig(out=str(tmp_path / "n.h5"), snapshot_blend="nearest", **base), comm=None,
                        progress=False)
    lightcone.build(LightconeConfig(out=str(tmp_path / "l.h5"), **base), comm=None, progress=False)
    with pytest.raises(HalopaintError, match="from its nearest snapshot"):
        lightcone.build(LightconeConfig(out=str(tmp_path / "far.h5"), **{**base, "z_edges": (0.85, 1.0)}),
                        comm=None, progress=False)


def test_catalogue_rows_are_written_block_by_block(tmp_path, monkeypatch):
    """A rank writes the rows of each plane block as it goes (chunked, resizable datasets in the one-rank
    master): the catalogue does not depend on the block size, and no append holds more than one block."""
    rng = np.random.default_rng(8)
    n, box = 12, 48.0
    halos = rng.gamma(2.0, 1.0, (1, n, n, n)).astype(np.float32)
    write_field(tmp_path / "p.h5", standard_attrs(box, 0.0, Cosmology(),
                                                  mass_bin_edges=default_mass_bin_edges()[:2]), halos=halos)
    appended = []
    real = catalogue_module.RowWriter.append

    def spy(self, columns):
        appended.append(real(self, columns))
        return appended[-1]

    monkeypatch.setattr(catalogue_module.RowWriter, "append", spy)
    cats = {}
    for ppr in (2, 12):
        appended.clear()
        cfg = LightconeConfig(inputs=(str(tmp_path / "p.h5"),), out=str(tmp_path / f"lc{ppr}.h5"), z_max=0.03,
                              shells=2, nside=8, observer=(1.0, 2.0, 3.0), catalogue=True, figure=False,
                              planes_per_read=ppr)
        summary = lightcone.build(cfg, comm=None, progress=False)
        assert len(appended) == n // ppr and sum(appended) == summary["catalogue_halos"]
        with h5py.File(cfg.out) as f:
            assert f["catalogue/ra"].chunks is not None and not f["catalogue/ra"].is_virtual
            assert f["catalogue"].attrs["rows"] == summary["catalogue_halos"]
        cats[ppr] = read(cfg.out)[1]
        if ppr == 2:
            assert max(appended) < 0.4 * sum(appended)
    assert all(np.array_equal(cats[2][k], cats[12][k]) for k in lightcone.CATALOGUE_COLUMNS)
