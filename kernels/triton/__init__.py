"""Fused Triton GPU kernels for the generator (optional: needs the `triton` extra).

`AVAILABLE` is True when triton imports; the kernels themselves need a CUDA device, or
TRITON_INTERPRET=1 set before the first `TritonKernel` is built (CPU tensors, for tests).
`TritonKernel(params, spec, device)` has the interface of halopaint.kernels.reference.ReferenceKernel.
"""

from __future__ import annotations

try:
    import triton as _triton  # noqa: F401
    AVAILABLE = True
except ImportError:  # the optional extra is not installed
    AVAILABLE = False

if AVAILABLE:
    from halopaint.kernels.triton.kernel import PRECISIONS, TOLERANCES, TritonKernel
else:
    PRECISIONS, TOLERANCES = {}, {}

    class TritonKernel:  # noqa: D101  (same name, clear error)
        name = "triton"

        def __init__(self, *args, **kwargs):
            raise ImportError("Triton kernels need the optional 'triton' package (pip install 'halopaint[triton]')")

__all__ = ["AVAILABLE", "PRECISIONS", "TOLERANCES", "TritonKernel"]
