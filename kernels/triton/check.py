"""Correctness check of the Triton kernels against halopaint.kernels.reference, as a command.

    TRITON_INTERPRET=1 python -m halopaint.kernels.triton.check --device cpu --case 16:1:16x16x16
    python -m halopaint.kernels.triton.check --device cuda --case 50:2:4x4x8 --precision fp32 tf32 bf16

Each case is n:batch:tile (output side n, input n+2g). Weights are random parameters of the paper
network (`halopaint.kernels.reference.random_parameters`, no model class needed) with weights and biases
spread so that the output is non-trivial (most ReLUs active); inputs are Gaussian with a large
negative/positive range. Prints one JSON object: per case and precision the relative error
‖out − ref‖/‖ref‖, the tolerance and the fraction of non-zero output voxels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def spread_params(seed: int, gain: float = 2.0, bias: float = 0.3) -> tuple[dict, object]:
    """Random paper-generator parameters with weights × gain, biases + U(−bias, bias), out.bias + 1,
    so that most ReLUs are active and the output is non-trivial. Returns (params, spec)."""
    from halopaint.kernels.reference import GeneratorSpec, random_parameters
    spec = GeneratorSpec()
    return random_parameters(spec, seed, gain=gain, bias_spread=bias, out_bias_shift=1.0), spec


def run_case(n: int, batch: int, tile, precision: str, device: str, seed: int) -> dict:
    from halopaint.kernels.reference import ReferenceKernel
    from halopaint.kernels.triton import TOLERANCES, TritonKernel
    params, spec = spread_params(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    side = n + 2 * spec.ghost_width
    x = torch.randn(batch, spec.in_channels, side, side, side, generator=gen) * 3.0 - 0.5
    ref = ReferenceKernel(params, spec, "cpu")(x)
    kern = TritonKernel(params, spec, device, precision=precision, tile=tile)
    t0 = time.perf_counter()
    out = kern(x.to(device)).cpu()
    seconds = time.perf_counter() - t0
    err = ((out - ref).norm() / ref.norm()).item()
    return {"n": n, "batch": batch, "tile": list(tile), "precision": precision, "rel_err": err,
            "tolerance": TOLERANCES[precision], "nonzero_fraction": (ref > 0).float().mean().item(),
            "shape_ok": tuple(out.shape) == tuple(ref.shape), "seconds": seconds}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--case", nargs="+", default=["16:1:16x16x16"], help="n:batch:TZxTYxTX")
    ap.add_argument("--precision", nargs="+", default=["fp32"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    results = []
    for case in args.case:
        n, batch, tile = case.split(":")
        tile = tuple(int(t) for t in tile.split("x"))
        for prec in args.precision:
            results.append(run_case(int(n), int(batch), tile, prec, args.device, args.seed))
    json.dump({"results": results}, sys.stdout)
    print()
    return 0 if all(r["shape_ok"] and r["rel_err"] <= r["tolerance"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
