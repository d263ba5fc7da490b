"""`halopaint simulate`: a seed → 2LPT density (+ PM N-body FoF halo counts) field file."""

from __future__ import annotations

import argparse

from halopaint.config import Cosmology, SimulateConfig
from halopaint.errors import HalopaintError

_DEFAULT = SimulateConfig()
_COSMO = Cosmology()


def _edges(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot parse mass bin edges from {text!r} "
                                         "(use e.g. 1e12,1e13,1e14)") from None


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
    p.add_argument("--redshift", type=float, default=_DEFAULT.redshift, help="output redshift (default %(default)s)")
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
                  redshift=args.redshift, cosmology=cosmo)
    if args.mass_bin_edges is not None:
        kwargs["mass_bin_edges"] = args.mass_bin_edges
    return SimulateConfig(**kwargs)


def run(args: argparse.Namespace) -> int:
    from halopaint.sim import simulate
    config = config_from_args(args)
    # --- issue 21 (reliability): physical ranges, --out never a lock-held output -------------------------
    from halopaint.fields import check_writable
    from halopaint.launch import discover
    from halopaint.validation import OutputLock, validate_simulate_config
    validate_simulate_config(config)
    check_writable(config.out)
    lock = OutputLock(config.out, "halopaint simulate")
    if discover().rank == 0:                                    # the writing rank holds the output's lock
        lock.acquire()
    # -----------------------------------------------------------------------------------------------------
    try:
        simulate(config, quiet=args.quiet)
    except MemoryError:
        raise HalopaintError(f"out of memory simulating grid {config.grid} with "
                             f"{config.n_particles_side}³ particles; use a smaller --grid or "
                             "--particles-per-side") from None
    finally:
        lock.release()                                          # issue 21
    return 0
