#!/usr/bin/env python
"""Training throughput on CPU at the paper's patch size (58³ density → 50³ halos), eager vs fused.

One iteration = 5 critic steps (each: generator forward, critic on real + fake, per-sample gradient
penalty, Adam) + 1 generator step — the paper's n_critic = 5, batch 1. Both training paths
(`TrainConfig.train_path`: the eager reference and the fused path of halopaint.train.fast) run in the same
process, on identical trainers, their iterations interleaved; each path's first iteration (warm-up: the
native C kernels' build or cache load, first-use allocations) is timed apart and reported separately.
Then 2 DDP ranks (gloo, spawned here, each on its own patch stream, gradients all-reduced), both paths
interleaved likewise. Reports median seconds per iteration, the eager / fused ratio, global iterations/s
and the 2-rank / 1-rank throughput ratio. glibc malloc is tuned as `halopaint` tunes it at start-up.

    python jobs/bench/train.py [--iterations 5] [--patch 50] [--threads 1 2] [--ranks 2 | --ranks 0]
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

from halopaint.allocator import tune_malloc  # noqa: E402
from halopaint.config import TrainConfig  # noqa: E402
from halopaint.ddp import GradientSync  # noqa: E402
from halopaint.train import Trainer, TrainingData  # noqa: E402

PATHS = ("eager", "fused")


def _data(patch: int) -> TrainingData:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    from train_data import synthetic_pair
    n = max(64, patch + 8)
    return TrainingData.from_arrays([synthetic_pair(n, 1, n_bins=1)])


def _timed(trainer: Trainer) -> float:
    t0 = time.perf_counter()
    trainer.iteration()
    return time.perf_counter() - t0


def _interleaved(trainers: dict[str, Trainer], iterations: int) -> dict[str, dict]:
    """Warm-up iteration of each path, then `iterations` rounds of one iteration per path."""
    out = {name: {"warmup_s": _timed(tr), "times": []} for name, tr in trainers.items()}
    for _ in range(iterations):
        for name, tr in trainers.items():
            out[name]["times"].append(_timed(tr))
    return out


def _trainers(args, streams, sync) -> dict[str, Trainer]:
    data = _data(args.patch)
    return {p: Trainer(TrainConfig(patch=args.patch, validation_patches=0, train_path=p), data, streams,
                       torch.device("cpu"), sync) for p in PATHS}


def _rank_main(rank: int, world: int, port: int, args, queue) -> None:
    import torch.distributed as dist
    tune_malloc()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(args.threads_per_rank)
    dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world)
    try:
        queue.put((rank, _interleaved(_trainers(args, [rank], GradientSync(True)), args.iterations)))
    finally:
        dist.destroy_process_group()


def _summary(res: dict) -> dict:
    med = {p: statistics.median(res[p]["times"]) for p in PATHS}
    return {**{p: {"s_per_iteration": round(med[p], 3), "warmup_s": round(res[p]["warmup_s"], 3),
                   "all_s": [round(t, 3) for t in res[p]["times"]]} for p in PATHS},
            "ratio_eager_over_fused": round(med["eager"] / med["fused"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=5, help="timed iterations per path (after a warm-up)")
    ap.add_argument("--patch", type=int, default=50)
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="thread counts of the 1-rank runs (default: the cores)")
    ap.add_argument("--ranks", type=int, default=2, help="DDP ranks of the data-parallel run (0: skip it)")
    args = ap.parse_args()
    tune_malloc()
    cores = len(os.sched_getaffinity(0))
    threads = args.threads or [cores]
    report = {"patch": args.patch, "density_patch": args.patch + 8, "n_critic": TrainConfig().n_critic,
              "batch_per_rank": 1, "cores": cores, "iterations": args.iterations}
    single = {}
    for t in threads:
        torch.set_num_threads(t)
        single[t] = _summary(_interleaved(_trainers(args, [0], GradientSync(False)), args.iterations))
        report[f"1_rank_{t}_threads"] = single[t]
        print(json.dumps({f"1_rank_{t}_threads": single[t]}), file=sys.stderr, flush=True)

    if args.ranks > 1:
        args.threads_per_rank = max(1, max(threads) // args.ranks)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        procs = [ctx.Process(target=_rank_main, args=(r, args.ranks, port, args, queue)) for r in range(args.ranks)]
        for p in procs:
            p.start()
        results = dict(queue.get() for _ in procs)
        for p in procs:
            p.join()
        # an iteration ends for all ranks at the same all-reduce: take the slowest rank per iteration
        merged = {p: {"warmup_s": max(results[r][p]["warmup_s"] for r in results),
                      "times": [max(ts) for ts in zip(*(results[r][p]["times"] for r in results))]}
                  for p in PATHS}
        ddp = _summary(merged)
        for p in PATHS:
            ddp[p]["global_iterations_per_s"] = round(args.ranks / ddp[p]["s_per_iteration"], 4)
            one = single[max(threads)][p]["s_per_iteration"]
            ddp[p]["speedup_over_1_rank"] = round(ddp[p]["global_iterations_per_s"] * one, 3)
        report[f"{args.ranks}_ranks_{args.threads_per_rank}_threads"] = ddp
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
