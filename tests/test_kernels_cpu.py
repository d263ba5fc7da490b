"""Fused CPU kernel (halopaint.kernels.cpu) against the reference forward, and kernel dispatch.

Tolerance: ‖out − ref‖/‖ref‖ ≤ 1e-5 for every fp32 path (measured ~1e-6 … 4e-6: the reference's own fp32
rounding dominates; the float64 FFT variant is checked against a float64 reference at 1e-10).
"""

from __future__ import annotations

import pytest
import torch

import halopaint.kernels
from halopaint.model import Generator
from halopaint.kernels.cpu import FusedCPUKernel
from halopaint.kernels.reference import GeneratorSpec, ReferenceKernel, generator_forward
from halopaint.kernels.triton.check import spread_params

TOL = 1e-5


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert out.shape == ref.shape and out.dtype == ref.dtype
    return ((out - ref).norm() / ref.norm()).item()


def random_input(batch, side, seed, spec=GeneratorSpec(), scale=3.0, shift=-0.5):
    sides = (side,) * 3 if isinstance(side, int) else side
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, spec.in_channels, *sides, generator=gen) * scale + shift


@pytest.fixture(scope="module")
def spread():
    """Fresh random weights spread so most ReLUs are active (a non-trivial output)."""
    return spread_params(seed=11)


@pytest.mark.parametrize("conv,mixing", [("fft", "compiled"), ("fft", "addcmul"), ("fft", "matmul"),
                                         ("direct", "auto")])
@pytest.mark.parametrize("n,batch", [(25, 1), (17, 2), (50, 1), (9, 1), (1, 1)])
def test_fused_matches_reference(spread, conv, mixing, n, batch):
    params, spec = spread
    x = random_input(batch, n + 2 * spec.ghost_width, seed=n)
    ref = ReferenceKernel(params, spec)(x)
    out = FusedCPUKernel(params, spec, conv=conv, mixing=mixing)(x)
    assert (ref > 0).float().mean() > 0.3          # the comparison is not dominated by ReLU zeros
    assert rel_err(out, ref) <= TOL


def test_default_init_and_large_negative_inputs():
    """Default initialisation (many zero ReLUs), inputs of either sign up to ~1e3."""
    torch.manual_seed(3)
    g = Generator()
    params = g.state_dict()
    x = random_input(1, 28, seed=5, scale=300.0, shift=-100.0)
    ref = ReferenceKernel(params, g.spec)(x)
    assert ref.norm() > 0
    for conv in ("fft", "direct"):
        assert rel_err(FusedCPUKernel(params, g.spec, conv=conv)(x), ref) <= TOL


def test_multi_subtile_and_non_cubic(spread):
    """Many sub-tiles (incl. clamped, overlapping last ones) and a non-cubic tile."""
    params, spec = spread
    x = random_input(1, (30, 19, 37), seed=7)          # output 22 × 11 × 29
    ref = ReferenceKernel(params, spec)(x)
    for subtile, mixing in ((12, "compiled"), (12, "addcmul"), (28, "matmul"), (28, "compiled")):
        assert rel_err(FusedCPUKernel(params, spec, subtile=subtile, mixing=mixing)(x), ref) <= TOL
    assert rel_err(FusedCPUKernel(params, spec, conv="direct", subtile=10)(x), ref) <= TOL


def test_threaded_subtiles_equal_serial_bitwise(spread):
    """Several threads (one sub-tile pipeline each) give bit-identical output to one thread, equal to the
    reference: each voxel is written by exactly one sub-tile, clamped last ones included."""
    params, spec = spread
    x = random_input(2, (30, 27, 37), seed=9)          # output 22 × 19 × 29: clamped sub-tiles on every axis
    ref = ReferenceKernel(params, spec)(x)
    kernel = FusedCPUKernel(params, spec, subtile=8)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = kernel(x)
        torch.set_num_threads(3)
        threaded = kernel(x)
        assert torch.get_num_threads() == 3             # the caller's setting is restored
    finally:
        torch.set_num_threads(before)
    assert torch.equal(serial, threaded)
    assert rel_err(threaded, ref) <= TOL


def test_tiles_assemble_to_the_whole(spread):
    """Painting 2×2×2 tiles (each with its ghost zone) gives the same field as one call."""
    params, spec = spread
    g, n, half = spec.ghost_width, 36, 18
    x = random_input(1, n + 2 * g, seed=9)
    kern = FusedCPUKernel(params, spec)
    whole = kern(x)
    tiled = torch.empty_like(whole)
    for z in (0, half):
        for y in (0, half):
            for w in (0, half):
                tiled[..., z:z + half, y:y + half, w:w + half] = kern(
                    x[..., z:z + half + 2 * g, y:y + half + 2 * g, w:w + half + 2 * g])
    assert rel_err(tiled, whole) <= 1e-6
    assert rel_err(whole, ReferenceKernel(params, spec)(x)) <= TOL


def test_float64_fft_against_float64_reference(spread):
    params, spec = spread
    x = random_input(1, 30, seed=13)
    ref64 = generator_forward({k: v.double() for k, v in params.items()}, x.double(), spec)
    out = FusedCPUKernel(params, spec, fft_dtype=torch.float64)(x)
    # the kernel stores weights/activations in fp32; only the FFT convolutions are float64
    assert rel_err(out.double(), ref64) <= TOL
    assert rel_err(FusedCPUKernel(params, spec)(x).double(), ref64) <= TOL


def test_other_architectures():
    """Non-paper specs: 3 blocks, more filters, 2 input channels (block 1 then not folded)."""
    for spec in (GeneratorSpec(n_blocks=3, filters=6, tail_widths=(8, 4)),
                 GeneratorSpec(in_channels=2, filters=4, big_kernel=3, small_kernel=1)):
        torch.manual_seed(1)
        params = Generator(spec).state_dict()
        x = random_input(2, 14 + 2 * spec.ghost_width, seed=2, spec=spec)
        ref = ReferenceKernel(params, spec)(x)
        for conv in ("fft", "direct"):
            assert rel_err(FusedCPUKernel(params, spec, conv=conv)(x), ref) <= TOL


def test_bad_input_raises(spread):
    params, spec = spread
    kern = FusedCPUKernel(params, spec)
    with pytest.raises(ValueError):
        kern(torch.zeros(1, 2, 20, 20, 20))
    with pytest.raises(ValueError):
        kern(torch.zeros(1, 1, 8, 20, 20))
    with pytest.raises(ValueError):
        FusedCPUKernel(params, spec, conv="winograd")
    with pytest.raises(ValueError):
        FusedCPUKernel(params, spec, mixing="einsum")
    with pytest.raises(ValueError):
        FusedCPUKernel(params, spec, mixing="compiled", fft_dtype=torch.float64)


def test_dispatch_on_cpu(spread):
    params, spec = spread
    assert halopaint.kernels.available("cpu") == ["cpu", "reference"]
    assert "triton" not in halopaint.kernels.available(torch.device("cpu"))
    factory = halopaint.kernels.select("cpu", "auto")
    assert factory is FusedCPUKernel
    kern = factory(params, spec, "cpu")
    assert kern.name == "cpu"
    assert halopaint.kernels.select("cpu", "reference") is ReferenceKernel
    with pytest.raises(ValueError):
        halopaint.kernels.select("cpu", "triton")
    with pytest.raises(ValueError):
        halopaint.kernels.select("cpu", "cudnn")
