"""Light-cone geometry: comoving distance ↔ redshift, shells, periodic replicas, voxel and sub-voxel points.

The observer sits at `observer` [Mpc/h] in the box frame. The periodic box [0, L)³ is repeated with period L:
replica n ∈ Z³ holds voxel i at (i + ½)H + nL, H = L/N. Shells are comoving-distance intervals
[χ_j, χ_{j+1}) [Mpc/h] with χ(z) = (c/H0) ∫ dz/E(z) of the files' flat ΛCDM (matter + Λ, radiation neglected
as in the simulator). Each shell's nearest snapshot is the input whose redshift is nearest the redshift at
the shell's middle distance; which snapshot paints each voxel (a blend between snapshots by default, or
that nearest one) is halopaint.lightcone.blend's.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.integrate import cumulative_trapezoid

from halopaint.config import Cosmology, LightconeConfig
from halopaint.lightcone.inputs import LightconeError
from halopaint.sim.cosmology import LinearCosmology

C_OVER_H0 = 2997.92458          # c / H0 [Mpc/h]


class DistanceRedshift:
    """Comoving distance χ(z) [Mpc/h] of a flat ΛCDM cosmology and its inverse z(χ), tabulated on [0, z_max].

    Trapezoidal integral of 1/E(z) on `points` redshifts (relative error < 1e-8 for z ≤ 10) and linear
    interpolation between them (< 1e-6 Mpc/h at 20,001 points up to z = 3).
    """

    def __init__(self, cosmology: Cosmology, z_max: float, points: int = 20001):
        if not (np.isfinite(z_max) and z_max > 0):
            raise LightconeError(f"z_max must be positive, got {z_max}")
        self.z_max = float(z_max)
        self._z = np.linspace(0.0, self.z_max, points)
        e = LinearCosmology(cosmology).efunc(1.0 / (1.0 + self._z))
        self._chi = C_OVER_H0 * cumulative_trapezoid(1.0 / e, self._z, initial=0.0)

    def chi(self, z) -> np.ndarray:
        """χ(z) [Mpc/h]."""
        return np.interp(z, self._z, self._chi)

    def redshift(self, chi) -> np.ndarray:
        """z(χ), χ in [Mpc/h]."""
        return np.interp(chi, self._chi, self._z)


@dataclass(frozen=True)
class ShellPlan:
    """S shells: comoving edges (S+1,) [Mpc/h], redshift edges (S+1,), snapshot index per shell (S,),
    and the redshift at each shell's middle distance (S,)."""

    chi_edges: np.ndarray
    z_edges: np.ndarray
    snapshot: np.ndarray
    z_mid: np.ndarray

    @property
    def count(self) -> int:
        return len(self.snapshot)


def plan_shells(cfg: LightconeConfig, snapshot_redshifts, distances: DistanceRedshift) -> ShellPlan:
    """Shell edges from `z_edges`, or `shells` of equal comoving thickness on [χ(z_min), χ(z_max)); each
    shell's `snapshot` is the one whose redshift is nearest the redshift at its middle distance. The
    tolerance: with cfg.snapshot_blend "nearest", every shell's middle redshift must be within
    cfg.snapshot_tolerance of its snapshot; with "linear" (interpolated between snapshots), only a middle
    redshift outside the snapshots' range must be within it of the nearest end."""
    if cfg.z_edges is not None:
        z_edges = np.asarray(cfg.z_edges, dtype=np.float64)
        if z_edges.size < 2 or np.any(np.diff(z_edges) <= 0) or z_edges[0] < 0:
            raise LightconeError(f"--z-edges must be ≥ 2 increasing redshifts ≥ 0, got {list(cfg.z_edges)}")
        chi_edges = distances.chi(z_edges)
    else:
        if cfg.shells < 1:
            raise LightconeError(f"--shells must be ≥ 1, got {cfg.shells}")
        if not 0 <= cfg.z_min < cfg.z_max:
            raise LightconeError(f"need 0 ≤ z_min < z_max, got z_min={cfg.z_min}, z_max={cfg.z_max}")
        chi_edges = np.linspace(distances.chi(cfg.z_min), distances.chi(cfg.z_max), cfg.shells + 1)
        z_edges = distances.redshift(chi_edges)
        z_edges[0], z_edges[-1] = cfg.z_min, cfg.z_max
    z_mid = distances.redshift(0.5 * (chi_edges[:-1] + chi_edges[1:]))
    snaps = np.asarray(snapshot_redshifts, dtype=np.float64)
    snapshot = np.argmin(np.abs(z_mid[:, None] - snaps[None, :]), axis=1)
    gap = np.abs(z_mid - snaps[snapshot])
    if cfg.snapshot_blend == "linear":
        gap = np.where((z_mid >= snaps.min()) & (z_mid <= snaps.max()), 0.0, gap)
    if np.any(gap > cfg.snapshot_tolerance):
        s = int(np.argmax(gap))
        raise LightconeError(
            f"shell {s} (z {z_edges[s]:.3f}–{z_edges[s + 1]:.3f}, middle {z_mid[s]:.3f}) is {gap[s]:.3f} in "
            f"redshift from its nearest snapshot (z = {snaps[snapshot[s]]:g}), more than the tolerance "
            f"{cfg.snapshot_tolerance:g}: add a snapshot near z = {z_mid[s]:.2f} or raise --snapshot-tolerance")
    return ShellPlan(chi_edges=chi_edges, z_edges=z_edges, snapshot=snapshot, z_mid=z_mid)


