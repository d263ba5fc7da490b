"""The hand-vectorised C kernels (kernels/native.c via halopaint.kernels.native) inside the fused CPU path.

They must give the reference's results (‖out − ref‖/‖ref‖ ≤ 1e-5, fp32) wherever they run, hand over to the
torch path where a sub-tile is too narrow for them (output width < 8) or no compiler works, and build once.
Tests that need a working C compiler skip where there is none.
"""

from __future__ import annotations

import pytest
import torch

from halopaint.model import Generator
from halopaint.kernels import native
from halopaint.kernels.cpu import FusedCPUKernel
from halopaint.kernels.reference import GeneratorSpec, ReferenceKernel
from halopaint.kernels.triton.check import spread_params

TOL = 1e-5


def rel_err(out, ref):
    return ((out - ref).norm() / ref.norm()).item()


def arch(spec: GeneratorSpec):
    return spec.filters, spec.big_kernel, spec.small_kernel, tuple(spec.tail_widths)


@pytest.fixture(scope="module")
def spread():
    return spread_params(seed=21)


@pytest.fixture
def compiled(spread):
    _, spec = spread
    if native.library(*arch(spec)) is None:
        pytest.skip(f"no native kernels here: {native.unavailable_reason(*arch(spec))}")


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """An empty build cache and no memoised library, restored afterwards."""
    monkeypatch.setenv("HALOPAINT_CACHE", str(tmp_path))
    native.library.cache_clear()
    yield tmp_path
    native.library.cache_clear()


@pytest.mark.parametrize("conv", ["fft", "direct"])
@pytest.mark.parametrize("sides,batch", [((25, 25, 25), 1), ((17, 9, 30), 2), ((50, 50, 50), 1),
                                         ((12, 12, 5), 1), ((9, 9, 1), 1)])
def test_native_path_matches_reference(spread, compiled, conv, sides, batch):
    """Output widths 5 and 1: the epilogue kernel (and at 1 also block 1's) hands over to torch."""
    params, spec = spread
    g = spec.ghost_width
    x = torch.randn(batch, 1, *(s + 2 * g for s in sides), generator=torch.Generator().manual_seed(sum(sides)))
    x = x * 3.0 - 0.5
    ref = ReferenceKernel(params, spec)(x)
    kernel = FusedCPUKernel(params, spec, conv=conv, native=True)
    assert kernel.native_block1 is not None and kernel.native_tail is not None
    out = kernel(x)
    assert (ref > 0).float().mean() > 0.3
    assert rel_err(out, ref) <= TOL
    assert rel_err(out, FusedCPUKernel(params, spec, conv=conv, native=False)(x)) <= TOL


def test_native_three_blocks_and_other_widths(compiled):
    """Another architecture compiles its own library: 3 blocks, 6 filters, tail (8, 4), 3³/1³ kernels."""
    spec = GeneratorSpec(n_blocks=3, filters=6, tail_widths=(8, 4), big_kernel=3, small_kernel=1)
    torch.manual_seed(5)
    params = {k: v * 2 if k.endswith("weight") else v for k, v in Generator(spec).state_dict().items()}
    params["out.bias"] = params["out.bias"] + 1.0                 # most output voxels above the final ReLU
    x = torch.randn(2, 1, 30, 23, 41, generator=torch.Generator().manual_seed(1))
    kernel = FusedCPUKernel(params, spec, native=True)
    ref = ReferenceKernel(params, spec)(x)
    assert (ref > 0).float().mean() > 0.3
    assert rel_err(kernel(x), ref) <= TOL


def test_unsupported_architecture_uses_torch():
    spec = GeneratorSpec(in_channels=2, filters=4, big_kernel=3, small_kernel=1)
    params = Generator(spec).state_dict()
    kernel = FusedCPUKernel(params, spec)
    assert kernel.native_block1 is None and "one input channel" in kernel.native_status
    with pytest.raises(ValueError, match="not available"):
        FusedCPUKernel(params, spec, native=True)


def test_no_compiler_falls_back_with_the_reason(spread, fresh_library, monkeypatch):
    params, spec = spread
    monkeypatch.setenv("CC", "halopaint-no-such-compiler")
    assert native.library(*arch(spec)) is None
    assert "halopaint-no-such-compiler" in native.unavailable_reason(*arch(spec))
    kernel = FusedCPUKernel(params, spec)
    assert kernel.native_block1 is None and "not used" in kernel.native_status
    x = torch.randn(1, 1, 28, 28, 28)
    assert rel_err(kernel(x), ReferenceKernel(params, spec)(x)) <= TOL
    with pytest.raises(ValueError, match="halopaint-no-such-compiler"):
        FusedCPUKernel(params, spec, native=True)
    assert not list(fresh_library.rglob("*.so"))           # nothing half-built left behind


def test_switched_off_by_environment(spread, fresh_library, monkeypatch):
    params, spec = spread
    monkeypatch.setenv("HALOPAINT_NATIVE", "0")
    assert FusedCPUKernel(params, spec).native_block1 is None
    assert "HALOPAINT_NATIVE=0" in native.unavailable_reason(*arch(spec))


def test_built_once_then_reused(spread, compiled, fresh_library):
    _, spec = spread
    assert native.library(*arch(spec)) is not None
    built = list(fresh_library.rglob("native-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    native.library.cache_clear()
    assert native.library(*arch(spec)) is not None
    assert list(fresh_library.rglob("native-*.so")) == built and built[0].stat().st_mtime_ns == stamp


def test_native_parts_benchmark_agrees(compiled, capsys):
    """jobs/bench/native_parts.py (docs/performance.md's per-part figures) runs; its parts agree within 1e-5."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "jobs" / "bench" / "native_parts.py"
    spec = importlib.util.spec_from_file_location("native_parts", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        assert module.main(["--n", "12", "--batch", "1", "--repeats", "1", "--rounds", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert "whole batch" in capsys.readouterr().out
