"""The `halopaint sample` file driver: an integer realization (and catalogue) of a painted file under MPI.

`sample` runs on every rank of an MPI communicator: rank r samples its x-slab (decomposition.SlabPlan)
plane by plane into its part file `OUT.realization-parts/rank-RRRR.h5`, and rank 0 writes the master OUT
whose datasets are virtual datasets over the parts, `complete = True` last. The law is in
halopaint.sample.counts, the catalogue columns in halopaint.sample.catalogue.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np

from halopaint.decomposition import SlabPlan, read_periodic_planes
from halopaint.errors import HalopaintError
from halopaint.fields import FieldFile, FieldInfo, check_writable, same_voxel_size, standard_attrs, temporary_path
from halopaint.launch import agree_errors
from halopaint.log import get_logger, progress
from halopaint.count_model import CountModel
from halopaint.model import ModelBundle, resolve_model_path
from halopaint.sample.catalogue import CATALOGUE_COLUMNS, catalogue_plane
from halopaint.sample.counts import COUNT_DTYPE, cell_aligned, poisson_count_model, sample_counts

log = get_logger(__name__)

READ_BUDGET_BYTES = 64 * 2**20              # input planes read at once per rank (bounded memory)


class SampleError(HalopaintError):
    """Sampling cannot start or finish (bad input, mismatched files, unwritable output)."""


# ------------------------------------------------------------------------------------------- driver

@dataclass(frozen=True)
class SampleConfig:
    """What `halopaint sample` does. model: "auto" (the count model recorded in the painted file's
    model_metadata), "default" or a bundle path; poisson: α = 0 in every bin (masses/velocities still
    from the count model); mass_bins: absolute bin indices (None = every painted bin)."""

    painted: str
    out: str
    seed: int
    density: str | None = None
    catalogue: bool = False
    mass_bins: tuple[int, ...] | None = None
    model: str = "auto"
    poisson: bool = False
    force: bool = False


def realization_parts_dir(out) -> Path:
    """Where a realization's per-rank parts live: R.h5 → R.realization-parts/ (never a paint parts dir)."""
    out = Path(out)
    return out.with_name((out.stem if out.suffix else out.name) + ".realization-parts")


def _agree(comm, local_error: str | None) -> None:
    """Collective: if any rank has an error, every rank raises the first one (CLI prints it once)."""
    agree_errors(comm, local_error, SampleError)


@dataclass
class _Setup:
    info: FieldInfo
    bins: list[int]                      # absolute mass-bin indices sampled
    file_bins: list[int]                 # their positions in the painted /halos
    edges: np.ndarray                    # (n_sel+1,) [M☉/h]
    count_model: CountModel              # indexed by absolute bin
    source: str                          # where the count model came from
    warnings: list[str]
    draw_bins: list[int] = None          # bins drawn: `bins`, then the heavier painted bins a cross-bin law needs
    draw_file_bins: list[int] = None     # their positions in the painted /halos


def _same_path(a, b) -> bool:
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _resolve_count_model(cfg: SampleConfig, meta: dict, redshift: float,
                         warnings: list[str]) -> tuple[CountModel | None, str]:
    """The count model (full bundle bin indexing) and a description of its source ('default': the shipped
    bundle nearest the painted file's redshift)."""
    if cfg.model == "auto":
        cm = meta.get("count_model")
        return (None if cm is None else CountModel.from_dict(cm)), "painted file's model_metadata"
    path = resolve_model_path(cfg.model, redshift)
    bundle = ModelBundle.load(path)
    ours, theirs = np.asarray(bundle.metadata.mass_bin_edges), np.asarray(meta["mass_bin_edges"])
    if ours.shape != theirs.shape or not np.allclose(ours, theirs, rtol=1e-9):
        raise SampleError(f"--model {cfg.model}: its mass bins differ from those of the model that painted "
                          f"{cfg.painted}")
    mine = json.loads(bundle.metadata.to_json())
    mine.pop("count_model", None)
    if mine != {k: v for k, v in meta.items() if k != "count_model"}:
        warnings.append(f"--model {cfg.model}: its metadata differ from those of the model that painted "
                        f"{cfg.painted}")
    return bundle.metadata.count_model, str(path)


