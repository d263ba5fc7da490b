"""Time the fused CPU path's native C kernels against the torch code they replace, part by part, in one process.

    python jobs/bench/native_parts.py [--n 32] [--batch 2] [--repeats 15] [--rounds 3]

One sub-tile batch (`--batch` sub-tiles of `--n`³ output voxels, input (n + 8)³, the paper's network with
random weights), one thread. Parts (kernels/native.c against kernels/cpu.py's torch code):
  block 1 + reductions   block1_reduce   vs  oneDNN conv3d 1→20 + branch C + leaky ReLU, then the 30→30 GEMM
  block 2 convolutions   mix_xdirect      vs  3D FFT, numba per-frequency mixing, staged inverse
                         (2D FFTs over z, y and the x taps in the C kernel)
  epilogue + tail        epilogue_tail    vs  residual add + leaky ReLU + the GEMM chain of the tail
  whole batch            all three        vs  none (FusedCPUKernel(native=False))
For each: the medians over `--repeats` of each round (the two interleaved) and ‖native − torch‖/‖torch‖.
Exit status 1 if the native kernels are not available here or any difference exceeds 1e-5.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from halopaint.allocator import tune_malloc  # noqa: E402
from halopaint.model import Generator  # noqa: E402
from halopaint.kernels.cpu import FusedCPUKernel  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="sub-tile output side (32: FFT size 36)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    tune_malloc()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    gen = Generator()
    spec, params = gen.spec, gen.state_dict()
    fast = FusedCPUKernel(params, spec)
    slow = FusedCPUKernel(params, spec, native=False)
    print(f"# {fast.native_status}")
    if fast.native_block1 is None:
        return 1
    n, nb, t = args.n, args.batch, spec.block_trim
    b1, b2 = slow.blocks
    x = torch.randn(nb, 1, n + 8, n + 8, n + 8) * 2
    fft_shape = (n + 2 * t,) * 3
    out_shape = (n,) * 3

    def torch_block1():
        return b2.reduce(b1(x))

    r, x0 = fast.native_block1(x)
    r_slow = torch_block1()
    ab, res, c = fast.blocks[1].branches(r, x0, fft_shape)
    ab_slow = b2._conv_fft(r[:, :2 * spec.filters], out_shape, fft_shape)

    def torch_tail():
        out = b2.epilogue(ab, res, c)
        return slow._tail(out.reshape(nb, out.shape[1], -1)).view(nb, 1, *out_shape)

    parts = {
        "block 1 + reductions": (lambda: fast.native_block1(x), torch_block1, rel(r, r_slow)),
        "block 2 convolutions": (lambda: fast.blocks[1]._conv_fft(r[:, :2 * spec.filters], out_shape, fft_shape),
                                 lambda: b2._conv_fft(r[:, :2 * spec.filters], out_shape, fft_shape),
                                 rel(ab, ab_slow)),
        "epilogue + tail": (lambda: fast.native_tail(ab, res, c), torch_tail, rel(fast.native_tail(ab, res, c),
                                                                                   torch_tail())),
        "whole batch": (lambda: fast._paint(x, n), lambda: slow._paint(x, n), rel(fast._paint(x, n),
                                                                                  slow._paint(x, n))),
    }
    print(f"# {nb} sub-tiles of {n}³ (FFT size {n + 2 * t}), one thread; ms per batch, native vs torch")
    for _ in range(args.rounds):
        for name, (native, reference, _) in parts.items():
            tn, tt = median_ms(native, args.repeats), median_ms(reference, args.repeats)
            print(f"{name:22s} native {tn:7.2f}   torch {tt:7.2f}   ×{tt / tn:5.2f}")
    worst = max(d for *_, d in parts.values())
    print("‖native − torch‖/‖torch‖: " + ", ".join(f"{k} {d:.1e}" for k, (*_, d) in parts.items()))
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
