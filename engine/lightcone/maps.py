"""HEALPix maps of a light cone: accumulation per (mass bin, shell, pixel), the MPI reduction, FITS files
and the Mollweide figure.

A voxel's expected count goes to the shell of its centre's distance and to the HEALPix pixel (RING
ordering) of its centre's direction; with `subsample` s, to each of s³ sub-points (sub-voxel centres) with
weight 1/s³, which smooths the maps where a voxel subtends more than a pixel. A map holds expected counts
summed over replicas: its total is exactly the sum of the field over the (sub-)voxel centres in the shell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from halopaint.fields import atomic_path
from halopaint.lightcone.geometry import Geometry, ShellPlan

FLUSH_ENTRIES = 1 << 22         # (pixel, weight) pairs buffered before one bincount into the maps
REDUCE_CHUNK = 1 << 26          # map values per MPI Reduce (512 MB of float64)


class MapAccumulator:
    """Expected counts per (mass bin, shell·pixel), float64, filled through buffered bincounts."""

    def __init__(self, n_bins: int, n_cells: int):
        self.maps = np.zeros((n_bins, n_cells), dtype=np.float64)
        self._idx: list[np.ndarray] = []
        self._w: list[np.ndarray] = []
        self._size = 0

    def add(self, cells: np.ndarray, weights: np.ndarray) -> None:
        """cells (m,) int64, weights (n_bins, m) float64."""
        self._idx.append(cells)
        self._w.append(weights)
        self._size += cells.size
        if self._size >= FLUSH_ENTRIES:
            self.flush()

    def flush(self) -> None:
        if not self._idx:
            return
        idx = np.concatenate(self._idx)
        w = np.concatenate(self._w, axis=1)
        for b in range(self.maps.shape[0]):
            self.maps[b] += np.bincount(idx, weights=w[b], minlength=self.maps.shape[1])
        self._idx, self._w, self._size = [], [], 0


def map_replica(geo: Geometry, acc: MapAccumulator, counts: np.ndarray, plane: int, rep, mine: np.ndarray,
                offsets: np.ndarray, hp) -> None:
    """Add the counts (n_bins, N, N) of x-plane `plane` in replica `rep` to the maps, for the voxels this
    snapshot owns (`mine`, (N, N) bool over (y, z)) and every sub-point offset (s³, 3)."""
    weight = 1.0 / len(offsets)
    for off in offsets:
        dx, dy, dz, r = geo.plane_offsets(plane, rep, off)
        shell, ok = geo.shells_of(r)
        ok &= mine
        if not ok.any():
            continue
        iy, iz = np.nonzero(ok)
        pix = hp.vec2pix(geo.nside, np.full(iy.size, dx), dy[iy], dz[iz])
        cells = shell[iy, iz].astype(np.int64) * geo.npix + pix
        acc.add(cells, counts[:, iy, iz].astype(np.float64) * weight)


def reduce_maps(maps: np.ndarray, comm) -> np.ndarray | None:
    """Sum every rank's maps onto rank 0, REDUCE_CHUNK values per call (MPI counts are 32-bit)."""
    if comm is None or comm.Get_size() == 1:
        return maps
    from mpi4py import MPI
    chunk = REDUCE_CHUNK
    flat = maps.reshape(-1)
    total = np.empty_like(flat) if comm.Get_rank() == 0 else None
    for i in range(0, flat.size, chunk):
        comm.Reduce(flat[i:i + chunk], total[i:i + chunk] if total is not None else None, op=MPI.SUM, root=0)
    return total.reshape(maps.shape) if total is not None else None


def fits_paths(out: str | Path, shells: int) -> list[Path]:
    """The per-shell FITS map files of output OUT.h5: OUT_shell00.fits, OUT_shell01.fits, … beside it."""
    out = Path(out)
    stem = out.stem if out.suffix else out.name
    return [out.with_name(f"{stem}_shell{s:02d}.fits") for s in range(shells)]


def write_fits_maps(out: str | Path, maps: np.ndarray, plan: ShellPlan, bins, mass_bin_edges, hp,
                    fraction: np.ndarray | None = None, blend: str = "nearest") -> list[str]:
    """One HEALPix FITS file per shell (RING, one float32 column per selected mass bin, healpy-readable with
    `read_map(path, field=None)`); header: the shell's z and χ range, each column's mass-bin edges, the
    snapshot choice (SNAPBLND) and, given `fraction` (shells, snapshots), the fraction of the shell painted
    from each snapshot (SNAPFRk). Each file is written to a temporary name and renamed, so none is ever left
    half-written."""
    edges = np.asarray(mass_bin_edges, dtype=np.float64)
    written = []
    for s, path in enumerate(fits_paths(out, plan.count)):
        header = [("ZMIN", float(plan.z_edges[s]), "shell near edge, redshift"),
                  ("ZMAX", float(plan.z_edges[s + 1]), "shell far edge, redshift"),
                  ("CHIMIN", float(plan.chi_edges[s]), "shell near edge, comoving [Mpc/h]"),
                  ("CHIMAX", float(plan.chi_edges[s + 1]), "shell far edge, comoving [Mpc/h]"),
                  ("SNAPSHOT", int(plan.snapshot[s]), "input snapshot nearest the shell's middle z"),
                  ("SNAPBLND", blend, "snapshot choice: linear blend or nearest"),
                  ("BUNIT", "halos", "expected halo counts per pixel")]
        if fraction is not None:
            header += [(f"SNAPFR{k}", float(v), f"fraction of the shell painted from snapshot {k}")
                       for k, v in enumerate(fraction[s])]
        for j, b in enumerate(bins):
            header += [(f"MLO{j}", float(edges[b]), f"column {j}: mass bin {b} lower edge [Msun/h]"),
                       (f"MHI{j}", float(edges[b + 1]), f"column {j}: mass bin {b} upper edge [Msun/h]")]
        with atomic_path(path) as tmp:
            hp.write_map(str(tmp), [maps[s, j].astype(np.float32) for j in range(len(bins))], nest=False,
                         column_names=[f"BIN{b}" for b in bins], column_units="halos", extra_header=header,
                         dtype=np.float32, overwrite=True)
        written.append(str(path))
    return written


def plot_maps(maps: np.ndarray, plan: ShellPlan, path: Path, hp) -> str:
    """Mollweide panels of each shell's overdensity n/n̄ − 1 (all selected mass bins) → PNG at `path`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = plan.count
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = plt.figure(figsize=(5 * cols, 3.2 * rows))
    for s in range(n):
        m = maps[s].sum(axis=0)
        mean = m.mean()
        delta = m / mean - 1.0 if mean > 0 else m
        hp.mollview(delta, fig=fig.number, sub=(rows, cols, s + 1), cmap="viridis", min=-1, max=2, cbar=True,
                    title=f"z ∈ [{plan.z_edges[s]:.3f}, {plan.z_edges[s + 1]:.3f})  n̄ = {mean:.3g}/pixel")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return str(path)
