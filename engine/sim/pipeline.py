"""The simulator's physics, stage by stage (no files: halopaint.simulation drives it and writes the output).

- `LptFields`: white noise → δ_L → φ1, φ2 → ψ1, ψ2 on the (r·N)³ lattice, once; then `at(a)` for any
  number of scale factors → this rank's x-slab of `/density` (ρ/ρ̄, CIC of the displaced lattice) and
  `/velocity` (mass-weighted CIC of the 2LPT particle velocities, km/s). Serial or slab-distributed
  over an MPI communicator: the same seed gives the same fields for any rank count (noise hashed per
  Fourier mode, same 1D FFTs, particles routed to the owner of their CIC planes).
- `nbody_initial_conditions`, `nbody_halos`: 2LPT ICs at a_initial → FastPM KDK → FoF (one process).

Velocities: v = a dx/dt = a H(a) [f1 D1 ψ1 + f2 D2 ψ2]; with H = 100 E(a) km/s per Mpc/h and ψ in
Mpc/h, v is in km/s. N-body momenta p = a² dx/dt [Mpc/h · H0] give v = 100 p / a km/s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from halopaint.log import progress
from halopaint.sim.assign import SlabMesh
from halopaint.sim.cosmology import LinearCosmology
from halopaint.sim.fof import HaloCatalog, fof_groups
from halopaint.sim.ics import linear_density_k
from halopaint.sim.lpt import Displacements, count_blocks, iterate_particles, potential_1lpt, potential_2lpt
from halopaint.sim.pm import run_pm
from halopaint.sim.slabfft import SlabFFT

#: km/s per (Mpc/h · H0): H0 = 100 h km/s/Mpc = 100 km/s per Mpc/h
KMS_PER_H0_MPC = 100.0


def velocity_factors(linear: LinearCosmology, a: float) -> tuple[float, float]:
    """(v1, v2) [km/s per Mpc/h]: v = v1 ψ1 + v2 ψ2 with v_i = 100 a E(a) f_i(a) D_i(a)."""
    ae = KMS_PER_H0_MPC * a * float(linear.efunc(a))
    return ae * float(linear.f1(a) * linear.D1(a)), ae * float(linear.f2(a) * linear.D2(a))


@dataclass
class SlabFields:
    """This rank's x-slab [g0, g1) of the output grid at one scale factor."""

    a: float
    g0: int
    g1: int
    density: np.ndarray          # (g1−g0, N, N) float32 ρ/ρ̄
    velocity: np.ndarray         # (3, g1−g0, N, N) float32 [km/s], components (x, y, z)


class LptFields:
    """2LPT of one seed on the (r·N)³ lattice, split over `comm` (None: one process).

    Building it does all the FFT work that does not depend on the redshift; `at(a)` then costs one
    pass of yz-transforms, particle routing and CIC. Collective: every rank calls the same methods.
    """

    def __init__(self, seed: int, grid: int, box_size: float, particles_per_voxel: int,
                 linear: LinearCosmology, comm=None, log: Callable[[str], None] | None = None,
                 chunk: int | None = None):
        log = log or (lambda _: None)
        self.grid, self.box_size, self.linear, self.comm = int(grid), float(box_size), linear, comm
        self.n_lat = int(particles_per_voxel) * self.grid
        self.fft = SlabFFT(self.n_lat, comm, chunk=chunk)
        fft = self.fft
        log(f"2LPT: white noise and δ_L on the {self.n_lat}³ lattice (ky rows [{fft.y0}, {fft.y1}) here)")
        delta = linear_density_k(seed, self.n_lat, self.box_size, linear, y_range=(fft.y0, fft.y1))
        phi1 = potential_1lpt(delta, fft, self.box_size)
        del delta
        log("2LPT: second-order potential")
        phi2 = potential_2lpt(phi1, fft, self.box_size)
        log("2LPT: displacement fields ψ1, ψ2")
        potentials = [phi1, phi2]
        del phi1, phi2
        self.disp = Displacements.consume(potentials, fft, self.box_size)

    def _steps(self) -> int:
        local = count_blocks(self.fft)
        if self.fft.comm is None:
            return local
        from mpi4py import MPI
        return int(self.fft.comm.allreduce(local, op=MPI.MAX))

    def at(self, a: float) -> SlabFields:
        """Density and velocity of this rank's output x-slab at scale factor a. Collective."""
        lin = self.linear
        d1, d2 = float(lin.D1(a)), float(lin.D2(a))
        v1, v2 = velocity_factors(lin, a)
        mesh = SlabMesh(self.grid, self.box_size, self.fft.comm)
        chunks = iterate_particles(self.disp, self.n_lat, self.box_size, d1, d2, v1, v2)
        empty = np.zeros((0, 3))
        steps = self._steps()
        for _ in progress(range(steps), total=steps, desc=f"CIC a={a:.3g}", unit="block"):
            pos, vel = next(chunks, (empty, empty))
            mesh.deposit(pos, vel)
        density, velocity = mesh.finish(self.n_lat**3)
        return SlabFields(a=a, g0=mesh.g0, g1=mesh.g1, density=density, velocity=velocity)


