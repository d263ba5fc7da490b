"""`halopaint simulate`: a seed → 2LPT density and velocity (+ PM N-body FoF halos) field file(s).

    halopaint simulate --grid N --box L --seed S --out X.h5 [--lpt-only] [--redshift 0,0.5,1 --out 'X_z{z}.h5']
                       [--max-memory 8GiB] [--dry-run [--ranks R]]

`--lpt-only` runs unchanged alone, under `mpiexec -n R` and under `srun` (distributed 2LPT).
"""

from __future__ import annotations

import argparse

from halopaint.config import Cosmology, SimulateConfig, parse_bytes
from halopaint.errors import HalopaintError

_DEFAULT = SimulateConfig()
_COSMO = Cosmology()


def _edges(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot parse mass bin edges from {text!r} "
                                         "(use e.g. 1e12,1e13,1e14)") from None


def _redshifts(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot parse redshifts from {text!r} (use e.g. 0 or 0,0.5,1)") from None
    if not values:
        raise argparse.ArgumentTypeError(f"no redshift in {text!r}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grid", type=int, default=_DEFAULT.grid, help="output grid side N (default %(default)s)")
    p.add_argument("--box", type=float, default=_DEFAULT.box_size, help="box side [Mpc/h] (default %(default)s)")
    p.add_argument("--seed", type=int, default=_DEFAULT.seed, help="random seed (default %(default)s)")
    p.add_argument("--out", required=True, help="output HDF5 field file")
    p.add_argument("--lpt-only", action="store_true",
                   help="only the 2LPT /density (the painter's production input): no N-body, no halos")
    p.add_argument("--lpt-particles-per-voxel", type=int, default=_DEFAULT.lpt_particles_per_voxel,
                   help="r: the 2LPT lattice has r·N particles per side (default %(default)s; part of the "
                        "density recipe a model is trained on)")
    p.add_argument("--particles-per-side", type=int, default=None,
                   help="P: N-body particles per side (default 4N)")
    p.add_argument("--pm-steps", type=int, default=_DEFAULT.pm_steps,
                   help="PM kick-drift-kick steps from a_initial to a(z) (default %(default)s)")
    p.add_argument("--redshift", type=_redshifts, default=(_DEFAULT.redshift,),
                   help="output redshift, or a comma-separated list (with --lpt-only): one file per redshift "
                        "from the same initial conditions, named by '{z}' in --out (default 0)")
    p.add_argument("--max-memory", default=None,
                   help="refuse a plan whose estimated peak per rank exceeds this, e.g. 16GiB")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (memory per rank, files) and exit: allocates and writes nothing")
    p.add_argument("--ranks", type=int, default=None,
                   help="--dry-run only: plan for R ranks (default: the launcher's world size)")
    p.add_argument("--mass-bin-edges", type=_edges, default=None,
                   help="comma-separated halo mass bin edges [M☉/h] (default: 4 log bins over 1e12–1e14)")
    p.add_argument("--omega-m", type=float, default=_COSMO.Omega_m, help="Ω_m (default %(default)s)")
    p.add_argument("--omega-b", type=float, default=_COSMO.Omega_b, help="Ω_b (default %(default)s)")
    p.add_argument("--h", type=float, default=_COSMO.h, help="H0 / (100 km/s/Mpc) (default %(default)s)")
    p.add_argument("--sigma8", type=float, default=_COSMO.sigma8, help="σ8 (default %(default)s)")
    p.add_argument("--n-s", type=float, default=_COSMO.n_s, help="n_s (default %(default)s)")


def config_from_args(args: argparse.Namespace) -> SimulateConfig:
    """The typed config of a parsed command line."""
    cosmo = Cosmology(Omega_m=args.omega_m, Omega_b=args.omega_b, h=args.h, sigma8=args.sigma8, n_s=args.n_s)
    kwargs = dict(grid=args.grid, box_size=args.box, seed=args.seed, out=args.out, lpt_only=args.lpt_only,
                  lpt_particles_per_voxel=args.lpt_particles_per_voxel,
                  particles_per_side=args.particles_per_side, pm_steps=args.pm_steps,
                  redshift=args.redshift[0], redshifts=tuple(args.redshift) if len(args.redshift) > 1 else (),
                  cosmology=cosmo, dry_run=bool(args.dry_run), plan_ranks=args.ranks,
                  max_memory_bytes=parse_bytes(args.max_memory) if args.max_memory else None)
    if args.mass_bin_edges is not None:
        kwargs["mass_bin_edges"] = args.mass_bin_edges
    return SimulateConfig(**kwargs)


def run(args: argparse.Namespace) -> int:
    from halopaint.log import get_logger
    if args.ranks is not None and not args.dry_run:
        raise HalopaintError("--ranks only plans (use it with --dry-run)")
    from halopaint.validation import OutputLock, validate_simulate_config
    config = config_from_args(args)
    validate_simulate_config(config)                            # physical ranges, with the range in the message
    if config.dry_run:
        from halopaint.launch import discover
        from halopaint.simulation import dry_run
        info = discover()
        text = dry_run(config, config.plan_ranks or info.world_size)
        if info.rank == 0:
            print(text)
        return 0
    from halopaint.fields import check_writable
    from halopaint.launch import discover
    check_writable(config.out)
    lock = OutputLock(config.out, "halopaint simulate")         # a second run on the same --out is refused
    if discover().rank == 0:                                    # the writing rank holds the output's lock
        lock.acquire()
    from halopaint.simulation import simulate
    try:
        paths = simulate(config, quiet=args.quiet)
    except MemoryError:
        raise HalopaintError(f"out of memory simulating grid {config.grid} with "
                             f"{config.n_particles_side}³ particles; use a smaller --grid or "
                             "--particles-per-side, or more ranks") from None
    finally:
        lock.release()
    get_logger(__name__).debug(f"wrote {paths}")
    return 0
