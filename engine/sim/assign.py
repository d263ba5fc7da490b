"""Mass-weighted CIC of particles onto an x-slab-distributed N³ grid: density ρ/ρ̄ and velocity.

Rank r owns the output x-planes [g0, g1) (halopaint.decomposition's split rule) and accumulates into a
buffer of g1 − g0 + 1 planes: (4, g1−g0+1, N, N) float64 = mass, mass·vx, mass·vy, mass·vz. Each
particle is sent to the rank that owns its lower CIC plane floor(x·N/L − ½) mod N (an `Alltoallv` in
which nearly every particle stays home and the rest go to the x-neighbours; nothing is gathered), so
its two CIC planes are the receiver's planes or the one just above them. After the last deposit the
extra plane is added into the right neighbour's first plane (periodic `Sendrecv`; alone: onto plane 0).

Velocity = Σ w m v / Σ w m per voxel (mass-weighted), 0 where a voxel received no mass.
Convention as grids.py: voxel i covers [iH, (i+1)H), CIC weights from the voxel centres (i+½)H.
"""

from __future__ import annotations

import numpy as np

from halopaint.sim.kernels import cic_paint_slab_kernel
from halopaint.sim.slabfft import split_bounds


class SlabMesh:
    """CIC accumulator of this rank's x-slab of the N³ output grid (comm None: one process, whole grid).

    with_velocity=False accumulates mass only (1 channel)."""

    def __init__(self, grid: int, box_size: float, comm=None, with_velocity: bool = True):
        self.n, self.box_size = int(grid), float(box_size)
        self.comm = comm if comm is not None and comm.Get_size() > 1 else None
        ranks = 1 if self.comm is None else self.comm.Get_size()
        self.rank = 0 if self.comm is None else self.comm.Get_rank()
        self.bounds = split_bounds(self.n, ranks)
        self.starts = np.array([b[0] for b in self.bounds], dtype=np.int64)
        self.g0, self.g1 = self.bounds[self.rank]
        self.channels = 4 if with_velocity else 1
        self.buf = np.zeros((self.channels, self.g1 - self.g0 + 1, self.n, self.n), dtype=np.float64)
        self.received = 0

    def owners(self, pos: np.ndarray) -> np.ndarray:
        """Rank owning each particle's lower CIC x-plane: (m,) int64 (same arithmetic as the kernel)."""
        u = pos[:, 0] * (self.n / self.box_size) - 0.5
        i0 = np.floor(u).astype(np.int64) % self.n
        return np.searchsorted(self.starts, i0, side="right") - 1

    def deposit(self, pos: np.ndarray, vel: np.ndarray | None = None) -> None:
        """Add particles pos (m, 3) [Mpc/h] in [0, L) with velocities vel (m, 3). Collective under MPI
        (every rank calls it the same number of times; m may be 0)."""
        pos = np.ascontiguousarray(pos, dtype=np.float64).reshape(-1, 3)
        if self.channels > 1:
            vel = np.ascontiguousarray(vel, dtype=np.float64).reshape(-1, 3)
        else:
            vel = np.zeros((pos.shape[0], 0))
        if self.comm is not None:
            pos, vel = self._route(pos, vel)
        outside = cic_paint_slab_kernel(self.buf, pos, vel, self.box_size, self.n, self.g0)
        self.received += pos.shape[0]
        if outside:
            raise RuntimeError(f"{outside} particles routed to rank {self.rank} fall outside its planes "
                               f"[{self.g0}, {self.g1}]")

    def _route(self, pos: np.ndarray, vel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from mpi4py import MPI
        comm, ranks = self.comm, self.comm.Get_size()
        width = 3 + vel.shape[1]
        dest = self.owners(pos)
        order = np.argsort(dest, kind="stable")
        send = np.empty((pos.shape[0], width), dtype=np.float64)
        send[:, :3] = pos[order]
        send[:, 3:] = vel[order]
        counts = np.bincount(dest, minlength=ranks).astype(np.int64)
        rcounts = np.empty(ranks, dtype=np.int64)
        comm.Alltoall(counts, rcounts)
        recv = np.empty((int(rcounts.sum()), width), dtype=np.float64)
        sc, rc = counts * width, rcounts * width
        sd = np.concatenate([[0], np.cumsum(sc)[:-1]])
        rd = np.concatenate([[0], np.cumsum(rc)[:-1]])
        comm.Alltoallv([send, (sc, sd), MPI.DOUBLE], [recv, (rc, rd), MPI.DOUBLE])
        return np.ascontiguousarray(recv[:, :3]), np.ascontiguousarray(recv[:, 3:])

    def finish(self, n_particles_total: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Fold the extra plane onto the right neighbour and normalise. Collective.

        → (density ρ/ρ̄ (g1−g0, N, N) float32 (mean 1 over the whole grid for n_particles_total
        particles), velocity (3, g1−g0, N, N) float32 in the deposited velocity's unit, or None)."""
        m = self.g1 - self.g0
        top = np.ascontiguousarray(self.buf[:, m])
        if self.comm is None:
            self.buf[:, 0] += top
        else:
            got = np.empty_like(top)
            ranks = self.comm.Get_size()
            self.comm.Sendrecv(top, dest=(self.rank + 1) % ranks, recvbuf=got, source=(self.rank - 1) % ranks)
            self.buf[:, 0] += got
        mass = self.buf[0, :m]
        density = (mass * (self.n**3 / float(n_particles_total))).astype(np.float32)
        velocity = None
        if self.channels > 1:
            safe = np.where(mass > 0, mass, 1.0)
            velocity = np.where(mass > 0, self.buf[1:, :m] / safe, 0.0).astype(np.float32)
        self.buf = None
        return density, velocity
