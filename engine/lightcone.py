"""Light cones from painted boxes: comoving shells around an observer, the periodic box replicated to cover
them, HEALPix maps of the expected halo counts per shell and mass bin, and Poisson halo catalogues.

Geometry. The observer sits at `observer` [Mpc/h] in the box frame. The painted field is periodic, so the
box [0, L)³ is repeated with period L: replica n ∈ Z³ holds voxel i at (i + ½)H + nL, H = L/N. Shells are
comoving-distance intervals [χ_j, χ_{j+1}) [Mpc/h] with χ(z) = (c/H0) ∫ dz/E(z) of the files' flat ΛCDM
(matter + Λ, radiation neglected as in the simulator). Each shell is painted from one snapshot: the input
whose redshift is nearest the redshift at the shell's middle distance.

Maps. A voxel's expected count goes to the shell of its centre's distance and to the HEALPix pixel (RING
ordering) of its centre's direction; with `subsample` s, to each of s³ sub-points (sub-voxel centres) with
weight 1/s³, which smooths the maps where a voxel subtends more than a pixel. A map holds expected counts
summed over replicas: its total is exactly the sum of the field over the (sub-)voxel centres in the shell.

Catalogues. N ~ Poisson(λ) halos per voxel, uniform in the voxel; a halo is kept when its distance falls in
a shell painted from that voxel's snapshot. Columns: RA, Dec [deg] (RA = atan2(y, x) in [0, 360), Dec =
asin(z/r), box axes centred on the observer; the HEALPix pixel of (RA, Dec) is healpy's with lonlat=True),
comoving distance [Mpc/h], cosmological redshift (the painted field has no velocities: no redshift-space
distortions) and mass bin. Each (snapshot, x-plane, replica) draws from its own stream
SeedSequence(seed, snapshot, plane, replica), so the catalogue does not depend on the number of ranks.

MPI. x-planes are split into slabs (halopaint.decomposition.SlabPlan, no ghosts); each rank reads and
accumulates its own planes; maps are summed onto rank 0 (float64), catalogue columns gathered there, and
rank 0 writes the file atomically.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.integrate import cumulative_trapezoid

from halopaint.config import Cosmology, LightconeConfig
from halopaint.errors import HalopaintError
from halopaint.fields import FieldFile, FieldInfo, atomic_h5, atomic_path, check_writable, file_provenance, \
    read_info, standard_attrs
from halopaint.log import get_logger
from halopaint.validation import (CountStats, OutputLock, check_count_stats, check_output_not_input,
                                  interruption_point, lock_path)
from halopaint.sim.cosmology import LinearCosmology

log = get_logger(__name__)

C_OVER_H0 = 2997.92458          # c / H0 [Mpc/h]
FLUSH_ENTRIES = 1 << 22         # (pixel, weight) pairs buffered before one bincount into the maps
REDUCE_CHUNK = 1 << 26          # map values per MPI Reduce (512 MB of float64)
CATALOGUE_COLUMNS = ("ra", "dec", "chi", "redshift", "mass_bin")


class LightconeError(HalopaintError):
    """Bad light-cone input: inconsistent snapshots, impossible shells, missing healpy.

    Raised by checks every rank runs alike on the same arguments and files, so the CLI reports it once
    (rank 0) and every rank exits non-zero without an MPI abort.
    """

    collective = True


def _healpy():
    try:
        import healpy
    except ImportError:
        raise LightconeError("the light cone needs healpy: pip install 'halopaint[lightcone]'") from None
    return healpy


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
    """S shells: comoving edges (S+1,) [Mpc/h], redshift edges (S+1,), snapshot index per shell (S,)."""

    chi_edges: np.ndarray
    z_edges: np.ndarray
    snapshot: np.ndarray

    @property
    def count(self) -> int:
        return len(self.snapshot)


def plan_shells(cfg: LightconeConfig, snapshot_redshifts, distances: DistanceRedshift) -> ShellPlan:
    """Shell edges from `z_edges`, or `shells` of equal comoving thickness on [χ(z_min), χ(z_max)); each
    shell takes the snapshot whose redshift is nearest the redshift at its middle distance."""
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
    return ShellPlan(chi_edges=chi_edges, z_edges=z_edges, snapshot=snapshot)


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


def _validate_inputs(cfg: LightconeConfig) -> list[FieldInfo]:
    """Every input is a complete painted file (/halos) of the same box, grid, cosmology and mass bins."""
    if not cfg.inputs:
        raise LightconeError("no painted field files given")
    infos = [read_info(p, require=("halos",)) for p in cfg.inputs]
    first = infos[0]
    for info in infos[1:]:
        for name, a, b in (("grid", info.grid, first.grid), ("box_size", info.box_size, first.box_size),
                           ("cosmology", info.cosmology, first.cosmology), ("mass bins", info.n_bins, first.n_bins)):
            if a != b:
                raise LightconeError(f"{info.path}: {name} {a} differs from {first.path}'s {b}; "
                                     "all snapshots must come from one box")
        if not np.allclose(info.mass_bin_edges, first.mass_bin_edges, rtol=1e-6):
            raise LightconeError(f"{info.path}: mass_bin_edges differ from {first.path}'s")
    redshifts = [info.redshift for info in infos]
    if len(set(redshifts)) != len(redshifts):
        raise LightconeError(f"two inputs have the same redshift ({redshifts}); give one file per snapshot")
    if cfg.mass_bins is not None:
        for b in cfg.mass_bins:
            if not 0 <= b < first.n_bins:
                raise LightconeError(f"mass bin {b} does not exist (the inputs have {first.n_bins})")
    return infos


def _validate_options(cfg: LightconeConfig, hp) -> None:
    if not hp.isnsideok(cfg.nside):            # RING ordering: any nside ≥ 1
        raise LightconeError(f"--nside must be a positive integer, got {cfg.nside}")
    if cfg.subsample < 1:
        raise LightconeError(f"--subsample must be ≥ 1, got {cfg.subsample}")
    if len(cfg.observer) != 3 or not all(np.isfinite(cfg.observer)):
        raise LightconeError(f"--observer must be three finite coordinates [Mpc/h], got {cfg.observer}")
    if cfg.seed < 0:
        raise LightconeError(f"--seed must be ≥ 0, got {cfg.seed}")
    if cfg.planes_per_read < 1:
        raise LightconeError(f"planes_per_read must be ≥ 1, got {cfg.planes_per_read}")
    if not cfg.out:
        raise LightconeError("no output file given (--out)")
    check_writable(cfg.out)


class _MapAccumulator:
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


@dataclass
class _Geometry:
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

    def shells_of(self, r: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shell index of each distance and whether it falls in a shell painted from this snapshot (`active`);
        r = 0 (no direction) never does."""
        shell = np.searchsorted(self.plan.chi_edges, r, side="right") - 1
        ok = (shell >= 0) & (shell < len(active)) & (r > 0)
        ok[ok] = active[shell[ok]]
        return shell, ok

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


