"""The distributed paint driver: plan → read own planes → ghost exchange → tiles → kernels → write.

One process per MPI rank (mpiexec, srun, or alone). Rank r owns the x-planes [x0, x1) of the N³ input
(halopaint.decomposition). It reads only those planes, receives its 2g ghost planes from its neighbours, and
paints its slab in tiles sized so that one tile's input, 30-channel activations and output fit
`--max-memory`. Every tile is padded from what the rank holds (own planes from the file, x-ghosts from
memory, y/z wrapped periodically), so tiles are independent and the field equals a whole-box periodic
paint (`paint_whole_box`, the reference).

Output: rank r writes its planes, tile by tile, into its part file `<OUT>.parts/rank-RRRR.h5`
(`/halos` (n_bins, x1−x0, N, N) float32 + `/tile_done` (n_tiles,) uint8, the per-tile completion record
that `--resume` reuses). After every rank has finished, rank 0 writes the master OUT: `/halos`
(n_bins, N, N, N) float32 as an HDF5 virtual dataset over the part files (relative paths, so OUT and its
.parts directory move together), the attrs of docs/formats.md plus provenance, `complete = True` last, atomic
rename. Nothing is gathered to one rank except a few bytes of provenance.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from halopaint.allocator import retained_bytes
from halopaint.config import PaintConfig
from halopaint.decomposition import SlabPlan, exchange_ghosts, plan_slabs
from halopaint.errors import HalopaintError
from halopaint.fields import FieldFile, FieldInfo, check_writable, read_info, standard_attrs
from halopaint.log import get_logger
from halopaint.model import ModelBundle, resolve_model_path
from halopaint.paint.checks import PaintError, agree, collective_error, model_mismatches, resolve_bins
from halopaint.paint.io import PartFile, model_digest, part_path, parts_dir, resume_refusal, write_master
from halopaint.paint.plan import (TileShape, choose_tile, fixed_bytes, forced_tile, kernel_fixed_bytes,
                                  kernel_working_set_factor, tile_bytes, tiles_of_slab)
from halopaint.paint.tiles import normalise_input, read_tile_input
from halopaint.validation import (DensityStats, OutputLock, ValidationError, check_density_stats, check_grid,
                                  check_output_not_input, interruption_point, lock_path, scan_density)

log = get_logger(__name__)
KILL_HOOK_ENV = "HALOPAINT_TEST_KILL_AFTER_TILES"  # "RANK:K": rank RANK SIGKILLs itself after K tiles


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
    info = None
    warnings: list[str] = []
    if grid is None:
        info = read_info(cfg.density, require=("density",))
        grid = info.grid
    # "default" → the shipped model nearest the input's redshift (the mismatch check below still applies)
    bundle = ModelBundle.load(resolve_model_path(cfg.model, None if info is None else info.redshift))
    if info is not None:
        problems = model_mismatches(info, bundle)
        if problems and not cfg.allow_mismatch:
            raise PaintError(f"{cfg.density}: {'; '.join(problems)} (use --allow-mismatch to paint anyway)")
        warnings = problems
    else:
        check_grid(grid, "--grid")
    plan = plan_slabs(grid, ranks, bundle.ghost_width)
    bins = resolve_bins(cfg.mass_bins, bundle.n_bins)
    try:
        factory = halopaint.kernels.select(device, cfg.kernels)
    except ValueError as exc:
        raise PaintError(f"--kernels: {exc}") from None
    threads = torch.get_num_threads()
    kbytes = kernel_fixed_bytes(factory, threads) + retained_bytes(threads)
    if cfg.tile:
        try:
            default = choose_tile(plan, cfg.max_memory_bytes, kernel_working_set_factor(factory), kbytes)
        except PaintError:               # --max-memory too small for any tile: the forced one is all we have
            default = None
        tile = forced_tile(plan, cfg.tile, default)
    else:
        tile = choose_tile(plan, cfg.max_memory_bytes, kernel_working_set_factor(factory), kbytes)
    return _Setup(bundle, info, plan, bins, tile, warnings, factory, kbytes)


def paint(cfg: PaintConfig, comm=None) -> dict:
    """Paint `cfg.density` with `cfg.model` into `cfg.out` on every rank of `comm` (collective).

    Returns rank 0's summary dict (other ranks: their own report). Raises HalopaintError on bad input,
    collectively (`exc.collective = True`) wherever every rank can know it.
    """
    t_start = time.perf_counter()
    comm = _comm() if comm is None else comm
    with contextlib.ExitStack() as held:      # rank 0 holds the output's lock until the master is written
        setup, device, threads = _validate(cfg, comm, held)
        timings = dict(read=0.0, exchange=0.0, compute=0.0, write=0.0, compute_cpu=0.0)  # [s]; cpu: process time
        _check_density_values(cfg, setup.plan, comm, timings)
        part, tiles = _open_part(cfg, setup, device, comm)
        held.callback(part.close)
        kernel_detail = _paint_slab(cfg, setup, device, part, tiles, comm, timings, t_start)
        part.finish()
        return _finish(cfg, setup, device, threads, part, tiles, kernel_detail, timings, t_start, comm)


def _finish(cfg: PaintConfig, setup: _Setup, device, threads: int, part: PartFile, tiles: list,
            kernel_detail, timings: dict, t_start: float, comm) -> dict:
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


def _validate(cfg: PaintConfig, comm, held: contextlib.ExitStack) -> tuple[_Setup, torch.device, int]:
    """Model, input attrs, plan, device and output path; the same checks on every rank, agreed. Rank 0
    takes the output's lock (held by `held`): a second paint on the same --out is refused."""
    err, setup, device, threads = None, None, torch.device("cpu"), 1
    out = Path(cfg.out)
    try:
        if not cfg.out:
            raise PaintError("--out is required")
        device, threads = _place(comm, cfg.device)
        setup = _prepare(cfg, comm.Get_size(), device)
        check_writable(out)
        check_output_not_input([out, parts_dir(out), lock_path(out)], [cfg.density, resolve_model_path(cfg.model)])
        if comm.Get_rank() == 0:
            held.enter_context(OutputLock(out, f"halopaint paint on {comm.Get_size()} ranks"))
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
    """Each rank scans its own planes (halopaint.validation.DensityStats); the scans are merged over ranks
    and checked once: finite, ≥ 0, no absurd voxel, mean ρ/ρ̄ ≈ 1."""
    x0, x1 = plan.bounds(comm.Get_rank())
    t = time.perf_counter()
    planes_per_read = max(1, min(x1 - x0, (cfg.max_memory_bytes - fixed_bytes(plan)) // (16 * plan.grid**2)))
    with FieldFile(cfg.density, require=("density",)) as ff:
        stats = scan_density(ff.h5["density"], x0, x1, planes_per_read)
    timings["read"] += time.perf_counter() - t
    total = sum(comm.allgather(stats), DensityStats())
    try:
        check_density_stats(total, cfg.density)
    except ValidationError as exc:
        raise collective_error(str(exc)) from None


def _open_part(cfg: PaintConfig, setup: _Setup, device: torch.device, comm) -> tuple[PartFile, list]:
    """Check that a --resume can reuse every existing part (a refused resume touches nothing), then remove
    the stale master (and, unless resuming, stale parts) and open this rank's part file."""
    out, rank, size = Path(cfg.out), comm.Get_rank(), comm.Get_size()
    plan = setup.plan
    x0, x1 = plan.bounds(rank)
    tiles = tiles_of_slab(x1 - x0, plan.grid, setup.tile)
    plan_key = dict(grid=plan.grid, ranks=size, rank=rank, x0=x0, x1=x1, ghost=plan.ghost,
                    tile=setup.tile.as_tuple(), bins=list(setup.bins), model=model_digest(setup.bundle, setup.bins),
                    input=os.path.abspath(cfg.density), input_created=str(setup.info.attrs.get("created", "")),
                    kernels=setup.kernel_name, device=device.type,
                    normalisation=asdict(setup.bundle.metadata.input_normalisation))
    if cfg.resume:
        agree(comm, resume_refusal(part_path(out, rank), plan_key))
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
    err, part = None, None
    try:
        part = PartFile(part_path(out, rank), plan_key, len(setup.bins), x1 - x0, plan.grid, len(tiles), cfg.resume)
    except (HalopaintError, OSError) as exc:
        err = str(exc) if isinstance(exc, HalopaintError) else f"cannot write {part_path(out, rank)}: {exc}"
    agree(comm, err)
    if part.note:
        log.info(f"rank {rank}: {part.note}")
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
                log.info(f"rank 0: {count}/{len(todo)} tiles ({time.perf_counter() - t_start:.1f} s)")
            if kill_after is not None and count >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            interruption_point("paint", count, rank)
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
    model_path = str(resolve_model_path(cfg.model, info.redshift if info is not None else None))
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
