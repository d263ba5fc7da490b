"""WGAN-GP gradient penalty (double backward) and the Poisson term, against finite differences."""

from __future__ import annotations

import math

import torch

from halopaint.model import Critic
from halopaint.train import gradient_penalty, poisson_nll


def _setup(seed=0):
    torch.manual_seed(seed)
    critic = Critic(20).double()
    real = torch.rand(3, 1, 20, 20, 20, dtype=torch.float64)
    fake = torch.rand(3, 1, 20, 20, 20, dtype=torch.float64)
    eps = torch.rand(3, dtype=torch.float64)
    return critic, real, fake, eps


def test_penalty_value_matches_per_sample_input_gradients():
    critic, real, fake, eps = _setup(1)
    gp = gradient_penalty(critic, real, fake, eps)
    norms = []
    for b in range(3):
        x = (eps[b] * real[b:b + 1] + (1 - eps[b]) * fake[b:b + 1]).requires_grad_(True)
        (g,) = torch.autograd.grad(critic(x).sum(), x)
        norms.append(g.norm().item())
    expected = sum((n - 1) ** 2 for n in norms) / 3
    assert math.isclose(gp.item(), expected, rel_tol=1e-10)


def test_penalty_parameter_gradient_matches_finite_differences():
    """∂GP/∂θ from the double backward vs a central difference along random directions."""
    critic, real, fake, eps = _setup(2)
    params = list(critic.parameters())
    gp = gradient_penalty(critic, real, fake, eps)
    grads = torch.autograd.grad(gp, params, allow_unused=True)   # the last bias cannot change ∇ₓD
    assert grads[-1] is None and all(g is not None for g in grads[:-1])
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        direction = [torch.randn(p.shape, dtype=p.dtype, generator=gen) for p in params]
        analytic = sum((g * d).sum() for g, d in zip(grads, direction)).item()
        h = 1e-6
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(h * d)
        plus = gradient_penalty(critic, real, fake, eps).item()
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.sub_(2 * h * d)
        minus = gradient_penalty(critic, real, fake, eps).item()
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(h * d)
        numeric = (plus - minus) / (2 * h)
        assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric)), (analytic, numeric)


def test_poisson_nll_is_the_poisson_likelihood():
    lam = torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)
    n = torch.tensor([0.0, 1.0, 4.0], dtype=torch.float64)
    expected = -sum(k * math.log(l) - l - math.lgamma(k + 1) for l, k in zip(lam.tolist(), n.tolist())) / 3
    assert math.isclose(poisson_nll(lam, n).item(), expected, rel_tol=1e-6)
    # minimised at λ = n (for n > 0)
    lam2 = torch.tensor([4.0], dtype=torch.float64, requires_grad=True)
    poisson_nll(lam2, torch.tensor([4.0], dtype=torch.float64)).backward()
    assert abs(lam2.grad.item()) < 1e-6
