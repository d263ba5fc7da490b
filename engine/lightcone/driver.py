"""`halopaint lightcone`: the distributed driver (plan → read slabs → maps and catalogue → parts → master).

MPI. x-planes are split into slabs (halopaint.decomposition.SlabPlan, no ghosts); each rank reads and
accumulates its own planes of every snapshot; maps are summed onto rank 0 (float64; shells × bins × npix
per rank); each rank writes its catalogue rows to its own part file (OUT.parts/catalogue-rank-RRRR.h5) and
rank 0 writes the master OUT atomically, `/catalogue/*` being virtual datasets over the parts in rank
order (one rank: plain datasets), `complete = True` last. No rank ever holds the whole catalogue, except
rank 0 when a FITS catalogue is asked for.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import numpy as np

from halopaint.config import LightconeConfig
from halopaint.decomposition import SlabPlan
from halopaint.errors import HalopaintError
from halopaint.fields import FieldFile, atomic_h5, atomic_path, check_writable, file_provenance, standard_attrs
from halopaint.lightcone.catalogue import (CATALOGUE_COLUMNS, COLUMN_DTYPES, COLUMN_UNITS, SnapshotCatalogue,
                                           VelocitySlab, catalogue_plane, concatenate, empty_columns)
from halopaint.lightcone.geometry import DistanceRedshift, Geometry, plan_shells, replicas, subsample_offsets
from halopaint.lightcone.inputs import LightconeError, healpy_module, validate_inputs, validate_options
from halopaint.lightcone.maps import MapAccumulator, map_plane, plot_maps, reduce_maps, write_fits_maps
from halopaint.log import get_logger
from halopaint.sim.cosmology import LinearCosmology

log = get_logger(__name__)


def parts_dir(out: str | os.PathLike) -> Path:
    """OUT → OUT.parts/ beside it (named from the whole output name, so lc.h5 and lc.hdf5 never share)."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _comm():
    from mpi4py import MPI
    return MPI.COMM_WORLD


