#!/usr/bin/env python
"""Training throughput on CPU at the paper's patch size (58³ density → 50³ halos).

One iteration = 5 critic steps (each: generator forward, critic on real + fake, per-sample gradient
penalty with double backward, Adam) + 1 generator step — the paper's n_critic = 5, batch 1.
Measured in one run: 1 rank (this process), then 2 DDP ranks (gloo, spawned here, each on its own patch
stream, gradients all-reduced). Reports the median seconds per iteration and global iterations/s
(patches per second across ranks), and the 2-rank / 1-rank throughput ratio.

    python jobs/bench/train.py [--iterations 3] [--patch 50] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from halopaint.config import TrainConfig  # noqa: E402
from halopaint.ddp import GradientSync  # noqa: E402
from halopaint.train import Trainer, TrainingData  # noqa: E402


def _data(patch: int) -> TrainingData:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    from train_data import synthetic_pair
    n = max(64, patch + 8)
    return TrainingData.from_arrays([synthetic_pair(n, 1, n_bins=1)])


def _time_iterations(trainer: Trainer, iterations: int) -> list[float]:
    trainer.iteration()   # warm-up
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        trainer.iteration()
        times.append(time.perf_counter() - t0)
    return times


def _rank_main(rank: int, world: int, port: int, args, queue) -> None:
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(args.threads_per_rank)
    dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world)
    try:
        cfg = TrainConfig(patch=args.patch, validation_patches=0)
        trainer = Trainer(cfg, _data(args.patch), [rank], torch.device("cpu"), GradientSync(True))
        times = _time_iterations(trainer, args.iterations)
        queue.put((rank, times))
    finally:
        dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--patch", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None, help="threads of the 1-rank run (default: cores)")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    threads = args.threads or cores
    args.threads_per_rank = max(1, threads // 2)

    torch.set_num_threads(threads)
    cfg = TrainConfig(patch=args.patch, validation_patches=0)
    single = _time_iterations(Trainer(cfg, _data(args.patch), [0], torch.device("cpu"), GradientSync(False)),
                              args.iterations)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_rank_main, args=(r, 2, port, args, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get() for _ in procs)
    for p in procs:
        p.join()
    # an iteration ends for both ranks at the same all-reduce: take the slower rank per iteration
    double = [max(a, b) for a, b in zip(results[0], results[1])]

    s1, s2 = statistics.median(single), statistics.median(double)
    report = {
        "patch": args.patch, "density_patch": args.patch + 8, "n_critic": cfg.n_critic, "batch_per_rank": 1,
        "cores": cores, "threads_1rank": threads, "threads_per_rank_2ranks": args.threads_per_rank,
        "1_rank": {"s_per_iteration": round(s1, 3), "iterations_per_s": round(1 / s1, 4)},
        "2_ranks": {"s_per_iteration": round(s2, 3), "global_iterations_per_s": round(2 / s2, 4)},
        "speedup_2_over_1": round((2 / s2) / (1 / s1), 3),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
