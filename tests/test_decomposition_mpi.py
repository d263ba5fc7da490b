"""Ghost exchange across real MPI ranks: each rank receives exactly the planes its neighbours own."""

import numpy as np
import pytest

from halopaint.decomposition import exchange_ghosts, plan_slabs


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("n", [25, 61])
def test_exchange_moves_exactly_the_neighbouring_planes(n):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    g = 4
    plan = plan_slabs(n, comm.Get_size(), g)
    x0, x1 = plan.bounds(comm.Get_rank())
    # each rank builds only its own planes; values encode (x, y, z)
    x, y, z = np.meshgrid(np.arange(x0, x1), np.arange(n), np.arange(n), indexing="ij")
    own = (x * n * n + y * n + z).astype(np.float32)
    left, right = exchange_ghosts(comm, plan, own[:g], own[-g:])
    yz = (np.arange(n)[:, None] * n + np.arange(n)[None, :]).astype(np.float32)
    want_left = np.stack([(xg % n) * n * n + yz for xg in range(x0 - g, x0)]).astype(np.float32)
    want_right = np.stack([(xg % n) * n * n + yz for xg in range(x1, x1 + g)]).astype(np.float32)
    np.testing.assert_array_equal(left, want_left)
    np.testing.assert_array_equal(right, want_right)