def _prepare(cfg: SampleConfig) -> _Setup:
    """Validate inputs, options and output (same on every rank)."""
    if cfg.seed < 0:
        raise SampleError(f"--seed must be ≥ 0, got {cfg.seed}")
    if not cfg.out:
        raise SampleError("--out is required")
    if cfg.catalogue != (cfg.density is not None):
        raise SampleError("--catalogue needs --density DENS.h5 (its /velocity), and --density is only used "
                          "with --catalogue")
    with FieldFile(cfg.painted, require=("halos",)) as f:
        info = f.info
    if "model_metadata" not in info.attrs:
        raise SampleError(f"{cfg.painted}: not a painted field (no model_metadata attribute; sample the output "
                          "of `halopaint paint`)")
    if "sample_seed" in info.attrs:
        raise SampleError(f"{cfg.painted}: is already an integer realization (sample a painted field)")
    for other, what in ((cfg.painted, "the painted input"), (cfg.density, "the density file")):
        if other and _same_path(cfg.out, other):
            raise SampleError(f"--out {cfg.out} is {what}; choose another output name")
    if Path(cfg.out).exists() and not cfg.force:
        raise SampleError(f"--out {cfg.out} exists; use --force to replace it")
    check_writable(cfg.out)
    try:
        meta = json.loads(str(info.attrs["model_metadata"]))
        model_edges = np.asarray(meta["mass_bin_edges"], np.float64)
    except (ValueError, KeyError, TypeError):
        raise SampleError(f"{cfg.painted}: model_metadata attribute is not a model's metadata (JSON with "
                          "mass_bin_edges)") from None
    painted_bins = [int(b) for b in np.atleast_1d(info.attrs.get("painted_mass_bins", range(info.n_bins)))]
    if len(painted_bins) != info.n_bins:
        raise SampleError(f"{cfg.painted}: painted_mass_bins lists {len(painted_bins)} bins, /halos has "
                          f"{info.n_bins}")
    if max(painted_bins) + 2 > model_edges.size or min(painted_bins) < 0 or not np.allclose(
            model_edges[painted_bins[0]:painted_bins[-1] + 2], info.mass_bin_edges, rtol=1e-9):
        raise SampleError(f"{cfg.painted}: its mass_bin_edges are not the painting model's bins "
                          f"{painted_bins}")
    bins = painted_bins if cfg.mass_bins is None else sorted(set(cfg.mass_bins))
    for b in bins:
        if b not in painted_bins:
            raise SampleError(f"--mass-bins: bin {b} is not in {cfg.painted} (painted bins {painted_bins})")
    if bins != list(range(bins[0], bins[-1] + 1)):
        raise SampleError(f"--mass-bins {','.join(map(str, bins))} is not a contiguous range")
    file_bins = [painted_bins.index(b) for b in bins]
    edges = np.asarray(info.mass_bin_edges[file_bins[0]:file_bins[-1] + 2], np.float64)
    warnings: list[str] = []
    cm, source = _resolve_count_model(cfg, meta, info.redshift, warnings)
    if cm is None and not cfg.poisson:
        raise SampleError(f"the model of {cfg.painted} has no count model ({source}); pass --model BUNDLE with "
                          "one (e.g. --model default), or --poisson for a Poisson draw")
    if cm is not None and cm.n_bins != model_edges.size - 1:
        raise SampleError(f"count model ({source}) has {cm.n_bins} bins, the painting model {model_edges.size - 1}")
    if cfg.poisson:
        base = cm or poisson_count_model(model_edges.size - 1)
        cm = replace(base, alpha=[[0.0]] * base.n_bins, mu_breaks=[[]] * base.n_bins, mean_mu=None, mean_n=None,
                     exclusion=None,
                     provenance={"law": "Poisson (--poisson)", "catalogue_parts_from": base.provenance})
        source += " with --poisson"
    if cm.cell and info.grid % cm.cell:
        raise SampleError(f"count model ({source}) keeps totals in cells of {cm.cell} voxels, which do not tile "
                          f"the {info.grid}-voxel grid of {cfg.painted}")
    draw_bins = list(bins)
    if cm.exclusion is not None:    # a bin's draw sees the heavier bins' halos: draw them too, keep only `bins`
        draw_bins += [b for b in painted_bins if b > bins[-1]]
        absent = sorted({a for b in bins for a in cm.exclusion_from(b) if a not in painted_bins})
        if absent:
            warnings.append(f"the count model's cross-bin law lowers bins {bins} where halos of bins {absent} "
                            f"fall, which {cfg.painted} does not hold: drawn without them")
    if cfg.catalogue:
        _check_density(cfg, info)
        if cm.mass_slope is None:
            raise SampleError(f"count model ({source}) has no mass function (mass_slope): cannot draw catalogue "
                              "masses; refit it with jobs/fit_count_model.py")
        if cm.velocity_dispersion is None:
            warnings.append("the count model has no calibrated velocity dispersion: catalogue velocities are "
                            "the density file's /velocity at the halo positions only")
    return _Setup(info, bins, file_bins, edges, cm, source, warnings, draw_bins,
                  [painted_bins.index(b) for b in draw_bins])


