"""FastPM-style particle-mesh N-body (Feng et al. 2016): kick-drift-kick with growth-matched factors.

Variables (H0 = 1, lengths [Mpc/h]): comoving x, momentum p = a² dx/dt; dp/dt = −∇ϕ with
∇²ϕ = (3/2) Ω_m δ / a. The kick and drift factors make linear (Zel'dovich) growth exact for any step:
    drift a_s → a_e with p at a_r:  Δx = p · [D1(a_e) − D1(a_s)] / g_p(a_r)
    kick  a_s → a_e with F at a_r:  Δp = F · [g_p(a_e) − g_p(a_s)] / (1.5 Ω_m D1(a_r) / a_r)
with g_p = a³ E dD1/da. Forces: CIC density on an M³ mesh (M = mesh factor × particle lattice side),
ϕ̂ = −(3/2) Ω_m δ̂ / (a k²) (no window compensation), gradient by 4th-order central differences on
the mesh, CIC readout. Steps are uniform in a. Mesh buffers are allocated once per run.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.fft

from halopaint.sim.cosmology import LinearCosmology
from halopaint.sim.grids import cic_paint, cic_readout
from halopaint.sim.kernels import gradient_kernel
from halopaint.fourier import wavenumbers
from halopaint.sim.slabfft import fft_workers


def _add_shifted(out: np.ndarray, field: np.ndarray, shift: int, coeff: float, axis: int) -> None:
    """out += coeff · field(x + shift) along `axis` (periodic), without full-size temporaries."""
    n = field.shape[axis]
    s = shift % n

    def sl(a, start, stop):
        index = [slice(None)] * a.ndim
        index[axis] = slice(start, stop)
        return a[tuple(index)]
    # out[i] += c·field[(i + s) mod n]
    np.add(sl(out, 0, n - s), coeff * sl(field, s, n), out=sl(out, 0, n - s))
    if s:
        np.add(sl(out, n - s, n), coeff * sl(field, 0, s), out=sl(out, n - s, n))


def central_difference(field: np.ndarray, axis: int, spacing: float, out: np.ndarray) -> np.ndarray:
    """out ← ∂field/∂x_axis by the periodic 4th-order stencil [8(f₊₁ − f₋₁) − (f₊₂ − f₋₂)] / 12h.

    numpy reference of kernels.gradient_kernel (which returns −∇ for all three axes at once)."""
    out[...] = 0.0
    c = 1.0 / (12.0 * spacing)
    for shift, coeff in ((1, 8 * c), (-1, -8 * c), (2, -c), (-2, c)):
        _add_shifted(out, field, shift, coeff, axis)
    return out


class ForceMesh:
    """Reusable buffers and Green's function for PM forces on an M³ mesh."""

    def __init__(self, n_mesh: int, box_size: float):
        self.n = n_mesh
        self.box_size = box_size
        self.rho = np.zeros((n_mesh,) * 3, dtype=np.float64)
        self.real = np.empty((n_mesh,) * 3, dtype=np.float32)
        self.grad = np.empty((n_mesh,) * 3 + (3,), dtype=np.float32)
        kx = wavenumbers(n_mesh, box_size)
        kz = wavenumbers(n_mesh, box_size, real_last=True)
        self._k2_yz = (kx[:, None] ** 2 + kz[None, :] ** 2).astype(np.float32)
        self._kx2 = (kx ** 2).astype(np.float32)

    def potential(self, pos: np.ndarray, a: float, omega_m: float) -> np.ndarray:
        """ϕ (n_mesh³ float32) of particles pos (m, 3) [Mpc/h] at scale factor a.

        FFTs by scipy.fft (bit-identical for any thread count)."""
        n = self.n
        self.rho[...] = 0.0
        cic_paint(self.rho, pos, self.box_size)
        delta = self.real
        np.multiply(self.rho, n**3 / pos.shape[0], out=delta, casting="same_kind")
        delta -= 1.0
        spec = scipy.fft.rfftn(delta, workers=fft_workers())
        for i in range(n):                      # plane by plane: no full-size k² temporary
            k2 = self._kx2[i] + self._k2_yz
            k2[k2 == 0] = np.inf                # k = 0 mode → 0
            spec[i] *= (-1.5 * omega_m / a) / k2
        return scipy.fft.irfftn(spec, s=(n,) * 3, workers=fft_workers(), overwrite_x=True)

    def forces(self, pos: np.ndarray, a: float, omega_m: float) -> np.ndarray:
        """F = −∇ϕ at the particles: (m, 3) float64."""
        phi = self.potential(pos, a, omega_m)
        gradient_kernel(phi, self.box_size / self.n, self.grad)
        return cic_readout(self.grad, pos, self.box_size)


def kick_factor(linear: LinearCosmology, a_start: float, a_end: float, a_force: float) -> float:
    om = linear.cosmo.Omega_m
    return float((linear.gp(a_end) - linear.gp(a_start)) / (1.5 * om * linear.D1(a_force) / a_force))


def drift_factor(linear: LinearCosmology, a_start: float, a_end: float, a_mom: float) -> float:
    return float((linear.D1(a_end) - linear.D1(a_start)) / linear.gp(a_mom))


def run_pm(pos: np.ndarray, mom: np.ndarray, linear: LinearCosmology, box_size: float,
           a_start: float, a_end: float, n_steps: int, n_mesh: int,
           progress: Callable[[str], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Evolve particles from a_start to a_end in n_steps KDK steps (uniform in a).

    pos, mom: (m, 3) float64 [Mpc/h], [Mpc/h · H0], modified in place and returned; pos kept in [0, L).
    """
    om = linear.cosmo.Omega_m
    mesh = ForceMesh(n_mesh, box_size)
    steps = np.linspace(a_start, a_end, n_steps + 1)
    force = mesh.forces(pos, steps[0], om)
    for i in range(n_steps):
        a0, a1 = steps[i], steps[i + 1]
        ah = 0.5 * (a0 + a1)
        mom += kick_factor(linear, a0, ah, a0) * force
        pos += drift_factor(linear, a0, a1, ah) * mom
        np.mod(pos, box_size, out=pos)
        pos[pos >= box_size] = 0.0
        force = mesh.forces(pos, a1, om)
        mom += kick_factor(linear, ah, a1, a1) * force
        if progress:
            progress(f"PM step {i + 1}/{n_steps} a={a1:.3f}")
    return pos, mom
