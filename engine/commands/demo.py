"""`halopaint demo`: the README's main job on the embedded default."""

from __future__ import annotations

from halopaint.config import DemoConfig


def add_arguments(p) -> None:
    d = DemoConfig()
    p.add_argument("--out", default=d.out, help=f"output directory (default {d.out})")
    p.add_argument("--ranks", type=int, default=d.ranks, help=f"MPI ranks for painting (default {d.ranks})")
    p.add_argument("--model", default=d.model, help="model bundle (default: the shipped model)")
    p.add_argument("--grid", type=int, default=d.grid,
                   help=f"held-out N-body box side in voxels of the model's size (default {d.grid})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"held-out box seed (default {d.seed})")
    p.add_argument("--lpt-grid", type=int, default=d.lpt_grid,
                   help=f"2LPT-only box side in voxels (default {d.lpt_grid})")
    p.add_argument("--lpt-seed", type=int, default=d.lpt_seed, help=f"2LPT-only box seed (default {d.lpt_seed})")
    p.add_argument("--kernels", default=d.kernels, help="inference kernels (default auto = fastest)")


def run(args) -> int:
    from halopaint.demo import run_demo
    cfg = DemoConfig(out=args.out, ranks=args.ranks, model=args.model, grid=args.grid, seed=args.seed,
                     lpt_grid=args.lpt_grid, lpt_seed=args.lpt_seed, kernels=args.kernels)
    run_demo(cfg)
    return 0
