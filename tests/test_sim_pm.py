"""PM N-body: exact linear growth of a plane wave, matter P(k) against linear theory, numba kernels
against their numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from halopaint.config import Cosmology
from halopaint.analysis.spectra import power_spectrum
from halopaint.sim.pipeline import nbody_initial_conditions
from halopaint.sim.cosmology import LinearCosmology
from halopaint.sim.grids import cic_paint, cic_paint_numpy, cic_readout, cic_readout_numpy
from halopaint.sim.kernels import gradient_kernel
from halopaint.sim.lpt import lattice_positions
from halopaint.sim.pm import central_difference, run_pm

LIN = LinearCosmology(Cosmology())


def test_numba_kernels_match_numpy_references():
    rng = np.random.default_rng(0)
    pos = rng.random((20000, 3)) * 50.0
    pos[:5] = [[0, 0, 0], [49.999999, 0, 25], [0.0, 49.9999, 49.99999], [12.5, 25, 37.5], [1e-12, 0, 0]]
    a, b = np.zeros((12, 12, 12)), np.zeros((12, 12, 12))
    cic_paint(a, pos, 50.0)
    cic_paint_numpy(b, pos, 50.0, chunk=3001)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    field = rng.normal(size=(12, 12, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(cic_readout(field, pos, 50.0), cic_readout_numpy(field, pos, 50.0), rtol=1e-6,
                               atol=1e-6)
    phi = rng.normal(size=(10, 10, 10)).astype(np.float32)
    grad = np.empty((10, 10, 10, 3), np.float32)
    gradient_kernel(phi, 0.7, grad)
    ref = np.empty_like(phi)
    for d in range(3):
        np.testing.assert_allclose(grad[..., d], -central_difference(phi, d, 0.7, ref), rtol=1e-5, atol=1e-5)
    # a sine is differentiated to 4th order
    x = (np.arange(32) * 2 * np.pi / 32).astype(np.float32)
    s = np.sin(x)[None, :, None] * np.ones((32, 32, 32), np.float32)     # the kernel is for cubic meshes
    g = np.empty(s.shape + (3,), np.float32)
    gradient_kernel(np.ascontiguousarray(s), 2 * np.pi / 32, g)
    np.testing.assert_allclose(-g[0, :, 0, 1], np.cos(x), atol=2e-4)


@pytest.mark.parametrize("steps", [5, 20])
def test_plane_wave_grows_linearly(steps):
    """A small 1D plane-wave displacement ψ = A sin(kq) must grow as D1 (Zel'dovich is exact in 1D before
    shell crossing; the FastPM factors make it exact for any step count up to the mesh's force error)."""
    n, box, amp = 16, 100.0, 0.05
    k = 2 * np.pi / box
    q = lattice_positions(0, n, n, box).reshape(-1, 3)
    psi = np.zeros_like(q)
    psi[:, 0] = amp * np.sin(k * q[:, 0])
    a0 = 0.05
    pos = np.mod(q + LIN.D1(a0) * psi, box)
    mom = float(a0**2 * LIN.efunc(a0) * LIN.f1(a0) * LIN.D1(a0)) * psi
    run_pm(pos, mom, LIN, box, a0, 1.0, steps, 2 * n)
    disp = pos - q
    disp -= box * np.round(disp / box)
    np.testing.assert_allclose(disp[:, 0], LIN.D1(1.0) * psi[:, 0], atol=0.01 * amp)
    np.testing.assert_allclose(disp[:, 1:], 0, atol=1e-6)
    p_expected = float(LIN.gp(1.0)) * psi[:, 0]
    np.testing.assert_allclose(mom[:, 0], p_expected, atol=0.02 * np.abs(p_expected).max())


def _painted_power(pos, box, n):
    grid = np.zeros((n, n, n))
    cic_paint(grid, pos, box)
    ps = power_spectrum(grid / grid.mean() - 1, box)
    return ps.k, ps.power, ps.nmodes


def _nbody_over_initial(seed, box, n_part, a0=0.05):
    """P(k) at z = 0 over the same realisation's initial P(k) scaled by (D1(1)/D1(a0))²: cosmic variance and
    the CIC window cancel; → k, ratio."""
    pos, mom = nbody_initial_conditions(seed, n_part, box, LIN, a0)
    k, p0, _ = _painted_power(pos, box, n_part)
    run_pm(pos, mom, LIN, box, a0, 1.0, 10, 2 * n_part)
    _, p1, _ = _painted_power(pos, box, n_part)
    return k, p1 / p0 * (LIN.D1(a0) / LIN.D1(1.0)) ** 2


@pytest.mark.slow
def test_nbody_power_linear_on_large_scales_and_nonlinear_on_small():
    """64³ particles, 2× force mesh, 10 steps. Large box (1000 Mpc/h): k < 0.05 h/Mpc within 5 % of linear
    growth (mean of 2 seeds). Small box (150 Mpc/h): power above linear at k > 0.2 h/Mpc."""
    ratios = [_nbody_over_initial(seed, 1000.0, 64) for seed in (1, 2)]
    k = ratios[0][0]
    mean = np.mean([r for _, r in ratios], axis=0)
    low = k < 0.05
    assert low.sum() >= 5
    assert np.all(np.abs(mean[low] - 1) < 0.05), mean[low]
    k, ratio = _nbody_over_initial(3, 150.0, 64)
    high = (k > 0.2) & (k < 1.0)
    assert np.all(ratio[high] > 1.0), ratio[high]
    assert ratio[(k > 0.5) & (k < 1.0)].mean() > 1.3
