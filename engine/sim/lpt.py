"""Second-order Lagrangian perturbation theory (2LPT) displacements.

x(q) = q + D1 ψ1(q) + D2 ψ2(q), with ψ1 = −∇φ1, ∇²φ1 = δ_L(q) (z = 0 linear density) and
ψ2 = +∇φ2, ∇²φ2 = Σ_{i<j} [φ1,ii φ1,jj − φ1,ij²] (Scoccimarro 1998; D2 ≈ −3/7 D1² carries the sign).
So the total displacement is −∇Φ with Φ = D1 φ1 − D2 φ2.

All fields live on an L³ lattice of side box_size [Mpc/h] in the numpy DFT convention (see ics.py).
The full-size allocations are explicit: computing the 2LPT source holds three (L, L, L//2+1) arrays,
displacements two, so a 1024³ lattice peaks near 13 GiB in float32/complex64.
"""

from __future__ import annotations

from typing import Iterator

import torch

from halopaint.sim.slabfft import (DEFAULT_CHUNK, chunk_planes, fft_x_inplace, ifft_x_inplace, irfft_yz,
                                rfft_yz, wavenumbers)


def _k_axes(n: int, box_size: float, dtype=torch.float32):
    """kx (n,1,1), ky (1,n,1), kz (1,1,n//2+1) [h/Mpc]."""
    kx = wavenumbers(n, box_size).to(dtype).reshape(n, 1, 1)
    ky = wavenumbers(n, box_size).to(dtype).reshape(1, n, 1)
    kz = wavenumbers(n, box_size, real_last=True).to(dtype).reshape(1, 1, n // 2 + 1)
    return kx, ky, kz


def divide_by_k2_inplace(a: torch.Tensor, box_size: float, chunk: int | None = DEFAULT_CHUNK) -> torch.Tensor:
    """a ← a / k² (and 0 at k = 0), chunked over x-planes. Returns a."""
    n = a.shape[0]
    chunk = chunk_planes(n, chunk)
    kx, ky, kz = _k_axes(n, box_size)
    kyz2 = ky * ky + kz * kz
    for i0 in range(0, n, chunk):
        k2 = kx[i0:i0 + chunk] ** 2 + kyz2
        a[i0:i0 + chunk] *= torch.where(k2 > 0, 1.0 / torch.where(k2 > 0, k2, 1.0), 0.0)
    return a


def potential_1lpt(delta_k: torch.Tensor, box_size: float, chunk: int | None = DEFAULT_CHUNK) -> torch.Tensor:
    """φ̂1 = −δ̂/k² (new tensor, same layout as delta_k)."""
    return divide_by_k2_inplace(-delta_k.clone(), box_size, chunk)


def source_2lpt(phi1_k: torch.Tensor, box_size: float, chunk: int | None = DEFAULT_CHUNK) -> torch.Tensor:
    """Real-space 2LPT source Σ_{i<j}[φ,ii φ,jj − φ,ij²] (L, L, L) float32 from φ̂1.

    Uses Σ_{i<j} φ,ii φ,jj = ½[(∇²φ)² − Σ_i φ,ii²], so every term is the square of one derivative
    field; the 7 fields are made in 4 passes that share their x-transform (multipliers that do not
    involve kx are applied after it). Peak memory: φ̂1 + one complex scratch + the real result.
    """
    n = phi1_k.shape[0]
    chunk = chunk_planes(n, chunk)
    kx, ky, kz = _k_axes(n, box_size)
    source = torch.zeros((n, n, n), dtype=torch.float32)
    # (multiplier applied before the x-transform, [(post-multiplier, weight), ...]); φ,ij ↔ −k_i k_j φ̂
    passes = [
        (lambda i0, i1: -(kx[i0:i1] ** 2 + ky * ky + kz * kz), [(None, 0.5)]),      # ∇²φ
        (lambda i0, i1: -(kx[i0:i1] ** 2), [(None, -0.5)]),                          # φ,xx
        (lambda i0, i1: -kx[i0:i1], [(ky, -1.0), (kz, -1.0)]),                       # φ,xy, φ,xz
        (None, [(ky * ky, -0.5), (kz * kz, -0.5), (ky * kz, -1.0)]),                 # φ,yy φ,zz φ,yz
    ]
    scratch = torch.empty_like(phi1_k)
    for pre, terms in passes:
        for i0 in range(0, n, chunk):
            i1 = min(n, i0 + chunk)
            scratch[i0:i1] = phi1_k[i0:i1] if pre is None else phi1_k[i0:i1] * pre(i0, i1)
        ifft_x_inplace(scratch, chunk)
        for i0 in range(0, n, chunk):
            i1 = min(n, i0 + chunk)
            for post, weight in terms:
                slab = scratch[i0:i1] if post is None else scratch[i0:i1] * post
                field = irfft_yz(slab, n)
                source[i0:i1] += weight * field * field
    del scratch
    return source


def potential_2lpt(phi1_k: torch.Tensor, box_size: float, chunk: int | None = DEFAULT_CHUNK) -> torch.Tensor:
    """φ̂2 = −FFT[source_2lpt]/k² (new tensor)."""
    source = source_2lpt(phi1_k, box_size, chunk)
    n = source.shape[0]
    chunk = chunk_planes(n, chunk)
    out = torch.empty_like(phi1_k)
    for i0 in range(0, n, chunk):
        out[i0:i0 + chunk] = rfft_yz(source[i0:i0 + chunk])
    del source
    fft_x_inplace(out, chunk)
    return divide_by_k2_inplace(out.neg_(), box_size, chunk)


def gradient_slabs(potential_k: torch.Tensor, box_size: float, chunk: int | None = DEFAULT_CHUNK,
                   overwrite: bool = False) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield (i0, i1, −∇Φ) for chunks of x-planes: (i1−i0, L, L, 3) float32 [Mpc/h].

    One extra complex array is allocated (the x-derivative); with overwrite=True `potential_k` is
    used as scratch and destroyed.
    """
    n = potential_k.shape[0]
    chunk = chunk_planes(n, chunk)
    kx, ky, kz = _k_axes(n, box_size)
    dx = torch.empty_like(potential_k)
    for i0 in range(0, n, chunk):
        dx[i0:i0 + chunk] = potential_k[i0:i0 + chunk] * (-1j * kx[i0:i0 + chunk])
    ifft_x_inplace(dx, chunk)
    rest = ifft_x_inplace(potential_k if overwrite else potential_k.clone(), chunk)
    for i0 in range(0, n, chunk):
        i1 = min(n, i0 + chunk)
        out = torch.empty((i1 - i0, n, n, 3), dtype=torch.float32)
        out[..., 0] = irfft_yz(dx[i0:i1], n)
        out[..., 1] = irfft_yz(rest[i0:i1] * (-1j * ky), n)
        out[..., 2] = irfft_yz(rest[i0:i1] * (-1j * kz), n)
        yield i0, i1, out


def lattice_positions(i0: int, i1: int, n: int, box_size: float) -> torch.Tensor:
    """Unperturbed lattice q = (i, j, l)·box/n for x-planes [i0, i1): (i1−i0, n, n, 3) float64 [Mpc/h]."""
    spacing = box_size / n
    ix = torch.arange(i0, i1, dtype=torch.float64) * spacing
    iy = torch.arange(n, dtype=torch.float64) * spacing
    gx, gy, gz = torch.meshgrid(ix, iy, iy, indexing="ij")
    return torch.stack([gx, gy, gz], dim=-1)
