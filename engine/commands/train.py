"""`halopaint train`: WGAN-GP training (paper protocol), one generator per mass bin, DDP-ready.

Runs unchanged alone, under torchrun, srun or mpiexec (see halopaint.ddp). Outputs next to --out MODEL:
the bundle MODEL (rewritten at every checkpoint), MODEL.ckpt, MODEL.log.jsonl, MODEL.losses.png.
"""

from __future__ import annotations

import shlex
import sys

from halopaint.config import TRAIN_PATHS, TrainConfig, parse_mass_bins

_D = TrainConfig()


def add_arguments(p) -> None:
    p.add_argument("--data", nargs="+", required=True, metavar="FILE.h5",
                   help="training field files with /density and /halos")
    p.add_argument("--validation", nargs="+", default=[], metavar="FILE.h5",
                   help="validation field files (default: hold out the last --validation-fraction of the "
                        "x-range of each training box)")
    p.add_argument("--out", required=True, metavar="MODEL", help="output model bundle (.pt)")
    p.add_argument("--steps", type=int, default=_D.steps, help="generator steps per mass bin (%(default)s)")
    p.add_argument("--mass-bins", default="all", help="'all' or adjacent bins, e.g. 0,1 or 1-3 (default all)")
    p.add_argument("--patch", type=int, default=_D.patch, help="halo patch side in voxels (%(default)s); "
                   "the density patch is patch + 2·ghost")
    p.add_argument("--seed", type=int, default=_D.seed)
    p.add_argument("--resume", action="store_true", help="continue from MODEL.ckpt if it exists")
    p.add_argument("--checkpoint-every", type=int, default=_D.checkpoint_every, metavar="K")
    p.add_argument("--batch-size", type=int, default=_D.batch_size, help="patches per rank per step")
    p.add_argument("--n-critic", type=int, default=_D.n_critic)
    p.add_argument("--gp-lambda", type=float, default=_D.gp_lambda)
    p.add_argument("--lr", type=float, default=_D.lr)
    p.add_argument("--supervised-weight", type=float, default=_D.supervised_weight,
                   help="weight of the Poisson NLL of true counts in the generator loss (0 = paper protocol)")
    p.add_argument("--adversarial-weight", type=float, default=_D.adversarial_weight,
                   help="weight of the WGAN generator loss; 0 skips the critic (supervised only)")
    p.add_argument("--ema", dest="ema_decay", type=float, default=_D.ema_decay,
                   help="ship an exponential moving average of the generator weights with this decay "
                        "(e.g. 0.98; default off)")
    p.add_argument("--validation-fraction", type=float, default=_D.validation_fraction)
    p.add_argument("--validate-every", type=int, default=_D.validate_every)
    p.add_argument("--validation-patches", type=int, default=_D.validation_patches)
    p.add_argument("--no-rotate", action="store_true", help="do not rotate patches (default: random of 24)")
    p.add_argument("--init", dest="init_model", default=None, metavar="MODEL",
                   help="start the generators from a bundle's weights")
    p.add_argument("--device", default=_D.device, help="auto | cpu | cuda | cuda:K")
    p.add_argument("--train-path", default=_D.train_path, choices=TRAIN_PATHS,
                   help="eager: the modules' autograd (the reference); fused: the same losses and gradients "
                        "through folded convolutions and an explicit penalty gradient (halopaint.train.fast, "
                        "2.5-3x faster per iteration on CPU); auto (default): fused on CPU, eager elsewhere")


def config_from_args(args) -> TrainConfig:
    return TrainConfig(data=tuple(args.data), validation=tuple(args.validation), out=args.out,
                       steps=args.steps, mass_bins=parse_mass_bins(args.mass_bins), patch=args.patch,
                       batch_size=args.batch_size, seed=args.seed, resume=args.resume,
                       checkpoint_every=args.checkpoint_every, n_critic=args.n_critic,
                       gp_lambda=args.gp_lambda, lr=args.lr, supervised_weight=args.supervised_weight,
                       adversarial_weight=args.adversarial_weight, ema_decay=args.ema_decay,
                       validation_fraction=args.validation_fraction, validate_every=args.validate_every,
                       validation_patches=args.validation_patches, rotate=not args.no_rotate,
                       init_model=args.init_model, device=args.device,
                       train_path=args.train_path)


def run(args) -> int:
    from halopaint.train import train
    cfg = config_from_args(args)
    command = "halopaint " + shlex.join(sys.argv[1:]) if sys.argv and "train" in sys.argv else \
        "halopaint train (API)"
    summary = train(cfg, command=command, progress=not args.quiet)
    if summary is not None and not args.quiet:
        for b, ev in sorted(summary["eval"].items()):
            parts = ", ".join(f"{k}={v:.4g}" for k, v in ev.items() if isinstance(v, float))
            print(f"bin {b}: {parts}", file=sys.stderr)
    return 0
