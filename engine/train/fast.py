"""The fast training path (`TrainConfig.train_path = "fused"`): the same losses and gradients as the eager
reference (`halopaint.model.Generator` / `Critic` + `losses.gradient_penalty`'s double backward), computed
with less work. Three parts, each exact algebra (only the rounding differs):

- `GeneratorForward`: the generator forward with autograd, folded as the fused inference kernels are
  (kernels/cpu.py): in a block with C_in < F (block 1) each 1×1×1 reduction is folded into its spatial
  conv (one conv C_in→2F, branch B's 3³ kernel zero-padded to 5³) and the residual into the centre tap and
  branch C; in the other blocks the three 1×1×1 convs are one GEMM; every 1×1×1 layer is a matrix product
  over the channels-last voxels (`F.linear`). The folded weights are functions of the parameters, so the
  backward gives the parameters' gradients. Block 1's 1→10 5³ conv on 10 reduced channels (1.97 G
  multiply-adds at patch 50, and as much again in its backward) becomes 1→20 (0.39 G in all).
- `critic_input_gradient`: ∇ₓ Σ_b D(x_b) written out as the critic's backward pass (transposed convs and
  the leaky-ReLU masks of a forward pass without autograd), differentiable w.r.t. the critic's parameters;
  the gradient penalty's parameter gradient is then an ordinary first-order backward. It equals the double
  backward of `gradient_penalty`: a leaky-ReLU mask has zero derivative, and the last linear layer's
  bias does not enter ∇ₓD. The stride-2 transposed convs run as one stride-1 conv of the s³ sub-kernels
  ("polyphase") and a pixel shuffle: oneDNN's stride-2 transposed conv into one channel (the critic's first
  layer, 8 → 1 channel onto 50³) took 29 ms of a 40 ms critic step on one thread.
- The critic steps' generator forwards (no gradient; the generator is fixed during them) run up front as one
  batch through the fused inference kernel of this device (`halopaint.kernels.select(device, "auto")`),
  rebuilt whenever the generator's weights change.

The eager reference stays the default on devices other than the CPU (`train_path="auto"`); see
docs/performance.md#training-halopaint-train for the measured ratios.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from halopaint.config import TRAIN_PATHS
from halopaint.kernels.reference import GeneratorSpec, crop
from halopaint.model import Critic
from halopaint.train import losses


def resolve_train_path(path: str, device: torch.device) -> str:
    """'auto' → 'fused' on the CPU (measured ≥ 2× per iteration), 'eager' elsewhere (not measured)."""
    if path not in TRAIN_PATHS:
        raise ValueError(f"train path must be one of {', '.join(TRAIN_PATHS)}, not {path!r}")
    if path == "auto":
        return "fused" if device.type == "cpu" else "eager"
    return path


class EagerPath:
    """The reference: the modules' own forward, `losses.gradient_penalty`'s double backward."""

    name = "eager"

    def __init__(self, gen: torch.nn.Module, device: torch.device):
        self.gen = gen

    def generator(self, x: torch.Tensor) -> torch.Tensor:
        """The generator forward of the generator step (with gradients)."""
        return self.gen(x)

    @torch.no_grad()
    def inference_many(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """The generator forwards of the critic steps (no gradients), one per input, one at a time."""
        return [self.gen(x) for x in xs]

    def weights_changed(self) -> None:
        """Called after every change of the generator's weights (optimiser step, checkpoint load)."""

    @staticmethod
    def wasserstein(critic: Critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return critic(real).mean() - critic(fake).mean()

    @staticmethod
    def penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return losses.gradient_penalty(critic, real, fake, eps)

    @staticmethod
    def critic_mean(critic: Critic, fake: torch.Tensor) -> torch.Tensor:
        return critic(fake).mean()


class FusedPath(EagerPath):
    """The same quantities through this module's folded and explicit formulations."""

    name = "fused"

    def __init__(self, gen: torch.nn.Module, device: torch.device):
        super().__init__(gen, device)
        self._inference = InferenceGenerator(gen, device)

    def generator(self, x: torch.Tensor) -> torch.Tensor:
        return generator_forward(dict(self.gen.named_parameters()), x, self.gen.spec)

    def inference_many(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """All critic steps' generator forwards as one batch through the fused inference kernel."""
        out = self._inference(torch.cat(xs))
        return list(out.split([x.shape[0] for x in xs]))

    def weights_changed(self) -> None:
        self._inference.invalidate()

    @staticmethod
    def wasserstein(critic: Critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Both batches in one critic pass."""
        scores = critic(torch.cat([real, fake]))
        return scores[:real.shape[0]].mean() - scores[real.shape[0]:].mean()

    @staticmethod
    def penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return gradient_penalty(critic, real, fake, eps)

    @staticmethod
    def critic_mean(critic: Critic, fake: torch.Tensor) -> torch.Tensor:
        """Differentiable w.r.t. fake only (see _CriticMean)."""
        return _CriticMean.apply(fake, critic)


def training_path(name: str, gen: torch.nn.Module, device: torch.device) -> EagerPath:
    """The path object of TrainConfig.train_path ('auto' resolved for the device)."""
    cls = FusedPath if resolve_train_path(name, device) == "fused" else EagerPath
    return cls(gen, device)


# ---- generator ----------------------------------------------------------------------------------------

def _pointwise(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """1×1×1 conv as one GEMM over the voxels: x (B, C, …) in channels-last memory, w (O, C[,1,1,1])."""
    y = F.linear(x.permute(0, 2, 3, 4, 1), w.flatten(1), b)
    return y.permute(0, 4, 1, 2, 3)


def generator_forward(params: dict[str, torch.Tensor], x: torch.Tensor, spec: GeneratorSpec) -> torch.Tensor:
    """The generator (halopaint.kernels.reference.generator_forward), folded; differentiable w.r.t. params.

    x: (B, C_in, n+2g, …) → (B, 1, n, n, n), in channels-last memory (x is converted if it is not).
    """
    x = x.contiguous(memory_format=torch.channels_last_3d)
    tail = [params[f"tail.{j}.{n}"] for j in range(len(spec.tail_widths)) for n in ("weight", "bias")]
    tail += [params["out.weight"], params["out.bias"]]
    for i in range(spec.n_blocks):
        if x.shape[1] < spec.filters:
            x = _folded_block(params, f"blocks.{i}", x, spec)
        elif i < spec.n_blocks - 1:
            a, b, c, res = _merged_block(params, f"blocks.{i}", x, spec)
            x = F.leaky_relu(torch.cat([a, b, c], 1) + res, spec.slope)
        else:           # the last block's epilogue (residual, leaky ReLU) and the pointwise tail, fused
            return _EpilogueTail.apply(spec.slope, *_merged_block(params, f"blocks.{i}", x, spec), *tail)
    for j in range(0, len(tail) - 2, 2):
        x = F.leaky_relu(_pointwise(x, tail[j], tail[j + 1]), spec.slope)
    return F.relu(_pointwise(x, tail[-2], tail[-1]))


class _EpilogueTail(torch.autograd.Function):
    """leaky(cat(a, b, c) + res) → the 1×1×1 tail (leaky ReLUs) → 1×1×1 output (ReLU), as GEMMs over the
    voxels with in-place activations and a hand-written backward (autograd's version of the same ops spent
    more time in layout copies, slice gradients and broadcasts than in the GEMMs). Masks come from the
    saved activations' signs: leaky ReLU with slope > 0 and ReLU keep the sign of their input (z = 0 →
    the ReLU/slope branch, as autograd's leaky_relu_backward and threshold_backward)."""

    @staticmethod
    def forward(ctx, slope, a, b, c, res, *wb):
        bs, f = a.shape[:2]
        n = a.shape[2:]
        y = torch.empty(bs, *n, 3 * f, dtype=a.dtype, device=a.device)
        for j, part in enumerate((a, b, c)):
            y[..., j * f:(j + 1) * f] = part.permute(0, 2, 3, 4, 1)
        y += res.permute(0, 2, 3, 4, 1)
        h = F.leaky_relu_(y.view(-1, 3 * f), slope)
        acts = [h]
        for j in range(0, len(wb) - 2, 2):
            h = F.leaky_relu_(torch.addmm(wb[j + 1], h, wb[j].flatten(1).t()), slope)
            acts.append(h)
        out = torch.relu_(torch.addmm(wb[-1], h, wb[-2].flatten(1).t()))
        ctx.slope, ctx.shape, ctx.f = slope, (bs, *n), f
        ctx.save_for_backward(out, *acts, *wb[0::2])
        return out.view(bs, *n, 1).permute(0, 4, 1, 2, 3)

    @staticmethod
    def backward(ctx, grad):
        out, *rest = ctx.saved_tensors
        nl = len(rest) // 2
        acts, weights = rest[:nl], rest[nl:]
        slope, f = ctx.slope, ctx.f
        g = torch.ops.aten.threshold_backward(grad.permute(0, 2, 3, 4, 1).reshape(-1, 1), out, 0)
        grads = []
        for layer in range(nl - 1, -1, -1):
            h, w = acts[layer], weights[layer]
            grads += [(g.t() @ h).view(w.shape), g.sum(0)][::-1]
            g = g @ w.flatten(1)
            g = torch.ops.aten.leaky_relu_backward(g, h, slope, True)
        grads = grads[::-1]                       # (w0, b0, w1, b1, …) in the order of the inputs
        bs, *n = ctx.shape
        g5 = g.view(bs, *n, 3 * f).permute(0, 4, 1, 2, 3)
        parts = [g5[:, j * f:(j + 1) * f] for j in range(3)]
        return (None, *parts, g5.sum(1, keepdim=True), *grads)


def _folded_block(p, prefix: str, x: torch.Tensor, spec: GeneratorSpec) -> torch.Tensor:
    """C_in < F: reductions folded into the spatial convs, the residual into the centre tap and branch C."""
    f, k, kb, t = spec.filters, spec.big_kernel, spec.small_kernel, spec.block_trim
    m = (k - kb) // 2
    w = lambda n: (p[f"{prefix}.{n}.weight"], p[f"{prefix}.{n}.bias"])  # noqa: E731
    (ar_w, ar_b), (br_w, br_b), (cr_w, cr_b) = w("a_reduce"), w("b_reduce"), w("c_reduce")
    (ac_w, ac_b), (bc_w, bc_b) = w("a_conv"), w("b_conv")
    # conv(reduce(x)): weight[o, c] = Σ_i conv[o, i] reduce[i, c]; bias = conv_b + Σ_{i,taps} conv[o, i] reduce_b[i]
    wa = torch.einsum("oixyz,ic->ocxyz", ac_w, ar_w.flatten(1))
    wb = F.pad(torch.einsum("oixyz,ic->ocxyz", bc_w, br_w.flatten(1)), (m,) * 6)
    ba = ac_b + torch.einsum("oixyz,i->o", ac_w, ar_b)
    bb = bc_b + torch.einsum("oixyz,i->o", bc_w, br_b)
    c_in = x.shape[1]
    centre = torch.zeros(1, c_in, k, k, k, dtype=x.dtype, device=x.device)
    centre[:, 0, t, t, t] = 1.0                       # the residual: input channel 0 at the centre
    ab = _conv_zy_unfolded(x, torch.cat([wa, wb]) + centre, torch.cat([ba, bb]))
    eye0 = torch.zeros(1, c_in, dtype=x.dtype, device=x.device)
    eye0[0, 0] = 1.0
    c = _pointwise(crop(x, t), cr_w.flatten(1) + eye0, cr_b)
    return F.leaky_relu(torch.cat([ab, c], 1), spec.slope)


def _conv_zy_unfolded(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """conv3d(x, w, b) for few input channels: the k² (z, y) taps unfolded into channels, then a 1×1×k conv
    (oneDNN runs a 1-channel 5³ conv at a third of its rate on 25 channels: block 1 fwd+bwd 60 → 43 ms)."""
    k = w.shape[-1]
    u = x.unfold(2, k, 1).unfold(3, k, 1)             # (B, C, Z, Y, X, kz, ky)
    bs, c, z, y, xs = u.shape[:5]
    u = u.permute(0, 1, 5, 6, 2, 3, 4).reshape(bs, c * k * k, z, y, xs).contiguous(
        memory_format=torch.channels_last_3d)
    w = w.reshape(w.shape[0], c * k * k, 1, 1, k).contiguous(memory_format=torch.channels_last_3d)
    return F.conv3d(u, w, b)


def _merged_block(p, prefix: str, x: torch.Tensor, spec: GeneratorSpec) -> tuple[torch.Tensor, ...]:
    """C_in ≥ F: the three 1×1×1 convs as one GEMM, then the 5³ and 3³ convs and the crops. Returns the
    branches A, B, C and the residual, before the block's epilogue leaky(cat(A, B, C) + residual)."""
    f, k, kb, t = spec.filters, spec.big_kernel, spec.small_kernel, spec.block_trim
    m = (k - kb) // 2
    # the residual (input channel 0) rides along as a 3F+1-th GEMM output, and the four parts are taken by one
    # split: autograd's backward of channel slices allocates and adds a zero tensor of the whole input per slice
    # (4 × 30 channels at 54³ per step), a split's backward is one concatenation
    eye0 = torch.zeros(1, x.shape[1], dtype=x.dtype, device=x.device)
    eye0[0, 0] = 1.0
    red_w = torch.cat([p[f"{prefix}.{n}_reduce.weight"].flatten(1) for n in "abc"] + [eye0])
    red_b = torch.cat([p[f"{prefix}.{n}_reduce.bias"] for n in "abc"] + [eye0.new_zeros(1)])
    ra, rb, rc, res = _pointwise(x, red_w, red_b).split([f, f, f, 1], dim=1)
    a = F.conv3d(ra, p[f"{prefix}.a_conv.weight"], p[f"{prefix}.a_conv.bias"])
    b = F.conv3d(crop(rb, m), p[f"{prefix}.b_conv.weight"], p[f"{prefix}.b_conv.bias"])
    return a, b, crop(rc, t), crop(res, t)


class InferenceGenerator:
    """The critic steps' generator forward without gradients: on the CPU the fused inference kernel
    (halopaint.kernels.cpu), rebuilt from the generator's weights after every change (`invalidate()`);
    elsewhere the folded forward."""

    def __init__(self, gen: torch.nn.Module, device: torch.device):
        self.gen, self.device = gen, device
        self._kernel = None

    def invalidate(self) -> None:
        self._kernel = None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type != "cpu":
            return generator_forward(dict(self.gen.named_parameters()), x, self.gen.spec)
        if self._kernel is None:
            from halopaint.kernels.cpu import FusedCPUKernel
            self._kernel = FusedCPUKernel(self.gen.state_dict(), self.gen.spec, self.device)
        return self._kernel(x)


# ---- critic -------------------------------------------------------------------------------------------

def _transposed_conv(g: torch.Tensor, w: torch.Tensor, stride: int, side: int) -> torch.Tensor:
    """The input gradient of conv3d(·, w, stride) onto a cube of `side`: conv_transpose3d(g, w, stride), the
    planes the conv does not reach zero. Into one channel with stride > 1 as one stride-1 conv of the
    stride³ sub-kernels and a pixel shuffle."""
    k = w.shape[-1]
    if stride == 1 or w.shape[1] > 1:
        return F.conv_transpose3d(g, w, stride=stride, output_padding=side - ((g.shape[-1] - 1) * stride + k))
    s, c_out, c_in = stride, w.shape[0], w.shape[1]
    kk = -(-k // s)                                   # taps of the longest sub-kernel per axis
    wp = F.pad(w, (0, s * kk - k) * 3)                # (Co, Ci, s·kk, …): taps j = p + s·m
    wp = wp.view(c_out, c_in, kk, s, kk, s, kk, s)    # [co, ci, mz, pz, my, py, mx, px]
    wp = wp.permute(3, 5, 7, 1, 0, 2, 4, 6).flip(-3, -2, -1)   # [pz, py, px, ci, co, mz, my, mx], flipped
    wp = wp.reshape(s ** 3 * c_in, c_out, kk, kk, kk)
    out = F.conv3d(F.pad(g, (kk - 1,) * 6), wp)       # (B, s³·Ci, q, q, q): phase (pz, py, px) of x
    b, q = g.shape[0], out.shape[-1]
    out = out.view(b, s, s, s, c_in, q, q, q).permute(0, 4, 5, 1, 6, 2, 7, 3).reshape(b, c_in, s * q, s * q, s * q)
    if s * q >= side:
        return out[..., :side, :side, :side]
    return F.pad(out, (0, side - s * q) * 3)


def critic_input_gradient(critic: Critic, x: torch.Tensor) -> torch.Tensor:
    """∇ₓ Σ_b critic(x)_b, differentiable w.r.t. the critic's parameters (not w.r.t. x)."""
    slope = critic.slope
    masks, sides = [], []
    with torch.no_grad():
        h = x
        for conv in critic.convs:
            sides.append(h.shape[-1])
            z = conv(h)
            masks.append(torch.where(z > 0, z.new_tensor(1.0), z.new_tensor(slope)))
            h = F.leaky_relu(z, slope)
    g = critic.linear.weight.view(1, *h.shape[1:]).expand(x.shape[0], *h.shape[1:])
    for conv, mask, side in zip(reversed(critic.convs), reversed(masks), reversed(sides)):
        g = _transposed_conv(g * mask, conv.weight, conv.stride[0], side)
    return g


class _CriticMean(torch.autograd.Function):
    """mean_b critic(fake)_b as a function of fake alone (the generator step's adversarial term): the
    backward is critic_input_gradient / B, without the critic's parameter gradients the generator step
    never uses (and without oneDNN's slow stride-2 transposed conv into one channel)."""

    @staticmethod
    def forward(ctx, fake, critic):
        ctx.critic = critic
        ctx.save_for_backward(fake)
        return critic(fake).mean()

    @staticmethod
    def backward(ctx, grad):
        (fake,) = ctx.saved_tensors
        with torch.no_grad():
            return grad * critic_input_gradient(ctx.critic, fake) / fake.shape[0], None


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """losses.gradient_penalty with the explicit input gradient: mean_b (‖∇_x̂ D(x̂_b)‖₂ − 1)²."""
    e = eps.view(-1, *([1] * (real.ndim - 1))).to(real)
    x = (e * real + (1 - e) * fake).detach()
    norms = critic_input_gradient(critic, x).flatten(1).norm(dim=1)
    return ((norms - 1) ** 2).mean()

