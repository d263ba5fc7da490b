"""Initial conditions and 2LPT: mode sharing between lattices, Gaussian statistics, analytic 2LPT,
thread-count independence."""

from __future__ import annotations

import numpy as np
import pytest

from halopaint.config import Cosmology
from halopaint.sim.cosmology import LinearCosmology
from halopaint.sim.ics import linear_density_k, white_noise_modes
from halopaint.sim.lpt import Displacements, lattice_positions, potential_1lpt, potential_2lpt
from halopaint.sim.pipeline import lpt_density
from halopaint.sim.slabfft import SlabFFT

LIN = LinearCosmology(Cosmology())


def _integers(n):
    full = np.fft.fftfreq(n, 1.0 / n).round().astype(np.int64)
    return full[:, None, None], full[None, :, None], np.arange(n // 2 + 1)[None, None, :]


def test_modes_shared_between_lattices_up_to_coarse_nyquist():
    box = 300.0
    coarse = linear_density_k(7, 16, box, LIN) / 16**3
    fine = linear_density_k(7, 40, box, LIN) / 40**3          # also an odd-size half axis
    nx, ny, nz = _integers(16)
    inside = (np.abs(nx) < 8) & (np.abs(ny) < 8) & (nz < 8)
    fx, fy = nx % 40, ny % 40
    shared = fine[fx, fy, nz]
    np.testing.assert_allclose(np.where(inside, shared, 0), np.where(inside, coarse, 0), rtol=2e-6, atol=0)
    assert np.all(coarse[~inside] == 0)                                 # coarse Nyquist planes are zero
    # a different seed gives different modes
    other = linear_density_k(8, 16, box, LIN) / 16**3
    assert np.abs(other - coarse)[inside & (coarse != 0)].min() > 0


def test_compiled_white_noise_matches_numpy_reference():
    from halopaint.sim.ics import _seed_state
    from halopaint.sim.kernels import white_noise_kernel
    full = np.fft.fftfreq(20, 1 / 20).round().astype(np.int64)
    half = np.arange(11)
    out = np.empty((20, 20, 11), np.complex128)
    white_noise_kernel(_seed_state(12), full, full, half, out)
    ref = white_noise_modes(12, full[:, None, None], full[None, :, None], half[None, None, :])
    np.testing.assert_allclose(out, ref, rtol=1e-13, atol=1e-14)


def test_white_noise_is_hermitian_and_unit_variance():
    n = np.arange(-20, 21)
    nx, ny, nz = np.meshgrid(n, n, n, indexing="ij")
    g = white_noise_modes(3, nx, ny, nz)
    np.testing.assert_array_equal(g, np.conj(white_noise_modes(3, -nx, -ny, -nz)))
    assert g[20, 20, 20] == 0
    p = np.abs(g[np.abs(g) > 0]) ** 2
    assert p.mean() == pytest.approx(1.0, abs=0.02)                   # 68920 modes: σ ≈ 0.004
    assert np.mean(g.real[np.abs(g) > 0] ** 2) == pytest.approx(0.5, abs=0.02)
    # the real-space field of a lattice's modes is real and consistent (irfft/rfft round trip)
    d = linear_density_k(5, 24, 100.0, LIN)
    back = np.fft.rfftn(np.fft.irfftn(d.astype(np.complex128), s=(24,) * 3))
    np.testing.assert_allclose(back, d, atol=1e-5 * np.abs(d).max())
    # the y-slab of a rank is exactly those rows of the whole spectrum
    np.testing.assert_array_equal(linear_density_k(5, 24, 100.0, LIN, y_range=(7, 16), chunk=5), d[:, 7:16])


def test_initial_power_spectrum_chi2_over_seed_ensemble():
    """|δ̂|² V / n⁶ / P_lin(k) per independent mode is Exp(1): bin means over 8 seeds → χ²/bin ≈ 1."""
    n, box, seeds = 32, 200.0, range(8)
    nx, ny, nz = _integers(n)
    kf = 2 * np.pi / box
    nmag = np.sqrt(nx**2 + ny**2 + nz**2) * np.ones((n, n, n // 2 + 1))
    independent = (nz > 0) | (ny > 0) | ((ny == 0) & (nx > 0))
    independent &= (np.abs(nx) * 2 != n) & (np.abs(ny) * 2 != n) & (nz * 2 != n)
    independent = independent & np.ones_like(nmag, bool)
    bins = np.floor(nmag[independent]).astype(int)
    plin = LIN.power(kf * nmag[independent])
    chi2, dof = 0.0, 0
    for seed in seeds:
        d = linear_density_k(seed, n, box, LIN)
        ratio = (np.abs(d[independent]) ** 2 * box**3 / n**6) / plin
        counts = np.bincount(bins, minlength=n // 2)[1:n // 2]
        means = np.bincount(bins, weights=ratio, minlength=n // 2)[1:n // 2] / counts
        chi2 += np.sum(counts * (means - 1) ** 2)                        # Var(mean of Exp(1)) = 1/N
        dof += counts.size
    assert 0.7 < chi2 / dof < 1.3, chi2 / dof


def test_2lpt_matches_analytic_two_plane_waves():
    """δ = A cos(k₁x) + B cos(k₂y): ψ1 = −(A sin k₁x / k₁, B sin k₂y / k₂, 0),
    ∇²φ2 = φ,xx φ,yy = AB cos k₁x cos k₂y → φ2 = −AB cos k₁x cos k₂y / (k₁² + k₂²)."""
    n, box, A, B = 32, 64.0, 0.3, 0.2
    k1, k2 = 2 * np.pi / box * 3, 2 * np.pi / box * 2
    q = lattice_positions(0, n, n, box)
    x, y = q[..., 0], q[..., 1]
    delta = A * np.cos(k1 * x) + B * np.cos(k2 * y)
    fft = SlabFFT(n, chunk=5)
    delta_k = fft.forward(delta.astype(np.float32))
    phi1 = potential_1lpt(delta_k, fft, box)
    phi2_k = potential_2lpt(phi1, fft, box)
    phi2 = fft.backward(phi2_k)
    np.testing.assert_allclose(phi2, -A * B * np.cos(k1 * x) * np.cos(k2 * y) / (k1**2 + k2**2), atol=2e-6)
    psi, psi2 = Displacements(phi1, phi2_k, fft, box).chunk(0, n)
    # ψ2 = +∇φ2: (A B k1 sin k1x cos k2y, A B k2 cos k1x sin k2y, 0) / (k1² + k2²)
    np.testing.assert_allclose(psi2[..., 0], A * B * k1 * np.sin(k1 * x) * np.cos(k2 * y) / (k1**2 + k2**2), atol=2e-6)
    np.testing.assert_allclose(psi2[..., 1], A * B * k2 * np.cos(k1 * x) * np.sin(k2 * y) / (k1**2 + k2**2), atol=2e-6)
    np.testing.assert_allclose(psi[..., 0], -A * np.sin(k1 * x) / k1, atol=2e-6)
    np.testing.assert_allclose(psi[..., 1], -B * np.sin(k2 * y) / k2, atol=2e-6)
    np.testing.assert_allclose(psi[..., 2], 0, atol=2e-6)


def test_lpt_density_mean_and_linear_limit():
    rho = lpt_density(11, 16, 400.0, 2, LIN, 1.0)
    assert rho.dtype == np.float32 and rho.shape == (16, 16, 16)
    assert abs(rho.mean(dtype=np.float64) - 1) < 1e-5
    # at early times the 2LPT density is the linear density: compare the low-k modes (|n| ≤ 3) with δ̂_L
    # shifted by half a voxel (the lattice starts at 0, voxel centres are at (i+½)H)
    a = 0.05
    rho_k = np.fft.rfftn(lpt_density(11, 16, 400.0, 2, LIN, a).astype(np.float64) - 1)
    lin_k = linear_density_k(11, 16, 400.0, LIN).astype(np.complex128)
    nx, ny, nz = _integers(16)
    lin_k = lin_k * np.exp(1j * np.pi / 16 * (nx + ny + nz)) * LIN.D1(a)
    rho_k = rho_k / (np.sinc(nx / 16) * np.sinc(ny / 16) * np.sinc(nz / 16)) ** 2     # CIC window
    low = (nx**2 + ny**2 + nz**2 <= 9) & (nx**2 + ny**2 + nz**2 > 0) & np.ones(rho_k.shape, bool)
    cross = np.sum(rho_k[low] * np.conj(lin_k[low])).real
    r = cross / np.sqrt(np.sum(np.abs(rho_k[low]) ** 2) * np.sum(np.abs(lin_k[low]) ** 2))
    assert r > 0.99, r
    assert np.sum(np.abs(rho_k[low]) ** 2) / np.sum(np.abs(lin_k[low]) ** 2) == pytest.approx(1, abs=0.03)


def test_lpt_density_independent_of_thread_count():
    import numba
    import torch
    old_t, old_n = torch.get_num_threads(), numba.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            results.append(lpt_density(4, 16, 200.0, 2, LIN, 1.0))
    finally:
        torch.set_num_threads(old_t)
        numba.set_num_threads(old_n)
    np.testing.assert_array_equal(results[0], results[1])
