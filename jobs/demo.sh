#!/usr/bin/env bash
# The README's main command: set everything up (first run only) and run the main job on the embedded
# default — simulate a held-out box (N-body truth) and a larger 2LPT-only box, paint both with the
# shipped model on 2 MPI ranks, compute the paper's statistics on Dask, write figures and a summary.
#   bash jobs/demo.sh [--out DIR] [--ranks R] ...     (arguments go to `halopaint demo`)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
start=$(date +%s)
. jobs/setup.sh "mpich"
echo "[demo] setup took $(( $(date +%s) - start )) s" >&2
exec halopaint demo "$@"
