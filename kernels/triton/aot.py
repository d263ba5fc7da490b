"""Compile the Triton kernels ahead of time for NVIDIA GPUs (no GPU needed) and report their resources.

    python -m halopaint.kernels.triton.aot                                  # sm_80 and sm_90; fp32, tf32, bf16
    python -m halopaint.kernels.triton.aot --arch 90 --precision fp32 --tile 4x4x8 --num-warps 4 --json out.json

Every launch of a TritonKernel forward (`halopaint.kernels.triton.kernel.launch_plan`: one block kernel per Inception
block, then the tail) goes through the real Triton compiler (TTIR → TTGIR → LLVM IR → PTX) and the ptxas
shipped in the triton wheel, with the specialisation the JIT gives 16-byte-aligned tensors. ptxas's report
gives registers per thread, spill stores/loads and stack frame; Triton's metadata the shared memory; the
PTX the tensor-core instructions (tf32/bf16 must use them, IEEE fp32 products cannot). From
those and the architecture's limits (CUDA programming guide, compute capabilities table) the resident warps
per SM are estimated. Exit status 1 if a launch does not compile, spills registers, or cannot be launched
on the architecture (shared memory or registers above its limits), or if tf32/bf16 products are not
compiled to tensor-core instructions.

What this cannot tell: speed or numerical results — those need a GPU (`python -m halopaint.kernels.triton.check`,
`python jobs/bench/kernels.py --device cuda`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass

from halopaint.kernels.reference import GeneratorSpec


@dataclass(frozen=True)
class ArchLimits:
    """Per-SM and per-block limits of one compute capability."""

    shared_per_block: int      # bytes, opt-in maximum
    shared_per_sm: int         # bytes
    threads_per_sm: int
    blocks_per_sm: int
    registers_per_sm: int = 65536
    registers_per_thread: int = 255
    register_unit: int = 256   # registers are allocated per warp in units of this many


ARCHS = {
    80: ArchLimits(163 * 1024, 164 * 1024, 2048, 32),   # A100
    86: ArchLimits(99 * 1024, 100 * 1024, 1536, 16),    # RTX 30xx, A40
    89: ArchLimits(99 * 1024, 100 * 1024, 1536, 24),    # L4, L40, RTX 40xx
    90: ArchLimits(227 * 1024, 228 * 1024, 2048, 32),   # H100, H200
}


@dataclass
class LaunchReport:
    arch: int
    precision: str
    launch: str
    num_warps: int
    registers: int
    spill_stores: int          # bytes per thread
    spill_loads: int
    stack_frame: int           # bytes per thread
    shared: int                # bytes per block (dynamic + static)
    warps_per_sm: int          # estimated resident warps per SM (0: cannot launch)
    mma_instructions: int      # tensor-core instructions in the PTX (mma.sync, wgmma.mma_async)
    compile_seconds: float
    problems: list

    @property
    def ok(self) -> bool:
        return not self.problems


def _signature(fn, constexprs: dict) -> tuple[dict, dict]:
    """Argument types and alignment attributes as the JIT gives them for float32 tensors (16-byte aligned
    data pointers) and 32-bit integers (no divisibility assumed)."""
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*fp32"
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "i32"
    return sig, attrs


def _ptxas_report(ptx: str, arch: int) -> dict:
    """Registers, spills and static shared memory of the PTX's entry function, from `ptxas -v`."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas
    except ImportError as e:   # internal API, written against triton 3.9
        raise RuntimeError(f"this triton does not expose the ptxas it ships ({e}); written for triton 3.9") from e
    gpu = re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run([get_ptxas(arch).path, "-lineinfo", "-v", "--regAllocOptLevel=2", f"--gpu-name={gpu}",
                               src, "-o", os.path.join(tmp, "k.cubin")], capture_output=True, text=True)
    log = proc.stderr + proc.stdout
    if proc.returncode != 0:
        last = log.strip().splitlines()[-1] if log.strip() else f"exit status {proc.returncode}"
        raise RuntimeError(f"ptxas failed for {gpu}: {last}")
    num = lambda pattern: int(m.group(1)) if (m := re.search(pattern, log)) else 0  # noqa: E731
    return dict(registers=num(r"Used (\d+) registers"), spill_stores=num(r"(\d+) bytes spill stores"),
                spill_loads=num(r"(\d+) bytes spill loads"), stack_frame=num(r"(\d+) bytes stack frame"),
                static_shared=num(r"(\d+) bytes smem"))