def lpt_density(seed: int, grid: int, box_size: float, particles_per_voxel: int,
                linear: LinearCosmology, a: float) -> np.ndarray:
    """Serial `/density` at scale factor a: (N, N, N) float32 ρ/ρ̄ (mean 1)."""
    return LptFields(seed, grid, box_size, particles_per_voxel, linear).at(a).density


def nbody_initial_conditions(seed: int, n_part: int, box_size: float, linear: LinearCosmology,
                             a: float) -> tuple[np.ndarray, np.ndarray]:
    """2LPT positions [Mpc/h] and momenta p = a² dx/dt [Mpc/h · H0] of n_part³ particles at a: (m, 3) f64."""
    fft = SlabFFT(n_part)
    phi1 = potential_1lpt(linear_density_k(seed, n_part, box_size, linear), fft, box_size)
    phi2 = potential_2lpt(phi1, fft, box_size)
    potentials = [phi1, phi2]
    del phi1, phi2
    disp = Displacements.consume(potentials, fft, box_size)
    d1, d2 = float(linear.D1(a)), float(linear.D2(a))
    g1 = float(a * a * linear.efunc(a) * linear.f1(a) * d1)
    g2 = float(a * a * linear.efunc(a) * linear.f2(a) * d2)
    pos, mom = zip(*iterate_particles(disp, n_part, box_size, d1, d2, g1, g2))
    return np.concatenate(pos), np.concatenate(mom)


@dataclass
class NbodyResult:
    """FoF catalogue (with mean member velocities [km/s]) and the N-body fields on the N³ output grid."""

    catalog: HaloCatalog
    density: np.ndarray          # (N, N, N) float32 CIC ρ/ρ̄ of the N-body particles
    velocity: np.ndarray         # (3, N, N, N) float32 mass-weighted CIC peculiar velocity [km/s]


def nbody_halos(seed: int, grid: int, box_size: float, linear: LinearCosmology, *, n_part: int,
                a_initial: float, a_final: float, pm_steps: int, mesh_factor: int, linking_length: float,
                min_particles: int, log: Callable[[str], None] | None = None) -> NbodyResult:
    """2LPT ICs → PM N-body → FoF (one process). linking_length in mean separations."""
    log = log or (lambda _: None)
    log(f"N-body: 2LPT initial conditions for {n_part}³ particles at a={a_initial}")
    pos, mom = nbody_initial_conditions(seed, n_part, box_size, linear, a_initial)
    n_mesh = mesh_factor * n_part
    log(f"N-body: {pm_steps} KDK steps on a {n_mesh}³ force mesh")
    pos, mom = run_pm(pos, mom, linear, box_size, a_initial, a_final, pm_steps, n_mesh, log)
    vel = mom
    vel *= KMS_PER_H0_MPC / a_final                # p = a² dx/dt → v = a dx/dt [km/s]
    mesh = SlabMesh(grid, box_size)
    mesh.deposit(pos, vel)
    density, velocity = mesh.finish(n_part**3)
    mp = linear.particle_mass(box_size, n_part)
    log(f"FoF: b={linking_length}, ≥{min_particles} particles, m_p={mp:.4g} M☉/h")
    catalog = fof_groups(pos, box_size, mp, linking_length * box_size / n_part, min_particles, vel=vel)
    log(f"FoF: {catalog.n_part.size} halos")
    return NbodyResult(catalog=catalog, density=density, velocity=velocity)
