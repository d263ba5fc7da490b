"""Slab decomposition of an N³ periodic grid along x, and the periodic ghost exchange between slabs.

Rank r of R owns the x-planes [x0_r, x1_r); thicknesses differ by at most one plane (the first N mod R
ranks get one more). A generator with ghost width g needs g planes on each side of every output plane:
rank r receives the last g planes of rank r−1 and the first g planes of rank r+1 (periodic: rank 0 and
rank R−1 are neighbours), by MPI point-to-point `Sendrecv`. y and z are wrapped locally by the painter.
A slab thinner than g cannot supply its neighbours' ghosts, so R > N/g is refused before any work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from halopaint.errors import HalopaintError
from halopaint.partition import part_bounds

MIN_GRID = 25  # smallest N painted: below this the periodic box is smaller than a few receptive fields


class DecompositionError(HalopaintError):
    """An impossible slab plan (grid too small, too many ranks for the ghost width)."""


@dataclass(frozen=True)
class SlabPlan:
    """x-slabs of an N³ grid over R ranks, each with g ghost planes per side."""

    grid: int          # N
    ranks: int         # R
    ghost: int         # g [voxels]

    def bounds(self, rank: int) -> tuple[int, int]:
        """[x0, x1) of `rank`'s own planes."""
        if not 0 <= rank < self.ranks:
            raise ValueError(f"rank {rank} outside 0..{self.ranks - 1}")
        return part_bounds(self.grid, self.ranks, rank)

    def thickness(self, rank: int) -> int:
        x0, x1 = self.bounds(rank)
        return x1 - x0

    @property
    def max_thickness(self) -> int:
        return -(-self.grid // self.ranks)

    def neighbours(self, rank: int) -> tuple[int, int]:
        """(left, right) periodic neighbour ranks: the owners of planes x0−1 and x1."""
        return (rank - 1) % self.ranks, (rank + 1) % self.ranks

    def ghost_bytes_per_rank(self, itemsize: int = 4) -> int:
        """Bytes each rank receives in the exchange (2g planes of N² values)."""
        return 2 * self.ghost * self.grid * self.grid * itemsize


def plan_slabs(grid: int, ranks: int, ghost: int) -> SlabPlan:
    """Validated slab plan; refuses N < MIN_GRID and R > N/g (slabs thinner than their ghosts)."""
    if grid < MIN_GRID:
        raise DecompositionError(f"grid N={grid} is too small to paint (need N ≥ {MIN_GRID})")
    if ranks < 1:
        raise DecompositionError(f"need at least one rank, got {ranks}")
    if ghost < 0:
        raise DecompositionError(f"ghost width must be ≥ 0, got {ghost}")
    if ranks * ghost > grid:
        raise DecompositionError(
            f"{ranks} ranks on N={grid} give slabs thinner than the ghost width g={ghost} "
            f"(need R ≤ N/g = {grid // ghost}); use fewer ranks")
    return SlabPlan(grid=grid, ranks=ranks, ghost=ghost)


def exchange_ghosts(comm, plan: SlabPlan, first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Periodic ghost exchange between x-neighbours.

    first, last: this rank's own first g and last g x-planes, (g, N, N) float32.
    Returns (left, right): the g planes just below x0 (global x0−g … x0−1, mod N, from the left
    neighbour) and the g planes just above x1 (x1 … x1+g−1, mod N, from the right neighbour),
    each (g, N, N) float32. Collective over `comm` (size = plan.ranks); R = 1 exchanges with itself.
    """
    g, n = plan.ghost, plan.grid
    if comm.Get_size() != plan.ranks:
        raise ValueError(f"communicator has {comm.Get_size()} ranks, plan has {plan.ranks}")
    shape = (g, n, n)
    first = np.ascontiguousarray(first, dtype=np.float32)
    last = np.ascontiguousarray(last, dtype=np.float32)
    if first.shape != shape or last.shape != shape:
        raise ValueError(f"ghost source planes must be {shape}, got {first.shape} and {last.shape}")
    left_rank, right_rank = plan.neighbours(comm.Get_rank())
    left = np.empty(shape, np.float32)
    right = np.empty(shape, np.float32)
    if g == 0:
        return left, right
    # my last planes are my right neighbour's left ghosts; my first planes its left neighbour's right ghosts
    comm.Sendrecv(last, dest=right_rank, sendtag=11, recvbuf=left, source=left_rank, recvtag=11)
    comm.Sendrecv(first, dest=left_rank, sendtag=12, recvbuf=right, source=right_rank, recvtag=12)
    return left, right


def periodic_ranges(start: int, stop: int, n: int) -> list[tuple[int, int, int]]:
    """Split the periodic index range [start, stop) (may extend outside [0, n)) into contiguous pieces.

    Returns (src0, src1, dst0): source indices [src0, src1) in [0, n) land at offset dst0 of the
    output. Needs stop − start ≤ n + 2·n (at most one wrap per side is ever needed here).
    """
    pieces = []
    pos = start
    while pos < stop:
        src0 = pos % n
        length = min(stop - pos, n - src0)
        pieces.append((src0, src0 + length, pos - start))
        pos += length
    return pieces


def read_periodic_planes(ds, start: int, stop: int, n: int, axis: int = 0) -> np.ndarray:
    """Planes [start, stop) (periodic with period n) of an array or HDF5 dataset along `axis` (0 or 1), as
    float32: e.g. the x-planes x0 − 1 … x1 of a (N, N, N) /density (axis 0) or a (3, N, N, N) /velocity
    (axis 1) that a slab [x0, x1) reads with its one-plane halo."""
    if axis not in (0, 1):
        raise ValueError(f"axis must be 0 or 1, got {axis}")
    lead = (slice(None),) * axis
    return np.concatenate([np.asarray(ds[(*lead, slice(s0, s1))], np.float32)
                           for s0, s1, _ in periodic_ranges(start, stop, n)], axis=axis)