def build(cfg: LightconeConfig, comm=None, progress: bool = True) -> dict | None:
    """Build the light cone; collective over `comm` (default: MPI.COMM_WORLD when mpi4py is loaded by a
    multi-rank launch, else serial). Rank 0 writes `cfg.out` and returns the summary; other ranks None."""
    hp = healpy_module()
    if comm is None:
        from halopaint.launch import discover
        comm = _comm() if discover().is_distributed else None
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    t0 = time.perf_counter()
    try:
        snapshots = validate_inputs(cfg)
        n_bins = snapshots[0].info.n_bins
        bins = tuple(range(n_bins)) if cfg.mass_bins is None else tuple(cfg.mass_bins)
        validate_options(cfg, hp, len(bins))
    except HalopaintError as exc:              # unreadable or foreign files: every rank sees the same
        raise LightconeError(str(exc)) from None
    first = snapshots[0].info
    z_top = max(cfg.z_edges) if cfg.z_edges is not None else cfg.z_max
    dist = DistanceRedshift(first.cosmology, max(z_top, 1e-6) * 1.001)
    plan = plan_shells(cfg, [s.redshift for s in snapshots], dist)
    geo = Geometry(first.grid, first.box_size, np.asarray(cfg.observer, dtype=np.float64), plan, cfg.nside)
    reps = replicas(geo.observer, geo.box, plan.chi_edges[0], plan.chi_edges[-1] + geo.voxel, cfg.max_replicas)
    x0, x1 = SlabPlan(grid=first.grid, ranks=size, ghost=0).bounds(rank)   # ranks beyond N hold no planes
    acc = MapAccumulator(len(bins), plan.count * geo.npix)
    offsets = subsample_offsets(cfg.subsample)
    columns = empty_columns()
    dispersion = _dispersion(cfg, len(bins))
    linear = LinearCosmology(first.cosmology)
    for index, snap in enumerate(snapshots):
        active = plan.snapshot == index
        if not active.any():
            continue
        cat = None
        if cfg.catalogue:
            vel = VelocitySlab(snap.density.path, first.grid, first.box_size, x0, x1) \
                if snap.density is not None and x1 > x0 else None
            cat = SnapshotCatalogue(index, snap.redshift, linear, first.mass_bin_edges, bins, snap.integer_counts,
                                    vel, dispersion)
        with FieldFile(snap.info.path, require=("halos",)) as f:
            for p0 in range(x0, x1, cfg.planes_per_read):
                p1 = min(p0 + cfg.planes_per_read, x1)
                field = f.read_halos(bins, p0, p1)
                if not snap.integer_counts and (field < 0).any():
                    raise LightconeError(f"{snap.info.path}: /halos has negative expected counts "
                                         f"(x-planes {p0}–{p1}); a painted field is ≥ 0")
                for j, plane in enumerate(range(p0, p1)):
                    map_plane(geo, acc, field[:, j], plane, reps, active, offsets, hp)
                    if cat is not None:
                        catalogue_plane(geo, dist, field[:, j], plane, reps, active, cat, cfg.seed, columns)
                if progress:
                    log.info(f"snapshot {index} (z = {snap.redshift:g}): planes {p1 - x0}/{x1 - x0} of rank {rank}")
    acc.flush()
    maps = reduce_maps(acc.maps, comm)
    local = concatenate(columns) if cfg.catalogue else None
    rows = _write_part(cfg, local, rank, size) if cfg.catalogue else None
    counts = comm.allgather(rows) if comm is not None and size > 1 else [rows]
    if rank != 0:
        return None
    maps = maps.reshape(len(bins), plan.count, geo.npix).transpose(1, 0, 2)
    summary = _write_master(cfg, snapshots, plan, bins, maps, local if size == 1 else None, counts, len(reps),
                            size, time.perf_counter() - t0, dispersion)
    if cfg.fits:
        summary["fits"] = write_fits_maps(cfg.out, maps, plan, bins, first.mass_bin_edges, hp)
        if cfg.catalogue:
            summary["fits_catalogue"] = write_fits_catalogue(cfg.out)
    if cfg.figure:
        summary["figure"] = plot_maps(maps, plan, Path(cfg.out).with_suffix(".png"), hp)
    return summary


def _dispersion(cfg: LightconeConfig, n_sel: int) -> np.ndarray:
    """Per selected bin Gaussian velocity dispersion per component [km/s] (0 unless given)."""
    if cfg.velocity_dispersion is None:
        return np.zeros(n_sel)
    v = np.asarray(cfg.velocity_dispersion, dtype=np.float64)
    return np.full(n_sel, v[0]) if v.size == 1 else v


def _write_part(cfg: LightconeConfig, local: dict, rank: int, size: int) -> int:
    """This rank's catalogue rows → its part file (several ranks only: one rank's master holds its rows
    itself); returns the row count."""
    n = int(len(local["ra"]))
    if size > 1:
        folder = parts_dir(cfg.out)
        folder.mkdir(exist_ok=True)
        with atomic_h5(folder / f"catalogue-rank-{rank:04d}.h5", {"rank": rank, "rows": n}) as f:
            for name in CATALOGUE_COLUMNS:
                f.create_dataset(name, data=local[name])
    return n


def _catalogue_group(f: h5py.File, cfg: LightconeConfig, counts: list[int], local: dict | None) -> None:
    """/catalogue: the rows themselves (one rank, `local`) or virtual datasets over the part files."""
    g = f.create_group("catalogue")
    if local is not None:
        for name in CATALOGUE_COLUMNS:
            g.create_dataset(name, data=local[name]).attrs["units"] = COLUMN_UNITS[name]
        return
    total = int(sum(counts))
    rel = parts_dir(cfg.out).name
    for name in CATALOGUE_COLUMNS:
        dtype = COLUMN_DTYPES.get(name, np.float64)
        layout = h5py.VirtualLayout(shape=(total,), dtype=dtype)
        start = 0
        for r, n in enumerate(counts):
            if n:
                layout[start:start + n] = h5py.VirtualSource(f"{rel}/catalogue-rank-{r:04d}.h5", name, shape=(n,))
                start += n
        g.create_virtual_dataset(name, layout).attrs["units"] = COLUMN_UNITS[name]


