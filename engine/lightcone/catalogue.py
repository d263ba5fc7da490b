"""Halo catalogues on the light cone: positions, masses, velocities and observed redshifts.

Halos per voxel: a sampled (integer) snapshot's counts as they are; a painted (expected-count) snapshot's
N ~ Poisson(λ). Only the snapshot that owns a voxel-replica (halopaint.lightcone.blend) places its halos;
each halo is uniform in its voxel and kept when its own distance falls in a shell. Columns (all (n,)):
  ra, dec [deg]    RA = atan2(y, x) in [0, 360), Dec = asin(z/r), box axes centred on the observer
                   (healpy's pixel of (RA, Dec) with lonlat=True is the map pixel)
  chi [Mpc/h]      comoving distance;  z_cos: the cosmological redshift z(χ)
  v_los [km/s]     line-of-sight peculiar velocity, positive away from the observer: g_b times the
                   density file's /velocity CIC-interpolated at the halo (periodic), plus γ_b times h∇δ of
                   its /density at the halo's voxel (infall), plus a Gaussian per-component dispersion σ_b
                   of its mass bin (g_b, σ_b, γ_b: the sampled snapshot's count model, fitted at its
                   redshift, or --velocity-dispersion with g = 1, γ = 0); 0 without density files
  z_obs            (1 + z_cos)(1 + v_los/c) − 1
  mass [M☉/h]      drawn inside the bin's edges from the Watson et al. (2013) FoF mass function at the
                   snapshot's redshift;  mass_bin: the input's mass-bin index
Streams: each (snapshot, x-plane, replica) draws from SeedSequence(seed, snapshot, plane, replica) —
positions, then masses, then dispersions, bin by bin — so the catalogue does not depend on the ranks.
Rows go to disk block by block (RowWriter): memory O(rows of one plane block).
"""

from __future__ import annotations

import h5py
import numpy as np

from halopaint.decomposition import read_periodic_planes
from halopaint.fields import FieldFile
from halopaint.lightcone.geometry import DistanceRedshift, Geometry
from halopaint.sample.catalogue import rows_cic_readout, slab_rows, voxel_density_gradient
from halopaint.sim.massfunction import MassSampler, watson13_dndlnm

C_KMS = 299792.458
CATALOGUE_COLUMNS = ("ra", "dec", "chi", "z_cos", "z_obs", "v_los", "mass", "mass_bin")
COLUMN_DTYPES = {"mass_bin": np.int16}
COLUMN_UNITS = {"ra": "deg", "dec": "deg", "chi": "Mpc/h", "z_cos": "", "z_obs": "", "v_los": "km/s",
                "mass": "Msun/h", "mass_bin": ""}


def empty_columns() -> dict[str, list]:
    return {name: [] for name in CATALOGUE_COLUMNS}


def concatenate(columns: dict[str, list]) -> dict[str, np.ndarray]:
    return {name: (np.concatenate(parts) if parts else np.empty(0, COLUMN_DTYPES.get(name, np.float64)))
            for name, parts in columns.items()}


def observed_redshift(z_cos, v_los) -> np.ndarray:
    """z_obs = (1 + z_cos)(1 + v_los/c) − 1, v_los [km/s] positive away from the observer."""
    return (1.0 + np.asarray(z_cos)) * (1.0 + np.asarray(v_los) / C_KMS) - 1.0


class VelocitySlab:
    """The x-planes [x0 − 1, x1 + 1) (periodic) of a density file's /velocity (3, N, N, N) [km/s], enough to
    CIC-interpolate at any point of planes [x0, x1)."""

    def __init__(self, path: str, grid: int, box: float, x0: int, x1: int):
        self.grid, self.box, self.x0 = grid, box, x0
        with FieldFile(path) as f:
            self.rows = slab_rows(read_periodic_planes(f.h5["velocity"], x0 - 1, x1 + 1, grid, axis=1))
            # the same planes of /density, for the velocity law's infall term (halopaint.sample.halo_velocities)
            self.rho = read_periodic_planes(f.h5["density"], x0 - 1, x1 + 1, grid) if "density" in f.h5 else None

    def at(self, pos: np.ndarray) -> np.ndarray:
        """CIC-interpolated velocity (m, 3) [km/s] at box-frame positions pos (m, 3) [Mpc/h] (any replica)
        whose x lies in the planes [x0, x1)."""
        return rows_cic_readout(self.rows, self.grid, self.x0 - 1, np.mod(pos, self.box), self.box)

    def infall_at(self, pos: np.ndarray) -> np.ndarray:
        """h∇δ (m, 3) of /density at the voxels of box-frame positions pos (m, 3) [Mpc/h] (x in [x0, x1))."""
        if self.rho is None:
            raise ValueError("the velocity law has an infall term: the density file needs /density")
        cells = np.floor(np.mod(pos, self.box) * (self.grid / self.box)).astype(np.int64) % self.grid
        return voxel_density_gradient(self.rho, self.x0 - 1, cells)


