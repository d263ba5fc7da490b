#!/usr/bin/env bash
# Paint a density file on this machine: R MPI ranks on the CPU, the node's cores shared between them.
#   bash jobs/paint_local.sh DENSITY.h5 OUT.h5 [RANKS] [more `halopaint paint` options…]
# Environment: MODEL (default: the shipped model), MAX_MEMORY per rank (default 4GiB),
#              HALOPAINT_VENV (default .venv of this checkout), MPIEXEC (default mpiexec).
# Example:     MODEL=model.pt bash jobs/paint_local.sh box.h5 painted.h5 2 --mass-bins 0-1
# Output:      OUT.h5 (virtual master) + OUT.h5.parts/rank-RRRR.h5 next to it; keep them together.
# A killed run continues where it stopped with the same command plus --resume.
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${HALOPAINT_VENV:-$root/.venv}"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "$venv/bin/activate"
fi
density="$1"; out="$2"; shift 2
ranks="${1:-2}"
if [ $# -gt 0 ]; then shift; fi
cores="$(nproc)"
threads=$(( cores / ranks )); [ "$threads" -ge 1 ] || threads=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$threads}"
echo "[paint_local] $ranks ranks × $OMP_NUM_THREADS threads on $cores cores: $density → $out" >&2
exec "${MPIEXEC:-mpiexec}" -n "$ranks" halopaint paint --model "${MODEL:-default}" --density "$density" \
    --out "$out" --device cpu --max-memory "${MAX_MEMORY:-4GiB}" "$@"