def _map_plane(geo: _Geometry, acc: _MapAccumulator, counts: np.ndarray, plane: int, reps, active: np.ndarray,
               offsets: np.ndarray, hp) -> None:
    """Add one x-plane's counts (n_bins, N, N) to the maps for every replica and sub-point offset."""
    lo, hi = geo.plan.chi_edges[0], geo.plan.chi_edges[-1]
    x = (plane + 0.5) * geo.voxel
    weight = 1.0 / len(offsets)
    for rep in reps:
        if not geo.plane_reaches(x, rep, lo, hi, margin=geo.voxel):
            continue
        for off in offsets:
            dx, dy, dz, r = geo.plane_offsets(plane, rep, off)
            shell, ok = geo.shells_of(r, active)
            if not ok.any():
                continue
            iy, iz = np.nonzero(ok)
            pix = hp.vec2pix(geo.nside, np.full(iy.size, dx), dy[iy], dz[iz])
            cells = shell[iy, iz].astype(np.int64) * geo.npix + pix
            acc.add(cells, counts[:, iy, iz].astype(np.float64) * weight)


def _catalogue_plane(geo: _Geometry, dist: DistanceRedshift, counts: np.ndarray, plane: int, reps,
                     active: np.ndarray, bins, seed: int, snapshot: int, out: dict) -> None:
    """Poisson halos of one x-plane (n_bins, N, N) for every replica; kept ones appended to `out` columns."""
    h = geo.voxel
    lo, hi = geo.plan.chi_edges[0], geo.plan.chi_edges[-1]
    margin = math.sqrt(3.0) * h / 2
    x = (plane + 0.5) * h
    for rep in reps:
        if not geo.plane_reaches(x, rep, lo, hi, margin=margin):
            continue
        dx, dy, dz, r = geo.plane_offsets(plane, rep)
        near = (r >= lo - margin) & (r < hi + margin)
        if not near.any():
            continue
        iy, iz = np.nonzero(near)
        key = [seed, snapshot, plane, *(int(v) + (1 << 20) for v in rep)]
        rng = np.random.default_rng(np.random.SeedSequence(key))
        for k, b in enumerate(bins):
            n = rng.poisson(np.maximum(counts[k, iy, iz], 0.0).astype(np.float64))
            total = int(n.sum())
            if total == 0:
                continue
            jy, jz = np.repeat(iy, n), np.repeat(iz, n)
            u = rng.random((3, total))
            px = dx + (u[0] - 0.5) * h
            py = dy[jy] + (u[1] - 0.5) * h
            pz = dz[jz] + (u[2] - 0.5) * h
            rr = np.sqrt(px * px + py * py + pz * pz)
            _, keep = geo.shells_of(rr, active)
            if not keep.any():
                continue
            px, py, pz, rr = px[keep], py[keep], pz[keep], rr[keep]
            out["ra"].append(np.degrees(np.arctan2(py, px)) % 360.0)
            out["dec"].append(np.degrees(np.arcsin(np.clip(pz / rr, -1.0, 1.0))))
            out["chi"].append(rr)
            out["redshift"].append(dist.redshift(rr))
            out["mass_bin"].append(np.full(rr.size, b, dtype=np.int16))


