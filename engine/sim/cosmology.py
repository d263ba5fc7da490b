"""Linear theory for the embedded simulator: Eisenstein & Hu (1998) P(k) and growth D1, D2.

Self-contained numpy/scipy (colossus is used only in the tests, as the cross-check).
Units: k [h/Mpc], P [(Mpc/h)³], R [Mpc/h], time in 1/H0. Flat ΛCDM without radiation
(E(a)² = Ω_m a⁻³ + 1 − Ω_m); the CMB temperature enters only the transfer function.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.integrate import quad, solve_ivp
from scipy.interpolate import CubicSpline

from halopaint.config import Cosmology

T_CMB = 2.7255                      # [K], as colossus' default
RHO_CRIT = 2.77536627e11            # critical density today [(M☉/h) / (Mpc/h)³]


def eisenstein_hu_transfer(k, cosmo: Cosmology, t_cmb: float = T_CMB) -> np.ndarray:
    """Eisenstein & Hu (1998) transfer function with baryon acoustic features.

    k: array [h/Mpc] → T(k), same shape, T → 1 as k → 0.
    """
    k = np.asarray(k, dtype=np.float64)
    h = cosmo.h
    om = cosmo.Omega_m * h**2
    ob = cosmo.Omega_b * h**2
    fb = cosmo.Omega_b / cosmo.Omega_m
    fc = 1.0 - fb
    theta = t_cmb / 2.7
    kmpc = k * h                                        # [1/Mpc]

    z_eq = 2.50e4 * om / theta**4
    k_eq = 7.46e-2 * om / theta**2
    b1 = 0.313 * om**-0.419 * (1.0 + 0.607 * om**0.674)
    b2 = 0.238 * om**0.223
    z_d = 1291.0 * om**0.251 / (1.0 + 0.659 * om**0.828) * (1.0 + b1 * ob**b2)
    r_d = 31.5 * ob / theta**4 / (z_d / 1e3)
    r_eq = 31.5 * ob / theta**4 / (z_eq / 1e3)
    s = (2.0 / (3.0 * k_eq) * np.sqrt(6.0 / r_eq)
         * np.log((np.sqrt(1.0 + r_d) + np.sqrt(r_d + r_eq)) / (1.0 + np.sqrt(r_eq))))
    k_silk = 1.6 * ob**0.52 * om**0.73 * (1.0 + (10.4 * om)**-0.95)
    q = kmpc / (13.41 * k_eq)

    a1 = (46.9 * om)**0.670 * (1.0 + (32.1 * om)**-0.532)
    a2 = (12.0 * om)**0.424 * (1.0 + (45.0 * om)**-0.582)
    alpha_c = a1**-fb * a2**-(fb**3)
    bb1 = 0.944 / (1.0 + (458.0 * om)**-0.708)
    bb2 = (0.395 * om)**-0.0266
    beta_c = 1.0 / (1.0 + bb1 * (fc**bb2 - 1.0))

    def t0_tilde(alpha, beta):
        log_term = np.log(np.e + 1.8 * beta * q)
        c = 14.2 / alpha + 386.0 / (1.0 + 69.9 * q**1.08)
        return log_term / (log_term + c * q * q)

    f = 1.0 / (1.0 + (kmpc * s / 5.4)**4)
    t_cdm = f * t0_tilde(1.0, beta_c) + (1.0 - f) * t0_tilde(alpha_c, beta_c)

    y = (1.0 + z_eq) / (1.0 + z_d)
    sq = np.sqrt(1.0 + y)
    g_y = y * (-6.0 * sq + (2.0 + 3.0 * y) * np.log((sq + 1.0) / (sq - 1.0)))
    alpha_b = 2.07 * k_eq * s * (1.0 + r_d)**-0.75 * g_y
    beta_b = 0.5 + fb + (3.0 - 2.0 * fb) * np.sqrt((17.2 * om)**2 + 1.0)
    beta_node = 8.41 * om**0.435
    with np.errstate(divide="ignore", invalid="ignore"):
        ks = kmpc * s
        s_tilde = s / (1.0 + (beta_node / ks)**3)**(1.0 / 3.0)
        kst = kmpc * s_tilde
        j0 = np.where(kst > 0, np.sin(kst) / np.where(kst > 0, kst, 1.0), 1.0)
        t_bar = (t0_tilde(1.0, 1.0) / (1.0 + (ks / 5.2)**2)
                 + alpha_b / (1.0 + (beta_b / ks)**3) * np.exp(-(kmpc / k_silk)**1.4)) * j0
    t_bar = np.where(k > 0, t_bar, 1.0)
    return fb * t_bar + fc * t_cdm


def tophat_window(x) -> np.ndarray:
    """Fourier transform of a unit real-space top hat, W(x) = 3 (sin x − x cos x)/x³."""
    x = np.asarray(x, dtype=np.float64)
    small = x < 1e-3
    xs = np.where(small, 1.0, x)
    return np.where(small, 1.0 - x**2 / 10.0, 3.0 * (np.sin(xs) - xs * np.cos(xs)) / xs**3)


def sigma_r(power, radius: float = 8.0) -> float:
    """σ(R) of a power spectrum `power(k)` [h/Mpc → (Mpc/h)³] in a top hat of radius R [Mpc/h]."""
    def integrand(lnk):
        k = np.exp(lnk)
        return k**3 * power(k) * tophat_window(k * radius)**2 / (2.0 * np.pi**2)
    value, _ = quad(integrand, np.log(1e-5), np.log(1e3), limit=2000, epsabs=0.0, epsrel=1e-10)
    return float(np.sqrt(value))


@dataclass(frozen=True)
class LinearCosmology:
    """Linear P(k, z) and growth functions of a flat ΛCDM cosmology.

    growth D1(a) is normalised to 1 at a = 1; D2 is the second-order growth (≈ −3/7 D1²), with the
    same normalisation (D2/D1² → −3/7 at early times). f1, f2 = dln D/dln a.
    """

    cosmo: Cosmology

    def efunc(self, a) -> np.ndarray:
        """E(a) = H(a)/H0."""
        a = np.asarray(a, dtype=np.float64)
        om = self.cosmo.Omega_m
        return np.sqrt(om * a**-3 + (1.0 - om))

    def omega_m(self, a) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        return self.cosmo.Omega_m * a**-3 / self.efunc(a)**2

    @cached_property
    def _growth_table(self):
        """Solve the D1, D2 ODEs in ln a from deep matter domination to a = 2."""
        om = self.cosmo.Omega_m
        a0 = 1e-4

        def rhs(lna, y):
            a = np.exp(lna)
            e2 = om * a**-3 + 1.0 - om
            dlnh = -1.5 * om * a**-3 / e2           # dln E / dln a
            omm = om * a**-3 / e2
            d1, d1p, d2, d2p = y
            return [d1p, -(2.0 + dlnh) * d1p + 1.5 * omm * d1,
                    d2p, -(2.0 + dlnh) * d2p + 1.5 * omm * (d2 - d1 * d1)]

        y0 = [a0, a0, -3.0 / 7.0 * a0**2, -6.0 / 7.0 * a0**2]
        lna = np.linspace(np.log(a0), np.log(2.0), 4001)
        sol = solve_ivp(rhs, (lna[0], lna[-1]), y0, t_eval=lna, method="DOP853", rtol=1e-11, atol=1e-20)
        d1, d1p, d2, d2p = sol.y
        norm = CubicSpline(lna, d1)(0.0)
        return (lna, CubicSpline(lna, d1 / norm), CubicSpline(lna, d1p / norm),
                CubicSpline(lna, d2 / norm**2), CubicSpline(lna, d2p / norm**2))

    def D1(self, a) -> np.ndarray:
        return self._growth_table[1](np.log(a))

    def D2(self, a) -> np.ndarray:
        return self._growth_table[3](np.log(a))

    def f1(self, a) -> np.ndarray:
        t = self._growth_table
        return t[2](np.log(a)) / t[1](np.log(a))

    def f2(self, a) -> np.ndarray:
        t = self._growth_table
        return t[4](np.log(a)) / t[3](np.log(a))

    def gp(self, a) -> np.ndarray:
        """g_p(a) = a³ E(a) dD1/da: the momentum p = a² dx/dt of a unit linear displacement."""
        a = np.asarray(a, dtype=np.float64)
        return a**2 * self.efunc(a) * self.f1(a) * self.D1(a)

    @cached_property
    def amplitude(self) -> float:
        """A of P(k) = A kⁿˢ T(k)², so that σ(8 Mpc/h) = σ8 at z = 0."""
        shape = lambda k: k**self.cosmo.n_s * eisenstein_hu_transfer(k, self.cosmo)**2
        return (self.cosmo.sigma8 / sigma_r(shape, 8.0))**2

    def power(self, k, a: float = 1.0) -> np.ndarray:
        """Linear matter P(k) [(Mpc/h)³] at scale factor a; P(0) = 0."""
        k = np.asarray(k, dtype=np.float64)
        kk = np.where(k > 0, k, 1.0)
        p = self.amplitude * kk**self.cosmo.n_s * eisenstein_hu_transfer(kk, self.cosmo)**2
        return np.where(k > 0, p, 0.0) * float(self.D1(a))**2

    def particle_mass(self, box_size: float, n_side: int) -> float:
        """Mass of one of n_side³ particles in a box of side box_size [Mpc/h] → [M☉/h]."""
        return self.cosmo.Omega_m * RHO_CRIT * (box_size / n_side)**3
