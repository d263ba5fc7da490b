"""Second-order Lagrangian perturbation theory (2LPT) displacements, serial or slab-distributed.

x(q) = q + D1 ψ1(q) + D2 ψ2(q), with ψ1 = −∇φ1, ∇²φ1 = δ_L(q) (z = 0 linear density) and
ψ2 = +∇φ2, ∇²φ2 = Σ_{i<j} [φ1,ii φ1,jj − φ1,ij²] (Scoccimarro 1998; D2 ≈ −3/7 D1² carries the sign).
Peculiar velocity v = a dx/dt = a H (f1 D1 ψ1 + f2 D2 ψ2) (f_i = dln D_i/dln a).

All fields live on an n³ lattice of side box_size [Mpc/h] in the numpy DFT convention (see ics.py),
split over the ranks of a `SlabFFT`: spectra are y-slabs (n, ny, n//2+1) complex64, real fields x-slabs
(nx, n, n) float32. Every function is collective over the SlabFFT's communicator (or serial without one).

Memory per rank, in units of one complex64 slab C ≈ 4 B per lattice site / R: `potential_2lpt` holds
φ̂1 + one transposed scratch + the real source (≈ 3C); `Displacements` holds four x-slabs (4C, 5C while
they are made) — the peak of the simulator, see halopaint.simulation.lpt_plan_bytes.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from halopaint.fourier import k_axes
from halopaint.sim.slabfft import SlabFFT


def _axes(fft: SlabFFT, box_size: float):
    """kx (n,1,1), ky of this rank's y-slab (1,ny,1), kz (1,1,nh) float32 [h/Mpc], and full ky (1,n,1)."""
    kx, ky, kz = k_axes(fft.n, box_size, y_range=(fft.y0, fft.y1))
    ky_full = k_axes(fft.n, box_size)[1]
    return kx, ky, kz, ky_full


def divide_by_k2_inplace(a: np.ndarray, fft: SlabFFT, box_size: float) -> np.ndarray:
    """y-slab spectrum a ← a / k² (0 at k = 0), chunked over x-planes. Returns a."""
    kx, ky, kz, _ = _axes(fft, box_size)
    kyz2 = ky * ky + kz * kz
    for i0, i1 in _spectral_chunks(fft):
        k2 = kx[i0:i1] ** 2 + kyz2
        a[i0:i1] *= np.where(k2 > 0, 1.0 / np.where(k2 > 0, k2, 1.0), 0.0).astype(np.float32)
    return a


def _spectral_chunks(fft: SlabFFT) -> list[tuple[int, int]]:
    from halopaint.sim.slabfft import chunk_planes
    step = chunk_planes(fft.n, fft.chunk, cross_section=max(1, fft.ny) * fft.nh)
    return [(i, min(fft.n, i + step)) for i in range(0, fft.n, step)]


def potential_1lpt(delta_k: np.ndarray, fft: SlabFFT, box_size: float) -> np.ndarray:
    """φ̂1 = −δ̂/k² (new array, same y-slab layout as delta_k)."""
    return divide_by_k2_inplace(-delta_k, fft, box_size)


def source_2lpt(phi1_k: np.ndarray, fft: SlabFFT, box_size: float) -> np.ndarray:
    """Real-space 2LPT source Σ_{i<j}[φ,ii φ,jj − φ,ij²] from φ̂1: x-slab (nx, n, n) float32.

    Uses Σ_{i<j} φ,ii φ,jj = ½[(∇²φ)² − Σ_i φ,ii²], so every term is the square of one derivative
    field; the 7 fields are made in 4 passes that share their x-transform (multipliers that do not
    involve kx are applied after it, on the x-slab where ky is whole).
    """
    kx, ky, kz, kyf = _axes(fft, box_size)
    source = np.zeros(fft.real_shape, dtype=np.float32)
    # (multiplier before the x-transform, [(post-multiplier on the x-slab, weight), ...]); φ,ij ↔ −k_i k_j φ̂
    passes = [
        (lambda c0, c1: -(kx ** 2 + ky * ky + kz[..., c0:c1] ** 2), [(None, 0.5)]),          # ∇²φ
        (lambda c0, c1: -(kx ** 2), [(None, -0.5)]),                                          # φ,xx
        (lambda c0, c1: -kx, [(kyf, -1.0), (kz, -1.0)]),                                      # φ,xy, φ,xz
        (None, [(kyf * kyf, -0.5), (kz * kz, -0.5), (kyf * kz, -1.0)]),                       # φ,yy φ,zz φ,yz
    ]
    for pre, terms in passes:
        half = fft.backward_x(phi1_k, pre)
        for i0, i1 in fft.plane_chunks():
            for post, weight in terms:
                slab = half[i0:i1] if post is None else half[i0:i1] * post
                field = fft.irfft_yz(slab)
                source[i0:i1] += weight * field * field
        del half
    return source


def potential_2lpt(phi1_k: np.ndarray, fft: SlabFFT, box_size: float) -> np.ndarray:
    """φ̂2 = −FFT[source_2lpt]/k² (new y-slab array)."""
    source = source_2lpt(phi1_k, fft, box_size)
    half = fft.rfft_yz_slab(source)
    del source                                   # peak φ̂1 + 2 complex slabs, not + the real source too
    out = fft.forward_x(half)
    del half
    np.negative(out, out=out)
    return divide_by_k2_inplace(out, fft, box_size)