def _check_density(cfg: SampleConfig, painted: FieldInfo) -> None:
    """The density file must be the one the painted field came from (box, grid, seed, cosmology, z)."""
    with FieldFile(cfg.density, require=("density",)) as f:
        d = f.info
        if "velocity" not in f.h5:
            raise SampleError(f"{cfg.density}: no /velocity dataset (3, N, N, N) km/s, needed by --catalogue "
                              "(simulate writes it)")
        if f.h5["velocity"].shape != (3, d.grid, d.grid, d.grid):
            raise SampleError(f"{cfg.density}: /velocity must be (3, {d.grid}, {d.grid}, {d.grid}), got "
                              f"{f.h5['velocity'].shape}")
    diffs = []
    if d.grid != painted.grid:
        diffs.append(f"grid {d.grid} vs {painted.grid}")
    if not same_voxel_size(d.box_size, painted.box_size):
        diffs.append(f"box {d.box_size:g} vs {painted.box_size:g} Mpc/h")
    if d.attrs.get("seed") != painted.attrs.get("seed"):
        diffs.append(f"seed {d.attrs.get('seed')} vs {painted.attrs.get('seed')}")
    if d.cosmology != painted.cosmology:
        diffs.append(f"cosmology {d.cosmology.to_json()} vs {painted.cosmology.to_json()}")
    if abs(d.redshift - painted.redshift) > 1e-6:
        diffs.append(f"redshift {d.redshift:g} vs {painted.redshift:g}")
    if diffs:
        raise SampleError(f"--density {cfg.density} does not match {cfg.painted}: {'; '.join(diffs)}")


def _read_planes(ds, bins, a: int, b: int) -> np.ndarray:
    """(len(bins), b−a, N, N) float32 of a 4-D dataset."""
    return np.stack([np.asarray(ds[i, a:b], np.float32) for i in bins])


