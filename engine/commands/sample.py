"""`halopaint sample`: integer halo-count realizations of a painted field, and halo catalogues (MPI).

    halopaint sample PAINTED.h5 --out R.h5 --seed S [--density DENS.h5 --catalogue] [--mass-bins all|1-3]
                     [--model auto|default|BUNDLE.pt] [--poisson] [--force]

Runs unchanged alone and under `mpiexec -n R` / `srun`; the result does not depend on R.
"""

from __future__ import annotations

from halopaint.config import parse_mass_bins


def add_arguments(p) -> None:
    p.add_argument("painted", help="painted field file (output of `halopaint paint`): expected counts /halos")
    p.add_argument("--out", required=True,
                   help="realization file; its per-rank parts go to OUT-stem.realization-parts/ next to it")
    p.add_argument("--seed", type=int, required=True, help="random seed (≥ 0); same seed → same realization")
    p.add_argument("--density", default=None,
                   help="the density file the painted field came from (its /velocity), for --catalogue")
    p.add_argument("--catalogue", action="store_true",
                   help="also write /catalogue/{pos, vel, mass, mass_bin}, one entry per sampled halo")
    p.add_argument("--mass-bins", default="all", help="all (default: every painted bin) or a contiguous "
                   "selection of mass-bin indices: 2, 0,1, 1-3")
    p.add_argument("--model", default="auto",
                   help="where the count model comes from: auto (default: the one recorded in the painted "
                        "file's model_metadata), default (the shipped bundle nearest the painted file's "
                        "redshift) or a bundle file")
    p.add_argument("--poisson", action="store_true",
                   help="draw Poisson counts around the painted mean instead of the fitted dispersion law")
    p.add_argument("--force", action="store_true", help="replace an existing --out")


def config_from_args(args):
    from halopaint.sample import SampleConfig
    if args.seed < 0:
        raise ValueError(f"--seed must be ≥ 0, got {args.seed}")
    return SampleConfig(painted=args.painted, out=args.out, seed=args.seed, density=args.density,
                        catalogue=args.catalogue, mass_bins=parse_mass_bins(args.mass_bins), model=args.model,
                        poisson=args.poisson, force=args.force)


def run(args) -> int:
    cfg = config_from_args(args)
    from mpi4py import MPI

    from halopaint import sample
    from halopaint.launch import abort_on_unexpected
    from halopaint.log import get_logger
    comm = MPI.COMM_WORLD
    with abort_on_unexpected(comm, "sample"):   # one rank's unexpected failure must not leave the others waiting
        summary = sample.sample(cfg, comm)
    if summary is not None:
        cat = "" if summary["catalogue_rows"] is None else f", catalogue of {summary['catalogue_rows']} halos"
        get_logger("halopaint.commands.sample").info(
            f"sampled {summary['grid']}³ × bins {summary['bins']} on {summary['ranks']} ranks in "
            f"{summary['wall_s']:.1f} s: {summary['halos']} halos{cat} → {summary['out']}")
    return 0
