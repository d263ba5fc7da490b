"""`halopaint lightcone`: HEALPix shells and a halo catalogue from painted boxes (MPI over x-slabs).

    halopaint lightcone PAINTED.h5 [MORE.h5 …] --out LC.h5 [--z-max 0.1 --z-min 0 --shells 4 | --z-edges …]
                        [--nside 64] [--observer X Y Z] [--subsample S] [--mass-bins all|0|1-3]
                        [--catalogue --seed S] [--no-figure]

One painted file per snapshot redshift (same box, grid, cosmology, mass bins); each shell is painted from
the snapshot nearest its redshift. Runs unchanged alone, under `mpiexec -n R` and under `srun`.
"""

from __future__ import annotations

from halopaint.config import LightconeConfig, parse_mass_bins


def add_arguments(p) -> None:
    d = LightconeConfig()
    p.add_argument("inputs", nargs="+", metavar="PAINTED.h5",
                   help="painted field files (/halos), one per snapshot redshift")
    p.add_argument("--out", required=True, help="output light-cone file (HDF5); the figure goes beside it (.png)")
    p.add_argument("--z-min", type=float, default=d.z_min, help="near edge of the first shell (default %(default)s)")
    p.add_argument("--z-max", type=float, default=d.z_max, help="far edge of the last shell (default %(default)s)")
    p.add_argument("--shells", type=int, default=d.shells,
                   help="shells of equal comoving thickness between z-min and z-max (default %(default)s)")
    p.add_argument("--z-edges", type=float, nargs="+", default=None, metavar="Z",
                   help="explicit shell edges in redshift (overrides --z-min/--z-max/--shells)")
    p.add_argument("--nside", type=int, default=d.nside, help="HEALPix nside, RING ordering (default %(default)s)")
    p.add_argument("--observer", type=float, nargs=3, default=list(d.observer), metavar=("X", "Y", "Z"),
                   help="observer position in the box frame [Mpc/h] (default 0 0 0)")
    p.add_argument("--subsample", type=int, default=d.subsample, metavar="S",
                   help="S³ sub-points per voxel for the maps (default %(default)s)")
    p.add_argument("--mass-bins", default="all", help="all (default), or a selection: 2, 0,1, 1-3")
    p.add_argument("--catalogue", action="store_true", help="also Poisson-sample a halo catalogue (RA, Dec, z)")
    p.add_argument("--seed", type=int, default=d.seed, help="catalogue seed (default %(default)s)")
    p.add_argument("--no-figure", action="store_true", help="no Mollweide PNG of the shells")


def config_from_args(args) -> LightconeConfig:
    return LightconeConfig(
        inputs=tuple(args.inputs), out=args.out, z_min=args.z_min, z_max=args.z_max, shells=args.shells,
        z_edges=tuple(args.z_edges) if args.z_edges else None, nside=args.nside, observer=tuple(args.observer),
        subsample=args.subsample, mass_bins=parse_mass_bins(args.mass_bins), catalogue=args.catalogue,
        seed=args.seed, figure=not args.no_figure)


def run(args) -> int:
    import json

    from halopaint import lightcone
    summary = lightcone.build(config_from_args(args), progress=not args.quiet)
    if summary is not None:                          # rank 0
        print(json.dumps(summary, indent=1))
    return 0
