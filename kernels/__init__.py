"""Inference kernels for the generator: one interface, several paths.

A kernel is built from a generator's parameters (the `Generator` state_dict, see halopaint.kernels.reference) and
called on one tile: kernel(x) with x (B, C_in, n+2g, n+2g, n+2g) float32 → (B, 1, n, n, n) float32.

`select(device, preference)` returns the factory of the fastest correct path available:
  reference  halopaint.kernels.reference.ReferenceKernel  nn.functional.conv3d, the truth (any device)
  cpu        halopaint.kernels.cpu.FusedCPUKernel         exact fusion + FFT convolution (CPU only)
  triton     halopaint.kernels.triton.TritonKernel        fused Triton kernels (CUDA only; optional extra)
"""

from __future__ import annotations

import torch

from halopaint.kernels.reference import GeneratorSpec, ReferenceKernel

_FACTORIES = {"reference": ReferenceKernel}


def available(device: torch.device | str) -> list[str]:
    """Names of the kernel paths usable on `device`, fastest first."""
    device = torch.device(device)
    names = []
    if device.type == "cuda":
        try:
            from halopaint.kernels import triton as _triton  # noqa: F401
            if _triton.AVAILABLE:
                names.append("triton")
        except ImportError:
            pass
    if device.type == "cpu":
        try:
            from halopaint.kernels import cpu as _cpu  # noqa: F401
            names.append("cpu")
        except ImportError:
            pass
    names.append("reference")
    return names


def _factory(name: str):
    if name == "reference":
        return ReferenceKernel
    if name == "cpu":
        from halopaint.kernels.cpu import FusedCPUKernel
        return FusedCPUKernel
    if name == "triton":
        from halopaint.kernels.triton import TritonKernel
        return TritonKernel
    raise KeyError(name)


def select(device: torch.device | str, preference: str = "auto"):
    """Kernel factory for `device`: 'auto' = fastest available, or a named path.

    Returns a callable `factory(params, spec, device) -> kernel`, with a `.name`.
    Raises ValueError for an unknown or unavailable path on this device.
    """
    names = available(device)
    if preference == "auto":
        return _factory(names[0])
    if preference not in ("reference", "cpu", "triton"):
        raise ValueError(f"unknown kernels '{preference}' (choose from auto, reference, cpu, triton)")
    if preference not in names:
        raise ValueError(f"kernels '{preference}' are not available on {torch.device(device)} "
                         f"(available: {', '.join(names)})")
    return _factory(preference)


__all__ = ["GeneratorSpec", "ReferenceKernel", "available", "select"]