def subsample_offsets(s: int) -> np.ndarray:
    """(s³, 3) sub-voxel centres in voxel units, relative to the voxel centre."""
    g = (np.arange(s) + 0.5) / s - 0.5
    return np.array(list(itertools.product(g, g, g)), dtype=np.float64)


def _comm():
    from mpi4py import MPI
    return MPI.COMM_WORLD


def build(cfg: LightconeConfig, comm=None, progress: bool = True) -> dict | None:
    """Build the light cone; collective over `comm` (default: MPI.COMM_WORLD when mpi4py is loaded by a
    multi-rank launch, else serial). Rank 0 writes `cfg.out` and returns the summary; other ranks None."""
    hp = _healpy()
    if comm is None:
        from halopaint.launch import discover
        comm = _comm() if discover().is_distributed else None
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    t0 = time.perf_counter()
    try:
        infos = _validate_inputs(cfg)
        _validate_options(cfg, hp)
        check_output_not_input([cfg.out, Path(cfg.out).with_suffix(".png") if cfg.figure else None,
                                lock_path(cfg.out)], cfg.inputs)
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
        return _build(cfg, infos, comm, rank, size, hp, t0)


def _build(cfg: LightconeConfig, infos: list[FieldInfo], comm, rank: int, size: int, hp, t0: float) -> dict | None:
    first = infos[0]
    bins = tuple(range(first.n_bins)) if cfg.mass_bins is None else tuple(cfg.mass_bins)
    z_top = max(cfg.z_edges) if cfg.z_edges is not None else cfg.z_max
    dist = DistanceRedshift(first.cosmology, max(z_top, 1e-6) * 1.001)
    plan = plan_shells(cfg, [i.redshift for i in infos], dist)
    check_map_memory(cfg.nside, plan.count, len(bins))
    geo = _Geometry(first.grid, first.box_size, np.asarray(cfg.observer, dtype=np.float64), plan, cfg.nside)
    reps = replicas(geo.observer, geo.box, plan.chi_edges[0], plan.chi_edges[-1] + geo.voxel, cfg.max_replicas)
    from halopaint.decomposition import SlabPlan
    x0, x1 = SlabPlan(grid=first.grid, ranks=size, ghost=0).bounds(rank)   # ranks beyond N hold no planes
    npix = geo.npix
    acc = _MapAccumulator(len(bins), plan.count * npix)
    offsets = subsample_offsets(cfg.subsample)
    columns = {name: [] for name in CATALOGUE_COLUMNS}
    counts = {}                                # per input: CountStats of the planes this rank read
    done = 0
    for snap, info in enumerate(infos):
        active = plan.snapshot == snap
        if not active.any():
            continue
        stats = counts.setdefault(info.path, CountStats())
        with FieldFile(info.path, require=("halos",)) as f:
            for p0 in range(x0, x1, cfg.planes_per_read):
                p1 = min(p0 + cfg.planes_per_read, x1)
                field = f.read_halos(bins, p0, p1)
                stats.add(field)
                if stats.nonfinite or stats.negative:
                    break                      # refused below, after every rank has agreed
                for j, plane in enumerate(range(p0, p1)):
                    _map_plane(geo, acc, field[:, j], plane, reps, active, offsets, hp)
                    if cfg.catalogue:
                        _catalogue_plane(geo, dist, field[:, j], plane, reps, active, bins, cfg.seed, snap, columns)
                done += p1 - p0
                interruption_point("lightcone", done, rank)
                if rank == 0:
                    log.info(f"snapshot {snap} (z = {info.redshift:g}): planes {p1 - x0}/{x1 - x0} of rank 0")
    _agree_counts(counts, comm)
    acc.flush()
    maps = _reduce_maps(acc.maps, comm)
    catalogue = _gather_catalogue(columns, comm) if cfg.catalogue else None
    if rank != 0:
        return None
    maps = maps.reshape(len(bins), plan.count, npix).transpose(1, 0, 2)
    summary = _write(cfg, infos, plan, bins, maps, catalogue, len(reps), size, time.perf_counter() - t0)
    if cfg.figure:
        summary["figure"] = plot_maps(maps, plan, Path(cfg.out).with_suffix(".png"), hp)
    return summary


