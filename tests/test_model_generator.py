"""Architecture facts of the paper generator and critic (Kodi Ramanah et al. 2019)."""

from __future__ import annotations

import pytest
import torch

from halopaint.model import Critic, Generator, count_parameters
from halopaint.kernels.reference import GeneratorSpec


def _live_generator(seed: int = 0, dtype=torch.float64) -> Generator:
    """Random paper generator whose output ReLU is active everywhere (large positive output bias)."""
    torch.manual_seed(seed)
    g = Generator().to(dtype)
    with torch.no_grad():
        g.out.bias.fill_(50.0)
    return g


def test_parameter_count_is_the_paper_network():
    assert count_parameters(Generator()) == 32081
    assert Generator().ghost_width == 4


@pytest.mark.parametrize("n", [1, 5, 12])
def test_output_side_is_input_minus_two_ghosts(n):
    g = Generator()
    with torch.no_grad():
        y = g(torch.rand(2, 1, n + 8, n + 8, n + 8))
    assert y.shape == (2, 1, n, n, n)
    assert (y >= 0).all()  # ReLU output: expected counts


def test_ghost_width_follows_the_architecture():
    spec = GeneratorSpec(n_blocks=3, big_kernel=7, small_kernel=3)
    g = Generator(spec)
    assert g.ghost_width == 9
    with torch.no_grad():
        assert g(torch.rand(1, 1, 20, 20, 20)).shape == (1, 1, 2, 2, 2)


def test_receptive_field_is_chebyshev_radius_four():
    """∂ out[centre] / ∂ in[v] ≠ 0 exactly for Chebyshev distance ≤ 4 from the centre, = 0 beyond."""
    g = _live_generator()
    n_in, c = 19, 9                      # output 11³; output voxel (5,5,5) sits over input (9,9,9)
    x = (torch.rand(1, 1, n_in, n_in, n_in, dtype=torch.float64) * 2).requires_grad_(True)
    y = g(x)
    y[0, 0, 5, 5, 5].backward()
    grad = x.grad[0, 0].abs()
    idx = torch.arange(n_in)
    cheb = torch.maximum(torch.maximum((idx[:, None, None] - c).abs(), (idx[None, :, None] - c).abs()),
                         (idx[None, None, :] - c).abs())
    assert (grad[cheb <= 4] > 0).all()
    assert (grad[cheb >= 5] == 0).all()
    # and by perturbation: a change at distance 4 moves the output, a change on the whole distance-5
    # shell does not
    with torch.no_grad():
        base = g(x)[0, 0, 5, 5, 5]
        x4 = x.detach().clone()
        x4[0, 0, c + 4, c - 2, c] += 1.0
        assert g(x4)[0, 0, 5, 5, 5] != base
        x5 = x.detach().clone()
        x5[0, 0][cheb == 5] += 3.0
        assert g(x5)[0, 0, 5, 5, 5] == base


def test_translation_equivariance():
    g = _live_generator(1, torch.float32)
    x = torch.rand(1, 1, 30, 30, 30)
    with torch.no_grad():
        full = g(x)
        shifted = g(x[..., 2:, 3:, 1:])
    assert shifted.shape == (1, 1, 20, 19, 21)
    torch.testing.assert_close(shifted, full[..., 2:, 3:, 1:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("patch", [20, 50])
def test_critic_maps_a_patch_to_one_score(patch):
    c = Critic(patch)
    with torch.no_grad():
        assert c(torch.rand(3, 1, patch, patch, patch)).shape == (3, 1)
    if patch == 50:   # 50 → 22 → 18 → 8 → 8 (paper Fig. 6)
        assert c.feature_side == 8 and c.linear.in_features == 64 * 8**3


def test_critic_refuses_a_patch_too_small():
    with pytest.raises(ValueError):
        Critic(12)


def test_kernel_parameter_shapes_are_the_generator_state_dict():
    """kernels.reference.parameter_shapes (what every kernel reads) == the Generator's parameters."""
    from halopaint.kernels.reference import GeneratorSpec, parameter_shapes, random_parameters
    for spec in (GeneratorSpec(), GeneratorSpec(filters=4, n_blocks=1, tail_widths=(6, 5))):
        gen = Generator(spec)
        want = {k: tuple(v.shape) for k, v in gen.state_dict().items()}
        assert parameter_shapes(spec) == want
        params = random_parameters(spec, seed=3)
        assert {k: tuple(v.shape) for k, v in params.items()} == want
        gen.load_state_dict(params)          # loads: names and shapes agree
        again = random_parameters(spec, seed=3)
        assert all(torch.equal(params[k], again[k]) for k in params)
