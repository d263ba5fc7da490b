"""The fused training path (halopaint.train.fast) against the eager reference, on fresh random inputs.

The fused path is the same algebra with the sums reordered (folded weights, GEMMs, polyphase transposed
convs), so the formula tests run in float64 and ask for agreement to 1e-9 of each tensor's largest value
(`_close`): anything but rounding would show. Training itself runs in float32: one whole run of two
iterations (2 × (5 critic + 1 generator steps)) of both paths gives losses within 1e-3 relative and weights
within 1e-3 relative / 1e-4 absolute (float32 rounding, amplified by Adam's normalised first steps).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from halopaint.config import TrainConfig
from halopaint.ddp import GradientSync
from halopaint.model import Critic, Generator
from halopaint.train import Trainer, TrainingData, fast, losses

from train_data import synthetic_pair


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-9) -> None:
    a, b = a.detach(), b.detach()
    scale = float(b.abs().max()) + 1e-30
    err = float((a - b).abs().max())
    assert err <= rtol * scale, f"max |Δ| {err:.3g} vs scale {scale:.3g}"


def _random_generator(seed: int) -> Generator:
    torch.manual_seed(seed)
    gen = Generator().double()
    with torch.no_grad():                      # non-trivial weights everywhere (biases too)
        for p in gen.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return gen


@pytest.mark.parametrize("batch", [1, 2])
def test_generator_forward_and_gradients_match_eager(batch):
    gen = _random_generator(11 + batch)
    x = torch.randn(batch, 1, 24, 24, 24, dtype=torch.float64)
    target = torch.rand(batch, 1, 16, 16, 16, dtype=torch.float64)
    ref = gen(x)
    (ref * target).sum().backward()
    ref_grads = {n: p.grad.clone() for n, p in gen.named_parameters()}
    gen.zero_grad()
    out = fast.generator_forward(dict(gen.named_parameters()), x, gen.spec)
    _close(out, ref)
    (out * target).sum().backward()
    for n, p in gen.named_parameters():
        _close(p.grad, ref_grads[n])


def test_inference_kernel_matches_generator():
    """The critic steps' generator forward: the fused C kernel (float32), to float32 rounding."""
    gen = _random_generator(5).float()
    x = torch.randn(1, 1, 26, 26, 26)
    infer = fast.InferenceGenerator(gen, torch.device("cpu"))
    _close(infer(x), gen(x), rtol=1e-5)
    with torch.no_grad():                      # rebuilt after the weights change
        gen.out.bias.add_(0.3)
    infer.invalidate()
    _close(infer(x), gen(x), rtol=1e-5)


@pytest.mark.parametrize("patch", [20, 21, 32])
def test_penalty_and_its_parameter_gradients_match_double_backward(patch):
    torch.manual_seed(patch)
    critic = Critic(patch).double()
    real, fake = (torch.rand(2, 1, patch, patch, patch, dtype=torch.float64) for _ in range(2))
    eps = torch.rand(2, dtype=torch.float64)
    ref = losses.gradient_penalty(critic, real, fake, eps)
    ref.backward()
    ref_grads = {n: p.grad for n, p in critic.named_parameters()}
    critic.zero_grad()
    gp = fast.gradient_penalty(critic, real, fake, eps)
    _close(gp, ref)
    gp.backward()
    for n, p in critic.named_parameters():
        # the biases do not enter ∇ₓD (only the masks, whose derivative is 0): no or zero gradients
        ref_grad = ref_grads[n] if ref_grads[n] is not None else torch.zeros_like(p)
        if n.endswith("bias"):
            assert float(ref_grad.abs().max()) == 0.0 and (p.grad is None or float(p.grad.abs().max()) == 0.0)
        else:
            _close(p.grad, ref_grad)


def test_critic_input_gradient_and_adversarial_term_match_autograd():
    torch.manual_seed(3)
    critic = Critic(24).double()
    fake = torch.rand(2, 1, 24, 24, 24, dtype=torch.float64, requires_grad=True)
    (ref,) = torch.autograd.grad(critic(fake).sum(), fake)
    _close(fast.critic_input_gradient(critic, fake.detach()), ref)
    fake.grad = None
    fast.FusedPath.critic_mean(critic, fake).backward()
    _close(fake.grad, ref / 2)
    assert all(p.grad is None for p in critic.parameters())   # the generator step never uses them


def test_resolve_train_path():
    assert fast.resolve_train_path("auto", torch.device("cpu")) == "fused"
    assert fast.resolve_train_path("auto", torch.device("cuda")) == "eager"
    with pytest.raises(ValueError, match="train path"):
        fast.resolve_train_path("turbo", torch.device("cpu"))


def test_one_iteration_of_both_paths_gives_the_same_losses_and_weights():
    rho, halos = synthetic_pair(40, 7, n_bins=1)
    data = TrainingData.from_arrays([(rho, halos)])
    runs = {}
    for path in ("eager", "fused"):
        cfg = TrainConfig(patch=20, validation_patches=0, train_path=path, supervised_weight=10.0,
                          adversarial_weight=1.0, seed=3)
        tr = Trainer(cfg, data, [0], torch.device("cpu"), GradientSync(False))
        recs = [rec for _ in range(2) for rec in tr.iteration()]
        b = tr.bins[0]
        runs[path] = (recs, {**{f"g.{k}": v for k, v in b.gen.state_dict().items()},
                             **{f"c.{k}": v for k, v in b.critic.state_dict().items()}})
    (rec_e, w_e), (rec_f, w_f) = runs["eager"], runs["fused"]
    for a, b in zip(rec_e, rec_f):
        for k in a:
            if isinstance(a[k], float):
                assert b[k] == pytest.approx(a[k], rel=1e-3, abs=1e-4), k
    for k in w_e:
        np.testing.assert_allclose(w_f[k].numpy(), w_e[k].numpy(), rtol=1e-3, atol=1e-4, err_msg=k)
