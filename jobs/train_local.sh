#!/usr/bin/env bash
# Data-parallel training on one machine's CPUs (gloo), R ranks.
#   bash jobs/train_local.sh R --data a.h5 b.h5 --validation v.h5 --out model.pt [train options]
# Uses mpiexec when available (rank 0 broadcasts the rendezvous address over MPI), else torchrun.
# Each rank draws its own patch stream from (seed, rank); the global batch is R patches per step.
# Re-running the same command with --resume continues from model.pt.ckpt (same R required).
set -euo pipefail
ranks="${1:?usage: train_local.sh RANKS train-args...}"; shift
cores="$(python -c 'import os; print(len(os.sched_getaffinity(0)))')"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( cores / ranks > 0 ? cores / ranks : 1 ))}"
if command -v mpiexec >/dev/null 2>&1; then
    exec mpiexec -n "$ranks" halopaint train --device cpu "$@"
else
    exec torchrun --standalone --nproc-per-node "$ranks" -m halopaint.cli train --device cpu "$@"
fi
