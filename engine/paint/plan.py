"""Tile planning and memory: the tile shape that fits `--max-memory`, tiles of a slab, per-rank bytes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from halopaint.decomposition import SlabPlan
from halopaint.paint.checks import PaintError
from halopaint.partition import even_split

# Resident memory of a rank outside the tiles (Python, torch, h5py, MPI): measured ≈ 0.3–0.4 GB on CPU.
RUNTIME_OVERHEAD_BYTES = 512 * 1024**2
# Peak activation memory of a kernel call per (30-channel × padded-input-voxel × 4 B); kernels may state
# their own `working_set_factor`. Reference (torch conv3d, measured at 88³ input): ≈ 4.
DEFAULT_WORKING_SET_FACTOR = 5.0
ACTIVATION_CHANNELS = 30
MAX_TILE_COST_FACTOR = 8.0   # a forced --tile may cost at most this × the default tile's padded work


@dataclass(frozen=True)
class TileShape:
    """Largest tile (x, y, z) in output voxels; extents are split into near-equal parts no larger."""

    x: int
    y: int
    z: int

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.x, self.y, self.z)


def split_extent(length: int, max_part: int) -> list[tuple[int, int]]:
    """[0, length) cut into ceil(length/max_part) contiguous parts differing by ≤ 1."""
    return even_split(length, -(-length // max_part))


def tiles_of_slab(thickness: int, grid: int, shape: TileShape) -> list[tuple[int, int, int, int, int, int]]:
    """Tiles of a (thickness, N, N) slab: (a, b, y0, y1, z0, z1), local x in [a, b). Fixed order."""
    return [(a, b, y0, y1, z0, z1)
            for a, b in split_extent(thickness, shape.x)
            for y0, y1 in split_extent(grid, shape.y)
            for z0, z1 in split_extent(grid, shape.z)]


def tile_bytes(tx: int, ty: int, tz: int, ghost: int, working_set_factor: float) -> int:
    """Peak bytes of painting one (tx, ty, tz) tile: padded input (+ a read buffer), 30-channel
    activations × the kernel's working-set factor, and one output tile; float32."""
    v_in = (tx + 2 * ghost) * (ty + 2 * ghost) * (tz + 2 * ghost)
    v_out = tx * ty * tz
    return int(4 * (v_in * (2 + ACTIVATION_CHANNELS * working_set_factor) + v_out))


def fixed_bytes(plan: SlabPlan, kernel_bytes: int = 0) -> int:
    """Per-rank memory outside the tiles: runtime + the 2g ghost planes + what the kernel holds whatever
    the tile size (`kernel_bytes`: e.g. the fused CPU path's kernel spectra and per-thread buffers)."""
    return RUNTIME_OVERHEAD_BYTES + plan.ghost_bytes_per_rank() + kernel_bytes


def kernel_working_set_factor(factory) -> float:
    """A kernel path's stated activation working-set factor (DEFAULT_WORKING_SET_FACTOR if it does not say)."""
    return float(getattr(factory, "working_set_factor", DEFAULT_WORKING_SET_FACTOR))


def kernel_fixed_bytes(factory, threads: int) -> int:
    """Tile-independent memory of a kernel path on `threads` threads (0 if the path does not say)."""
    bounded = getattr(factory, "bounded_bytes", None)
    return int(bounded(threads)) if bounded is not None else 0


def choose_tile(plan: SlabPlan, max_memory: int, working_set_factor: float, kernel_bytes: int = 0) -> TileShape:
    """Tile shape that fits `max_memory` with the least padded work (ghost overhead).

    Tries y/z split into k = 1, 2, … near-equal parts; for each, the thickest x extent that fits.
    """
    budget = max_memory - fixed_bytes(plan, kernel_bytes)
    n, g, thick = plan.grid, plan.ghost, plan.max_thickness
    best, best_work = None, math.inf
    for k in range(1, n + 1):
        side = -(-n // k)
        if tile_bytes(1, side, side, g, working_set_factor) > budget:
            continue
        lo, hi = 1, thick
        while lo < hi:  # largest tx that fits
            mid = (lo + hi + 1) // 2
            if tile_bytes(mid, side, side, g, working_set_factor) <= budget:
                lo = mid
            else:
                hi = mid - 1
        tx = lo
        nx = -(-thick // tx)
        work = sum((b - a + 2 * g) for a, b in split_extent(thick, tx)) * sum(
            (y1 - y0 + 2 * g) for y0, y1 in split_extent(n, side)) ** 2
        if work < best_work * (1 - 1e-9):
            best, best_work = TileShape(-(-thick // nx), side, side), work
        if k > 1 and side < 2 * g:  # smaller tiles only add overhead
            break
    if best is None:
        need = fixed_bytes(plan, kernel_bytes) + tile_bytes(1, 1, 1, g, working_set_factor)
        raise PaintError(f"--max-memory {max_memory / 2**20:.0f} MiB is too small for N={n} on "
                         f"{plan.ranks} ranks (needs at least {need / 2**20:.0f} MiB per rank)")
    return best


def padded_work(plan: SlabPlan, shape: TileShape) -> int:
    """Padded input voxels of painting the thickest slab with tiles no larger than `shape` (the cost)."""
    g = plan.ghost
    return sum((b - a + 2 * g) for a, b in split_extent(plan.max_thickness, shape.x)) * \
        sum((b - a + 2 * g) for a, b in split_extent(plan.grid, shape.y)) * \
        sum((b - a + 2 * g) for a, b in split_extent(plan.grid, shape.z))


def forced_tile(plan: SlabPlan, tile: tuple[int, int, int], default: TileShape | None = None) -> TileShape:
    """`--tile X,Y,Z`, clipped to the slab. Refused: sides below the ghost width g (each tile would read
    more ghost than interior), or a padded cost above MAX_TILE_COST_FACTOR × that of `default` (the tile
    --max-memory would choose)."""
    if min(tile) < 1:
        raise PaintError(f"--tile sizes must be ≥ 1, got {tile}")
    shape = TileShape(min(tile[0], plan.max_thickness), min(tile[1], plan.grid), min(tile[2], plan.grid))
    g = plan.ghost
    small = [s for s, t in zip(shape.as_tuple(), tile) if s < g and s == t]
    if small:
        raise PaintError(f"--tile {','.join(map(str, tile))}: tile sides must be ≥ the model's ghost width {g} "
                         f"(smaller tiles pad each voxel with ~{(1 + 2 * g / max(1, min(small))) ** 3:.0f}× its "
                         "volume); use a larger --tile or leave it to --max-memory")
    if default is not None:
        factor = padded_work(plan, shape) / padded_work(plan, default)
        if factor > MAX_TILE_COST_FACTOR:
            raise PaintError(f"--tile {','.join(map(str, tile))} costs {factor:.0f}× the padded work of the "
                             f"default tile {default.x},{default.y},{default.z} (limit {MAX_TILE_COST_FACTOR:g}×); "
                             "use a larger --tile or leave it to --max-memory")
    return shape