class Displacements:
    """ψ1 = −∇φ1 and ψ2 = +∇φ2 of one lattice, ready to be evaluated slab chunk by slab chunk.

    Holds, per potential, the x-slabs of ifft_x(−i kx φ̂) and ifft_x(φ̂) ((nx, n, nh) complex64 each);
    `chunk(i0, i1)` finishes the transforms for local x-planes [i0, i1) → (ψ1, ψ2), each
    (i1−i0, n, n, 3) float32 [Mpc/h]. Independent of redshift: one instance serves every output z.
    `phi1_k` / `phi2_k` may be deleted by the caller once this is built.
    """

    def __init__(self, phi1_k: np.ndarray, phi2_k: np.ndarray | None, fft: SlabFFT, box_size: float):
        self._build([phi1_k, phi2_k], fft, box_size)

    @classmethod
    def consume(cls, potentials: list, fft: SlabFFT, box_size: float) -> "Displacements":
        """Build from [φ̂1, φ̂2 or None], emptying the list as each potential is used, so that a caller
        holding no other reference frees φ̂1 before φ̂2's x-slabs are made (peak 5C instead of 6C)."""
        self = cls.__new__(cls)
        self._build(potentials, fft, box_size)
        return self

    def _build(self, potentials: list, fft: SlabFFT, box_size: float) -> None:
        self.fft = fft
        kx, _, kz, kyf = _axes(fft, box_size)
        self._ky, self._kz = -1j * kyf, -1j * kz
        ikx = lambda c0, c1: (-1j * kx).astype(np.complex64)
        phi = potentials[0]
        potentials[0] = None
        self._x1, self._r1 = fft.backward_x(phi, ikx), fft.backward_x(phi)
        del phi
        self._x2 = self._r2 = None
        phi = potentials[1]
        potentials[1] = None
        if phi is not None:
            self._x2, self._r2 = fft.backward_x(phi, ikx), fft.backward_x(phi)

    def _grad(self, dx, rest, i0, i1) -> np.ndarray:
        fft = self.fft
        out = np.empty((i1 - i0, fft.n, fft.n, 3), dtype=np.float32)
        out[..., 0] = fft.irfft_yz(dx[i0:i1])
        out[..., 1] = fft.irfft_yz(rest[i0:i1] * self._ky)
        out[..., 2] = fft.irfft_yz(rest[i0:i1] * self._kz)
        return out

    def chunk(self, i0: int, i1: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(ψ1, ψ2) of local x-planes [i0, i1): −∇φ1 and +∇φ2, (i1−i0, n, n, 3) float32 [Mpc/h]."""
        psi1 = self._grad(self._x1, self._r1, i0, i1)
        if self._x2 is None:
            return psi1, None
        psi2 = self._grad(self._x2, self._r2, i0, i1)
        np.negative(psi2, out=psi2)
        return psi1, psi2


def lattice_positions(i0: int, i1: int, n: int, box_size: float, rows: tuple[int, int] | None = None) -> np.ndarray:
    """Unperturbed lattice q = (i, j, l)·box/n for global x-planes [i0, i1) (and y-rows [j0, j1)):
    (i1−i0, j1−j0, n, 3) float64 [Mpc/h]."""
    spacing = box_size / n
    j0, j1 = (0, n) if rows is None else rows
    ix = np.arange(i0, i1, dtype=np.float64) * spacing
    iy = np.arange(j0, j1, dtype=np.float64) * spacing
    iz = np.arange(n, dtype=np.float64) * spacing
    gx, gy, gz = np.meshgrid(ix, iy, iz, indexing="ij")
    return np.stack([gx, gy, gz], axis=-1)


#: particles per CIC block: bounds the per-block temporaries (≈ 300 B per particle) for any lattice size
PARTICLE_BLOCK = 1 << 18


def particle_blocks(fft: SlabFFT, block: int = PARTICLE_BLOCK) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """This rank's lattice particles in blocks of ≤ max(block, n) particles: [(i0, i1, [(j0, j1), ...])]
    = local x-plane chunks [i0, i1) (ψ is evaluated per chunk: 24 B × (i1−i0)·n²) and their y-row blocks."""
    n = fft.n
    planes = max(1, block // (n * n))
    rows = n if planes > 1 else max(1, block // n)
    return [(i0, min(fft.nx, i0 + planes), [(j, min(n, j + rows)) for j in range(0, n, rows)])
            for i0 in range(0, fft.nx, planes)]


def count_blocks(fft: SlabFFT, block: int = PARTICLE_BLOCK) -> int:
    """Number of blocks `iterate_particles` yields on this rank."""
    return sum(len(rows) for _, _, rows in particle_blocks(fft, block))


def iterate_particles(disp: Displacements, n: int, box_size: float, d1: float, d2: float,
                      v1: float, v2: float, block: int = PARTICLE_BLOCK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Positions [Mpc/h] in [0, L) and velocities of this rank's lattice particles, block by block:
    x = q + d1 ψ1 + d2 ψ2, v = v1 ψ1 + v2 ψ2 (v1 = a H f1 D1 etc. in the caller's velocity unit per
    Mpc/h). Yields (pos (m, 3) float64, vel (m, 3) float64), count_blocks(disp.fft, block) times,
    in lattice order (x-plane, then y, then z)."""
    fft = disp.fft
    for i0, i1, rows in particle_blocks(fft, block):
        psi1, psi2 = disp.chunk(i0, i1)
        for j0, j1 in rows:
            p1 = psi1[:, j0:j1].astype(np.float64)
            q = lattice_positions(fft.x0 + i0, fft.x0 + i1, n, box_size, rows=(j0, j1))
            pos = q + d1 * p1
            vel = v1 * p1
            if psi2 is not None:
                p2 = psi2[:, j0:j1].astype(np.float64)
                pos += d2 * p2
                vel += v2 * p2
            pos = pos.reshape(-1, 3)
            np.mod(pos, box_size, out=pos)
            pos[pos >= box_size] = 0.0
            yield pos, vel.reshape(-1, 3)
