"""Reference generator forward: `torch.nn.functional.conv3d`, exactly the paper's network.

This is the truth every fast path is tested against, and it fixes the layout of the weights every path
reads: a flat mapping of parameter names (the `Generator` state_dict names) to tensors.

Names, for block i (0-based) and tail layer j:
  blocks.{i}.a_reduce.{weight,bias}  1×1×1 C_in→F        branch A reduction
  blocks.{i}.a_conv.{weight,bias}    k_a³ F→F (k_a = 5)   branch A spatial conv
  blocks.{i}.b_reduce.{weight,bias}  1×1×1 C_in→F        branch B reduction
  blocks.{i}.b_conv.{weight,bias}    k_b³ F→F (k_b = 3)   branch B spatial conv, cropped (k_a−k_b)/2
  blocks.{i}.c_reduce.{weight,bias}  1×1×1 C_in→F        branch C, cropped (k_a−1)/2
  tail.{j}.{weight,bias}             1×1×1, leaky ReLU
  out.{weight,bias}                  1×1×1 →1, ReLU
Shapes: input (B, C_in, n+2g, n+2g, n+2g) → output (B, 1, n, n, n), g = ghost width.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class GeneratorSpec:
    """Architecture of the generator. Defaults are the paper's network (32,081 parameters, g = 4)."""

    in_channels: int = 1
    filters: int = 10
    n_blocks: int = 2
    big_kernel: int = 5
    small_kernel: int = 3
    tail_widths: tuple[int, ...] = (10, 10, 10, 10)
    slope: float = 0.1

    def __post_init__(self):
        if self.big_kernel % 2 != 1 or self.small_kernel % 2 != 1 or self.small_kernel > self.big_kernel:
            raise ValueError("kernel sizes must be odd with small_kernel ≤ big_kernel")
        if self.n_blocks < 1 or self.filters < 1:
            raise ValueError("need at least one block and one filter")

    @property
    def block_trim(self) -> int:
        """Voxels each block removes per side: (k_a − 1)/2."""
        return (self.big_kernel - 1) // 2

    @property
    def ghost_width(self) -> int:
        """g: input side = output side + 2g; also the receptive-field half-width."""
        return self.n_blocks * self.block_trim

    @property
    def block_out_channels(self) -> int:
        return 3 * self.filters

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tail_widths"] = list(self.tail_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorSpec":
        d = dict(d)
        d["tail_widths"] = tuple(d.get("tail_widths", ()))
        return cls(**d)


def parameter_shapes(spec: GeneratorSpec) -> dict[str, tuple[int, ...]]:
    """Name → shape of every parameter the kernels read (the `Generator` state_dict has exactly these)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, c_out: int, c_in: int, k: int) -> None:
        shapes[f"{name}.weight"] = (c_out, c_in, k, k, k)
        shapes[f"{name}.bias"] = (c_out,)

    for i in range(spec.n_blocks):
        c_in = spec.in_channels if i == 0 else spec.block_out_channels
        conv(f"blocks.{i}.a_reduce", spec.filters, c_in, 1)
        conv(f"blocks.{i}.a_conv", spec.filters, spec.filters, spec.big_kernel)
        conv(f"blocks.{i}.b_reduce", spec.filters, c_in, 1)
        conv(f"blocks.{i}.b_conv", spec.filters, spec.filters, spec.small_kernel)
        conv(f"blocks.{i}.c_reduce", spec.filters, c_in, 1)
    widths = [spec.block_out_channels, *spec.tail_widths]
    for j in range(len(spec.tail_widths)):
        conv(f"tail.{j}", widths[j + 1], widths[j], 1)
    conv("out", 1, widths[-1], 1)
    return shapes


def random_parameters(spec: GeneratorSpec, seed: int, gain: float = 1.0, bias_spread: float = 0.0,
                      out_bias_shift: float = 0.0) -> dict[str, torch.Tensor]:
    """Random float32 parameters for kernel tests: PyTorch's default Conv3d distribution
    (weights and biases U(−1/√fan_in, 1/√fan_in)), weights × gain, biases + U(−bias_spread, bias_spread),
    out.bias + out_bias_shift. Deterministic for a seed; needs no model class."""
    gen = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in parameter_shapes(spec).items():
        weight_name = name[: -len(".bias")] + ".weight" if name.endswith(".bias") else name
        w_shape = parameter_shapes(spec)[weight_name]
        bound = 1.0 / float(w_shape[1] * w_shape[2] * w_shape[3] * w_shape[4]) ** 0.5
        value = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        if name.endswith(".weight"):
            value = value * gain
        else:
            value = value + (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bias_spread
            if name == "out.bias":
                value = value + out_bias_shift
        params[name] = value.to(torch.float32)
    return params


def crop(x: torch.Tensor, c: int) -> torch.Tensor:
    """Remove `c` voxels from each side of the last three axes."""
    if c == 0:
        return x
    return x[..., c:-c, c:-c, c:-c]


def inception_block(params, prefix: str, x: torch.Tensor, spec: GeneratorSpec) -> torch.Tensor:
    """One residual Inception block: (B, C_in, s, s, s) → (B, 3F, s−2t, …), t = spec.block_trim."""
    t = spec.block_trim
    w = lambda name: (params[f"{prefix}.{name}.weight"], params[f"{prefix}.{name}.bias"])  # noqa: E731
    a = F.conv3d(F.conv3d(x, *w("a_reduce")), *w("a_conv"))
    b = crop(F.conv3d(F.conv3d(x, *w("b_reduce")), *w("b_conv")), (spec.big_kernel - spec.small_kernel) // 2)
    c = crop(F.conv3d(x, *w("c_reduce")), t)
    y = torch.cat([a, b, c], dim=1) + crop(x[:, :1], t)
    return F.leaky_relu(y, spec.slope)


def pointwise_tail(params, y: torch.Tensor, spec: GeneratorSpec) -> torch.Tensor:
    """The 1×1×1 tail: leaky ReLU after each tail layer, ReLU after the output layer."""
    for j in range(len(spec.tail_widths)):
        y = F.leaky_relu(F.conv3d(y, params[f"tail.{j}.weight"], params[f"tail.{j}.bias"]), spec.slope)
    return F.relu(F.conv3d(y, params["out.weight"], params["out.bias"]))


def generator_forward(params, x: torch.Tensor, spec: GeneratorSpec | None = None) -> torch.Tensor:
    """Full generator: (B, C_in, n+2g, …) → (B, 1, n, n, n). `params` maps names to tensors."""
    spec = spec or GeneratorSpec()
    for i in range(spec.n_blocks):
        x = inception_block(params, f"blocks.{i}", x, spec)
    return pointwise_tail(params, x, spec)


class ReferenceKernel:
    """The reference inference path behind the common kernel interface (see halopaint.kernels.select)."""

    name = "reference"

    def __init__(self, params, spec: GeneratorSpec, device: torch.device | str = "cpu"):
        self.spec = spec
        self.device = torch.device(device)
        self.params = {k: v.detach().to(self.device, torch.float32) for k, v in params.items()}

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Paint one tile: (B, C_in, n+2g, …) float32 → (B, 1, n, n, n) float32, on self.device."""
        return generator_forward(self.params, x.to(self.device, torch.float32), self.spec)
