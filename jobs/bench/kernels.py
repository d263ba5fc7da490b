"""Benchmark the generator's inference paths: Mvox/s at several tile sides, in one process.

    python jobs/bench/kernels.py                          # CPU: reference, fused cpu (fft, direct)
    python jobs/bench/kernels.py --device cuda            # GPU: cuDNN eager, torch.compile, triton fp32/tf32/bf16
    python jobs/bench/kernels.py --device cuda --sizes 128 256 --triton-configs 4x4x8:4 8x4x8:8 4x8x8:8
    python jobs/bench/kernels.py --sizes 64 128 --threads 2 --json out.json
    python jobs/bench/kernels.py --fft-sizes --threads 1  # calibrate halopaint.kernels.cpu.FFT_SIZES (cost per FFT voxel)
    python jobs/bench/kernels.py --glibc-defaults         # malloc at glibc's defaults (else as halopaint runs)

For each side n the input is (1, 1, n+8, n+8, n+8) (the paper's ghost width 4). Each path is timed
`--repeats` times, the paths interleaved round-robin so that load from other processes hits them
alike; the median is reported as output voxels per second, with the ratio to the reference measured
in the same run. Work per voxel: the reference network costs NAIVE multiply-adds per output voxel
(every layer at its own resolution, what nn.Conv3d executes); FOLDED is the same network after the
exact algebra of halopaint.kernels.cpu (block 1's reductions folded, borders cropped) — the least work any direct
convolution can do. "gemm%" = FOLDED·2·voxels/s divided by a torch.mm FLOP/s measured in this run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from halopaint.allocator import tune_malloc  # noqa: E402
from halopaint.model import Generator  # noqa: E402
from halopaint.kernels.reference import GeneratorSpec, ReferenceKernel  # noqa: E402


def macs_per_voxel(spec: GeneratorSpec, n: int, folded: bool) -> float:
    """Multiply-adds per output voxel for output side n (edge growth of the blocks included)."""
    f, k, kb, t = spec.filters, spec.big_kernel, spec.small_kernel, spec.block_trim
    total, side = 0.0, n + 2 * spec.ghost_width
    for i in range(spec.n_blocks):
        c_in = spec.in_channels if i == 0 else spec.block_out_channels
        out_side = side - 2 * t
        vin, vout = side**3, out_side**3
        if folded and c_in < f:
            total += vout * c_in * f * (k**3 + kb**3 + 1)
        elif folded:
            total += vin * c_in * 2 * f + vout * (c_in * f + f * f * (k**3 + kb**3))
        else:
            total += vin * c_in * 3 * f + (side - k + 1) ** 3 * f * f * k**3 + (side - kb + 1) ** 3 * f * f * kb**3
        side = out_side
    widths = [spec.block_out_channels, *spec.tail_widths, 1]
    total += n**3 * sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    return total / n**3


def gemm_flops(device: torch.device, dtype=torch.float32, size: int | None = None, repeats: int = 5) -> float:
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * size**3 / statistics.median(times[1:])


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_paths(params, spec, device: torch.device, names: list[str] | None,
                triton_configs: list[str] = ()) -> dict:
    """name → callable(x), reference first. triton_configs: extra "TZxTYxTX:WARPS" launch configurations."""
    paths = {"reference": ReferenceKernel(params, spec, device)}
    if device.type == "cpu":
        from halopaint.kernels.cpu import FusedCPUKernel
        paths["cpu-fft"] = FusedCPUKernel(params, spec, device, conv="fft")
        print(f"# cpu-fft: {paths['cpu-fft'].native_status}")
        # the same without the C kernels of kernels/native.c: torch/oneDNN and numba only
        paths["cpu-fft-no-c"] = FusedCPUKernel(params, spec, device, conv="fft", native=False)
        paths["cpu-direct"] = FusedCPUKernel(params, spec, device, conv="direct")
    else:
        gen = Generator(spec).to(device).eval()
        gen.load_state_dict(params)
        torch.backends.cudnn.benchmark = True            # eager cuDNN at its best algorithm per shape
        compiled = torch.compile(gen, dynamic=False)

        def run_compiled(x):
            with torch.no_grad():
                return compiled(x)
        paths["torch.compile"] = run_compiled
        from halopaint.kernels import triton as ktriton
        if ktriton.AVAILABLE:
            for prec in ("fp32", "tf32", "bf16"):
                paths[f"triton-{prec}"] = ktriton.TritonKernel(params, spec, device, precision=prec)
                for cfg in triton_configs:                 # launch-configuration candidates, "TZxTYxTX:WARPS"
                    tile, warps = cfg.split(":")
                    paths[f"triton-{prec}-{tile}w{warps}"] = ktriton.TritonKernel(
                        params, spec, device, precision=prec, tile=tuple(int(t) for t in tile.split("x")),
                        num_warps=int(warps))
    if names:
        paths = {k: v for k, v in paths.items() if k == "reference" or k in names}
    return paths


def bench(paths: dict, x: torch.Tensor, repeats: int, device: torch.device) -> dict:
    times = {k: [] for k in paths}
    warm = x if x.shape[-1] <= 136 else x[..., :72, :72, :72]
    for k, fn in paths.items():                      # warm-up (compilation, FFT plans, caches)
        fn(warm)
    _sync(device)
    for _ in range(repeats):
        for k, fn in paths.items():
            t0 = time.perf_counter()
            fn(x)
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def calibrate_fft_sizes(params, spec, repeats: int, target: int = 96) -> dict:
    """Time of the fused FFT path per N³ FFT-voxel for each candidate FFT size N, relative to N = 32.

    Each N runs on a tile whose side is a multiple of its sub-tile side N − (k − 1) (about `target`), so no
    sub-tile overlaps another and the time is all useful work: the weights of halopaint.kernels.cpu.FFT_SIZES.
    """
    from halopaint.kernels.cpu import FusedCPUKernel
    per_voxel = {}
    for size in (20, 24, 28, 30, 32, 36, 40, 45, 48, 64):
        s = size - (spec.big_kernel - 1)
        m = max(1, round(target / s))
        x = torch.randn(1, spec.in_channels, *(s * m + 2 * spec.ghost_width,) * 3)
        t = bench({"fft": FusedCPUKernel(params, spec, conv="fft", subtile=s)}, x, repeats,
                  torch.device("cpu"))["fft"]
        per_voxel[size] = t / (m**3 * size**3)
        print(f"N={size:3d}  tile {s * m}³ ({m}³ sub-tiles of {s}³)  {t:.3f} s  "
              f"{per_voxel[size] * 1e9:.0f} ns per FFT voxel", flush=True)
    weights = {size: round(v / per_voxel[32], 2) for size, v in per_voxel.items()}
    print("FFT_SIZES =", weights)
    return weights


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed repeats per path and size (median); sides > 128 are timed once")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    ap.add_argument("--paths", nargs="*", default=None, help="subset of path names (reference always runs)")
    ap.add_argument("--triton-configs", nargs="*", default=[], metavar="TZxTYxTX:WARPS",
                    help="also time the Triton paths at these tiles and block-kernel warps (GPU), e.g. 4x4x8:4 8x4x8:8")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--fft-sizes", action="store_true",
                    help="only calibrate the fused CPU path's FFT sub-tile sizes (halopaint.kernels.cpu.FFT_SIZES)")
    ap.add_argument("--glibc-defaults", action="store_true",
                    help="leave glibc malloc at its defaults instead of the engine's setting (engine/allocator.py)")
    args = ap.parse_args(argv)
    tuned = False if args.glibc_defaults else tune_malloc()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = Generator()
    spec, params = gen.spec, gen.state_dict()
    if args.fft_sizes:
        calibrate_fft_sizes(params, spec, args.repeats)
        return 0
    gflops = gemm_flops(device) / 1e9
    record = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "gemm_fp32_gflops": gflops, "sizes": {}}
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
        record["gemm_bf16_gflops"] = gemm_flops(device, torch.bfloat16) / 1e9
    record["malloc"] = "engine (engine/allocator.py)" if tuned else "glibc defaults"
    print(f"# device {device}  threads {record['threads']}  torch.mm fp32 {gflops:.0f} GFLOP/s  "
          f"malloc: {record['malloc']}")
    paths = build_paths(params, spec, device, args.paths, args.triton_configs)
    with torch.no_grad():
        for n in args.sizes:
            side = n + 2 * spec.ghost_width
            x = torch.randn(1, spec.in_channels, side, side, side, device=device)
            naive, folded = macs_per_voxel(spec, n, False), macs_per_voxel(spec, n, True)
            med = bench(paths, x, args.repeats if n <= 128 else 1, device)
            rows = {}
            for k, sec in med.items():
                vps = n**3 / sec
                rows[k] = {"seconds": sec, "mvox_per_s": vps / 1e6, "ratio_to_reference": med["reference"] / sec,
                           "gemm_fraction_folded": folded * 2 * vps / (gflops * 1e9)}
                if "gemm_bf16_gflops" in record:            # the tensor-core floor on GPUs
                    rows[k]["bf16_gemm_fraction_folded"] = folded * 2 * vps / (record["gemm_bf16_gflops"] * 1e9)
                print(f"n={n:4d}  {k:16s} {sec:8.3f} s  {vps / 1e6:8.2f} Mvox/s  ×{med['reference'] / sec:6.2f}"
                      f"  gemm% {100 * rows[k]['gemm_fraction_folded']:5.1f}")
            print(f"n={n:4d}  MAC/voxel: naive {naive:,.0f}  folded {folded:,.0f}")
            record["sizes"][n] = {"mac_per_voxel_naive": naive, "mac_per_voxel_folded": folded, "paths": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
