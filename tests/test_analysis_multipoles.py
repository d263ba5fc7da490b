"""Redshift-space multipoles (halopaint.analysis.multipoles) against a float64 brute-force reference,
the Kaiser limit, colossus' H(z), and a Poisson catalogue."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from halopaint.analysis.multipoles import (catalogue_multipoles, conformal_velocity_factor, legendre,
                                           multipoles, redshift_space_positions)
from halopaint.analysis.spectra import power_spectrum
from halopaint.errors import HalopaintError


def brute_multipoles(delta: np.ndarray, box: float, axis: int):
    """Independent modes enumerated one by one (Pylians' rule), float64, no shortcuts."""
    n = delta.shape[0]
    fk = np.fft.rfftn(delta.astype(np.float64))
    half = n // 2
    sums = {}
    for i, j, kz in itertools.product(range(n), range(n), range(n // 2 + 1)):
        kx = i if i <= half else i - n
        ky = j if j <= half else j - n
        if kz == 0 or (n % 2 == 0 and kz == half):
            if kx < 0 or ((kx == 0 or (n % 2 == 0 and kx == half)) and ky < 0):
                continue
        norm = np.sqrt(kx * kx + ky * ky + kz * kz)
        b = int(np.floor(norm + 1e-12))
        if b == 0:
            continue
        mu = (kx, ky, kz)[axis] / norm
        pk = abs(fk[i, j, kz]) ** 2
        row = sums.setdefault(b, np.zeros(5))
        row += [1, norm, pk, pk * legendre(2, np.array(mu)), pk * legendre(4, np.array(mu))]
    bins = sorted(sums)
    rows = np.array([sums[b] for b in bins])
    norm = box**3 / n**6
    return (rows[:, 1] / rows[:, 0] * 2 * np.pi / box, rows[:, 2] / rows[:, 0] * norm,
            5 * rows[:, 3] / rows[:, 0] * norm, 9 * rows[:, 4] / rows[:, 0] * norm)


@pytest.mark.parametrize("n, axis", [(8, 2), (9, 0), (10, 1)])
def test_equals_the_brute_force_reference(n, axis):
    rng = np.random.default_rng(n + axis)
    delta = rng.normal(size=(n,) * 3)
    m = multipoles(delta, 50.0, axis=axis)
    k, p0, p2, p4 = brute_multipoles(delta, 50.0, axis)
    for got, want in ((m.k, k), (m.P0, p0), (m.P2, p2), (m.P4, p4)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(p0).max())


@pytest.mark.parametrize("n", [16, 15])
def test_monopole_is_the_power_spectrum(n):
    delta = np.random.default_rng(3).normal(size=(n,) * 3)
    m, ps = multipoles(delta, 100.0, mas="cic"), power_spectrum(delta, 100.0, mas="cic")
    np.testing.assert_allclose(m.P0, ps.power, rtol=1e-10)
    np.testing.assert_allclose(m.k, ps.k, rtol=1e-12)
    np.testing.assert_array_equal(m.nmodes, ps.nmodes)


def test_kaiser_limit():
    """δ_s(k) = δ(k)(1 + f μ²) with |δ(k)| = 1: P2/P0 and P4/P0 → Kaiser's ratios where bins hold many modes."""
    n, box, f = 48, 300.0, 0.7
    rng = np.random.default_rng(5)
    white = np.fft.rfftn(rng.normal(size=(n,) * 3))       # Hermitian by construction
    phases = white / np.abs(white)
    kx = np.fft.fftfreq(n)[:, None, None]
    ky = np.fft.fftfreq(n)[None, :, None]
    kz = np.fft.rfftfreq(n)[None, None, :]
    k2 = kx**2 + ky**2 + kz**2
    mu2 = np.where(k2 > 0, kz**2 / np.where(k2 > 0, k2, 1), 0)
    delta = np.fft.irfftn(phases * (1 + f * mu2), s=(n,) * 3)
    m = multipoles(delta, box, axis=2)
    sel = (m.nmodes > 2000) & (m.k * box / (2 * np.pi) < n / 2 - 1)   # inside the Nyquist sphere
    assert sel.sum() >= 5
    r2 = (4 * f / 3 + 4 * f**2 / 7) / (1 + 2 * f / 3 + f**2 / 5)
    r4 = (8 * f**2 / 35) / (1 + 2 * f / 3 + f**2 / 5)
    np.testing.assert_allclose(m.P2[sel] / m.P0[sel], r2, rtol=0.02)
    # P4 per bin carries the lattice's μ⁴ discreteness (±50 % here); averaged over the bins' modes it does not
    w = m.nmodes[sel]
    assert np.sum(w * m.P4[sel] / m.P0[sel]) / w.sum() == pytest.approx(r4, rel=0.05)


def test_velocity_factor_matches_colossus():
    colossus = pytest.importorskip("colossus.cosmology.cosmology")
    cosmo = colossus.setCosmology("planck18", persistence="")
    for z in (0.0, 0.5, 1.0, 2.0):
        want = (1 + z) / (100.0 * cosmo.Ez(z))   # flat: colossus' E(z) carries radiation, ≤ 1e-4 here
        assert conformal_velocity_factor(z, cosmo.Om0) == pytest.approx(want, rel=5e-4)


def test_redshift_space_positions_shift_and_wrap():
    pos = np.array([[1.0, 2.0, 99.5], [10.0, 20.0, 0.5]])
    vel = np.array([[500.0, 0.0, 100.0], [0.0, 0.0, -100.0]])
    s = redshift_space_positions(pos, vel, 100.0, 0.0, 0.3, axis=2)
    assert np.array_equal(s[:, :2], pos[:, :2])           # only the line of sight moves
    np.testing.assert_allclose(s[:, 2], [0.5, 99.5])      # 1 Mpc/h per 100 km/s at z = 0, periodic
    with pytest.raises(HalopaintError, match="NaN"):
        redshift_space_positions(pos, vel * np.nan, 100.0, 0.0, 0.3)
    with pytest.raises(HalopaintError, match="Omega_m"):
        conformal_velocity_factor(0.0, -0.3)


def test_poisson_catalogue_is_isotropic_shot_noise():
    rng = np.random.default_rng(11)
    box, n_obj = 200.0, 60000
    pos = rng.random((n_obj, 3)) * box
    vel = rng.normal(scale=300.0, size=(n_obj, 3))
    for v in (None, vel):
        # NGP uncompensated: the aliased shot noise sums to exactly V/n at every k
        m = catalogue_multipoles(pos, v, box, 32, redshift=0.5, omega_m=0.3, mas="ngp", compensate=False)
        low = m.k < 0.5
        assert m.shot_noise == pytest.approx(box**3 / n_obj)
        assert np.mean(m.P0[low]) == pytest.approx(m.shot_noise, rel=0.05)
        assert abs(np.mean(m.P2[low])) < 0.05 * m.shot_noise
    with pytest.raises(HalopaintError, match="empty"):
        catalogue_multipoles(np.zeros((0, 3)), None, box, 16)


def test_kaiser_limit_of_a_zeldovich_catalogue():
    """A lattice of objects displaced by a linear (Zel'dovich) field Ψ(k) = i k/k² δ(k), with peculiar
    velocities v = f·aH·Ψ, through redshift_space_positions and the compensated CIC mesh: P2/P0 equals linear
    theory on the same modes, δ_s = (1 + fμ²)δ, within 2 % per bin, and its mode-weighted mean the Kaiser
    ratio (4f/3 + 4f²/7)/(1 + 2f/3 + f²/5) within 3 %; P0_s/P0_r = 1 + 2f/3 + f²/5 within 2 %; real space
    isotropic (|P2/P0| < 0.01). Fixed-amplitude modes (no cosmic variance) below k_Nyq/2 of the 64³ mesh
    (no aliasing), δ_rms = 0.03 (the mapping's non-linear terms ≲ 1 %), 2³ lattice objects per mesh cell
    (one per cell leaves a direction-dependent lattice response of ~5 % in P2), bins of ≥ 300 modes."""
    n, r, box, f, z, om = 64, 2, 256.0, 0.6, 0.0, 0.3
    m = n * r
    white = np.fft.rfftn(np.random.default_rng(21).normal(size=(m,) * 3))
    ix = np.fft.fftfreq(m, 1.0 / m)[:, None, None]
    iy = np.fft.fftfreq(m, 1.0 / m)[None, :, None]
    iz = np.fft.rfftfreq(m, 1.0 / m)[None, None, :]
    n2 = ix**2 + iy**2 + iz**2
    safe = np.where(n2 > 0, n2, 1.0)
    delta_k = np.where((n2 > 0) & (n2 < (n / 4) ** 2), white / np.abs(white), 0.0)
    delta_k *= 0.03 / np.std(np.fft.irfftn(delta_k, s=(m,) * 3, axes=(0, 1, 2)))
    kf = 2 * np.pi / box
    psi = np.stack([np.fft.irfftn(1j * c / (safe * kf) * delta_k, s=(m,) * 3, axes=(0, 1, 2)).ravel()
                    for c in (ix, iy, iz)], axis=1)                   # [Mpc/h]; δ = −∇·Ψ
    q = (np.indices((m,) * 3).reshape(3, -1).T + 0.5) * (box / m)
    pos = np.mod(q + psi, box)
    vel = f * psi / conformal_velocity_factor(z, om)                  # v = f aH Ψ [km/s]
    real = catalogue_multipoles(pos, None, box, n, redshift=z, omega_m=om)
    red = catalogue_multipoles(pos, vel, box, n, redshift=z, omega_m=om)
    linear = multipoles(np.fft.irfftn(delta_k * (1 + f * iz**2 / safe), s=(m,) * 3, axes=(0, 1, 2)), box)
    sel = (red.nmodes >= 300) & (red.k < 0.5 * np.pi * n / box)
    assert sel.sum() >= 8
    ratio = red.P2[sel] / red.P0[sel]
    same = slice(0, len(red.k))                                       # the mesh's bins, same modes
    np.testing.assert_allclose(linear.k[same][sel], red.k[sel], rtol=1e-12)
    np.testing.assert_allclose(ratio, linear.P2[same][sel] / linear.P0[same][sel], rtol=0.02)
    kaiser = (4 * f / 3 + 4 * f**2 / 7) / (1 + 2 * f / 3 + f**2 / 5)
    assert np.sum(red.nmodes[sel] * ratio) / red.nmodes[sel].sum() == pytest.approx(kaiser, rel=0.03)
    np.testing.assert_allclose(red.P0[sel] / real.P0[sel], 1 + 2 * f / 3 + f**2 / 5, rtol=0.02)
    assert np.all(np.abs(real.P2[sel] / real.P0[sel]) < 0.01)
