"""Training patches: periodic cut-outs and the 24 proper rotations of the cube.

- `ROTATIONS`: the 24 rotations of the cube as (axis permutation, axis flips) with determinant +1.
- `rotate(x, r)`: apply rotation `r` to the last three axes of an array (numpy or torch).
- `periodic_patch(field, corner, size)`: the (…, size, size, size) block starting at `corner`,
  wrapping periodically on every axis.
- `PatchSampler`: draws (density patch (P+2g)³, halo patch P³) pairs from one stream (seed, rank, bin),
  the same random rotation applied to both, as in the paper's training protocol.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


def _rotations() -> tuple[tuple[tuple[int, int, int], tuple[bool, bool, bool]], ...]:
    """All (perm, flips) with det(signed permutation matrix) = +1, in a fixed order."""
    out = []
    for perm in itertools.permutations(range(3)):
        for flips in itertools.product((False, True), repeat=3):
            if np.linalg.det(rotation_matrix((perm, flips))) > 0:
                out.append((tuple(perm), tuple(flips)))
    return tuple(out)


def rotation_matrix(rotation) -> np.ndarray:
    """3×3 integer matrix M of a (perm, flips) rotation: output axis i reads input axis perm[i],
    reversed when flips[i]."""
    perm, flips = rotation
    m = np.zeros((3, 3), dtype=np.int64)
    for i, (p, f) in enumerate(zip(perm, flips)):
        m[i, p] = -1 if f else 1
    return m


ROTATIONS = _rotations()
assert len(ROTATIONS) == 24


def rotate(x, rotation):
    """Rotate the last three axes of `x` (numpy array or torch tensor) by a (perm, flips) rotation."""
    perm, flips = rotation
    lead = x.ndim - 3
    order = list(range(lead)) + [lead + p for p in perm]
    flip_axes = [lead + i for i, f in enumerate(flips) if f]
    if isinstance(x, np.ndarray):
        y = np.transpose(x, order)
        return np.flip(y, flip_axes) if flip_axes else y
    y = x.permute(*order)
    return y.flip(flip_axes) if flip_axes else y


def periodic_patch(field: np.ndarray, corner, size: int) -> np.ndarray:
    """field (…, N0, N1, N2) → (…, size, size, size) starting at `corner` (3 ints), periodic wrap."""
    shape = field.shape[-3:]
    idx = [(int(c) + np.arange(size)) % n for c, n in zip(corner, shape)]
    return field[(Ellipsis, *np.ix_(*idx))]


@dataclass
class Region:
    """Where patches may be drawn: x-planes [x0, x1) of a box of side `grid`.

    A full box (x0 = 0, x1 = grid) wraps periodically in every axis; a partial x-range (a held-out
    split of one box) keeps whole density patches inside [x0, x1) and wraps only in y and z.
    """

    grid: int
    x0: int = 0
    x1: int | None = None

    @property
    def stop(self) -> int:
        return self.grid if self.x1 is None else self.x1

    @property
    def full(self) -> bool:
        return self.x0 == 0 and self.stop == self.grid

    def corner_range_x(self, side: int) -> tuple[int, int]:
        """Allowed [lo, hi) of the density patch's x corner for a patch of `side` voxels."""
        if self.full:
            return 0, self.grid
        return self.x0, self.stop - side + 1


class PatchSampler:
    """Random rotated patch pairs from a list of (density (N³), halos (N³)) boxes.

    Every draw uses only this sampler's numpy Generator, so a stream is reproducible from its seed
    sequence and its state can be checkpointed (`state` / `set_state`).
    draw(batch) → density (batch, 1, P+2g, …) float32, halos (batch, 1, P, …) float32, and
    `uniform(batch)` gives the gradient-penalty interpolation weights from the same stream.
    """

    def __init__(self, boxes, regions, patch: int, ghost: int, seed_sequence: np.random.SeedSequence,
                 rotate_patches: bool = True):
        self.boxes = boxes
        self.regions = regions
        self.patch = patch
        self.ghost = ghost
        self.rotate_patches = rotate_patches
        self.rng = np.random.Generator(np.random.PCG64(seed_sequence))

    @property
    def side(self) -> int:
        return self.patch + 2 * self.ghost

    def draw_one(self) -> tuple[np.ndarray, np.ndarray]:
        i = int(self.rng.integers(len(self.boxes)))
        density, halos = self.boxes[i]
        region = self.regions[i]
        lo, hi = region.corner_range_x(self.side)
        corner = (int(self.rng.integers(lo, hi)), int(self.rng.integers(region.grid)),
                  int(self.rng.integers(region.grid)))
        r = ROTATIONS[int(self.rng.integers(24))] if self.rotate_patches else ROTATIONS[0]
        d = periodic_patch(density, corner, self.side)
        h = periodic_patch(halos, tuple(c + self.ghost for c in corner), self.patch)
        return np.ascontiguousarray(rotate(d, r)), np.ascontiguousarray(rotate(h, r))

    def draw(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.draw_one() for _ in range(batch)]
        d = np.stack([p[0] for p in pairs])[:, None].astype(np.float32, copy=False)
        h = np.stack([p[1] for p in pairs])[:, None].astype(np.float32, copy=False)
        return d, h

    def uniform(self, batch: int) -> np.ndarray:
        return self.rng.random(batch).astype(np.float32)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state
