"""`halopaint paint`: paint halo count fields from a 2LPT density file with a model bundle (MPI).

    halopaint paint --model MODEL|default --density IN.h5 --out OUT.h5 [--mass-bins all|0|1-3|0,1]
                    [--max-memory 4GiB] [--device auto|cpu|cuda] [--kernels auto|reference|cpu|triton]
                    [--resume] [--dry-run [--grid N] [--ranks R]] [--allow-mismatch] [--tile X,Y,Z]

Runs unchanged alone, under `mpiexec -n R` and under `srun`.
"""

from __future__ import annotations

import sys

from halopaint.config import PaintConfig, parse_bytes, parse_mass_bins


def parse_tile(text: str) -> tuple[int, int, int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--tile: cannot parse {text!r} (use X or X,Y,Z in voxels)") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise ValueError(f"--tile: need 1 or 3 sizes, got {text!r}")
    return tuple(values)  # type: ignore[return-value]


def add_arguments(p) -> None:
    d = PaintConfig()
    p.add_argument("--model", default=d.model, help="model bundle file, or 'default' for the shipped model")
    p.add_argument("--density", default=d.density, help="input field file with /density (N, N, N) ρ/ρ̄")
    p.add_argument("--out", default=d.out,
                   help="output field file; its per-rank parts go to OUT.parts/ next to it (OUT = the whole output name, e.g. x.h5.parts/)")
    p.add_argument("--mass-bins", default="all", help="all (default), or a contiguous selection: 2, 0,1, 1-3")
    mem = f"{d.max_memory_bytes / 2**30:g}GiB"
    p.add_argument("--max-memory", default=mem,
                   help=f"memory bound per rank (host or device), e.g. 4GiB; sizes the tiles (default {mem})")
    p.add_argument("--device", default=d.device, help="auto (GPU per local rank if any, else CPU), cpu, cuda, cuda:K")
    p.add_argument("--kernels", default=d.kernels, help="auto (fastest available), reference, cpu, triton")
    p.add_argument("--resume", action="store_true", help="reuse every tile already written by a killed run")
    p.add_argument("--dry-run", action="store_true", help="print the plan (slabs, tiles, memory, exchange, "
                   "estimated time) and exit without painting")
    p.add_argument("--grid", type=int, default=None, help="--dry-run only: plan for an N³ grid without a file")
    p.add_argument("--ranks", type=int, default=None,
                   help="--dry-run only: plan for R ranks (default: the launcher's world size)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="paint even if voxel size, redshift or density recipe differ from the model's "
                        "(the warning is kept in the output's attrs)")
    p.add_argument("--tile", default=None, help="force the largest tile, X or X,Y,Z output voxels "
                   "(default: sized from --max-memory)")


def config_from_args(args) -> PaintConfig:
    if not args.dry_run and (args.grid is not None or args.ranks is not None):
        raise ValueError("--grid and --ranks only plan (use them with --dry-run)")
    if not args.density and not (args.dry_run and args.grid):
        raise ValueError("--density is required (or --dry-run --grid N)")
    if args.grid is not None and args.grid < 1:
        raise ValueError(f"--grid must be positive, got {args.grid}")
    if args.ranks is not None and args.ranks < 1:
        raise ValueError(f"--ranks must be positive, got {args.ranks}")
    return PaintConfig(model=args.model, density=args.density, out=args.out,
                       mass_bins=parse_mass_bins(args.mass_bins), max_memory_bytes=parse_bytes(args.max_memory),
                       device=args.device, kernels=args.kernels, resume=args.resume, dry_run=args.dry_run,
                       allow_mismatch=args.allow_mismatch, tile=parse_tile(args.tile) if args.tile else None,
                       plan_grid=args.grid, plan_ranks=args.ranks)


def run(args) -> int:
    cfg = config_from_args(args)
    from mpi4py import MPI
    from halopaint import paint
    from halopaint.launch import abort_on_unexpected
    comm = MPI.COMM_WORLD
    with abort_on_unexpected(comm, "paint"):   # one rank's unexpected failure must not leave the others waiting
        if cfg.dry_run:
            text = paint.dry_run(cfg, comm)
            if comm.Get_rank() == 0:
                print(text)
            return 0
        summary = paint.paint(cfg, comm)
    if comm.Get_rank() == 0:
        split = ", ".join(f"{k} {v:.1f} s" for k, v in summary["split_s"].items())
        print(f"painted {summary['grid']}³ × {len(summary['bins'])} bins on {summary['ranks']} ranks "
              f"in {summary['wall_s']:.1f} s ({summary['mvox_per_s']:.2f} Mvox/s; max over ranks: {split}) "
              f"→ {summary['out']}", file=sys.stderr)
    return 0
