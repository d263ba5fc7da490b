"""`halopaint lightcone`: the distributed driver (plan → read slabs → maps and catalogue → parts → master).

MPI. x-planes are split into slabs (halopaint.decomposition.SlabPlan, no ghosts); each rank reads and
accumulates its own planes of every snapshot, each voxel-replica going to the one snapshot that owns it
(halopaint.lightcone.blend); maps are summed onto rank 0 (float64; shells × bins × npix per rank); each
rank writes its catalogue rows, plane block by plane block, to its own part file
(OUT.parts/catalogue-rank-RRRR.h5, completed when the rank is done) and rank 0 writes the master OUT
atomically, `/catalogue/*` being virtual datasets over the parts in rank order (one rank: the rows are
written straight into the master's temporary file), `complete = True` last. A rank holds the catalogue
rows of one plane block at a time.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import h5py
import numpy as np

from halopaint.config import LightconeConfig
from halopaint.decomposition import SlabPlan
from halopaint.errors import HalopaintError
from halopaint.fields import (FieldFile, atomic_h5, atomic_path, check_writable, file_provenance, parts_dir,
                              standard_attrs)
from halopaint.lightcone.blend import SNAPSHOT_RULES, Ownership
from halopaint.lightcone.catalogue import (CATALOGUE_COLUMNS, COLUMN_DTYPES, COLUMN_UNITS, RowWriter,
                                           SnapshotCatalogue, VelocitySlab, catalogue_replica, empty_columns)
from halopaint.lightcone.geometry import DistanceRedshift, Geometry, plan_shells, replicas, subsample_offsets
from halopaint.lightcone.inputs import LightconeError, healpy_module, validate_inputs, validate_options
from halopaint.lightcone.maps import MapAccumulator, map_replica, plot_maps, reduce_maps, write_fits_maps
from halopaint.log import get_logger
from halopaint.model import CountModel
from halopaint.sim.cosmology import LinearCosmology
from halopaint.validation import (CountStats, OutputLock, check_count_stats, check_output_not_input,
                                  interruption_point, lock_path)

log = get_logger(__name__)


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
        check_output_not_input([cfg.out, Path(cfg.out).with_suffix(".png") if cfg.figure else None,
                                lock_path(cfg.out)], [*cfg.inputs, *cfg.densities])
    except HalopaintError as exc:              # unreadable or foreign files: every rank sees the same
        raise LightconeError(str(exc)) from None
    with contextlib.ExitStack() as held:
        err = None
        if rank == 0:                          # rank 0 writes the output: it holds the lock
            try:
                held.enter_context(OutputLock(cfg.out, f"halopaint lightcone on {size} ranks"))
            except HalopaintError as exc:
                err = str(exc)
        err = comm.bcast(err, root=0) if comm is not None else err
        if err:
            raise LightconeError(err)
        return _build(cfg, snapshots, bins, comm, rank, size, hp, t0, progress)


def _build(cfg: LightconeConfig, snapshots, bins, comm, rank: int, size: int, hp, t0: float,
           progress: bool) -> dict | None:
    first = snapshots[0].info
    z_top = max(cfg.z_edges) if cfg.z_edges is not None else cfg.z_max
    dist = DistanceRedshift(first.cosmology, max(z_top, 1e-6) * 1.001)
    plan = plan_shells(cfg, [s.redshift for s in snapshots], dist)
    geo = Geometry(first.grid, first.box_size, np.asarray(cfg.observer, dtype=np.float64), plan, cfg.nside)
    reps = replicas(geo.observer, geo.box, plan.chi_edges[0], plan.chi_edges[-1] + geo.voxel, cfg.max_replicas)
    x0, x1 = SlabPlan(grid=first.grid, ranks=size, ghost=0).bounds(rank)   # ranks beyond N hold no planes
    own = Ownership(cfg.snapshot_blend, plan, dist, [s.redshift for s in snapshots], cfg.seed)
    z_reach = dist.redshift([max(plan.chi_edges[0] - geo.voxel, 0.0), plan.chi_edges[-1] + geo.voxel])
    acc = MapAccumulator(len(bins), plan.count * geo.npix)
    tally = np.zeros((plan.count, len(snapshots)), dtype=np.int64)   # voxel-replica centres per shell, snapshot
    offsets = subsample_offsets(cfg.subsample)
    columns = empty_columns()
    laws = [_velocity_law(cfg, snap, bins) for snap in snapshots]
    linear = LinearCosmology(first.cosmology)
    scans: dict[str, CountStats] = {}          # per input: the counts this rank read (refused collectively)
    done = 0
    with contextlib.ExitStack() as files:
        rows, master = _open_rows(cfg, rank, size, files)
        for index, snap in enumerate(snapshots):
            if not own.may_own(index, *z_reach):
                continue
            cat = None
            if cfg.catalogue:
                vel = VelocitySlab(snap.density.path, first.grid, first.box_size, x0, x1) \
                    if snap.density is not None and x1 > x0 else None
                cat = SnapshotCatalogue(index, snap.redshift, linear, first.mass_bin_edges, bins,
                                        snap.integer_counts, vel, *laws[index])
            with FieldFile(snap.info.path, require=("halos",)) as f:
                for p0 in range(x0, x1, cfg.planes_per_read):
                    p1 = min(p0 + cfg.planes_per_read, x1)
                    field = f.read_halos(bins, p0, p1)
                    stats = scans.setdefault(snap.info.path, CountStats())
                    stats.add(field)
                    if stats.nonfinite or stats.negative:
                        break                  # refused below, after every rank has agreed
                    for j, plane in enumerate(range(p0, p1)):
                        _visit_plane(geo, dist, own, index, field[:, j], plane, reps, acc, tally, offsets, hp,
                                     cat, cfg.seed, columns)
                    if rows is not None:
                        rows.append(columns)   # this block's rows to disk: O(block) catalogue memory
                    done += p1 - p0
                    interruption_point("lightcone", done, rank)
                    if progress:
                        log.info(f"snapshot {index} (z = {snap.redshift:g}): planes {p1 - x0}/{x1 - x0} of "
                                 f"rank {rank}")
        _agree_counts(scans, comm)
        n_rows = rows.finish() if rows is not None else None
        if master is None:
            files.close()                      # this rank's part is complete before the master names it
        acc.flush()
        maps = reduce_maps(acc.maps, comm)
        tally = comm.allreduce(tally) if comm is not None and size > 1 else tally
        counts = comm.allgather(n_rows) if comm is not None and size > 1 else [n_rows]
        if rank != 0:
            return None
        maps = maps.reshape(len(bins), plan.count, geo.npix).transpose(1, 0, 2)
        summary = _write_master(cfg, snapshots, plan, bins, maps, master, counts, len(reps), size,
                                time.perf_counter() - t0, laws, tally)
    if cfg.fits:                               # the master is complete and in place from here on
        summary["fits"] = write_fits_maps(cfg.out, maps, plan, bins, first.mass_bin_edges, hp,
                                          _fractions(tally), cfg.snapshot_blend)
        if cfg.catalogue:
            summary["fits_catalogue"] = write_fits_catalogue(cfg.out)
    if cfg.figure:
        summary["figure"] = plot_maps(maps, plan, Path(cfg.out).with_suffix(".png"), hp)
    return summary


def _visit_plane(geo: Geometry, dist: DistanceRedshift, own: Ownership, index: int, counts: np.ndarray,
                 plane: int, reps, acc: MapAccumulator, tally: np.ndarray, offsets: np.ndarray, hp,
                 cat: SnapshotCatalogue | None, seed: int, columns: dict) -> None:
    """One x-plane (counts (n_bins, N, N)) of snapshot `index`, every replica: the voxels it owns go to the
    maps, to the shell tally (centres per shell and snapshot) and, with a catalogue, to its rows."""
    lo, hi = geo.plan.chi_edges[0], geo.plan.chi_edges[-1]
    own_lo, own_hi = own.chi_range(index)
    reach_lo, reach_hi = max(lo, own_lo), min(hi, own_hi)  # where this snapshot may own near voxels
    margin = math.sqrt(3.0) * geo.voxel / 2               # a halo lies within this of its voxel centre
    x = (plane + 0.5) * geo.voxel
    for rep in reps:
        if not geo.plane_reaches(x, rep, reach_lo, reach_hi, margin=geo.voxel):
            continue
        r = geo.plane_offsets(plane, rep)[3]
        near = (r >= lo - geo.voxel) & (r < hi + geo.voxel)  # sub-points and halos reach at most this far
        if not near.any():
            continue
        mine = near & (own.owners(plane, rep, r) == index)
        if not mine.any():
            continue
        shell, inside = geo.shells_of(r)
        inside &= mine
        tally[:, index] += np.bincount(shell[inside], minlength=geo.plan.count)
        map_replica(geo, acc, counts, plane, rep, mine, offsets, hp)
        if cat is not None:
            catalogue_replica(geo, dist, counts, plane, rep, mine & (r >= lo - margin) & (r < hi + margin), cat,
                              seed, columns)


def _fractions(tally: np.ndarray) -> np.ndarray:
    """(shells, snapshots) fraction of each shell's voxel-replica centres painted from each snapshot."""
    total = tally.sum(axis=1, keepdims=True)
    return tally / np.maximum(total, 1)


