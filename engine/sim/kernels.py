"""Compiled (numba) particle–mesh loops of the simulator; numpy references live in grids.py / pm.py.

- `cic_paint_kernel`: serial loop in particle order, float64 accumulation → bit-reproducible.
- `cic_readout_kernel`, `gradient_kernel`: parallel over particles / x-planes, but each output element
  is computed by one thread in a fixed order, so results do not depend on the thread count.
Same CIC convention as grids.py: voxel i covers [iH, (i+1)H), weights from the voxel centres.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, fastmath=False)
def _corner(x, n, scale):
    u = x * scale - 0.5
    b = np.floor(u)
    f = u - b
    i0 = int(b)
    if i0 < 0:
        i0 += n
    elif i0 >= n:
        i0 -= n
    i1 = i0 + 1
    if i1 >= n:
        i1 -= n
    return i0, i1, f


@numba.njit(cache=True)
def cic_paint_kernel(grid, pos, box_size, weight):
    """grid (n, n, n) float64 += CIC of pos (m, 3) float64 [Mpc/h], mass `weight` each."""
    n = grid.shape[0]
    scale = n / box_size
    for p in range(pos.shape[0]):
        ix0, ix1, fx = _corner(pos[p, 0], n, scale)
        iy0, iy1, fy = _corner(pos[p, 1], n, scale)
        iz0, iz1, fz = _corner(pos[p, 2], n, scale)
        gx, gy, gz = 1.0 - fx, 1.0 - fy, 1.0 - fz
        grid[ix0, iy0, iz0] += weight * gx * gy * gz
        grid[ix0, iy0, iz1] += weight * gx * gy * fz
        grid[ix0, iy1, iz0] += weight * gx * fy * gz
        grid[ix0, iy1, iz1] += weight * gx * fy * fz
        grid[ix1, iy0, iz0] += weight * fx * gy * gz
        grid[ix1, iy0, iz1] += weight * fx * gy * fz
        grid[ix1, iy1, iz0] += weight * fx * fy * gz
        grid[ix1, iy1, iz1] += weight * fx * fy * fz


@numba.njit(cache=True, parallel=True)
def cic_readout_kernel(grid, pos, box_size, out):
    """out (m, c) float64 ← CIC interpolation of grid (n, n, n, c) at pos (m, 3) [Mpc/h]."""
    n = grid.shape[0]
    nc = grid.shape[3]
    scale = n / box_size
    for p in numba.prange(pos.shape[0]):
        ix0, ix1, fx = _corner(pos[p, 0], n, scale)
        iy0, iy1, fy = _corner(pos[p, 1], n, scale)
        iz0, iz1, fz = _corner(pos[p, 2], n, scale)
        gx, gy, gz = 1.0 - fx, 1.0 - fy, 1.0 - fz
        for c in range(nc):
            out[p, c] = (gx * gy * gz * grid[ix0, iy0, iz0, c] + gx * gy * fz * grid[ix0, iy0, iz1, c]
                         + gx * fy * gz * grid[ix0, iy1, iz0, c] + gx * fy * fz * grid[ix0, iy1, iz1, c]
                         + fx * gy * gz * grid[ix1, iy0, iz0, c] + fx * gy * fz * grid[ix1, iy0, iz1, c]
                         + fx * fy * gz * grid[ix1, iy1, iz0, c] + fx * fy * fz * grid[ix1, iy1, iz1, c])


@numba.njit(cache=True, parallel=True)
def gradient_kernel(phi, spacing, out):
    """out (n, n, n, 3) float32 ← −∇phi by the periodic 4th-order central difference
    [8(f₊₁ − f₋₁) − (f₊₂ − f₋₂)] / 12h (the force of potential phi)."""
    n = phi.shape[0]
    c = 1.0 / (12.0 * spacing)
    for i in numba.prange(n):
        ip1, im1, ip2, im2 = (i + 1) % n, (i - 1) % n, (i + 2) % n, (i - 2) % n
        for j in range(n):
            jp1, jm1, jp2, jm2 = (j + 1) % n, (j - 1) % n, (j + 2) % n, (j - 2) % n
            for k in range(n):
                kp1, km1, kp2, km2 = (k + 1) % n, (k - 1) % n, (k + 2) % n, (k - 2) % n
                out[i, j, k, 0] = -c * (8.0 * (phi[ip1, j, k] - phi[im1, j, k]) - (phi[ip2, j, k] - phi[im2, j, k]))
                out[i, j, k, 1] = -c * (8.0 * (phi[i, jp1, k] - phi[i, jm1, k]) - (phi[i, jp2, k] - phi[i, jm2, k]))
                out[i, j, k, 2] = -c * (8.0 * (phi[i, j, kp1] - phi[i, j, km1]) - (phi[i, j, kp2] - phi[i, j, km2]))


@numba.njit(cache=True, inline="always")
def _mix64(x):
    x ^= x >> numba.uint64(30)
    x *= numba.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> numba.uint64(27)
    x *= numba.uint64(0x94D049BB133111EB)
    return x ^ (x >> numba.uint64(31))


@numba.njit(cache=True, parallel=True)
def white_noise_kernel(state, nx, ny, nz, out):
    """out[i, j, l] ← unit complex white noise of wavevector (nx[i], ny[j], nz[l]) (see ics.white_noise_modes,
    the numpy reference with the identical integer hash). Each element is independent: thread-safe and
    thread-count independent."""
    gamma = numba.uint64(0x9E3779B97F4A7C15)
    offset = 1 << 20
    for i in numba.prange(nx.size):
        for j in range(ny.size):
            for l in range(nz.size):
                x, y, z = nx[i], ny[j], nz[l]
                flip = z < 0 or (z == 0 and (y < 0 or (y == 0 and x < 0)))
                s = -1 if flip else 1
                index = ((numba.uint64(s * x + offset) << numba.uint64(42))
                         | (numba.uint64(s * y + offset) << numba.uint64(21)) | numba.uint64(s * z + offset))
                base = state + (index << numba.uint64(1)) * gamma
                u1 = (float(_mix64(base) >> numba.uint64(11)) + 1.0) * (1.0 / 9007199254740992.0)
                u2 = (float(_mix64(base + gamma) >> numba.uint64(11)) + 1.0) * (1.0 / 9007199254740992.0)
                r = np.sqrt(-np.log(u1))
                if x == 0 and y == 0 and z == 0:
                    r = 0.0
                phase = 2.0 * np.pi * u2
                out[i, j, l] = complex(r * np.cos(phase), (-r if flip else r) * np.sin(phase))


@numba.njit(cache=True)
def cic_paint_slab_kernel(grid, pos, vel, box_size, n, x_origin):
    """Mass (and momentum) CIC of particles into an x-slab buffer of a periodic n³ grid.

    grid (c, m, n, n) float64 holds global x-planes x_origin … x_origin+m−1 (mod n); c = 1 (mass) or
    1 + vel.shape[1] (mass, then mass × each velocity component). pos (p, 3) [Mpc/h] in [0, L); vel (p, d).
    Serial loop in particle order, float64 accumulation (bit-reproducible). → number of particles whose
    CIC planes fall outside the buffer (they are skipped; the caller treats > 0 as an error).
    """
    m = grid.shape[1]
    nc = grid.shape[0]
    scale = n / box_size
    outside = 0
    for p in range(pos.shape[0]):
        ix0, ix1, fx = _corner(pos[p, 0], n, scale)
        lx0 = ix0 - x_origin
        if lx0 < 0:
            lx0 += n
        if lx0 + 1 >= m:
            outside += 1
            continue
        lx1 = lx0 + 1
        iy0, iy1, fy = _corner(pos[p, 1], n, scale)
        iz0, iz1, fz = _corner(pos[p, 2], n, scale)
        gx, gy, gz = 1.0 - fx, 1.0 - fy, 1.0 - fz
        for cx in range(2):
            lx = lx0 if cx == 0 else lx1
            wx = gx if cx == 0 else fx
            for cy in range(2):
                iy = iy0 if cy == 0 else iy1
                wxy = wx * (gy if cy == 0 else fy)
                for cz in range(2):
                    iz = iz0 if cz == 0 else iz1
                    w = wxy * (gz if cz == 0 else fz)
                    grid[0, lx, iy, iz] += w
                    for c in range(1, nc):
                        grid[c, lx, iy, iz] += w * vel[p, c - 1]
    return outside
