"""Periodic FoF on synthetic catalogues (exact groups, boundary straddlers) and the grid assignments."""

from __future__ import annotations

import numpy as np
import pytest

from halopaint.sim.fof import fof_groups, fof_labels
from halopaint.sim.grids import cic_paint, cic_readout, ngp_counts


def _brute_force_labels(pos, box, b):
    """Union-find over all pairs with the periodic minimum-image distance (reference, O(m²))."""
    m = len(pos)
    parent = list(range(m))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    d = pos[:, None, :] - pos[None, :, :]
    d -= box * np.round(d / box)
    close = np.sqrt((d**2).sum(-1)) < b
    for i, j in zip(*np.nonzero(np.triu(close, 1))):
        parent[find(i)] = find(j)
    return np.array([find(i) for i in range(m)])


def _same_partition(a, b):
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    pairs = set(zip(ia.tolist(), ib.tolist()))
    return len(pairs) == len(set(ia.tolist())) == len(set(ib.tolist()))


def _synthetic_catalog(seed=0, box=100.0, b=1.0):
    """Chains of friends (spacing 0.8 b) at known centres, some across the box faces/corner, plus field
    particles far from everything. Returns pos, true group id per particle (−1 = field), centres, sizes."""
    rng = np.random.default_rng(seed)
    centres = np.array([[50, 50, 50], [0.2, 30, 70], [99.7, 99.8, 0.1], [20, 99.9, 40], [70, 10, 0.05]])
    sizes = [15, 12, 30, 10, 9]           # the last is below the 10-particle cut
    pos, gid = [], []
    for g, (c, s) in enumerate(zip(centres, sizes)):
        # a random walk with steps of 0.8 b, recentred so its centre of mass is exactly c
        steps = rng.normal(size=(s, 3))
        steps *= 0.8 * b / np.linalg.norm(steps, axis=1, keepdims=True)
        walk = np.cumsum(steps, axis=0)
        walk -= walk.mean(0)
        pos.append(np.mod(c + walk, box))
        gid += [g] * s
    # isolated field particles on a coarse lattice away from the groups
    grid = np.stack(np.meshgrid(*[np.arange(5, 100, 10.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    d = grid[:, None, :] - centres[None]
    d -= box * np.round(d / box)
    far = np.sqrt((d**2).sum(-1)).min(1) > 15
    pos.append(grid[far])
    gid += [-1] * int(far.sum())
    return np.concatenate(pos), np.array(gid), centres, np.array(sizes)


def test_fof_labels_match_brute_force_with_periodic_boundary():
    for seed in range(3):
        pos, _, _, _ = _synthetic_catalog(seed)
        labels = fof_labels(pos, 100.0, 1.0)
        assert _same_partition(labels, _brute_force_labels(pos, 100.0, 1.0))


def test_fof_random_points_match_brute_force():
    rng = np.random.default_rng(5)
    pos = rng.random((600, 3)) * 20.0
    assert _same_partition(fof_labels(pos, 20.0, 1.3), _brute_force_labels(pos, 20.0, 1.3))


def test_fof_groups_exact_members_mass_and_unwrapped_centres():
    pos, gid, centres, sizes = _synthetic_catalog(1)
    cat = fof_groups(pos, 100.0, particle_mass=2.5e10, linking_length=1.0, min_particles=10)
    kept = sizes >= 10
    assert sorted(cat.n_part.tolist(), reverse=True) == sorted(sizes[kept].tolist(), reverse=True)
    np.testing.assert_array_equal(cat.mass, cat.n_part * 2.5e10)
    assert np.all(np.diff(cat.n_part) <= 0)
    for c, s in zip(centres[kept], sizes[kept]):
        match = np.nonzero(cat.n_part == s)[0]
        assert len(match) == 1
        d = cat.pos[match[0]] - c
        d -= 100.0 * np.round(d / 100.0)
        assert np.abs(d).max() < 1e-9, (c, cat.pos[match[0]])
    assert np.all((cat.pos >= 0) & (cat.pos < 100.0))


def test_fof_mean_velocity_is_the_members_mean():
    """Each group's /catalog/vel = the mean of its members' velocities (gid: the true group of each point)."""
    pos, gid, centres, sizes = _synthetic_catalog(1)
    vel = np.random.default_rng(3).normal(0, 300.0, pos.shape)
    cat = fof_groups(pos, 100.0, particle_mass=2.5e10, linking_length=1.0, min_particles=10, vel=vel)
    assert cat.vel.shape == (cat.n_part.size, 3)
    for g, s in enumerate(sizes):
        if s < 10:
            continue
        match = np.nonzero(cat.n_part == s)[0]
        np.testing.assert_allclose(cat.vel[match[0]], vel[gid == g].mean(axis=0), rtol=1e-12, atol=1e-9)
    assert fof_groups(pos, 100.0, 2.5e10, 1.0, 10).vel is None


def test_fof_no_groups():
    pos = np.stack(np.meshgrid(*[np.arange(0, 10.0, 2.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    cat = fof_groups(pos, 10.0, 1.0, 1.0, 2)
    assert cat.pos.shape == (0, 3) and cat.mass.size == 0


def test_cic_paint_conserves_mass_and_is_adjoint_of_readout():
    rng = np.random.default_rng(2)
    pos = rng.random((5000, 3)) * 32.0
    grid = np.zeros((16, 16, 16))
    cic_paint(grid, pos, 32.0)
    assert grid.sum() == pytest.approx(5000.0, rel=1e-12)
    field = rng.normal(size=(16, 16, 16))
    # <paint(p), f> = Σ_p readout(f, p): painting is the transpose of interpolation
    assert (grid * field).sum() == pytest.approx(cic_readout(field, pos, 32.0).sum(), rel=1e-10)
    vec = np.stack([field, 2 * field, -field], -1)
    np.testing.assert_allclose(cic_readout(vec, pos, 32.0), cic_readout(field, pos, 32.0)[:, None] * [1, 2, -1],
                               rtol=1e-12)


def test_cic_weights_at_centres_and_faces():
    grid = np.zeros((8, 8, 8))
    cic_paint(grid, np.array([[2.5, 3.5, 7.5]]), 8.0)        # a voxel centre → one voxel
    assert grid[2, 3, 7] == 1.0 and grid.sum() == 1.0
    grid[...] = 0
    cic_paint(grid, np.array([[0.0, 0.5, 0.5]]), 8.0)        # on the x face: half to voxel 7 (periodic)
    assert grid[0, 0, 0] == 0.5 and grid[7, 0, 0] == 0.5
    # a linear field is read out exactly between voxel centres
    x = (np.arange(8) + 0.5)[:, None, None] * np.ones((8, 8, 8))
    assert cic_readout(x, np.array([[3.3, 4.0, 1.0]]), 8.0)[0] == pytest.approx(3.3)


def test_ngp_counts_bins_and_wrapping():
    pos = np.array([[0.1, 0.1, 0.1], [7.9, 0.1, 0.1], [7.99, 7.99, 7.99], [4.0, 4.0, 4.0], [1.0, 1.0, 1.0]])
    mass = np.array([1e12, 5e12, 9.99e12, 1e13, 5e11])
    counts = ngp_counts(pos, mass, [1e12, 1e13, 1e14], 8, 8.0)
    assert counts.shape == (2, 8, 8, 8) and counts.dtype == np.float32
    assert counts[0, 0, 0, 0] == 1 and counts[0, 7, 0, 0] == 1 and counts[0, 7, 7, 7] == 1
    assert counts[1, 4, 4, 4] == 1 and counts.sum() == 4      # 5e11 is below every bin


def test_slab_mesh_equals_cic_paint_and_weights_velocities_by_mass():
    from halopaint.sim.assign import SlabMesh
    rng = np.random.default_rng(8)
    pos = rng.random((3000, 3)) * 40.0
    pos[:3] = [[0, 0, 0], [39.9999999, 20, 0], [5.0, 5.0, 5.0]]
    ref = np.zeros((10, 10, 10))
    cic_paint(ref, pos, 40.0)
    vel = np.tile([100.0, -50.0, 7.0], (3000, 1))
    mesh = SlabMesh(10, 40.0)
    mesh.deposit(pos, vel)
    rho, v = mesh.finish(3000)
    np.testing.assert_allclose(rho, ref * 1000 / 3000, rtol=1e-6)
    filled = rho > 0
    np.testing.assert_allclose(v[:, filled], np.array([100.0, -50.0, 7.0])[:, None] * np.ones(filled.sum()), rtol=1e-6)
    # velocities are mass-weighted: two particles in one voxel centre → the mean
    mesh = SlabMesh(4, 4.0)
    mesh.deposit(np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [2.5, 2.5, 2.5]]),
                 np.array([[10.0, 0, 0], [30.0, 0, 0], [0, 0, -5.0]]))
    rho, v = mesh.finish(3)
    assert v[0, 0, 0, 0] == pytest.approx(20.0) and v[2, 2, 2, 2] == pytest.approx(-5.0)
    assert v[:, 1, 1, 1].tolist() == [0.0, 0.0, 0.0]     # no mass → 0
