"""Slab plans, periodic index ranges, tile plans and tile assembly (serial; the exchange runs on COMM_SELF)."""

import numpy as np
import pytest
from mpi4py import MPI

from halopaint.decomposition import (MIN_GRID, DecompositionError, exchange_ghosts, periodic_ranges,
                                  plan_slabs, read_periodic_planes)
from halopaint.paint import (PaintError, TileShape, choose_tile, fixed_bytes, read_tile_input, tile_bytes,
                          tiles_of_slab)


def coordinate_field(n: int) -> np.ndarray:
    """Value = x·N² + y·N + z: every voxel says where it is (exact in float32 for N ≤ 200)."""
    return np.arange(n**3, dtype=np.float32).reshape(n, n, n)


@pytest.mark.parametrize("n,r,g", [(61, 1, 4), (61, 2, 4), (61, 3, 4), (61, 15, 4), (25, 6, 4), (2048, 512, 4),
                                   (100, 7, 0)])
def test_slabs_cover_the_grid_and_differ_by_at_most_one_plane(n, r, g):
    plan = plan_slabs(n, r, g)
    bounds = [plan.bounds(k) for k in range(r)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(bounds[k][1] == bounds[k + 1][0] for k in range(r - 1))
    thick = [b - a for a, b in bounds]
    assert max(thick) - min(thick) <= 1 and min(thick) >= g
    assert plan.max_thickness == max(thick)


@pytest.mark.parametrize("n,r,g", [(61, 16, 4), (25, 7, 4), (30, 3, 12)])
def test_more_ranks_than_n_over_g_is_refused(n, r, g):
    with pytest.raises(DecompositionError, match="thinner than the ghost width"):
        plan_slabs(n, r, g)


def test_grid_below_minimum_is_refused():
    with pytest.raises(DecompositionError, match=f"N ≥ {MIN_GRID}"):
        plan_slabs(MIN_GRID - 1, 1, 4)


def test_neighbours_are_periodic():
    plan = plan_slabs(61, 3, 4)
    assert plan.neighbours(0) == (2, 1) and plan.neighbours(2) == (1, 0)


@pytest.mark.parametrize("start,stop,n", [(-4, 29, 25), (0, 25, 25), (21, 33, 25), (-4, 4, 25), (-4, 33, 25)])
def test_periodic_ranges_match_modular_indices(start, stop, n):
    out = np.empty(stop - start, int)
    for a, b, d in periodic_ranges(start, stop, n):
        assert 0 <= a < b <= n
        out[d:d + b - a] = np.arange(a, b)
    np.testing.assert_array_equal(out, np.arange(start, stop) % n)


@pytest.mark.parametrize("start,stop", [(-1, 3), (5, 9), (6, 9), (-1, 9), (0, 7)])
def test_read_periodic_planes_is_modular_take(start, stop):
    rng = np.random.default_rng(4)
    density, velocity = rng.random((7, 3, 2)), rng.random((3, 7, 3, 2))
    idx = np.arange(start, stop) % 7
    np.testing.assert_array_equal(read_periodic_planes(density, start, stop, 7), density[idx].astype(np.float32))
    np.testing.assert_array_equal(read_periodic_planes(velocity, start, stop, 7, axis=1),
                                  velocity[:, idx].astype(np.float32))


def test_self_exchange_is_the_periodic_wrap():
    n, g = 27, 4
    field = coordinate_field(n)
    plan = plan_slabs(n, 1, g)
    left, right = exchange_ghosts(MPI.COMM_SELF, plan, field[:g], field[-g:])
    np.testing.assert_array_equal(left, field[n - g:])
    np.testing.assert_array_equal(right, field[:g])


@pytest.mark.parametrize("shape", [(61, 61, 61), (7, 20, 30), (1, 61, 5), (25, 13, 61)])
def test_tiles_cover_the_slab_exactly_once(shape):
    n, thick = 61, 21
    hits = np.zeros((thick, n, n), int)
    tiles = tiles_of_slab(thick, n, TileShape(*shape))
    for a, b, y0, y1, z0, z1 in tiles:
        assert b - a <= shape[0] and y1 - y0 <= shape[1] and z1 - z0 <= shape[2]
        hits[a:b, y0:y1, z0:z1] += 1
    assert (hits == 1).all()


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_tile_input_is_the_periodically_padded_box(rank):
    """Own planes from the 'file', x-ghosts from the neighbours, y/z wrapped: equals np.pad(wrap)."""
    n, g = 29, 4
    field = coordinate_field(n)
    padded = np.pad(field, g, mode="wrap")
    plan = plan_slabs(n, 3, g)
    x0, x1 = plan.bounds(rank)
    left = field[np.arange(x0 - g, x0) % n]
    right = field[np.arange(x1, x1 + g) % n]
    for tile in tiles_of_slab(x1 - x0, n, TileShape(4, 11, 29)):
        a, b, y0, y1, z0, z1 = tile
        got = read_tile_input(field, left, right, x0, x1, tile, n, g)
        want = padded[x0 + a:x0 + b + 2 * g, y0:y1 + 2 * g, z0:z1 + 2 * g]
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n,r,mem", [(61, 1, 1 << 30), (256, 2, 600 << 20), (1024, 2, 4 << 30),
                                     (2048, 64, 4 << 30), (2048, 8, 40 << 30)])
def test_chosen_tile_fits_the_memory_bound(n, r, mem):
    plan = plan_slabs(n, r, 4)
    t = choose_tile(plan, mem, 5.0)
    assert 1 <= t.x <= plan.max_thickness and 1 <= t.y <= n and 1 <= t.z <= n
    assert fixed_bytes(plan) + tile_bytes(t.x, t.y, t.z, 4, 5.0) <= mem
    assert choose_tile(plan, mem, 5.0) == t  # deterministic (resume relies on it)


def test_kernel_bounded_memory_is_budgeted():
    """The fused CPU path's tile-independent memory (spectra, per-thread buffers) comes off the budget."""
    from halopaint.kernels.cpu import FusedCPUKernel
    plan, mem = plan_slabs(512, 2, 4), 2 << 30
    for threads in (1, 4):
        kb = FusedCPUKernel.bounded_bytes(threads)
        t = choose_tile(plan, mem, FusedCPUKernel.working_set_factor, kb)
        assert fixed_bytes(plan, kb) + tile_bytes(t.x, t.y, t.z, 4, FusedCPUKernel.working_set_factor) <= mem
    assert FusedCPUKernel.bounded_bytes(4) > FusedCPUKernel.bounded_bytes(1) > 150 << 20   # measured 150 MB
    with pytest.raises(PaintError, match="too small"):
        choose_tile(plan_slabs(64, 1, 4), (512 << 20) + FusedCPUKernel.bounded_bytes(1) // 2, 0.5,
                    FusedCPUKernel.bounded_bytes(1))


def test_too_little_memory_is_refused():
    with pytest.raises(PaintError, match="too small"):
        choose_tile(plan_slabs(64, 1, 4), 100 << 20, 5.0)
