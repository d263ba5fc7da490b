"""The 24 cube rotations and periodic patch sampling used in training."""

from __future__ import annotations

import numpy as np
import torch

from halopaint.patches import ROTATIONS, PatchSampler, Region, periodic_patch, rotate, rotation_matrix


def test_24_rotations_are_proper_and_distinct():
    mats = [rotation_matrix(r) for r in ROTATIONS]
    assert len(ROTATIONS) == 24
    assert all(round(np.linalg.det(m)) == 1 for m in mats)
    assert len({m.tobytes() for m in mats}) == 24
    x = np.random.default_rng(0).random((4, 4, 4))
    assert len({rotate(x, r).tobytes() for r in ROTATIONS}) == 24


def test_rotations_form_a_group_under_composition():
    x = np.random.default_rng(1).random((2, 3, 3, 3))   # leading channel axis is left alone
    actions = {rotate(x, r).tobytes(): i for i, r in enumerate(ROTATIONS)}
    assert rotate(x, ((0, 1, 2), (False, False, False))).tobytes() in actions   # identity
    for r1 in ROTATIONS:
        inverse_found = False
        for r2 in ROTATIONS:
            composed = np.ascontiguousarray(rotate(rotate(x, r1), r2))
            assert composed.tobytes() in actions          # closed
            inverse_found |= np.array_equal(composed, x)
        assert inverse_found                               # every element has an inverse


def test_rotate_numpy_and_torch_agree():
    x = np.random.default_rng(2).random((1, 5, 4, 3)).astype(np.float32)
    for r in ROTATIONS:
        np.testing.assert_array_equal(rotate(x, r), rotate(torch.from_numpy(x), r).numpy())


def test_periodic_patch_wraps():
    f = np.random.default_rng(3).random((2, 8, 9, 10))
    corner, size = (6, 7, 2), 5
    expected = np.roll(f, shift=[-c for c in corner], axis=(1, 2, 3))[:, :size, :size, :size]
    np.testing.assert_array_equal(periodic_patch(f, corner, size), expected)


def test_sampler_pairs_density_and_halos_under_the_same_rotation():
    """With halos == density, the halo patch must be the density patch's centre after any rotation."""
    f = np.random.default_rng(4).random((16, 16, 16)).astype(np.float32)
    s = PatchSampler([(f, f)], [Region(16)], patch=6, ghost=4, seed_sequence=np.random.SeedSequence(0))
    seen_wrap = False
    for _ in range(40):
        d, h = s.draw(1)
        assert d.shape == (1, 1, 14, 14, 14) and h.shape == (1, 1, 6, 6, 6)
        np.testing.assert_array_equal(d[..., 4:-4, 4:-4, 4:-4], h)
    # wrap: corners beyond N − side occur, and the patches then still come from the periodic box
    s2 = PatchSampler([(f, f)], [Region(16)], patch=6, ghost=4, seed_sequence=np.random.SeedSequence(1),
                      rotate_patches=False)
    for _ in range(40):
        state = s2.state()
        d, _ = s2.draw(1)
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = state
        rng.integers(1)
        corner = (int(rng.integers(0, 16)), int(rng.integers(16)), int(rng.integers(16)))
        seen_wrap |= max(corner) > 16 - 14
        np.testing.assert_array_equal(d[0, 0], periodic_patch(f, corner, 14))
    assert seen_wrap


def test_held_out_x_range_is_never_touched():
    n = 24
    xcoord = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, n, n)).copy()
    s = PatchSampler([(xcoord, xcoord)], [Region(n, 0, 16)], patch=4, ghost=4,
                     seed_sequence=np.random.SeedSequence(5))
    lo, hi = n, -1
    for _ in range(60):
        d, _ = s.draw(1)
        lo, hi = min(lo, d.min()), max(hi, d.max())
    assert lo >= 0 and hi <= 15


def test_streams_are_reproducible_and_distinct():
    f = np.random.default_rng(6).random((12, 12, 12)).astype(np.float32)
    mk = lambda key: PatchSampler([(f, f)], [Region(12)], 2, 4, np.random.SeedSequence(key))  # noqa: E731
    a, b, c = mk([0, 0, 1]), mk([0, 0, 1]), mk([0, 1, 1])
    da, db, dc = a.draw(3)[0], b.draw(3)[0], c.draw(3)[0]
    np.testing.assert_array_equal(da, db)
    assert not np.array_equal(da, dc)