def _agree_counts(counts: dict, comm) -> None:
    """Merge every rank's count scans; refuse (collectively) painted counts that are negative or non-finite."""
    local = {path: st.as_tuple() for path, st in counts.items()}
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


def check_map_memory(nside: int, shells: int, n_bins: int) -> None:
    """The maps (float64, shells × bins × 12·nside² pixels, twice on rank 0 for the reduction) must fit
    in this machine's memory; refuse a plan that cannot, before allocating anything."""
    import psutil
    need = 2 * 8 * shells * n_bins * 12 * nside**2
    have = psutil.virtual_memory().total
    if need > have:
        raise LightconeError(f"--nside {nside}: the maps ({shells} shells × {n_bins} mass bins × "
                             f"{12 * nside**2:.3g} pixels, float64) need {need / 2**30:.3g} GiB, more than this "
                             f"machine's {have / 2**30:.3g} GiB; use a smaller --nside")


def _reduce_maps(maps: np.ndarray, comm) -> np.ndarray:
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


def _gather_catalogue(columns: dict, comm) -> dict:
    """Concatenate this rank's columns and gather every rank's on rank 0 (rank order = x order)."""
    local = {name: (np.concatenate(parts) if parts else
                    np.empty(0, dtype=np.int16 if name == "mass_bin" else np.float64))
             for name, parts in columns.items()}
    if comm is None or comm.Get_size() == 1:
        return local
    counts = comm.gather(len(local["ra"]), root=0)
    out = {}
    for name, data in local.items():
        recv = None
        if comm.Get_rank() == 0:
            recv = (np.empty(sum(counts), dtype=data.dtype), counts)
        comm.Gatherv(np.ascontiguousarray(data), recv, root=0)
        if comm.Get_rank() == 0:
            out[name] = recv[0]
    return out


def _write(cfg: LightconeConfig, infos, plan: ShellPlan, bins, maps: np.ndarray, catalogue: dict | None,
           n_replicas: int, ranks: int, seconds: float) -> dict:
    first = infos[0]
    sources = [dict(file_provenance(i.path, i.attrs), redshift=i.redshift) for i in infos]
    attrs = standard_attrs(first.box_size, float(plan.z_edges[0]), first.cosmology,
                           mass_bin_edges=first.mass_bin_edges, seed=cfg.seed, nside=int(cfg.nside),
                           ordering="RING", observer=np.asarray(cfg.observer, dtype=np.float64),
                           subsample=int(cfg.subsample), mass_bins=np.asarray(bins, dtype=np.int64),
                           replicas=int(n_replicas), ranks=int(ranks), sources=sources)
    with atomic_h5(cfg.out, attrs) as f:
        d = f.create_dataset("maps", data=maps.astype(np.float32))
        d.attrs["description"] = "expected halo counts per (shell, mass bin, HEALPix RING pixel)"
        g = f.create_group("shells")
        g.create_dataset("chi_edges", data=plan.chi_edges)
        g.create_dataset("z_edges", data=plan.z_edges)
        g.create_dataset("snapshot", data=plan.snapshot.astype(np.int64))
        g.create_dataset("total_expected", data=maps.sum(axis=2))
        if catalogue is not None:
            c = f.create_group("catalogue")
            for name in CATALOGUE_COLUMNS:
                c.create_dataset(name, data=catalogue[name])
    summary = {"out": cfg.out, "shells": plan.count, "nside": cfg.nside, "replicas": n_replicas, "ranks": ranks,
               "chi_edges": [round(float(v), 4) for v in plan.chi_edges],
               "z_edges": [round(float(v), 6) for v in plan.z_edges],
               "expected_per_shell": [round(float(v), 3) for v in maps.sum(axis=(1, 2))],
               "seconds": round(seconds, 2)}
    if catalogue is not None:
        summary["catalogue_halos"] = int(len(catalogue["ra"]))
    return summary


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

