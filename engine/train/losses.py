"""The losses: per-sample WGAN-GP gradient penalty and the Poisson negative log-likelihood."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gradient_penalty(critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     eps: torch.Tensor) -> torch.Tensor:
    """Per-sample WGAN-GP penalty mean_b (‖∇_x̂ D(x̂_b)‖₂ − 1)², x̂_b = ε_b·real_b + (1−ε_b)·fake_b.

    real, fake: (B, 1, P, P, P); eps: (B,) in [0, 1). Differentiable w.r.t. the critic's parameters
    (double backward).
    """
    e = eps.view(-1, *([1] * (real.ndim - 1))).to(real)
    x = (e * real + (1 - e) * fake).detach().requires_grad_(True)
    score = critic(x)
    (grad,) = torch.autograd.grad(score.sum(), x, create_graph=True)
    norms = grad.flatten(1).norm(dim=1)
    return ((norms - 1) ** 2).mean()


def poisson_nll(expected: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean over voxels of λ − n·log(λ + 1e-8) + log n! (the Poisson NLL of counts n given λ)."""
    return F.poisson_nll_loss(expected, counts, log_input=False, full=False, eps=1e-8, reduction="mean") + \
        torch.lgamma(counts + 1).mean()
