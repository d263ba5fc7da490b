"""Linear theory of the simulator against colossus (the cross-check; the runtime does not use it)."""

from __future__ import annotations

import numpy as np
import pytest

from halopaint.config import Cosmology
from halopaint.sim.cosmology import LinearCosmology, T_CMB, eisenstein_hu_transfer, sigma_r

colossus = pytest.importorskip("colossus.cosmology.cosmology")
from colossus.cosmology import power_spectrum as colossus_ps  # noqa: E402

COSMOLOGIES = [Cosmology(), Cosmology(Omega_m=0.25, Omega_b=0.04, h=0.72, sigma8=0.9, n_s=0.95),
               Cosmology(Omega_m=0.4, Omega_b=0.06, h=0.6, sigma8=0.7, n_s=1.0)]


def _colossus(c: Cosmology):
    # no relativistic species: the simulator's E(a) is matter + Λ only
    return colossus.setCosmology("halopaint-test", params=dict(
        flat=True, H0=100 * c.h, Om0=c.Omega_m, Ob0=c.Omega_b, sigma8=c.sigma8, ns=c.n_s,
        Tcmb0=T_CMB, relspecies=False), persistence="")


@pytest.mark.parametrize("cosmo", COSMOLOGIES)
def test_eisenstein_hu_power_matches_colossus(cosmo):
    k = np.logspace(-3, 0, 300)
    col = _colossus(cosmo)
    t_ref = colossus_ps.modelEisenstein98(k, cosmo.h, cosmo.Omega_m, cosmo.Omega_b, T_CMB)
    assert np.max(np.abs(eisenstein_hu_transfer(k, cosmo) / t_ref - 1)) < 1e-6
    p_ref = col.matterPowerSpectrum(k, z=0.0, model="eisenstein98")
    assert np.max(np.abs(LinearCosmology(cosmo).power(k) / p_ref - 1)) < 0.01
    # the baryon wiggles are there: P/P_nowiggle oscillates by more than 1 % around k ~ 0.1
    t_nw = colossus_ps.modelEisenstein98ZeroBaryon(k, cosmo.h, cosmo.Omega_m, cosmo.Omega_b, T_CMB)
    ratio = (eisenstein_hu_transfer(k, cosmo) / t_nw) ** 2
    sel = (k > 0.05) & (k < 0.3)
    assert np.ptp(ratio[sel]) > 0.02


@pytest.mark.parametrize("cosmo", COSMOLOGIES)
def test_sigma8_normalisation(cosmo):
    lin = LinearCosmology(cosmo)
    assert sigma_r(lin.power, 8.0) == pytest.approx(cosmo.sigma8, rel=1e-4)
    # independent quadrature on a fixed log grid
    k = np.logspace(-5, 3, 200001)
    x = k * 8.0
    w = 3 * (np.sin(x) - x * np.cos(x)) / x**3
    s2 = np.trapezoid(k**3 * lin.power(k) * w**2 / (2 * np.pi**2), np.log(k))
    assert np.sqrt(s2) == pytest.approx(cosmo.sigma8, rel=1e-4)


@pytest.mark.parametrize("cosmo", COSMOLOGIES)
def test_growth_matches_colossus_and_second_order(cosmo):
    lin = LinearCosmology(cosmo)
    z = np.linspace(0, 3, 61)
    a = 1 / (1 + z)
    d_ref = _colossus(cosmo).growthFactor(z)
    assert np.max(np.abs(lin.D1(a) / d_ref - 1)) < 1e-3
    assert lin.D1(1.0) == pytest.approx(1.0, abs=1e-12)
    # D2 ≈ −3/7 D1² Ω_m(a)^(−1/143) (Bouchet et al. 1995) to better than 1 %
    approx = -3 / 7 * lin.D1(a) ** 2 * lin.omega_m(a) ** (-1 / 143)
    assert np.max(np.abs(lin.D2(a) / approx - 1)) < 0.01
    # growth rates: f1 ≈ Ω_m^0.55 (Linder) to 1 %, and f = dlnD/dlna numerically
    assert np.max(np.abs(lin.f1(a) / lin.omega_m(a) ** 0.55 - 1)) < 0.01
    eps = 1e-4
    f_num = (np.log(lin.D1(a * np.exp(eps))) - np.log(lin.D1(a * np.exp(-eps)))) / (2 * eps)
    np.testing.assert_allclose(lin.f1(a), f_num, rtol=1e-6)


def test_particle_mass():
    lin = LinearCosmology(Cosmology())
    assert lin.particle_mass(256.0, 256) == pytest.approx(0.315 * 2.775e11, rel=1e-3)


@pytest.mark.parametrize("cosmo", COSMOLOGIES)
def test_growth_rate_matches_colossus(cosmo):
    """f1 = dln D1/dln a (the velocities' growth rate) against colossus' f = −(1+z) D'(z)/D to 1e-3 (the
    accuracy of colossus' interpolated D'(z), which oscillates by ~6e-4 about ours; ours matches the numerical
    derivative of D1 to 1e-6, see above);
    f2 ≈ 2 Ω_m(a)^(6/11) (Bouchet et al. 1995) to 2 %."""
    lin = LinearCosmology(cosmo)
    z = np.linspace(0, 3, 31)
    col = _colossus(cosmo)
    f_ref = -(1 + z) * col.growthFactor(z, derivative=1) / col.growthFactor(z)
    np.testing.assert_allclose(lin.f1(1 / (1 + z)), f_ref, rtol=1e-3)
    np.testing.assert_allclose(lin.f2(1 / (1 + z)), 2 * lin.omega_m(1 / (1 + z)) ** (6 / 11), rtol=0.02)
