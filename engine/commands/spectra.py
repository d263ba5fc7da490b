"""`halopaint spectra PRED.h5 [--reference TRUE.h5] [--density DENS.h5] --out DIR [--patches M]
[--scheduler ADDR]`: the paper's statistics of a painted field on Dask (see analysis/report.py).

`halopaint spectra PRED.h5 --multipoles [--reference TRUE.h5] --out DIR [--los x|y|z] [--multipole-grid N]`:
instead, real- and redshift-space multipoles of the files' halo catalogues (analysis/rsd_report.py); the
field-statistics flags are refused with it."""

from __future__ import annotations

import argparse

from halopaint.config import MultipolesConfig, SpectraConfig


def _pair(text: str) -> tuple[float, float]:
    try:
        k1, k2 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K1,K2 in h/Mpc, got {text!r}") from None
    return k1, k2


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = SpectraConfig()
    p.add_argument("predicted", metavar="PRED.h5", help="painted field file (/halos)")
    p.add_argument("--reference", metavar="TRUE.h5", help="reference halo field (/halos): T, r_c, s, PDFs")
    p.add_argument("--density", metavar="DENS.h5", help="2LPT density (/density): the linear-bias baseline")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    p.add_argument("--patches", type=int, default=d.patches, metavar="M",
                   help="ensemble over M random periodic sub-cubes (0 = off; needs --reference)")
    p.add_argument("--patch-size", type=float, default=d.patch_size, metavar="MPC",
                   help="sub-cube side [Mpc/h] (default: a quarter of the box)")
    p.add_argument("--patch-seed", type=int, default=d.patch_seed, help="seed of the sub-cube corners")
    p.add_argument("--scheduler", default=d.scheduler, metavar="ADDR",
                   help="dask.distributed scheduler address (default: local threads)")
    p.add_argument("--mas", default=d.mas, choices=["none", "ngp", "cic"],
                   help="mass-assignment compensation of the halo fields (default none)")
    p.add_argument("--density-mas", default=d.density_mas, choices=["none", "ngp", "cic"],
                   help="mass-assignment compensation of the 2LPT density (default none)")
    p.add_argument("--bias-kmax", type=float, default=d.bias_fit_kmax, metavar="K",
                   help="2LPT bias fit over k ≤ K [h/Mpc] (default %(default)s)")
    p.add_argument("--no-bias-shot-noise", action="store_true",
                   help="fit the bias without subtracting the Poisson level from P_hh")
    p.add_argument("--bispectrum", type=_pair, action="append", metavar="K1,K2",
                   help="bispectrum configuration [h/Mpc], repeatable (default "
                        + " ".join(f"{a:g},{b:g}" for a, b in d.bispectrum_configs) + ")")
    p.add_argument("--thetas", type=int, default=d.bispectrum_thetas, metavar="N",
                   help="number of angles θ in [0, π] (0 = no bispectrum)")
    p.add_argument("--bispectrum-sum-only", action="store_true",
                   help="bispectra of the field summed over mass bins only (default: also every bin)")
    p.add_argument("--chunk-planes", type=int, default=d.chunk_planes, help="x-planes per Dask chunk (default %(default)s)")
    p.add_argument("--spill-dir", default=d.spill_dir, metavar="DIR",
                   help="out-of-core FFT transpose through temporary files in DIR")
    p.add_argument("--format", dest="output_format", default=d.output_format, choices=["hdf5", "json"],
                   help="statistics file format")
    p.add_argument("--no-figures", action="store_true", help="statistics only, no PNG figures")
    m = MultipolesConfig()
    p.add_argument("--multipoles", action="store_true",
                   help="instead of the field statistics: P0, P2, P4 in real and redshift space of the halo "
                        "catalogues (/catalogue or /catalog) of PRED.h5 (and TRUE.h5), per mass bin and summed")
    p.add_argument("--los", default=m.los, metavar="x|y|z",
                   help="with --multipoles: the plane-parallel line of sight (default %(default)s)")
    p.add_argument("--multipole-grid", default=None, metavar="N",
                   help="with --multipoles: CIC mesh side, a positive even integer (default: PRED's grid)")