class SnapshotCatalogue:
    """What the catalogue needs of one snapshot: its redshift, mass samplers per bin, velocities."""

    def __init__(self, index: int, redshift: float, linear, mass_bin_edges, bins, integer_counts: bool,
                 velocities: VelocitySlab | None, gain: np.ndarray, dispersion: np.ndarray,
                 infall: np.ndarray | None = None):
        self.index, self.redshift, self.bins = index, float(redshift), tuple(bins)
        self.integer_counts = integer_counts
        self.velocities = velocities
        self.gain = np.asarray(gain, dtype=np.float64)                   # (n_sel,) g_b on the field
        self.dispersion = np.asarray(dispersion, dtype=np.float64)       # (n_sel,) km/s per component
        self.infall = np.zeros(len(self.bins)) if infall is None else np.asarray(infall, dtype=np.float64)
        edges = np.asarray(mass_bin_edges, dtype=np.float64)
        self.masses = [MassSampler(edges[b], edges[b + 1], lambda m: watson13_dndlnm(linear, m, self.redshift))
                       for b in bins]


def catalogue_replica(geo: Geometry, dist: DistanceRedshift, counts: np.ndarray, plane: int, rep, near: np.ndarray,
                      snap: SnapshotCatalogue, seed: int, out: dict) -> None:
    """Halos of x-plane `plane` (counts (n_bins, N, N)) in replica `rep`, in the voxels `near` ((N, N) bool:
    owned by this snapshot, centre within half a voxel diagonal of the shells); those whose own distance
    falls in a shell are appended to the `out` columns. Stream: SeedSequence(seed, snapshot, plane, replica)."""
    h = geo.voxel
    iy, iz = np.nonzero(near)
    if iy.size == 0:
        return
    dx, dy, dz, _ = geo.plane_offsets(plane, rep)
    key = [seed, snap.index, plane, *(int(v) + (1 << 20) for v in rep)]
    rng = np.random.default_rng(np.random.SeedSequence(key))
    for k, b in enumerate(snap.bins):
        lam = counts[k, iy, iz]
        n = np.rint(lam).astype(np.int64) if snap.integer_counts else \
            rng.poisson(np.maximum(lam, 0.0).astype(np.float64))
        total = int(n.sum())
        if total == 0:
            continue
        jy, jz = np.repeat(iy, n), np.repeat(iz, n)
        u = rng.random((3, total))
        p = np.stack([dx + (u[0] - 0.5) * h, dy[jy] + (u[1] - 0.5) * h, dz[jz] + (u[2] - 0.5) * h])
        mass = snap.masses[k].draw(rng.random(total))
        kick = rng.normal(size=(3, total)) * snap.dispersion[k]
        rr = np.sqrt(np.sum(p * p, axis=0))
        _, keep = geo.shells_of(rr)
        if not keep.any():
            continue
        p, rr, mass, kick = p[:, keep], rr[keep], mass[keep], kick[:, keep]
        if snap.velocities is not None:
            box_pos = (p + geo.observer[:, None]).T
            vel = snap.gain[k] * snap.velocities.at(box_pos).T + kick
            if snap.infall[k]:
                vel += snap.infall[k] * snap.velocities.infall_at(box_pos).T
            v_los = np.sum(vel * p, axis=0) / rr
        else:
            v_los = np.zeros(rr.size)
        z_cos = dist.redshift(rr)
        out["ra"].append(np.degrees(np.arctan2(p[1], p[0])) % 360.0)
        out["dec"].append(np.degrees(np.arcsin(np.clip(p[2] / rr, -1.0, 1.0))))
        out["chi"].append(rr)
        out["z_cos"].append(z_cos)
        out["z_obs"].append(observed_redshift(z_cos, v_los))
        out["v_los"].append(v_los)
        out["mass"].append(mass)
        out["mass_bin"].append(np.full(rr.size, b, dtype=np.int16))


class RowWriter:
    """Catalogue rows appended block by block to resizable, chunked (n,) datasets of an open HDF5 group, one
    per column: a rank holds the rows of one plane block at a time, never all of its rows."""

    CHUNK_ROWS = 1 << 16

    def __init__(self, group: h5py.Group):
        self.group, self.rows = group, 0
        self.datasets = {}
        for name in CATALOGUE_COLUMNS:
            ds = group.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(self.CHUNK_ROWS,),
                                      dtype=COLUMN_DTYPES.get(name, np.float64))
            ds.attrs["units"] = COLUMN_UNITS[name]
            self.datasets[name] = ds

    def append(self, columns: dict[str, list]) -> int:
        """Write the rows gathered in `columns` (lists of (m,) arrays per column, as catalogue_replica fills
        them) and empty the lists; returns the rows written."""
        block = concatenate(columns)
        n = int(block["ra"].size)
        if n:
            for name, ds in self.datasets.items():
                ds.resize((self.rows + n,))
                ds[self.rows:] = block[name]
            self.rows += n
        for parts in columns.values():
            parts.clear()
        return n

    def finish(self) -> int:
        """Record the row count (the group's `rows` attr) once every row is written; returns it."""
        self.group.attrs["rows"] = self.rows
        return self.rows