def resident_warps(limits: ArchLimits, registers: int, num_warps: int, shared: int) -> int:
    """Warps of this kernel resident on one SM, limited by registers, shared memory, threads and blocks."""
    per_warp = -(-registers * 32 // limits.register_unit) * limits.register_unit
    by_regs = (limits.registers_per_sm // max(per_warp, 1)) // num_warps
    by_smem = limits.shared_per_sm // shared if shared else limits.blocks_per_sm
    by_threads = limits.threads_per_sm // (32 * num_warps)
    if shared > limits.shared_per_block or registers > limits.registers_per_thread:
        return 0
    return min(by_regs, by_smem, by_threads, limits.blocks_per_sm) * num_warps


def compile_launch(launch, arch: int, precision: str) -> LaunchReport:
    """Compile one Launch for compute capability `arch` and check it against the architecture's limits."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from halopaint.kernels.triton import _jit
    fn = getattr(_jit, launch.kernel)
    sig, attrs = _signature(fn, launch.constexprs)
    t0 = time.perf_counter()
    compiled = triton.compile(ASTSource(fn, sig, constexprs=launch.constexprs, attrs=attrs),
                              target=GPUTarget("cuda", arch, 32), options={"num_warps": launch.num_warps})
    res = _ptxas_report(compiled.asm["ptx"], arch)
    seconds = time.perf_counter() - t0
    limits = ARCHS[arch]
    shared = int(compiled.metadata.shared) + res["static_shared"]
    warps = resident_warps(limits, res["registers"], launch.num_warps, shared)
    problems = []
    if res["spill_stores"] or res["spill_loads"]:
        problems.append(f"spills {res['spill_stores']} B stores / {res['spill_loads']} B loads per thread")
    if shared > limits.shared_per_block:
        problems.append(f"shared memory {shared} B > {limits.shared_per_block} B per block")
    if warps == 0:
        problems.append("cannot be resident on one SM")
    mma = len(re.findall(r"\bmma\.sync\b|\bwgmma\.mma_async\b", compiled.asm["ptx"]))
    if precision != "fp32" and mma == 0:
        problems.append(f"{precision} products compiled without tensor-core instructions")
    return LaunchReport(arch, precision, launch.name, launch.num_warps, res["registers"], res["spill_stores"],
                        res["spill_loads"], res["stack_frame"], shared, warps, mma, round(seconds, 2), problems)


def compile_all(archs, precisions, spec: GeneratorSpec | None = None, tile=None, num_warps=None) -> list[LaunchReport]:
    """LaunchReports of every launch of the forward, for each architecture and precision."""
    from halopaint.kernels.triton.kernel import launch_plan
    spec = spec or GeneratorSpec()
    reports = []
    for arch in archs:
        if arch not in ARCHS:
            raise ValueError(f"unknown architecture sm_{arch}; known: {', '.join(f'sm_{a}' for a in ARCHS)}")
        for precision in precisions:
            for launch in launch_plan(spec, precision, tile, interpret=False, num_warps=num_warps):
                reports.append(compile_launch(launch, arch, precision))
    return reports


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, nargs="+", default=[80, 90], help="compute capabilities, e.g. 80 90")
    ap.add_argument("--precision", nargs="+", default=["fp32", "tf32", "bf16"])
    ap.add_argument("--tile", default=None, help="TZxTYxTX output voxels per program iteration")
    ap.add_argument("--num-warps", type=int, default=None, help="warps of the block kernels")
    ap.add_argument("--json", default=None, help="also write the reports here")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("error: TRITON_INTERPRET is set; the ahead-of-time compile needs the real compiler", file=sys.stderr)
        return 2
    if importlib.util.find_spec("triton") is None:
        print("error: triton is not installed (pip install 'halopaint[triton]')", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", message=".*TRITON_DEFAULT_FP_FUSION.*")
    try:
        tile = tuple(int(t) for t in args.tile.split("x")) if args.tile else None
    except ValueError:
        print(f"error: --tile must be TZxTYxTX, e.g. 4x4x8, not {args.tile!r}", file=sys.stderr)
        return 2
    try:
        reports = compile_all(args.arch, args.precision, tile=tile, num_warps=args.num_warps)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{'arch':6s} {'prec':5s} {'launch':7s} {'warps':>5s} {'regs':>5s} {'spill B':>8s} {'shared B':>9s} "
          f"{'warps/SM':>8s} {'mma':>4s}  status")
    for r in reports:
        print(f"sm_{r.arch:<3d} {r.precision:5s} {r.launch:7s} {r.num_warps:5d} {r.registers:5d} "
              f"{r.spill_stores:8d} {r.shared:9d} {r.warps_per_sm:8d} {r.mma_instructions:4d}  "
              f"{'ok' if r.ok else '; '.join(r.problems)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"reports": [dict(asdict(r), ok=r.ok) for r in reports]}, f, indent=1)
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
