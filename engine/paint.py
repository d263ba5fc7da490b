"""The distributed paint driver: plan → read own planes → ghost exchange → tiles → kernels → write.

One process per MPI rank (mpiexec, srun, or alone). Rank r owns the x-planes [x0, x1) of the N³ input
(halopaint.decomposition). It reads only those planes, receives its 2g ghost planes from its neighbours, and
paints its slab in tiles sized so that one tile's input, 30-channel activations and output fit
`--max-memory`. Every tile is padded from what the rank holds (own planes from the file, x-ghosts from
memory, y/z wrapped periodically), so tiles are independent and the field equals a whole-box periodic
paint (`paint_whole_box`, the reference).

Output: rank r writes its planes, tile by tile, into its part file `<OUT stem>.parts/rank-RRRR.h5`
(`/halos` (n_bins, x1−x0, N, N) float32 + `/tile_done` (n_tiles,) uint8, the per-tile completion record
that `--resume` reuses). After every rank has finished, rank 0 writes the master OUT: `/halos`
(n_bins, N, N, N) float32 as an HDF5 virtual dataset over the part files (relative paths, so OUT and its
.parts directory move together), the attrs of docs/formats.md plus provenance, `complete = True` last, atomic
rename. Nothing is gathered to one rank except a few bytes of provenance.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from halopaint.allocator import retained_bytes
from halopaint.config import DensityRecipe, PaintConfig
from halopaint.decomposition import SlabPlan, exchange_ghosts, periodic_ranges, plan_slabs
from halopaint.errors import HalopaintError
from halopaint.fields import (FieldFile, FieldInfo, check_writable, read_info, same_voxel_size, standard_attrs,
                           temporary_path)
from halopaint.model import ModelBundle, resolve_model_path

# Resident memory of a rank outside the tiles (Python, torch, h5py, MPI): measured ≈ 0.3–0.4 GB on CPU.
RUNTIME_OVERHEAD_BYTES = 512 * 1024**2
# Peak activation memory of a kernel call per (30-channel × padded-input-voxel × 4 B); kernels may state
# their own `working_set_factor`. Reference (torch conv3d, measured at 88³ input): ≈ 4.
DEFAULT_WORKING_SET_FACTOR = 5.0
ACTIVATION_CHANNELS = 30
REDSHIFT_ATOL = 1e-3
KILL_HOOK_ENV = "HALOPAINT_TEST_KILL_AFTER_TILES"  # "RANK:K": rank RANK SIGKILLs itself after K tiles


class PaintError(HalopaintError):
    """Painting cannot start or finish (bad input, impossible plan, unwritable output)."""


# ----------------------------------------------------------------------------------------------- errors

def collective_error(message: str) -> PaintError:
    """An error every rank raises with the same message (the CLI prints it once, from rank 0)."""
    exc = PaintError(message)
    exc.collective = True
    return exc


def agree(comm, local_error: str | None) -> None:
    """Collective check: if any rank has an error, every rank raises the first one (lowest rank)."""
    errors = comm.allgather(local_error)
    for rank, msg in enumerate(errors):
        if msg is not None:
            prefix = f"[rank {rank}] " if comm.Get_size() > 1 and any(
                e != msg for e in errors) else ""
            raise collective_error(prefix + msg)


# ------------------------------------------------------------------------------------ input validation

def model_mismatches(info: FieldInfo, bundle: ModelBundle) -> list[str]:
    """What makes the density file differ from what the model was trained on (empty: compatible)."""
    meta, problems = bundle.metadata, []
    if not same_voxel_size(info.voxel_size, meta.voxel_size):
        problems.append(f"voxel size {info.voxel_size:g} Mpc/h differs from the model's {meta.voxel_size:g} Mpc/h")
    if abs(info.redshift - meta.redshift) > REDSHIFT_ATOL:
        problems.append(f"redshift {info.redshift:g} differs from the model's {meta.redshift:g}")
    recipe_text = info.attrs.get("density_recipe")
    if recipe_text is None:
        problems.append("input has no density_recipe attribute (the model needs "
                        f"{meta.density_recipe.to_json()})")
    else:
        try:
            recipe = DensityRecipe.from_json(str(recipe_text))
        except (ValueError, TypeError):
            recipe = None
        if recipe != meta.density_recipe:
            problems.append(f"density recipe {recipe_text} differs from the model's {meta.density_recipe.to_json()}")
    return problems


def cosmology_note(info: FieldInfo, bundle: ModelBundle) -> list[str]:
    """Cosmology differences are recorded (not refused): the network maps density to halos locally."""
    if info.cosmology != bundle.metadata.cosmology:
        return [f"input cosmology {info.cosmology.to_json()} differs from the model's "
                f"{bundle.metadata.cosmology.to_json()}"]
    return []


def resolve_bins(requested: tuple[int, ...] | None, n_bins: int) -> tuple[int, ...]:
    """Mass bins to paint: all, or a contiguous sorted selection (so mass_bin_edges stays n_sel+1)."""
    if requested is None:
        return tuple(range(n_bins))
    bins = tuple(sorted(set(int(b) for b in requested)))
    if not bins:
        raise PaintError("--mass-bins selects no bin")
    for b in bins:
        if not 0 <= b < n_bins:
            raise PaintError(f"--mass-bins: bin {b} does not exist (the model has bins 0..{n_bins - 1})")
    if bins != tuple(range(bins[0], bins[-1] + 1)):
        raise PaintError(f"--mass-bins {','.join(map(str, bins))} is not a contiguous range "
                         "(paint them in separate runs)")
    return bins


def density_defects(ds, x0: int, x1: int, planes_per_read: int) -> tuple[int, int, int]:
    """Scan x-planes [x0, x1) of a density dataset: (# non-finite, # negative, first bad global plane or −1)."""
    n_nonfinite = n_negative = 0
    first_bad = -1
    for a in range(x0, x1, planes_per_read):
        b = min(x1, a + planes_per_read)
        block = np.asarray(ds[a:b], dtype=np.float32)
        finite = np.isfinite(block)
        bad_nf = block.size - int(np.count_nonzero(finite))
        bad_neg = int(np.count_nonzero(block < 0))
        if (bad_nf or bad_neg) and first_bad < 0:
            per_plane = (~finite | (block < 0)).reshape(b - a, -1).any(axis=1)
            first_bad = a + int(np.argmax(per_plane))
        n_nonfinite += bad_nf
        n_negative += bad_neg
    return n_nonfinite, n_negative, first_bad


# ------------------------------------------------------------------------------------------ tile plan

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
    k = -(-length // max_part)
    base, extra = divmod(length, k)
    bounds, start = [], 0
    for i in range(k):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


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


def forced_tile(plan: SlabPlan, tile: tuple[int, int, int]) -> TileShape:
    if min(tile) < 1:
        raise PaintError(f"--tile sizes must be ≥ 1, got {tile}")
    return TileShape(min(tile[0], plan.max_thickness), min(tile[1], plan.grid), min(tile[2], plan.grid))


# ------------------------------------------------------------------------------------- tile assembly

def read_tile_input(ds, left: np.ndarray, right: np.ndarray, x0: int, x1: int,
                    tile: tuple[int, int, int, int, int, int], grid: int, ghost: int) -> np.ndarray:
    """The padded input of one tile: (b−a+2g, y1−y0+2g, z1−z0+2g) float32.

    ds: the input /density dataset (only planes [x0, x1) are read); left/right: (g, N, N) x-ghosts for
    planes x0−g…x0−1 and x1…x1+g−1 (periodic). y and z are wrapped periodically.
    """
    a, b, y0, y1, z0, z1 = tile
    g = ghost
    out = np.empty((b - a + 2 * g, y1 - y0 + 2 * g, z1 - z0 + 2 * g), np.float32)
    ys = periodic_ranges(y0 - g, y1 + g, grid)
    zs = periodic_ranges(z0 - g, z1 + g, grid)
    gx_lo, gx_hi = x0 + a - g, x0 + b + g          # global padded x range (may leave [x0, x1))
    pieces = []                                      # (source, src x0, src x1, dst x0)
    if gx_lo < x0:
        pieces.append((left, gx_lo - (x0 - g), g, 0))
    own_lo, own_hi = max(gx_lo, x0), min(gx_hi, x1)
    pieces.append((ds, own_lo, own_hi, own_lo - gx_lo))
    if gx_hi > x1:
        pieces.append((right, 0, gx_hi - x1, x1 - gx_lo))
    for src, sa, sb, da in pieces:
        for ya, yb, dy in ys:
            for za, zb, dz in zs:
                out[da:da + sb - sa, dy:dy + yb - ya, dz:dz + zb - za] = src[sa:sb, ya:yb, za:zb]
    return out


def normalise_input(rho: np.ndarray, bundle: ModelBundle) -> np.ndarray:
    """ρ/ρ̄ → generator input, in place: x = (ρ/ρ̄ − offset)·scale (bundle.metadata.input_normalisation)."""
    norm = bundle.metadata.input_normalisation
    if norm.offset != 0.0:
        rho -= np.float32(norm.offset)
    if norm.scale != 1.0:
        rho *= np.float32(norm.scale)
    return rho


def paint_whole_box(bundle: ModelBundle, density: np.ndarray, bins=None) -> np.ndarray:
    """Reference: pad the whole (N, N, N) box periodically by g, run the generator once per bin.

    Returns (n_bins, N, N, N) float32. Whole box in memory: for tests and small boxes only.
    """
    from halopaint.kernels.reference import generator_forward
    bins = range(bundle.n_bins) if bins is None else bins
    g = bundle.ghost_width
    x = normalise_input(np.pad(np.asarray(density, np.float32), g, mode="wrap"), bundle)
    xt = torch.from_numpy(x)[None, None]
    with torch.no_grad():
        return np.stack([generator_forward(bundle.generators[b], xt, bundle.spec)[0, 0].numpy()
                         for b in bins]).astype(np.float32)


# ----------------------------------------------------------------------------------------- part files

def parts_dir(out: str | os.PathLike) -> Path:
    """Where the per-rank part files of OUT live: OUT.h5 → OUT.parts/ (next to it)."""
    out = Path(out)
    return out.with_name(out.stem + ".parts") if out.suffix else out.with_name(out.name + ".parts")


def part_path(out, rank: int) -> Path:
    return parts_dir(out) / f"rank-{rank:04d}.h5"


def model_digest(bundle: ModelBundle, bins) -> str:
    """SHA-256 of the painted generators' weights (resume refuses a different model)."""
    h = hashlib.sha256()
    for b in bins:
        for name in sorted(bundle.generators[b]):
            h.update(name.encode())
            h.update(bundle.generators[b][name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class PartFile:
    """One rank's part: `/halos` (n_bins, x1−x0, N, N) float32 and `/tile_done` (n_tiles,) uint8.

    Attr `plan` (JSON) identifies what was painted; `--resume` reuses a part only if it matches.
    Data of a tile is flushed before its `tile_done` flag, so a flag never claims unwritten data.
    """

    def __init__(self, path: Path, plan_key: dict, n_bins: int, thickness: int, grid: int, n_tiles: int,
                 resume: bool):
        self.path = path
        self.key = json.dumps(plan_key, sort_keys=True)
        self.reused = False
        self.note = None
        if resume and path.exists():
            try:
                h5 = h5py.File(path, "r+")
            except OSError:
                self.note = f"{path} was unreadable (killed mid-write?); repainting this rank's slab"
            else:
                if h5.attrs.get("plan") != self.key:
                    h5.close()
                    raise PaintError(f"cannot resume: {path} was written for a different plan "
                                     "(model, input, ranks, bins, tiles or kernels changed); "
                                     "rerun without --resume")
                self.h5, self.reused = h5, True
        if not self.reused:
            self.h5 = h5py.File(path, "w")
            self.h5.attrs["plan"] = self.key
            self.h5.attrs["part_complete"] = False
            self.h5.create_dataset("halos", shape=(n_bins, thickness, grid, grid), dtype=np.float32)
            self.h5.create_dataset("tile_done", shape=(n_tiles,), dtype=np.uint8, fillvalue=0)
            self.h5.flush()
        self.halos = self.h5["halos"]
        self.done = np.asarray(self.h5["tile_done"][...], dtype=bool)
        self.painted = 0          # tiles painted by this run

    def write_tile(self, index: int, tile, outputs: list[np.ndarray]) -> None:
        a, b, y0, y1, z0, z1 = tile
        for j, out in enumerate(outputs):
            self.halos[j, a:b, y0:y1, z0:z1] = out
        self.h5.flush()
        self.h5["tile_done"][index] = 1
        self.h5.flush()
        self.done[index] = True
        self.painted += 1

    def finish(self) -> None:
        self.h5.attrs["part_complete"] = True
        self.h5.close()

    def close(self) -> None:
        if self.h5:
            self.h5.close()


def write_master(out: Path, plan: SlabPlan, n_bins: int, attrs: dict) -> None:
    """Master OUT: `/halos` as a virtual dataset over the part files; complete=True last; atomic rename."""
    check_writable(out)
    layout = h5py.VirtualLayout(shape=(n_bins, plan.grid, plan.grid, plan.grid), dtype=np.float32)
    rel = parts_dir(out).name
    for r in range(plan.ranks):
        x0, x1 = plan.bounds(r)
        src = h5py.VirtualSource(f"{rel}/rank-{r:04d}.h5", "halos", shape=(n_bins, x1 - x0, plan.grid, plan.grid))
        layout[:, x0:x1] = src
    tmp = temporary_path(out)
    try:
        with h5py.File(tmp, "w") as f:
            for key, value in attrs.items():
                f.attrs[key] = value
            f.create_virtual_dataset("halos", layout, fillvalue=np.nan)
            f.attrs["complete"] = True
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------- the driver

@dataclass
class RankReport:
    """What one rank did (gathered to rank 0 for the provenance attrs and the summary line)."""

    rank: int
    host: str
    device: str
    kernels: str
    threads: int
    x0: int
    x1: int
    tiles: int
    tiles_reused: int
    timings: dict = field(default_factory=dict)   # seconds: read, exchange, compute, write, total
    peak_rss_bytes: int = 0
    note: str | None = None


def _comm():
    from mpi4py import MPI
    return MPI.COMM_WORLD


def _peak_rss() -> int:
    import resource
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _log(msg: str) -> None:
    print(f"halopaint paint: {msg}", file=sys.stderr, flush=True)


def _kill_hook(rank: int) -> int | None:
    """Test hook: HALOPAINT_TEST_KILL_AFTER_TILES=RANK:K → this rank SIGKILLs itself after K tiles."""
    text = os.environ.get(KILL_HOOK_ENV)
    if not text:
        return None
    r, k = text.split(":")
    return int(k) if int(r) == rank else None


def _place(comm, device_pref: str):
    """This rank's device and CPU threads (node-local rank from an MPI shared-memory split)."""
    from halopaint.launch import LaunchInfo, configure_threads, discover, mpi_local_placement, select_device
    info = discover()
    if comm.Get_size() > 1:
        local_rank, local_size = mpi_local_placement(comm)
        info = LaunchInfo(info.launcher, comm.Get_rank(), comm.Get_size(), local_rank, local_size)
    device = select_device(device_pref, info.local_rank)
    threads = configure_threads(info, device)
    return device, threads


@dataclass
class _Setup:
    bundle: ModelBundle
    info: FieldInfo | None
    plan: SlabPlan
    bins: tuple[int, ...]
    tile: TileShape
    warnings: list[str]
    factory: object                      # halopaint.kernels.select(device, --kernels): factory(params, spec, device)
    kernel_bytes: int                    # the kernel's tile-independent memory on this rank's threads

    @property
    def kernel_name(self) -> str:
        return str(getattr(self.factory, "name", getattr(self.factory, "__name__", "unknown")))

    @property
    def working_set_factor(self) -> float:
        return kernel_working_set_factor(self.factory)


def _prepare(cfg: PaintConfig, ranks: int, device: torch.device, grid: int | None = None) -> _Setup:
    """Validate model, input and plan (same on every rank; raises PaintError/HalopaintError)."""
    import halopaint.kernels
    bundle = ModelBundle.load(cfg.model)
    info = None
    warnings: list[str] = []
    if grid is None:
        info = read_info(cfg.density, require=("density",))
        grid = info.grid
        problems = model_mismatches(info, bundle)
        if problems and not cfg.allow_mismatch:
            raise PaintError(f"{cfg.density}: {'; '.join(problems)} (use --allow-mismatch to paint anyway)")
        warnings = problems + cosmology_note(info, bundle)
    plan = plan_slabs(grid, ranks, bundle.ghost_width)
    bins = resolve_bins(cfg.mass_bins, bundle.n_bins)
    try:
        factory = halopaint.kernels.select(device, cfg.kernels)
    except ValueError as exc:
        raise PaintError(f"--kernels: {exc}") from None
    threads = torch.get_num_threads()
    kbytes = kernel_fixed_bytes(factory, threads) + retained_bytes(threads)
    tile = forced_tile(plan, cfg.tile) if cfg.tile else \
        choose_tile(plan, cfg.max_memory_bytes, kernel_working_set_factor(factory), kbytes)
    return _Setup(bundle, info, plan, bins, tile, warnings, factory, kbytes)


def paint(cfg: PaintConfig, comm=None) -> dict:
    """Paint `cfg.density` with `cfg.model` into `cfg.out` on every rank of `comm` (collective).

    Returns rank 0's summary dict (other ranks: their own report). Raises HalopaintError on bad input,
    collectively (`exc.collective = True`) wherever every rank can know it.
    """
    t_start = time.perf_counter()
    comm = _comm() if comm is None else comm
    setup, device, threads = _validate(cfg, comm)
    timings = dict(read=0.0, exchange=0.0, compute=0.0, write=0.0, compute_cpu=0.0)  # [s]; cpu: process time
    _check_density_values(cfg, setup.plan, comm, timings)
    part, tiles = _open_part(cfg, setup, device, comm)
    kernel_detail = _paint_slab(cfg, setup, device, part, tiles, comm, timings, t_start)
    part.finish()
    timings["total"] = time.perf_counter() - t_start
    import socket
    rank = comm.Get_rank()
    x0, x1 = setup.plan.bounds(rank)
    kernels = setup.kernel_name + (f" ({kernel_detail})" if kernel_detail else "")
    report = RankReport(rank=rank, host=socket.gethostname(), device=str(device), kernels=kernels,
                        threads=threads, x0=x0, x1=x1, tiles=len(tiles),
                        tiles_reused=len(tiles) - int(part.painted), timings=timings,
                        peak_rss_bytes=_peak_rss(), note=part.note)
    return _write_master_when_all_done(cfg, setup, report, comm)


def _validate(cfg: PaintConfig, comm) -> tuple[_Setup, torch.device, int]:
    """Model, input attrs, plan, device and output path; the same checks on every rank, agreed."""
    err, setup, device, threads = None, None, torch.device("cpu"), 1
    out = Path(cfg.out)
    try:
        if not cfg.out:
            raise PaintError("--out is required")
        device, threads = _place(comm, cfg.device)
        setup = _prepare(cfg, comm.Get_size(), device)
        check_writable(out)
        if out.exists() and os.path.samefile(out, cfg.density):
            raise PaintError(f"--out {out} is the input file; choose another output name")
        if comm.Get_rank() == 0:
            try:
                parts_dir(out).mkdir(exist_ok=True)
            except OSError as exc:
                raise PaintError(f"cannot create {parts_dir(out)}: {exc.strerror}") from None
            if not os.access(parts_dir(out), os.W_OK):
                raise PaintError(f"cannot write {parts_dir(out)}: not writable")
    except HalopaintError as exc:
        err = str(exc)
    agree(comm, err)
    return setup, device, threads


def _check_density_values(cfg: PaintConfig, plan: SlabPlan, comm, timings: dict) -> None:
    """Each rank scans its own planes for NaN/Inf/negative values; the counts are summed over ranks."""
    from mpi4py import MPI
    x0, x1 = plan.bounds(comm.Get_rank())
    t = time.perf_counter()
    planes_per_read = max(1, min(x1 - x0, (cfg.max_memory_bytes - fixed_bytes(plan)) // (16 * plan.grid**2)))
    with FieldFile(cfg.density, require=("density",)) as ff:
        n_nonfinite, n_negative, first_bad = density_defects(ff.h5["density"], x0, x1, planes_per_read)
    timings["read"] += time.perf_counter() - t
    n_nonfinite = comm.allreduce(n_nonfinite, op=MPI.SUM)
    n_negative = comm.allreduce(n_negative, op=MPI.SUM)
    first_bad = comm.allreduce(first_bad if first_bad >= 0 else plan.grid, op=MPI.MIN)
    if n_nonfinite or n_negative:
        what = " and ".join(s for s in (f"{n_nonfinite} NaN/Inf" if n_nonfinite else "",
                                        f"{n_negative} negative" if n_negative else "") if s)
        raise collective_error(f"{cfg.density}: /density has {what} values (first at x-plane {first_bad}); "
                               "a density ρ/ρ̄ must be finite and ≥ 0")


def _open_part(cfg: PaintConfig, setup: _Setup, device: torch.device, comm) -> tuple[PartFile, list]:
    """Remove the stale master (and, unless resuming, stale parts); open this rank's part file."""
    out, rank, size = Path(cfg.out), comm.Get_rank(), comm.Get_size()
    plan = setup.plan
    if rank == 0:
        out.unlink(missing_ok=True)
        for stale in parts_dir(out).glob("rank-*.h5"):
            try:
                index = int(stale.stem.split("-")[1])
            except (IndexError, ValueError):
                continue
            if index >= size or not cfg.resume:
                stale.unlink()
    comm.Barrier()
    x0, x1 = plan.bounds(rank)
    tiles = tiles_of_slab(x1 - x0, plan.grid, setup.tile)
    plan_key = dict(grid=plan.grid, ranks=size, rank=rank, x0=x0, x1=x1, ghost=plan.ghost,
                    tile=setup.tile.as_tuple(), bins=list(setup.bins), model=model_digest(setup.bundle, setup.bins),
                    input=os.path.abspath(cfg.density), input_created=str(setup.info.attrs.get("created", "")),
                    kernels=setup.kernel_name, device=device.type,
                    normalisation=asdict(setup.bundle.metadata.input_normalisation))
    err, part = None, None
    try:
        part = PartFile(part_path(out, rank), plan_key, len(setup.bins), x1 - x0, plan.grid, len(tiles), cfg.resume)
    except (HalopaintError, OSError) as exc:
        err = str(exc) if isinstance(exc, HalopaintError) else f"cannot write {part_path(out, rank)}: {exc}"
    agree(comm, err)
    if part.note:
        _log(f"rank {rank}: {part.note}")
    return part, tiles


def _paint_slab(cfg: PaintConfig, setup: _Setup, device: torch.device, part: PartFile, tiles: list, comm,
                timings: dict, t_start: float) -> str | None:
    """Ghost exchange, then every tile not yet recorded in the part: read → normalise → kernels → write.

    Returns the kernels' own account of how they run (the fused CPU path: whether its C kernels are used)."""
    rank = comm.Get_rank()
    plan, g, n = setup.plan, setup.plan.ghost, setup.plan.grid
    x0, x1 = plan.bounds(rank)
    kerns = [setup.factory(setup.bundle.generators[b], setup.bundle.spec, device) for b in setup.bins]
    todo = [i for i in range(len(tiles)) if not part.done[i]]
    with FieldFile(cfg.density) as ff:
        ds = ff.h5["density"]
        t = time.perf_counter()
        first, last = np.asarray(ds[x0:x0 + g], np.float32), np.asarray(ds[x1 - g:x1], np.float32)
        timings["read"] += time.perf_counter() - t
        t = time.perf_counter()
        left, right = exchange_ghosts(comm, plan, first, last)   # my first/last g planes ↔ neighbours
        timings["exchange"] += time.perf_counter() - t
        del first, last
        kill_after = _kill_hook(rank)
        report_every = max(1, len(todo) // 10)
        for count, i in enumerate(todo, 1):
            tile = tiles[i]
            t = time.perf_counter()
            x = normalise_input(read_tile_input(ds, left, right, x0, x1, tile, n, g), setup.bundle)
            timings["read"] += time.perf_counter() - t
            t, c = time.perf_counter(), time.process_time()
            xt = torch.from_numpy(x)[None, None]
            with torch.no_grad():
                outputs = [k(xt)[0, 0].to("cpu").numpy() for k in kerns]
            timings["compute"] += time.perf_counter() - t
            timings["compute_cpu"] += time.process_time() - c
            t = time.perf_counter()
            part.write_tile(i, tile, outputs)
            timings["write"] += time.perf_counter() - t
            del x, xt, outputs
            if rank == 0 and (count % report_every == 0 or count == len(todo)):
                _log(f"rank 0: {count}/{len(todo)} tiles ({time.perf_counter() - t_start:.1f} s)")
            if kill_after is not None and count >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
    return getattr(kerns[0], "native_status", None) if kerns else None


def _write_master_when_all_done(cfg: PaintConfig, setup: _Setup, report: RankReport, comm) -> dict:
    """Every rank reached here with its part finished: rank 0 writes the master; all agree on the outcome.

    The only gather of the run: each rank's provenance (a few hundred bytes).
    """
    reports = comm.gather(asdict(report), root=0)
    err, summary = None, asdict(report)
    if comm.Get_rank() == 0:
        try:
            wall = max(r["timings"]["total"] for r in reports)
            summary = _summary(cfg, setup, reports, wall)
            write_master(Path(cfg.out), setup.plan, len(setup.bins),
                         _master_attrs(cfg, setup, reports, wall, input_attrs=setup.info.attrs))
        except (HalopaintError, OSError) as exc:
            err = f"cannot write {cfg.out}: {exc}"
    err = comm.bcast(err, root=0)
    if err:
        raise collective_error(err)
    return summary


def _summary(cfg, setup: _Setup, reports: list[dict], wall: float) -> dict:
    n = setup.plan.grid
    voxels = len(setup.bins) * n**3
    parts = {k: max(r["timings"][k] for r in reports) for k in ("read", "exchange", "compute", "write")}
    return dict(out=cfg.out, grid=n, ranks=setup.plan.ranks, bins=list(setup.bins), wall_s=wall,
                mvox_per_s=voxels / wall / 1e6, split_s=parts, tile=setup.tile.as_tuple(),
                peak_rss_bytes=[r["peak_rss_bytes"] for r in reports], kernels=setup.kernel_name,
                devices=[r["device"] for r in reports], reports=reports)


def _master_attrs(cfg, setup: _Setup, reports: list[dict], wall: float, input_attrs: dict) -> dict:
    info, edges = setup.info, setup.bundle.metadata.mass_bin_edges
    sel_edges = edges[setup.bins[0]: setup.bins[-1] + 2]
    model_path = str(resolve_model_path(cfg.model))
    extra = dict(
        density_recipe=str(input_attrs.get("density_recipe", "")),
        model=model_path, model_sha256=model_digest(setup.bundle, setup.bins),
        model_metadata=setup.bundle.metadata.to_json(),
        input=os.path.abspath(cfg.density), input_created=str(input_attrs.get("created", "")),
        painted_mass_bins=np.asarray(setup.bins, np.int64),
        ranks=int(setup.plan.ranks), ghost_width=int(setup.plan.ghost),
        devices=[r["device"] for r in reports], hosts=[r["host"] for r in reports],
        kernels=[r["kernels"] for r in reports], threads_per_rank=[r["threads"] for r in reports],
        tile_shape=np.asarray(setup.tile.as_tuple(), np.int64),
        wall_time_s=float(wall),
        peak_rss_bytes=[int(r["peak_rss_bytes"]) for r in reports],
        timings_s={k: [r["timings"][k] for r in reports]
                   for k in ("read", "exchange", "compute", "write", "compute_cpu")},
        tiles_reused=int(sum(r["tiles_reused"] for r in reports)),
        mismatch_warnings=list(setup.warnings), allow_mismatch=bool(cfg.allow_mismatch),
        parts_dir=parts_dir(cfg.out).name, layout="virtual dataset over per-rank part files",
    )
    seed = input_attrs.get("seed")
    return standard_attrs(info.box_size, info.redshift, info.cosmology, mass_bin_edges=sel_edges,
                          seed=int(seed) if seed is not None else None, **extra)


# -------------------------------------------------------------------------------------------- dry run

def measure_throughput(factory, bundle: ModelBundle, device: torch.device, side: int = 24,
                       repeats: int = 2) -> float:
    """Seconds per padded-input voxel of one kernel call, measured on a (side+2g)³ random tile."""
    g = bundle.ghost_width
    kern = factory(bundle.generators[0], bundle.spec, device)
    x = torch.rand(1, 1, side + 2 * g, side + 2 * g, side + 2 * g)
    with torch.no_grad():
        kern(x)
        best = math.inf
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            kern(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - t)
    return best / (side + 2 * g) ** 3


def dry_run(cfg: PaintConfig, comm=None) -> str:
    """The plan, printed by rank 0: slabs, tiles, memory and exchange per rank, estimated time."""
    comm = _comm() if comm is None else comm
    ranks = cfg.plan_ranks or comm.Get_size()
    err, setup = None, None
    try:
        device, threads = _place(comm, cfg.device)
        setup = _prepare(cfg, ranks, device, grid=cfg.plan_grid if (cfg.plan_grid and not cfg.density) else None)
    except HalopaintError as exc:
        err = str(exc)
    agree(comm, err)
    plan, tile, g = setup.plan, setup.tile, setup.plan.ghost
    sec_per_vox = measure_throughput(setup.factory, setup.bundle, device)
    n = plan.grid
    lines = [f"plan: N={n} ({n**3 / 1e6:.1f} Mvox), R={ranks}, ghost g={g}, bins {list(setup.bins)}, "
             f"kernels {setup.kernel_name} on {device} ({threads} threads/rank here)",
             f"tile (max, output voxels): {tile.x} x {tile.y} x {tile.z}; "
             f"max-memory {cfg.max_memory_bytes / 2**30:.2f} GiB per rank"]
    thick_classes: dict[int, list[int]] = {}
    for r in range(ranks):
        thick_classes.setdefault(plan.thickness(r), []).append(r)
    worst = 0.0
    for thick, members in sorted(thick_classes.items(), reverse=True):
        tiles = tiles_of_slab(thick, n, tile)
        mem = fixed_bytes(plan, setup.kernel_bytes) + max(tile_bytes(b - a, y1 - y0, z1 - z0, g,
                                                                     setup.working_set_factor)
                                      for a, b, y0, y1, z0, z1 in tiles)
        padded = sum((b - a + 2 * g) * (y1 - y0 + 2 * g) * (z1 - z0 + 2 * g) for a, b, y0, y1, z0, z1 in tiles)
        est = padded * sec_per_vox * len(setup.bins)
        worst = max(worst, est)
        who = (f"rank {members[0]}" if len(members) == 1 else
               f"ranks {members[0]}..{members[-1]} ({len(members)})" if members == list(
                   range(members[0], members[-1] + 1)) else f"{len(members)} ranks")
        lines.append(f"  {who}: {thick} planes, {len(tiles)} tiles, memory ≤ {mem / 2**30:.2f} GiB, "
                     f"exchange sends+receives {2 * plan.ghost_bytes_per_rank() / 2**20:.1f} MiB, "
                     f"compute ≈ {est:.3g} s")
    for r in range(min(ranks, 4)):
        x0, x1 = plan.bounds(r)
        lines.append(f"  rank {r}: x-planes [{x0}, {x1})")
    if ranks > 4:
        x0, x1 = plan.bounds(ranks - 1)
        lines.append(f"  … rank {ranks - 1}: x-planes [{x0}, {x1})")
    lines.append(f"total bytes exchanged: {ranks * plan.ghost_bytes_per_rank() / 2**20:.1f} MiB; "
                 f"output {len(setup.bins) * n**3 * 4 / 2**30:.2f} GiB")
    lines.append(f"estimated wall time ≈ {worst:.3g} s (compute, from a measured "
                 f"{1 / sec_per_vox / 1e6:.2f} Mvox/s of padded input on a {24 + 2 * g}³ tile here; "
                 "one device/thread set per rank as on this machine)")
    return "\n".join(lines)
