#!/usr/bin/env bash
# The GPU checks of the inference kernels, as one prepared run for a lent GPU (not run yet: no GPU so far):
#   bash jobs/bench/gpu_checks.sh [OUT_DIR]          OUT_DIR defaults to $OUT, else ./gpu-checks
# Runs from the checkout without installing (PYTHONPATH = the checkout) with the machine's python3, which must
# hold a CUDA build of torch and triton (plus numpy, scipy, numba, h5py, pytest). Writes into OUT_DIR:
#   env.txt     torch/triton versions, GPU name
#   check.json  Triton vs the reference: 25³, 50³ × batch 2 (the paper's 58³ → 50³), 17³ on 8³ tiles;
#               fp32, tf32, bf16 (halopaint.kernels.triton.check; exit status ≠ 0 if any is above its tolerance)
#   pytest.log  tests/test_kernels_triton.py on the GPU (native correctness tests, launch plan)
#   bench.log, bench.json   Mvox/s at 128³ and 256³: eager cuDNN, torch.compile, Triton at each precision
#               and at candidate launch configurations (jobs/bench/kernels.py --triton-configs)
# Each step has its own time limit and the script goes on after a failed step; the summary line at the end
# lists the exit status of each step.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${1:-${OUT:-gpu-checks}}"
mkdir -p "$out"
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_DEFAULT_FP_FUSION=1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" \
    | tee "$out/env.txt"
timeout 240 python3 -m halopaint.kernels.triton.check --device cuda --case 25:1:4x4x8 50:2:4x4x8 17:1:8x8x8 \
    --precision fp32 tf32 bf16 > "$out/check.json"
check=$?
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_triton.py -k "gpu or launch_plan" \
    > "$out/pytest.log" 2>&1
tests=$?
timeout 360 python3 jobs/bench/kernels.py --device cuda --sizes 128 256 --repeats 5 \
    --triton-configs 4x4x8:4 4x8x8:8 8x8x8:8 --json "$out/bench.json" > "$out/bench.log" 2>&1
bench=$?
cat "$out/check.json" "$out/bench.log"
tail -3 "$out/pytest.log"
echo "gpu_checks: check=$check tests=$tests bench=$bench (0 = passed) → $out"
[ "$check" -eq 0 ] && [ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
