"""The embedded simulator: one seed → 2LPT density (the painter's input) + PM N-body FoF halo counts.

Pipeline (`simulate`): Eisenstein–Hu linear P(k) → hashed Fourier white noise → δ_L on the 2LPT lattice
((r·N)³) → 2LPT → CIC `/density` on N³; unless lpt_only: δ_L from the same noise on the N-body lattice
(P³) → 2LPT ICs at a_initial → FastPM KDK to a(z) → FoF → NGP `/halos` per mass bin + `/catalog`
(pos [Mpc/h], mass [M☉/h], n_part) + `/nbody_density` (CIC ρ/ρ̄ of the N-body particles, for validation).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict

import numpy as np
import torch

from halopaint.config import DensityRecipe, SimulateConfig
from halopaint.errors import HalopaintError
from halopaint.fields import atomic_h5, check_writable, standard_attrs
from halopaint.sim.cosmology import LinearCosmology
from halopaint.sim.fof import HaloCatalog, fof_groups
from halopaint.sim.grids import cic_paint, ngp_counts
from halopaint.sim.ics import MAX_LATTICE, linear_density_k
from halopaint.sim.lpt import (gradient_slabs, divide_by_k2_inplace, lattice_positions, potential_1lpt,
                            potential_2lpt)
from halopaint.sim.pm import run_pm

__all__ = ["simulate", "lpt_density", "nbody_halos", "nbody_initial_conditions", "validate_config",
           "check_memory", "density_recipe", "lpt_peak_bytes", "nbody_peak_bytes"]


class Progress:
    """Progress lines on stderr with elapsed seconds (quiet=True: silent)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[simulate {time.perf_counter() - self.t0:7.1f}s] {message}", file=sys.stderr, flush=True)


def density_recipe(config: SimulateConfig) -> DensityRecipe:
    """The one recipe for `/density` (see DensityRecipe)."""
    return DensityRecipe(method="2lpt", particles_per_voxel=config.lpt_particles_per_voxel, assignment="cic")


