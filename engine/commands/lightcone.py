"""`halopaint lightcone`: HEALPix shells and a halo catalogue from painted boxes (MPI over x-slabs).

    halopaint lightcone SNAP.h5 [MORE.h5 …] [--density DENS.h5 …] --out LC.h5
                        [--z-max 0.1 --z-min 0 --shells 4 | --z-edges …] [--nside 64] [--observer X Y Z]
                        [--subsample S] [--mass-bins all|0|1-3] [--catalogue --seed S] [--fits] [--no-figure]

One painted (or sampled) file per snapshot redshift (same box, grid, cosmology, mass bins) and, in the same
order, its density file for the halos' velocities; each voxel is painted from one of the two snapshots
around its redshift (dithered linear blend; --snapshot-blend nearest: the snapshot nearest each shell's
middle redshift). Runs unchanged alone, under `mpiexec -n R` and under `srun`.
"""

from __future__ import annotations

from halopaint.config import SNAPSHOT_BLENDS, LightconeConfig, parse_mass_bins


def add_arguments(p) -> None:
    d = LightconeConfig()
    p.add_argument("inputs", nargs="+", metavar="SNAP.h5",
                   help="painted or sampled field files (/halos), one per snapshot redshift")
    p.add_argument("--density", nargs="+", default=[], metavar="DENS.h5",
                   help="the snapshots' density files (/velocity), in the same order: the catalogue's "
                        "v_los and z_obs come from their velocities (without them v_los = 0)")
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
    p.add_argument("--velocity-dispersion", type=float, nargs="+", default=None, metavar="KMS",
                   help="Gaussian velocity dispersion per component added to each halo [km/s]: one value, "
                        "or one per selected mass bin (default 0)")
    p.add_argument("--snapshot-blend", choices=SNAPSHOT_BLENDS, default=d.snapshot_blend,
                   help="linear (default): each voxel takes one of the two snapshots z_i < z < z_j around its "
                        "redshift, z_j with probability (z − z_i)/(z_j − z_i), so mean counts interpolate linearly "
                        "in z; "
                        "nearest: each shell takes the snapshot nearest its middle redshift")
    p.add_argument("--snapshot-tolerance", type=float, default=d.snapshot_tolerance, metavar="DZ",
                   help="refuse a shell whose middle redshift is further than DZ from every snapshot "
                        "(linear blend: outside the snapshots' redshift range only; default %(default)s)")
    p.add_argument("--fits", action="store_true",
                   help="also one HEALPix FITS map per shell (OUT_shellNN.fits) and, with --catalogue, "
                        "the catalogue as a FITS table (OUT_catalogue.fits)")
    p.add_argument("--no-figure", action="store_true", help="no Mollweide PNG of the shells")


def config_from_args(args) -> LightconeConfig:
    return LightconeConfig(
        inputs=tuple(args.inputs), densities=tuple(args.density), out=args.out, z_min=args.z_min, z_max=args.z_max, shells=args.shells,
        z_edges=tuple(args.z_edges) if args.z_edges else None, nside=args.nside, observer=tuple(args.observer),
        subsample=args.subsample, mass_bins=parse_mass_bins(args.mass_bins), catalogue=args.catalogue,
        seed=args.seed, figure=not args.no_figure, fits=args.fits, snapshot_tolerance=args.snapshot_tolerance,
        snapshot_blend=args.snapshot_blend,
        velocity_dispersion=tuple(args.velocity_dispersion) if args.velocity_dispersion else None)


def run(args) -> int:
    import json

    from halopaint import lightcone
    summary = lightcone.build(config_from_args(args), progress=not args.quiet)
    if summary is not None:                          # rank 0
        print(json.dumps(summary, indent=1))
    return 0