def _sample_slab(cfg: SampleConfig, s: _Setup, x0: int, x1: int, part: h5py.File) -> dict:
    """Sample planes [x0, x1) into the open part file; → per-bin totals and halo count of this rank."""
    n = s.info.grid
    totals = np.zeros(len(s.bins), np.int64)
    step = max(1, READ_BUDGET_BYTES // max(1, len(s.draw_bins) * n * n * 16))
    rows = 0
    with FieldFile(cfg.painted) as pf, (FieldFile(cfg.density) if cfg.catalogue else _Null()) as df:
        ds = pf.h5["halos"]
        for a in progress(range(x0, x1, step), total=-(-(x1 - x0) // step), desc="sample", unit="slab"):
            b = min(x1, a + step)
            lo, hi = cell_aligned(a, b, s.count_model, n)  # a law in cells needs whole cells
            mu = _read_planes(ds, s.draw_file_bins, lo, hi)
            if not np.isfinite(mu).all() or (mu < 0).any():
                bad = int(np.count_nonzero(~np.isfinite(mu) | (mu < 0)))
                raise SampleError(f"{cfg.painted}: /halos has {bad} NaN/Inf or negative values in x-planes "
                                  f"[{lo}, {hi}); expected counts must be finite and ≥ 0")
            counts = sample_counts(mu, cfg.seed, s.count_model, x0=lo, bins=s.draw_bins)[:len(s.bins), a - lo:b - lo]
            part["halos"][:, a - x0:b - x0] = counts
            totals += counts.reshape(len(s.bins), -1).sum(axis=1)
            if cfg.catalogue:
                vel = read_periodic_planes(df.h5["velocity"], a - 1, b + 1, n, axis=1)
                rho = read_periodic_planes(df.h5["density"], a - 1, b + 1, n) if s.count_model.has_infall else None
                for x in range(a, b):
                    cat = catalogue_plane(counts[:, x - a], x, cfg.seed, s.count_model, s.bins, s.edges,
                                          s.info.box_size, velocity=vel, velocity_first=a - 1, density=rho,
                                          density_first=a - 1)
                    m = len(cat["mass"])
                    for k, v in cat.items():
                        d = part["catalogue"][k]
                        d.resize(rows + m, axis=0)
                        d[rows:rows + m] = v
                    rows += m
    return {"totals": totals.tolist(), "rows": rows}


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _open_part(path: Path, n_bins: int, nx: int, n: int, catalogue: bool) -> h5py.File:
    f = h5py.File(path, "w")
    f.create_dataset("halos", shape=(n_bins, nx, n, n), dtype=COUNT_DTYPE)
    if catalogue:
        g = f.create_group("catalogue")
        for k, (dtype, width) in CATALOGUE_COLUMNS.items():
            shape, maxshape = ((0, width), (None, width)) if width else ((0,), (None,))
            g.create_dataset(k, shape=shape, maxshape=maxshape, dtype=dtype,
                             chunks=(65536, width) if width else (65536,))
    return f


def _write_master(out: Path, plan: SlabPlan, n_bins: int, reports: list[dict], catalogue: bool,
                  attrs: dict) -> None:
    """Master OUT: virtual datasets over the parts (relative paths), complete=True last, atomic rename."""
    rel, n = realization_parts_dir(out).name, plan.grid
    tmp = temporary_path(out)
    try:
        with h5py.File(tmp, "w") as f:
            for key, value in attrs.items():
                f.attrs[key] = value
            layout = h5py.VirtualLayout(shape=(n_bins, n, n, n), dtype=COUNT_DTYPE)
            for r in range(plan.ranks):
                x0, x1 = plan.bounds(r)
                if x1 > x0:
                    layout[:, x0:x1] = h5py.VirtualSource(f"{rel}/rank-{r:04d}.h5", "halos",
                                                          shape=(n_bins, x1 - x0, n, n))
            f.create_virtual_dataset("halos", layout, fillvalue=-1)
            if catalogue:
                _write_catalogue_master(f, rel, reports)
            f.attrs["complete"] = True
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _write_catalogue_master(f: h5py.File, rel: str, reports: list[dict]) -> None:
    total = sum(r["rows"] for r in reports)
    g = f.create_group("catalogue")
    for k, (dtype, width) in CATALOGUE_COLUMNS.items():
        shape = (total, width) if width else (total,)
        if total == 0:
            g.create_dataset(k, shape=shape, dtype=dtype)
            continue
        layout, start = h5py.VirtualLayout(shape=shape, dtype=dtype), 0
        for r, rep in enumerate(reports):
            m = rep["rows"]
            if m:
                layout[start:start + m] = h5py.VirtualSource(f"{rel}/rank-{r:04d}.h5", f"catalogue/{k}",
                                                             shape=(m, width) if width else (m,))
            start += m
        g.create_virtual_dataset(k, layout)
    g.attrs["units"] = json.dumps({"pos": "Mpc/h", "vel": "km/s", "mass": "Msun/h", "mass_bin": "index"})


def _master_attrs(cfg: SampleConfig, s: _Setup, plan: SlabPlan, reports: list[dict], wall: float) -> dict:
    keep = {k: v for k, v in s.info.attrs.items()
            if k not in ("complete", "created", "halopaint_version", "mass_bin_edges", "painted_mass_bins",
                         "box_size", "redshift", "cosmology", "seed", "parts_dir", "layout")}
    totals = np.sum([r["totals"] for r in reports], axis=0)
    extra = dict(keep, sample_seed=int(cfg.seed), painted_input=os.path.abspath(cfg.painted),
                 painted_created=str(s.info.attrs.get("created", "")),
                 painted_mass_bins=np.asarray(s.bins, np.int64),
                 count_model=json.dumps(s.count_model.select(s.bins).to_dict(), sort_keys=True),
                 count_model_source=s.source, halos_total=np.asarray(totals, np.int64),
                 random_streams=("numpy PCG64 per SeedSequence(sample_seed, spawn_key=(purpose, mass bin, "
                                 "x-plane)); purpose 0 counts, 1 catalogue"),
                 numpy_version=np.__version__, ranks=int(plan.ranks), wall_time_s=float(wall),
                 parts_dir=realization_parts_dir(cfg.out).name,
                 layout="virtual datasets over per-rank part files", sample_warnings=list(s.warnings))
    if cfg.catalogue:
        extra.update(density_file=os.path.abspath(cfg.density), catalogue_halos=int(sum(r["rows"] for r in reports)))
    seed = s.info.attrs.get("seed")
    return standard_attrs(s.info.box_size, s.info.redshift, s.info.cosmology, mass_bin_edges=s.edges,
                          seed=None if seed is None else int(seed), **extra)


def sample(cfg: SampleConfig, comm=None) -> dict:
    """Write an integer realization of `cfg.painted` (and its catalogue) to `cfg.out` (collective).

    Raises SampleError on every rank on bad input; nothing at `cfg.out` unless it completed.
    """
    t0 = time.perf_counter()
    if comm is None:
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    err, s = None, None
    try:
        s = _prepare(cfg)
    except (HalopaintError, ValueError) as exc:
        err = str(exc)
    _agree(comm, err)
    for w in s.warnings if rank == 0 else ():
        log.warning(w)
    out, pdir = Path(cfg.out), realization_parts_dir(cfg.out)
    err = None
    if rank == 0:
        try:
            out.unlink(missing_ok=True)                   # only reached with --force (checked above)
            pdir.mkdir(exist_ok=True)
            for stale in pdir.glob("rank-*.h5"):
                stale.unlink()
        except OSError as exc:
            err = f"cannot prepare {pdir}: {exc.strerror}"
    _agree(comm, err)
    plan = SlabPlan(grid=s.info.grid, ranks=size, ghost=0)
    x0, x1 = plan.bounds(rank)
    path = pdir / f"rank-{rank:04d}.h5"
    err, report = None, {"totals": [0] * len(s.bins), "rows": 0}
    try:
        with _open_part(path, len(s.bins), x1 - x0, s.info.grid, cfg.catalogue) as part:
            report = _sample_slab(cfg, s, x0, x1, part)
    except (HalopaintError, ValueError) as exc:
        err = str(exc)
    except OSError as exc:
        err = f"cannot write {path}: {exc}"
    errors = comm.allgather(err)
    if any(errors):                                       # leave nothing behind: no part, no parts dir
        path.unlink(missing_ok=True)
        comm.Barrier()
        if rank == 0:
            try:
                pdir.rmdir()
            except OSError:
                pass
        _agree(comm, next(e for e in errors if e))
    reports = comm.gather(report, root=0)
    err, summary = None, None
    if rank == 0:
        wall = time.perf_counter() - t0
        try:
            _write_master(out, plan, len(s.bins), reports, cfg.catalogue, _master_attrs(cfg, s, plan, reports, wall))
            summary = dict(out=cfg.out, grid=plan.grid, ranks=size, bins=s.bins, wall_s=wall,
                           halos=np.sum([r["totals"] for r in reports], axis=0).tolist(),
                           catalogue_rows=sum(r["rows"] for r in reports) if cfg.catalogue else None)
        except (HalopaintError, OSError) as exc:
            err = f"cannot write {cfg.out}: {exc}"
    _agree(comm, comm.bcast(err, root=0))
    return comm.bcast(summary, root=0)