def _agree_counts(scans: dict, comm) -> None:
    """Merge every rank's count scans; refuse (collectively) counts that are negative or non-finite."""
    local = {path: st.as_tuple() for path, st in scans.items()}
    parts = comm.allgather(local) if comm is not None else [local]
    for path in sorted({p for part in parts for p in part}):
        merged = CountStats()
        for part in parts:
            if path in part:
                nf, neg, mn = part[path]
                merged.nonfinite += nf
                merged.negative += neg
                merged.minimum = min(merged.minimum, mn)
        try:
            check_count_stats(merged, path)
        except HalopaintError as exc:
            raise LightconeError(str(exc)) from None


def _velocity_law(cfg: LightconeConfig, snap, bins) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gain g_b, dispersion σ_b [km/s], infall γ_b [km/s]) per selected bin of one snapshot:
    v = g_b · /velocity + γ_b · h∇δ + N(0, σ_b²) (CountModel.velocity_law).

    --velocity-dispersion wins (g = 1, γ = 0); otherwise a sampled snapshot's count model (its `count_model`
    attr, fitted on N-body halos at that redshift by jobs/fit_count_model.py) gives all three; otherwise
    g = 1, σ = 0, γ = 0.
    """
    n_sel = len(bins)
    if cfg.velocity_dispersion is not None:
        v = np.asarray(cfg.velocity_dispersion, dtype=np.float64)
        return np.ones(n_sel), (np.full(n_sel, v[0]) if v.size == 1 else v), np.zeros(n_sel)
    text = snap.info.attrs.get("count_model") if snap.integer_counts else None
    if not text:
        return np.ones(n_sel), np.zeros(n_sel), np.zeros(n_sel)
    try:
        cm = CountModel.from_dict(json.loads(str(text)))
    except (ValueError, KeyError, TypeError) as exc:
        raise LightconeError(f"{snap.info.path}: count_model attribute is not a count model ({exc})") from None
    gain, sigma, infall = np.array([cm.velocity_law(b) for b in bins], dtype=np.float64).reshape(n_sel, 3).T
    return gain, sigma, infall


def _open_rows(cfg: LightconeConfig, rank: int, size: int, files: contextlib.ExitStack):
    """Where this rank's catalogue rows go as they are made: (RowWriter, the master file or None).

    Several ranks: the rank's part OUT.parts/catalogue-rank-RRRR.h5, written under a temporary name and
    marked complete (with its `rows`) only when the rank has finished. One rank: the master's own
    /catalogue, in the master's temporary file, which is marked complete and renamed only after the maps
    and shells are in it. Either way an interrupted run leaves nothing marked complete. No catalogue:
    (None, None)."""
    if not cfg.catalogue:
        return None, None
    if size == 1:
        master = files.enter_context(atomic_h5(cfg.out))
        return RowWriter(master.create_group("catalogue")), master
    folder = parts_dir(cfg.out)
    folder.mkdir(exist_ok=True)
    part = files.enter_context(atomic_h5(folder / f"catalogue-rank-{rank:04d}.h5", {"rank": rank}))
    return RowWriter(part), None


def _virtual_catalogue(f: h5py.File, cfg: LightconeConfig, counts: list[int]) -> None:
    """/catalogue of a several-rank run: virtual datasets over the part files, in rank order."""
    g = f.create_group("catalogue")
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


def _write_master(cfg: LightconeConfig, snapshots, plan, bins, maps: np.ndarray, master: h5py.File | None,
                  counts, n_replicas: int, ranks: int, seconds: float, laws: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                  tally: np.ndarray) -> dict:
    """The master OUT: attrs, /maps, /shells and (several ranks) the virtual /catalogue. `master`: the open
    temporary master that one rank's catalogue already fills (completed by the caller), or None: written
    here atomically."""
    first = snapshots[0].info
    sources = [dict(file_provenance(s.info.path, s.info.attrs), redshift=s.redshift) for s in snapshots]
    densities = [file_provenance(s.density.path, s.density.attrs) for s in snapshots if s.density is not None]
    attrs = standard_attrs(first.box_size, float(plan.z_edges[0]), first.cosmology,
                           mass_bin_edges=first.mass_bin_edges, seed=cfg.seed, nside=int(cfg.nside),
                           ordering="RING", observer=np.asarray(cfg.observer, dtype=np.float64),
                           subsample=int(cfg.subsample), mass_bins=np.asarray(bins, dtype=np.int64),
                           replicas=int(n_replicas), ranks=int(ranks), sources=sources, densities=densities,
                           velocities=("g_b · density /velocity + gamma_b · h grad(delta) + N(0, sigma_b) per "
                                       "component" if densities else "none (v_los = 0)"),
                           velocity_gain=np.asarray([law[0] for law in laws], dtype=np.float64),
                           velocity_dispersion=np.asarray([law[1] for law in laws], dtype=np.float64),
                           velocity_infall=np.asarray([law[2] for law in laws], dtype=np.float64),
                           snapshot_choice=cfg.snapshot_blend, snapshot_choice_rule=SNAPSHOT_RULES[cfg.snapshot_blend],
                           mass_function="Watson et al. 2013 FoF, at the snapshot redshift")
    check_writable(cfg.out)
    fraction = _fractions(tally)
    with contextlib.ExitStack() as stack:
        f = master if master is not None else stack.enter_context(atomic_h5(cfg.out))
        for key, value in attrs.items():
            f.attrs[key] = value
        d = f.create_dataset("maps", data=maps.astype(np.float32))
        d.attrs["description"] = "expected halo counts per (shell, mass bin, HEALPix RING pixel)"
        g = f.create_group("shells")
        g.create_dataset("chi_edges", data=plan.chi_edges)
        g.create_dataset("z_edges", data=plan.z_edges)
        g.create_dataset("snapshot", data=plan.snapshot.astype(np.int64))
        g.create_dataset("snapshot_redshift", data=np.array([snapshots[s].redshift for s in plan.snapshot]))
        g.create_dataset("snapshot_fraction", data=fraction).attrs["description"] = (
            "fraction of the shell's voxel-replica centres painted from each input snapshot (input order)")
        g.create_dataset("total_expected", data=maps.sum(axis=2))
        if cfg.catalogue and master is None:
            _virtual_catalogue(f, cfg, counts)
    summary = {"out": cfg.out, "shells": plan.count, "nside": cfg.nside, "replicas": n_replicas, "ranks": ranks,
               "chi_edges": [round(float(v), 4) for v in plan.chi_edges],
               "z_edges": [round(float(v), 6) for v in plan.z_edges],
               "snapshot_blend": cfg.snapshot_blend,
               "snapshot_per_shell": [int(s) for s in plan.snapshot],
               "snapshot_fraction_per_shell": [[round(float(v), 4) for v in row] for row in fraction],
               "expected_per_shell": [round(float(v), 3) for v in maps.sum(axis=(1, 2))],
               "seconds": round(seconds, 2)}
    if cfg.catalogue:
        summary["catalogue_halos"] = int(sum(counts))
    return summary


FITS_BLOCK = 2880                      # FITS files are written in blocks of 2880 bytes
FITS_CHUNK_ROWS = 1 << 20              # catalogue rows converted at once (bounded memory at 10⁸ halos)


def write_fits_catalogue(out: str | os.PathLike) -> str:
    """The master's /catalogue as a FITS binary table OUT_catalogue.fits (HDU "HALOS", one column per field).

    Streamed: astropy makes the table header (TTYPE/TFORM/TUNIT of a zero-row table, NAXIS2 set to the row
    count), and the rows go out as big-endian records in chunks of FITS_CHUNK_ROWS, so memory stays
    ~60 MiB for any catalogue size (a 1.6e8-halo catalogue does not fit in memory whole).
    """
    from astropy.io import fits
    out = Path(out)
    path = out.with_name((out.stem if out.suffix else out.name) + "_catalogue.fits")
    formats = {name: ("I", ">i2") if name == "mass_bin" else ("D", ">f8") for name in CATALOGUE_COLUMNS}
    record = np.dtype([(name.upper(), formats[name][1]) for name in CATALOGUE_COLUMNS])
    with h5py.File(out, "r") as f, atomic_path(path) as tmp:
        data = {name: f[f"catalogue/{name}"] for name in CATALOGUE_COLUMNS}
        rows = data["ra"].shape[0]
        template = fits.BinTableHDU.from_columns(
            [fits.Column(name=name.upper(), format=formats[name][0], unit=COLUMN_UNITS[name] or None,
                         array=np.zeros(0, formats[name][1])) for name in CATALOGUE_COLUMNS], name="HALOS")
        header = template.header.copy()
        header["NAXIS2"] = rows
        if header["NAXIS1"] != record.itemsize:
            raise HalopaintError(f"FITS row layout: {header['NAXIS1']} bytes, records {record.itemsize}")
        with open(tmp, "wb") as fh:
            fh.write(fits.PrimaryHDU().header.tostring().encode("ascii"))
            fh.write(header.tostring().encode("ascii"))
            for a in range(0, rows, FITS_CHUNK_ROWS):
                b = min(rows, a + FITS_CHUNK_ROWS)
                chunk = np.empty(b - a, record)
                for name in CATALOGUE_COLUMNS:
                    chunk[name.upper()] = data[name][a:b]
                fh.write(chunk.tobytes())
            fh.write(b"\0" * (-(rows * record.itemsize) % FITS_BLOCK))
    return str(path)
