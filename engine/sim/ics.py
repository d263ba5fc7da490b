"""Gaussian initial conditions: white noise → linear density δ_L(k) on a particle lattice.

The white noise is defined mode by mode in Fourier space by a counter-based hash of
(seed, integer wavevector n): mode n has the same value on every lattice that resolves it. So the
N-body lattice (P³) and the 2LPT lattice ((r·N)³) of one seed share all modes with |n_i| < L_min/2
exactly (the Nyquist planes of each lattice are set to zero), whatever the lattice sizes, thread count
or chunking. Each mode is g = √(−ln u₁) · exp(2πi u₂) (⟨|g|²⟩ = 1, Re and Im ~ N(0, ½)), Hermitian
symmetric in the kz = 0 plane, zero at k = 0.

Convention (Pylians / docs/formats.md): δ̂(n) = Σ_x δ(x) e^{−ik·x} (numpy DFT), so P(k) = V |δ̂|² / L⁶ and
δ̂(n) = g(n) · L³ · √(P_lin(k) / V).
"""

from __future__ import annotations

import numpy as np
import torch

from halopaint.sim.cosmology import LinearCosmology
from halopaint.sim.kernels import white_noise_kernel
from halopaint.sim.slabfft import DEFAULT_CHUNK, chunk_planes

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_OFFSET = 1 << 20                   # wavevector components are stored as n + 2^20 in 21 bits
MAX_LATTICE = 1 << 20


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (uint64 → uint64, wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _unit_interval(h: np.ndarray) -> np.ndarray:
    """uint64 → float64 uniform in (0, 1] from the top 53 bits."""
    return ((h >> np.uint64(11)).astype(np.float64) + 1.0) * (1.0 / 9007199254740992.0)


def _seed_state(seed: int) -> np.uint64:
    with np.errstate(over="ignore"):
        return _mix64(np.array([seed], dtype=np.uint64) ^ np.uint64(0x5EED5EED5EED5EED))[0]


def white_noise_modes(seed: int, nx: np.ndarray, ny: np.ndarray, nz: np.ndarray) -> np.ndarray:
    """Complex unit white-noise value of each integer wavevector (broadcast arrays) → complex128.

    Hermitian: value(−n) = conj(value(n)); value(0) = 0. numpy reference of kernels.white_noise_kernel.
    """
    nx, ny, nz = np.broadcast_arrays(np.asarray(nx, np.int64), np.asarray(ny, np.int64),
                                     np.asarray(nz, np.int64))
    flip = (nz < 0) | ((nz == 0) & ((ny < 0) | ((ny == 0) & (nx < 0))))
    sign = np.where(flip, -1, 1)
    cx, cy, cz = (sign * nx + _OFFSET).astype(np.uint64), (sign * ny + _OFFSET).astype(np.uint64), \
        (sign * nz + _OFFSET).astype(np.uint64)
    index = (cx << np.uint64(42)) | (cy << np.uint64(21)) | cz
    with np.errstate(over="ignore"):
        base = _seed_state(seed) + (index << np.uint64(1)) * _GAMMA
        u1 = _unit_interval(_mix64(base))
        u2 = _unit_interval(_mix64(base + _GAMMA))
    phase = 2.0 * np.pi * u2
    r = np.sqrt(-np.log(u1))
    r[(nx == 0) & (ny == 0) & (nz == 0)] = 0.0
    g = np.empty(r.shape, dtype=np.complex128)
    g.real = r * np.cos(phase)
    g.imag = np.where(flip, -r, r) * np.sin(phase)
    return g


def _lattice_integers(n: int):
    """Signed integer wavevector components of an n-point axis (fft order) and the rfft half-axis."""
    full = np.fft.fftfreq(n, d=1.0 / n).round().astype(np.int64)
    half = np.arange(n // 2 + 1, dtype=np.int64)
    return full, half


def _sqrt_power_interpolator(linear: LinearCosmology, k_min: float, k_max: float):
    """√P_lin(k) by log-log interpolation on 8192 nodes (relative error < 1e-6 on these smooth P)."""
    lnk = np.linspace(np.log(k_min * 0.99), np.log(k_max), 8192)
    ln_sqrt_p = 0.5 * np.log(linear.power(np.exp(lnk)))

    def amplitude(k):
        kk = np.where(k > 0, k, k_min)
        return np.where(k > 0, np.exp(np.interp(np.log(kk), lnk, ln_sqrt_p)), 0.0)
    return amplitude


def linear_density_k(seed: int, n: int, box_size: float, linear: LinearCosmology,
                     chunk: int | None = DEFAULT_CHUNK) -> torch.Tensor:
    """δ̂_L(n) at z = 0 on an n³ lattice: (n, n, n//2+1) complex64 torch tensor (numpy DFT convention).

    Modes on any Nyquist plane (|n_i| = n/2, n even) are zero; everything else is a pure function of
    (seed, integer wavevector), independent of n for the shared modes.
    """
    if n > MAX_LATTICE:
        raise ValueError(f"lattice of {n} per side is beyond the noise generator's 2^20 limit")
    full, half = _lattice_integers(n)
    chunk = chunk_planes(n, chunk)
    volume = box_size**3
    kf = 2.0 * np.pi / box_size
    amplitude = _sqrt_power_interpolator(linear, kf, kf * n * np.sqrt(3.0) / 2.0 * 1.01)
    out = torch.empty((n, n, n // 2 + 1), dtype=torch.complex64)
    ny, nz = full[None, :, None], half[None, None, :]
    state = _seed_state(seed)
    nyquist_yz = (np.abs(ny) * 2 == n) | (nz * 2 == n)
    for i0 in range(0, n, chunk):
        nx = full[i0:i0 + chunk, None, None]
        g = np.empty((nx.size, n, n // 2 + 1), dtype=np.complex128)
        white_noise_kernel(state, nx.ravel(), full, half, g)
        k = kf * np.sqrt(nx * nx + ny * ny + nz * nz)
        amp = n**3 / np.sqrt(volume) * amplitude(k)
        zero = nyquist_yz | (np.abs(nx) * 2 == n)
        out[i0:i0 + chunk] = torch.from_numpy(np.where(zero, 0.0, g * amp).astype(np.complex64))
    return out