def lpt_peak_bytes(lattice: int, grid: int) -> int:
    """Rough peak memory of `lpt_density`: three complex64 half-spectra of the lattice + the float64 grid."""
    return 3 * lattice * lattice * (lattice // 2 + 1) * 8 + grid**3 * 8 + (512 << 20)


def nbody_peak_bytes(n_particles: int, n_mesh: int) -> int:
    """Rough peak memory of the N-body + FoF stage."""
    per_particle = 2 * 3 * 8 + 3 * 8 + 64          # pos, mom (f64), force, corner temporaries / FoF
    mesh = n_mesh**3 * (8 + 4 + 4 + 4 * 3) + n_mesh * n_mesh * (n_mesh // 2 + 1) * 8
    return n_particles**3 * per_particle + mesh + (512 << 20)


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise HalopaintError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def validate_config(config: SimulateConfig) -> None:
    """Refuse an impossible configuration with a one-line HalopaintError (before any work)."""
    _positive_int(config.grid, "--grid", 8)
    if not (isinstance(config.box_size, (int, float)) and math.isfinite(config.box_size)
            and config.box_size > 0):
        raise HalopaintError(f"--box must be a positive box side in Mpc/h, got {config.box_size!r}")
    _positive_int(config.seed, "--seed", 0)
    if config.seed >= 2**63:
        raise HalopaintError(f"--seed must be < 2^63, got {config.seed}")
    r = _positive_int(config.lpt_particles_per_voxel, "--lpt-particles-per-voxel", 1)
    if r * config.grid > MAX_LATTICE:
        raise HalopaintError(f"2LPT lattice {r * config.grid}³ exceeds the supported {MAX_LATTICE}³")
    p = _positive_int(config.n_particles_side, "--particles-per-side", 1)
    if p < config.grid:
        raise HalopaintError(f"--particles-per-side ({p}) must be ≥ --grid ({config.grid})")
    _positive_int(config.pm_steps, "--pm-steps", 1)
    _positive_int(config.pm_mesh_factor, "pm_mesh_factor", 1)
    _positive_int(config.fof_min_particles, "fof_min_particles", 2)
    if not (math.isfinite(config.redshift) and config.redshift >= 0):
        raise HalopaintError(f"--redshift must be ≥ 0, got {config.redshift}")
    a_final = 1.0 / (1.0 + config.redshift)
    if not (0 < config.a_initial < a_final):
        raise HalopaintError(f"a_initial ({config.a_initial}) must lie in (0, 1/(1+z) = {a_final:.4g})")
    if not (0 < config.fof_linking_length < 1):
        raise HalopaintError(f"FoF linking length must be in (0, 1) mean separations, got "
                             f"{config.fof_linking_length}")
    edges = np.asarray(config.mass_bin_edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2:
        raise HalopaintError(f"--mass-bin-edges needs at least two edges, got {list(config.mass_bin_edges)}")
    if not np.all(np.isfinite(edges)) or np.any(edges <= 0):
        raise HalopaintError(f"--mass-bin-edges must be positive masses in M☉/h, got {edges.tolist()}")
    if np.any(np.diff(edges) <= 0):
        raise HalopaintError(f"--mass-bin-edges must be strictly increasing, got {edges.tolist()}")
    c = config.cosmology
    values = asdict(c)
    if not all(math.isfinite(v) for v in values.values()):
        raise HalopaintError(f"cosmology parameters must be finite, got {values}")
    if not (0 < c.Omega_b < c.Omega_m <= 1):
        raise HalopaintError(f"need 0 < Omega_b < Omega_m ≤ 1, got Omega_b={c.Omega_b}, Omega_m={c.Omega_m}")
    if not (0 < c.h < 2) or c.sigma8 <= 0 or not (0 < c.n_s < 2):
        raise HalopaintError(f"need 0 < h < 2, sigma8 > 0, 0 < n_s < 2; got h={c.h}, sigma8={c.sigma8}, "
                             f"n_s={c.n_s}")


def lpt_density(seed: int, grid: int, box_size: float, particles_per_voxel: int,
                linear: LinearCosmology, a: float, progress=None) -> np.ndarray:
    """The `/density` recipe: 2LPT lattice of (r·N)³ particles at scale factor a, CIC onto N³.

    → (N, N, N) float32 ρ/ρ̄ (mean 1). Peak memory ≈ lpt_peak_bytes(r·N, N).
    """
    progress = progress or (lambda _: None)
    n_lat = particles_per_voxel * grid
    progress(f"2LPT density: white noise on the {n_lat}³ lattice")
    phi1 = divide_by_k2_inplace(linear_density_k(seed, n_lat, box_size, linear).neg_(), box_size)
    progress("2LPT density: second-order potential")
    phi = potential_2lpt(phi1, box_size)
    d1, d2 = float(linear.D1(a)), float(linear.D2(a))
    phi.mul_(-d2).add_(phi1, alpha=d1)                      # Φ = D1 φ1 − D2 φ2
    del phi1
    progress(f"2LPT density: displacing {n_lat}³ particles, CIC onto {grid}³")
    rho = np.zeros((grid,) * 3, dtype=np.float64)
    for i0, i1, disp in gradient_slabs(phi, box_size, overwrite=True):
        pos = (lattice_positions(i0, i1, n_lat, box_size) + disp.to(torch.float64)).numpy().reshape(-1, 3)
        np.mod(pos, box_size, out=pos)
        pos[pos >= box_size] = 0.0
        cic_paint(rho, pos, box_size)
    del phi
    rho *= grid**3 / n_lat**3
    return rho.astype(np.float32)


def nbody_initial_conditions(seed: int, n_part: int, box_size: float, linear: LinearCosmology,
                             a: float) -> tuple[np.ndarray, np.ndarray]:
    """2LPT positions [Mpc/h] and momenta p = a² dx/dt [Mpc/h · H0] of n_part³ particles at a: (m, 3) f64."""
    phi1 = potential_1lpt(linear_density_k(seed, n_part, box_size, linear), box_size)
    phi2 = potential_2lpt(phi1, box_size)
    d1, d2 = float(linear.D1(a)), float(linear.D2(a))
    v1 = float(a * a * linear.efunc(a) * linear.f1(a) * d1)
    v2 = float(a * a * linear.efunc(a) * linear.f2(a) * d2)
    m = n_part**3
    pos = torch.empty((m, 3), dtype=torch.float64)
    mom = torch.empty((m, 3), dtype=torch.float64)
    plane = n_part * n_part
    for i0, i1, psi1 in gradient_slabs(phi1, box_size, overwrite=True):
        sl = slice(i0 * plane, i1 * plane)
        psi1 = psi1.reshape(-1, 3).to(torch.float64)
        pos[sl] = lattice_positions(i0, i1, n_part, box_size).reshape(-1, 3) + d1 * psi1
        mom[sl] = v1 * psi1
    for i0, i1, grad2 in gradient_slabs(phi2, box_size, overwrite=True):
        sl = slice(i0 * plane, i1 * plane)
        psi2 = -grad2.reshape(-1, 3).to(torch.float64)       # ψ2 = +∇φ2
        pos[sl] += d2 * psi2
        mom[sl] += v2 * psi2
    torch.remainder(pos, box_size, out=pos)
    pos = pos.numpy()
    pos[pos >= box_size] = 0.0
    return pos, mom.numpy()


def nbody_halos(config: SimulateConfig, linear: LinearCosmology, progress=None) -> tuple[HaloCatalog, np.ndarray]:
    """Run 2LPT ICs → PM N-body → FoF for `config`.

    → (halo catalogue with ≥ fof_min_particles members, CIC ρ/ρ̄ of the N-body particles on the N³ grid
    (N, N, N) float32)."""
    progress = progress or (lambda _: None)
    p = config.n_particles_side
    a_final = 1.0 / (1.0 + config.redshift)
    progress(f"N-body: 2LPT initial conditions for {p}³ particles at a={config.a_initial}")
    pos, mom = nbody_initial_conditions(config.seed, p, config.box_size, linear, config.a_initial)
    n_mesh = config.pm_mesh_factor * p
    progress(f"N-body: {config.pm_steps} KDK steps on a {n_mesh}³ force mesh")
    pos, mom = run_pm(pos, mom, linear, config.box_size, config.a_initial, a_final, config.pm_steps,
                      n_mesh, progress)
    del mom
    rho = np.zeros((config.grid,) * 3, dtype=np.float64)
    cic_paint(rho, pos, config.box_size)
    rho *= config.grid**3 / p**3
    mp = linear.particle_mass(config.box_size, p)
    progress(f"FoF: b={config.fof_linking_length}, ≥{config.fof_min_particles} particles, m_p={mp:.4g} M☉/h")
    catalog = fof_groups(pos, config.box_size, mp, config.fof_linking_length * config.box_size / p,
                         config.fof_min_particles)
    progress(f"FoF: {catalog.n_part.size} halos")
    return catalog, rho.astype(np.float32)


def check_memory(config: SimulateConfig) -> int:
    """Refuse (HalopaintError) a run whose estimated peak memory exceeds this machine's RAM; → estimate [B]."""
    import psutil
    need = lpt_peak_bytes(config.lpt_particles_per_voxel * config.grid, config.grid)
    if not config.lpt_only:
        p = config.n_particles_side
        need = max(need, nbody_peak_bytes(p, config.pm_mesh_factor * p))
    total = psutil.virtual_memory().total
    if need > total:
        raise HalopaintError(f"this run needs about {need / 2**30:.1f} GiB but the machine has "
                             f"{total / 2**30:.1f} GiB; use a smaller --grid, --particles-per-side or "
                             f"--lpt-particles-per-voxel")
    return need


def simulate(config: SimulateConfig, quiet: bool = False) -> str:
    """Run the whole pipeline for `config` and write `config.out` atomically; returns the path."""
    validate_config(config)
    check_writable(config.out)
    need = check_memory(config)
    progress = Progress(quiet)
    progress(f"estimated peak memory {need / 2**30:.1f} GiB")
    linear = LinearCosmology(config.cosmology)
    a_final = 1.0 / (1.0 + config.redshift)
    recipe = density_recipe(config)
    density = lpt_density(config.seed, config.grid, config.box_size, recipe.particles_per_voxel, linear,
                          a_final, progress)
    catalog = nbody_density = None
    if not config.lpt_only:
        catalog, nbody_density = nbody_halos(config, linear, progress)
    p = config.n_particles_side
    extra = dict(density_recipe=recipe.to_json(), lpt_only=bool(config.lpt_only),
                 generator="halopaint.sim")
    if catalog is not None:
        extra.update(particle_mass=float(linear.particle_mass(config.box_size, p)),
                     n_particles_side=int(p), pm_steps=int(config.pm_steps),
                     pm_mesh=int(config.pm_mesh_factor * p), a_initial=float(config.a_initial),
                     fof_linking_length=float(config.fof_linking_length),
                     fof_min_particles=int(config.fof_min_particles),
                     mass_assignment_halos="ngp")
    attrs = standard_attrs(config.box_size, config.redshift, config.cosmology,
                           mass_bin_edges=None if catalog is None else config.mass_bin_edges,
                           seed=config.seed, **extra)
    progress(f"writing {config.out}")
    with atomic_h5(config.out, attrs) as f:
        f.create_dataset("density", data=density)
        if catalog is not None:
            halos = ngp_counts(catalog.pos, catalog.mass, config.mass_bin_edges, config.grid, config.box_size)
            f.create_dataset("halos", data=halos)
            f.create_dataset("nbody_density", data=nbody_density)
            g = f.create_group("catalog")
            g.create_dataset("pos", data=catalog.pos.astype(np.float32))
            g.create_dataset("mass", data=catalog.mass.astype(np.float64))
            g.create_dataset("n_part", data=catalog.n_part.astype(np.int32))
    progress(f"done: density mean {float(density.mean(dtype=np.float64)):.6f}"
             + ("" if catalog is None else f", {catalog.n_part.size} halos"))
    return config.out