def _write_master(cfg: LightconeConfig, snapshots, plan, bins, maps: np.ndarray, local, counts, n_replicas: int,
                  ranks: int, seconds: float, dispersion: np.ndarray) -> dict:
    first = snapshots[0].info
    sources = [dict(file_provenance(s.info.path, s.info.attrs), redshift=s.redshift) for s in snapshots]
    densities = [file_provenance(s.density.path, s.density.attrs) for s in snapshots if s.density is not None]
    attrs = standard_attrs(first.box_size, float(plan.z_edges[0]), first.cosmology,
                           mass_bin_edges=first.mass_bin_edges, seed=cfg.seed, nside=int(cfg.nside),
                           ordering="RING", observer=np.asarray(cfg.observer, dtype=np.float64),
                           subsample=int(cfg.subsample), mass_bins=np.asarray(bins, dtype=np.int64),
                           replicas=int(n_replicas), ranks=int(ranks), sources=sources, densities=densities,
                           velocities="density /velocity + dispersion" if densities else "none (v_los = 0)",
                           velocity_dispersion=np.asarray(dispersion, dtype=np.float64),
                           snapshot_choice="nearest snapshot to the shell's middle redshift",
                           mass_function="Watson et al. 2013 FoF, at the snapshot redshift")
    check_writable(cfg.out)
    with atomic_h5(cfg.out, attrs) as f:
        d = f.create_dataset("maps", data=maps.astype(np.float32))
        d.attrs["description"] = "expected halo counts per (shell, mass bin, HEALPix RING pixel)"
        g = f.create_group("shells")
        g.create_dataset("chi_edges", data=plan.chi_edges)
        g.create_dataset("z_edges", data=plan.z_edges)
        g.create_dataset("snapshot", data=plan.snapshot.astype(np.int64))
        g.create_dataset("snapshot_redshift", data=np.array([snapshots[s].redshift for s in plan.snapshot]))
        g.create_dataset("total_expected", data=maps.sum(axis=2))
        if cfg.catalogue:
            _catalogue_group(f, cfg, counts, local)
    summary = {"out": cfg.out, "shells": plan.count, "nside": cfg.nside, "replicas": n_replicas, "ranks": ranks,
               "chi_edges": [round(float(v), 4) for v in plan.chi_edges],
               "z_edges": [round(float(v), 6) for v in plan.z_edges],
               "snapshot_per_shell": [int(s) for s in plan.snapshot],
               "expected_per_shell": [round(float(v), 3) for v in maps.sum(axis=(1, 2))],
               "seconds": round(seconds, 2)}
    if cfg.catalogue:
        summary["catalogue_halos"] = int(sum(counts))
    return summary


def write_fits_catalogue(out: str | os.PathLike) -> str:
    """The master's /catalogue as a FITS binary table OUT_catalogue.fits (astropy), one column per field."""
    from astropy.io import fits
    out = Path(out)
    path = out.with_name((out.stem if out.suffix else out.name) + "_catalogue.fits")
    with h5py.File(out, "r") as f:
        cols = [fits.Column(name=name.upper(), format="I" if name == "mass_bin" else "D",
                            unit=COLUMN_UNITS[name] or None, array=f[f"catalogue/{name}"][...])
                for name in CATALOGUE_COLUMNS]
    hdu = fits.BinTableHDU.from_columns(cols, name="HALOS")
    with atomic_path(path) as tmp:
        hdu.writeto(tmp, overwrite=True)
    return str(path)