def replicas(observer, box: float, chi_min: float, chi_max: float,
             limit: int | None = None) -> list[tuple[int, int, int]]:
    """Offsets n ∈ Z³ of the periodic copies [nL, (n+1)L)³ that reach distances in [chi_min, chi_max).

    `limit`: refuse (LightconeError) before enumerating when the copies within chi_max would exceed it.
    """
    o = np.asarray(observer, dtype=np.float64)
    if limit is not None:
        estimate = 4.0 / 3.0 * math.pi * (chi_max / box) ** 3
        if estimate > limit:
            raise LightconeError(f"the shells reach χ = {chi_max:.0f} Mpc/h and need ~{estimate:.0f} copies of the "
                                 f"{box:g} Mpc/h box (limit {limit}); lower z_max or use a larger box")
    reach = int(math.ceil((chi_max + np.abs(o).max()) / box)) + 1
    axis = np.arange(-reach, reach + 1)
    n = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    lo = n * box - o
    hi = lo + box
    near = np.sqrt(np.sum(np.maximum(0.0, np.maximum(lo, -hi)) ** 2, axis=1))
    far = np.sqrt(np.sum(np.maximum(np.abs(lo), np.abs(hi)) ** 2, axis=1))
    keep = (near < chi_max) & (far >= chi_min)
    return [tuple(int(v) for v in row) for row in n[keep]]


def subsample_offsets(s: int) -> np.ndarray:
    """(s³, 3) sub-voxel centres in voxel units, relative to the voxel centre."""
    g = (np.arange(s) + 0.5) / s - 0.5
    return np.array(list(itertools.product(g, g, g)), dtype=np.float64)


@dataclass
class Geometry:
    """What every plane of every replica needs: grid, box, observer, shells and their snapshot mask."""

    grid: int
    box: float
    observer: np.ndarray
    plan: ShellPlan
    nside: int

    @property
    def voxel(self) -> float:
        return self.box / self.grid

    @property
    def centres(self) -> np.ndarray:
        """(N,) voxel-centre coordinate along one axis [Mpc/h]."""
        return (np.arange(self.grid) + 0.5) * self.voxel

    @property
    def npix(self) -> int:
        return 12 * self.nside**2

    def plane_offsets(self, plane: int, rep, sub=(0.0, 0.0, 0.0)):
        """Observer-centred coordinates [Mpc/h] of x-plane `plane` in copy `rep`, at sub-voxel offset `sub`
        (voxel units): dx (scalar), dy (N,), dz (N,), and distances r (N, N) over (y, z)."""
        h, box, o, c = self.voxel, self.box, self.observer, self.centres
        dx = (plane + 0.5 + sub[0]) * h + rep[0] * box - o[0]
        dy = c + rep[1] * box - o[1] + sub[1] * h
        dz = c + rep[2] * box - o[2] + sub[2] * h
        return dx, dy, dz, np.sqrt(dx * dx + dy[:, None] ** 2 + dz[None, :] ** 2)

    def shells_of(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shell index of each distance and whether it falls in a shell; r = 0 (no direction) never does."""
        shell = np.searchsorted(self.plan.chi_edges, r, side="right") - 1
        return shell, (shell >= 0) & (shell < self.plan.count) & (r > 0)

    def plane_reaches(self, x: float, rep, lo: float, hi: float, margin: float) -> bool:
        """Whether the plane at box-frame x (replica `rep`) has points at distances in [lo − m, hi + m)."""
        o, box = self.observer, self.box
        dx = abs(x + rep[0] * box - o[0])
        ylo, zlo = rep[1] * box - o[1], rep[2] * box - o[2]
        dy = max(0.0, ylo, -(ylo + box))
        dz = max(0.0, zlo, -(zlo + box))
        near = math.sqrt(dx * dx + dy * dy + dz * dz)
        fy, fz = max(abs(ylo), abs(ylo + box)), max(abs(zlo), abs(zlo + box))
        far = math.sqrt(dx * dx + fy * fy + fz * fz)
        return near < hi + margin and far >= lo - margin
