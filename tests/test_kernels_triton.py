"""Triton kernels against the reference: in the Triton interpreter on CPU, natively where CUDA exists.

The interpreter must be switched on (TRITON_INTERPRET=1) before the kernels are decorated, so those
checks run `python -m halopaint.kernels.triton.check` in a subprocess: this process's imports stay untouched.
Interpreter cases are small (≤ 16³ outputs, large program tiles) — it is ~10⁴× slower than eager.
Tolerances (‖out − ref‖/‖ref‖): fp32 1e-5, tf32 5e-3, bf16 5e-2 (halopaint.kernels.triton.TOLERANCES).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import halopaint.kernels

ktriton = pytest.importorskip("halopaint.kernels.triton")
if not ktriton.AVAILABLE:
    pytest.skip("triton is not installed (optional extra)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]


def run_check(*args: str) -> dict:
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "halopaint.kernels.triton.check", "--device", "cpu", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_interpreter_matches_reference():
    """fp32 on one 16³ program tile; 11³ × batch 2 on 8³ tiles (partial tiles, persistent programs
    looping over several tiles, batch index); tf32 path on a 9³ tile. Fresh random weights spread so
    ~70 % of outputs are non-zero; inputs N(−0.5, 3²)."""
    out = run_check("--case", "16:1:16x16x16", "11:2:8x8x8", "--precision", "fp32")
    out["results"] += run_check("--case", "9:1:16x16x16", "--precision", "tf32", "--seed", "3")["results"]
    assert len(out["results"]) == 3
    for r in out["results"]:
        assert r["shape_ok"], r
        assert r["nonzero_fraction"] > 0.3, r
        assert r["rel_err"] <= r["tolerance"], r
        if r["precision"] == "fp32":
            assert r["rel_err"] <= 1e-5, r


def test_dispatch_lists_triton_only_on_cuda():
    assert "triton" not in halopaint.kernels.available("cpu")
    assert halopaint.kernels.available(torch.device("cuda"))[0] == "triton"
    assert halopaint.kernels._factory("triton") is ktriton.TritonKernel


def test_refuses_cpu_without_interpreter_and_bad_options():
    from halopaint.kernels.triton.check import spread_params
    params, spec = spread_params(0)
    from triton import knobs
    if not knobs.runtime.interpret:
        with pytest.raises(ValueError):
            ktriton.TritonKernel(params, spec, "cpu")
    with pytest.raises(ValueError):
        ktriton.TritonKernel(params, spec, "cuda", precision="fp8")
    with pytest.raises(ValueError):
        ktriton.TritonKernel(params, spec, "cuda", tile=(3, 4, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_gpu_matches_reference(precision):
    from halopaint.kernels.triton.check import run_case
    for n, batch, tile in ((25, 1, (4, 4, 8)), (50, 2, (4, 4, 8)), (17, 1, (8, 8, 8))):
        r = run_case(n, batch, tile, precision, "cuda", seed=n)
        assert r["shape_ok"] and r["rel_err"] <= r["tolerance"], r


def test_launch_plan_matches_spec():
    from halopaint.kernels.reference import GeneratorSpec
    from halopaint.kernels.triton.kernel import PRECISIONS, launch_plan
    spec = GeneratorSpec()
    plan = launch_plan(spec, "tf32")
    assert [launch.name for launch in plan] == ["block0", "block1", "tail"]
    assert plan[0].constexprs["CIN"] == 1 and plan[0].constexprs["CP"] == 16
    assert plan[1].constexprs["CIN"] == 30 and plan[1].constexprs["CP"] == 32
    assert plan[-1].constexprs["P"] == 32 and plan[-1].constexprs["L"] == 5
    assert all(launch.constexprs["PRECISION"] == PRECISIONS["tf32"] for launch in plan)
    # the interpreter's bf16 tl.dot is wrong: bf16 runs as fp32 products there
    assert all(launch.constexprs["PRECISION"] == 0 for launch in launch_plan(spec, "bf16", interpret=True))
    with pytest.raises(ValueError, match="tile"):
        launch_plan(spec, tile=(4, 4, 6))
    with pytest.raises(ValueError, match="precision"):
        launch_plan(spec, "fp16")


def run_aot(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "halopaint.kernels.triton.aot", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_kernels_compile_for_a100_and_h100_without_spills(tmp_path):
    """No GPU needed: every launch of the forward (both blocks, tail) at every precision goes through the
    real Triton compiler and ptxas for sm_80 and sm_90; none may spill registers or exceed the
    architecture's shared-memory and register limits; tf32/bf16 products run on tensor cores (mma.sync on
    sm_80, wgmma on sm_90), IEEE fp32 products on FMA units."""
    out = tmp_path / "aot.json"
    proc = run_aot("--arch", "80", "90", "--precision", "fp32", "tf32", "bf16", "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = json.loads(out.read_text())["reports"]
    assert len(reports) == 2 * 3 * 3
    for r in reports:
        assert r["ok"] and r["spill_stores"] == 0 and r["spill_loads"] == 0, r
        assert 0 < r["registers"] <= 255 and r["warps_per_sm"] >= 8, r
        assert (r["mma_instructions"] > 0) == (r["precision"] != "fp32"), r


def test_aot_refuses_unknown_architecture():
    proc = run_aot("--arch", "75")
    assert proc.returncode == 2
    assert "unknown architecture sm_75" in proc.stderr
