"""What `halopaint lightcone` accepts: the snapshot files, their density files, the options.

Every check here runs alike on every rank on the same arguments and files, so an error is collective:
the CLI reports it once (rank 0) and every rank exits non-zero without an MPI abort.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from halopaint.config import SNAPSHOT_BLENDS, LightconeConfig
from halopaint.errors import HalopaintError
from halopaint.fields import FieldFile, FieldInfo, check_writable, read_info

MAX_MAP_BYTES = 8 * 1024**3       # float64 map accumulators per rank (shells × bins × 12·nside²)
MAX_NSIDE = 1 << 13               # 805 M pixels per map: beyond this the maps alone are tens of GiB


class LightconeError(HalopaintError):
    """Bad light-cone input: inconsistent snapshots, impossible shells, missing healpy."""

    collective = True


def healpy_module():
    try:
        import healpy
    except ImportError:
        raise LightconeError("the light cone needs healpy: pip install 'halopaint[lightcone]'") from None
    return healpy


@dataclass(frozen=True)
class Snapshot:
    """One input: its painted (or sampled) field, its density file (velocities) if given, its count type."""

    info: FieldInfo
    density: FieldInfo | None
    integer_counts: bool          # a sampled realization (/halos integer): its counts are used as they are

    @property
    def redshift(self) -> float:
        return self.info.redshift


def _same_file(a: str, b: str) -> bool:
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def _check_density_matches(painted: FieldInfo, dens: FieldInfo, need_velocity: bool) -> None:
    for name, a, b in (("grid", dens.grid, painted.grid), ("box_size", dens.box_size, painted.box_size),
                       ("cosmology", dens.cosmology, painted.cosmology)):
        if a != b:
            raise LightconeError(f"density file {dens.path}: {name} {a} differs from its painted file "
                                 f"{painted.path}'s {b}")
    if abs(dens.redshift - painted.redshift) > 1e-6:
        raise LightconeError(f"density file {dens.path}: redshift {dens.redshift:g} differs from its painted "
                             f"file {painted.path}'s {painted.redshift:g} (give them in the same order)")
    s_d, s_p = dens.attrs.get("seed"), painted.attrs.get("seed")
    if s_d is not None and s_p is not None and int(s_d) != int(s_p):
        raise LightconeError(f"density file {dens.path}: seed {int(s_d)} differs from its painted file "
                             f"{painted.path}'s {int(s_p)}")
    if need_velocity:
        with FieldFile(dens.path) as f:
            ds = f.h5.get("velocity")
            if ds is None or not hasattr(ds, "shape"):
                raise LightconeError(f"density file {dens.path} has no /velocity (simulate writes it); the "
                                     "catalogue's v_los and z_obs need it")
            if tuple(ds.shape) != (3, dens.grid, dens.grid, dens.grid):
                raise LightconeError(f"density file {dens.path}: /velocity has shape {tuple(ds.shape)}, "
                                     f"expected (3, {dens.grid}, {dens.grid}, {dens.grid})")


def validate_inputs(cfg: LightconeConfig) -> list[Snapshot]:
    """Every input is a complete painted/sampled file (/halos) of the same box, grid, cosmology and mass
    bins, at distinct redshifts; density files (if any) pair with them one to one, in order."""
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
    if first.mass_bin_edges is None:
        raise LightconeError(f"{first.path}: no mass_bin_edges attribute (not a painted field?)")
    redshifts = [info.redshift for info in infos]
    if len(set(redshifts)) != len(redshifts):
        raise LightconeError(f"two inputs have the same redshift ({redshifts}); give one file per snapshot")
    if cfg.mass_bins is not None:
        for b in cfg.mass_bins:
            if not 0 <= b < first.n_bins:
                raise LightconeError(f"mass bin {b} does not exist (the inputs have {first.n_bins})")
    if cfg.densities and len(cfg.densities) != len(cfg.inputs):
        raise LightconeError(f"{len(cfg.densities)} density files for {len(cfg.inputs)} snapshots: give one "
                             "--density file per painted file, in the same order")
    densities = [read_info(p, require=("density",)) for p in cfg.densities] if cfg.densities else [None] * len(infos)
    snapshots = []
    for info, dens in zip(infos, densities):
        if dens is not None:
            _check_density_matches(info, dens, need_velocity=cfg.catalogue)
        with FieldFile(info.path) as f:
            integer = f.h5["halos"].dtype.kind in "iu"
        snapshots.append(Snapshot(info=info, density=dens, integer_counts=integer))
    return snapshots


def validate_options(cfg: LightconeConfig, hp, n_bins: int) -> None:
    """Options that need no file: HEALPix resolution, observer, seed, output path (never an input)."""
    nside = cfg.nside
    if not isinstance(nside, (int, np.integer)) or nside < 1 or nside & (nside - 1) or not hp.isnsideok(nside):
        raise LightconeError(f"--nside must be a power of two ≥ 1, got {nside}")
    if nside > MAX_NSIDE:
        raise LightconeError(f"--nside {nside} is above {MAX_NSIDE}: one map would hold "
                             f"{12 * nside**2:.3g} pixels")
    shells = len(cfg.z_edges) - 1 if cfg.z_edges is not None else cfg.shells
    map_bytes = max(shells, 1) * n_bins * 12 * nside**2 * 8
    if map_bytes > MAX_MAP_BYTES:
        raise LightconeError(f"--nside {nside} with {shells} shells × {n_bins} mass bins needs "
                             f"{map_bytes / 2**30:.1f} GiB of maps per rank (limit {MAX_MAP_BYTES / 2**30:.0f} GiB); "
                             "lower --nside, --shells or --mass-bins")
    if cfg.subsample < 1:
        raise LightconeError(f"--subsample must be ≥ 1, got {cfg.subsample}")
    if len(cfg.observer) != 3 or not all(np.isfinite(cfg.observer)):
        raise LightconeError(f"--observer must be three finite coordinates [Mpc/h], got {cfg.observer}")
    if cfg.seed < 0:
        raise LightconeError(f"--seed must be ≥ 0, got {cfg.seed}")
    if cfg.planes_per_read < 1:
        raise LightconeError(f"planes_per_read must be ≥ 1, got {cfg.planes_per_read}")
    if cfg.snapshot_blend not in SNAPSHOT_BLENDS:
        raise LightconeError(f"--snapshot-blend must be one of {', '.join(SNAPSHOT_BLENDS)}, got {cfg.snapshot_blend!r}")
    if not np.isfinite(cfg.snapshot_tolerance) or cfg.snapshot_tolerance < 0:
        raise LightconeError(f"--snapshot-tolerance must be ≥ 0, got {cfg.snapshot_tolerance}")
    if cfg.velocity_dispersion is not None:
        if len(cfg.velocity_dispersion) not in (1, n_bins) or not all(
                np.isfinite(v) and v >= 0 for v in cfg.velocity_dispersion):
            raise LightconeError(f"--velocity-dispersion needs 1 or {n_bins} values ≥ 0 [km/s], got "
                                 f"{list(cfg.velocity_dispersion)}")
    if not cfg.out:
        raise LightconeError("no output file given (--out)")
    for path in (*cfg.inputs, *cfg.densities):
        if _same_file(cfg.out, path) or os.path.abspath(cfg.out) == os.path.abspath(path):
            raise LightconeError(f"--out {cfg.out} would overwrite the input {path}; choose another output name")
    check_writable(cfg.out)