# flags of the field statistics, which --multipoles does not take (dest → flag)
FIELD_ONLY = {"density": "--density", "patches": "--patches", "patch_size": "--patch-size",
              "patch_seed": "--patch-seed", "scheduler": "--scheduler", "mas": "--mas", "density_mas": "--density-mas",
              "bias_fit_kmax": "--bias-kmax", "bias_fit_subtract_shot_noise": "--no-bias-shot-noise",
              "bispectrum_configs": "--bispectrum", "bispectrum_thetas": "--thetas",
              "bispectrum_sum_only": "--bispectrum-sum-only", "chunk_planes": "--chunk-planes",
              "spill_dir": "--spill-dir", "output_format": "--format"}


def multipoles_config_from_args(args) -> MultipolesConfig:
    """--multipoles: its config; a field-statistics flag given a value other than its default is refused."""
    field, default = config_from_args(args), SpectraConfig()
    given = [flag for dest, flag in FIELD_ONLY.items() if getattr(field, dest) != getattr(default, dest)]
    if given:
        raise ValueError(f"{', '.join(given)}: field-statistics option(s), not taken with --multipoles "
                         "(run `halopaint spectra` without --multipoles for them)")
    return MultipolesConfig(predicted=args.predicted, reference=args.reference, out=args.out, los=args.los,
                            grid=args.multipole_grid, figures=not args.no_figures)


def config_from_args(args) -> SpectraConfig:
    d = SpectraConfig()
    return SpectraConfig(
        predicted=args.predicted, reference=args.reference, density=args.density, out=args.out,
        patches=args.patches, patch_size=args.patch_size, patch_seed=args.patch_seed, scheduler=args.scheduler,
        mas=args.mas, density_mas=args.density_mas, bias_fit_kmax=args.bias_kmax,
        bias_fit_subtract_shot_noise=not args.no_bias_shot_noise,
        bispectrum_configs=tuple(args.bispectrum) if args.bispectrum else d.bispectrum_configs,
        bispectrum_thetas=args.thetas,
        bispectrum_sum_only=args.bispectrum_sum_only, chunk_planes=args.chunk_planes, spill_dir=args.spill_dir,
        output_format=args.output_format, figures=not args.no_figures, progress=not args.quiet)


def validate(cfg: SpectraConfig) -> None:
    """halopaint.validation for spectra: --out a new or writable directory that is not the inputs' own,
    every input a valid field file, halo counts finite and ≥ 0, the density a finite ρ/ρ̄ (mean 1)."""
    from halopaint.fields import FieldFile, read_info
    from halopaint.validation import check_counts_file, check_density_stats, check_output_dir, scan_density
    for path, require in ((cfg.predicted, "halos"), (cfg.reference, "halos"), (cfg.density, "density")):
        if path:
            read_info(path, require=(require,))
    check_output_dir(cfg.out, [p for p in (cfg.predicted, cfg.reference, cfg.density) if p])
    for path in (cfg.predicted, cfg.reference):
        if path:
            check_counts_file(path)
    if cfg.density:
        with FieldFile(cfg.density, require=("density",)) as f:
            check_density_stats(scan_density(f.h5["density"], 0, f.info.grid, cfg.chunk_planes), cfg.density)


def run(args) -> int:
    from halopaint.analysis import report
    from halopaint.validation import OutputLock
    if args.multipoles:
        return run_multipoles(multipoles_config_from_args(args))
    if args.los != MultipolesConfig().los or args.multipole_grid is not None:
        raise ValueError("--los and --multipole-grid go with --multipoles")
    cfg = config_from_args(args)
    validate(cfg)
    with OutputLock(cfg.out, "halopaint spectra"):
        summary = report.run(cfg)
    for name, path in summary["files"].items():
        print(f"{name}: {path}")
    return 0


def run_multipoles(cfg: MultipolesConfig) -> int:
    from halopaint.analysis import rsd_report
    from halopaint.validation import OutputLock
    with OutputLock(cfg.out, "halopaint spectra"):
        summary = rsd_report.run(cfg)
    for name, path in summary["files"].items():
        print(f"{name}: {path}")
    return 0
