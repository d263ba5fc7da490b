"""HDF5 field files (the contract, specified in docs/formats.md).

Layout: grid index order (x, y, z), C order; voxel i covers [i·H, (i+1)·H), H = box_size / N; slab axis x.
- `/density`: (N, N, N) float32, ρ/ρ̄ (mean 1).
- `/halos`: (n_bins, N, N, N) float32, halo counts per voxel per mass bin.
Root attrs: box_size [Mpc/h], redshift, cosmology (JSON), mass_bin_edges [M☉/h] where halos exist, seed
where generated, halopaint_version, created, and `complete = True` written last.

Writers go through a temporary name and an atomic rename; readers refuse files without `complete = True`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from halopaint import __version__
from halopaint.config import Cosmology
from halopaint.errors import HalopaintError

# Two grids have the same voxel size within this relative tolerance (box sizes round-trip through text).
VOXEL_SIZE_RTOL = 1e-6


def same_voxel_size(a: float, b: float) -> bool:
    """Whether voxel sizes a and b [Mpc/h] agree within VOXEL_SIZE_RTOL."""
    return math.isclose(a, b, rel_tol=VOXEL_SIZE_RTOL)


REQUIRED_ATTRS = ("box_size", "redshift", "cosmology", "halopaint_version", "created")


class FieldFileError(HalopaintError):
    """A field file is missing, incomplete, or does not follow the contract."""


def standard_attrs(box_size: float, redshift: float, cosmology: Cosmology, *,
                   mass_bin_edges=None, seed: int | None = None, **extra) -> dict:
    """The root attrs every field file carries (plus `extra`, JSON-encoded when not scalar/array)."""
    attrs = {
        "box_size": float(box_size),
        "redshift": float(redshift),
        "cosmology": cosmology.to_json(),
        "halopaint_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if mass_bin_edges is not None:
        attrs["mass_bin_edges"] = np.asarray(mass_bin_edges, dtype=np.float64)
    if seed is not None:
        attrs["seed"] = int(seed)
    for key, value in extra.items():
        attrs[key] = value if isinstance(value, (str, int, float, bool, np.ndarray, np.generic)) \
            else json.dumps(value, sort_keys=True)
    return attrs


def temporary_path(path: str | os.PathLike) -> Path:
    """Where a file is written before its atomic rename (same directory, so rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def check_writable(path: str | os.PathLike) -> None:
    """Fail early, before any work, if `path` cannot be created."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FieldFileError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise FieldFileError(f"cannot write {path}: directory {parent} is not writable")
    if path.is_dir():
        raise FieldFileError(f"cannot write {path}: it is a directory")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on clean exit rename it to `path`, on error remove it.

    For any writer (h5py, torch.save, matplotlib, plain text): readers never see a half-written file.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike, attrs: dict | None = None) -> Iterator[h5py.File]:
    """Open a temporary HDF5 file for writing; on clean exit mark it complete and rename it to `path`.

    `complete = True` is the last thing written. On any exception the temporary file is removed and
    nothing appears at `path`.
    """
    check_writable(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        yield f
        f.attrs["complete"] = True


def write_field(path, attrs: dict, *, density: np.ndarray | None = None,
                halos: np.ndarray | None = None, extra: dict[str, np.ndarray] | None = None) -> None:
    """Write a whole field file atomically. Arrays are stored float32 (extra datasets as given)."""
    with atomic_h5(path, attrs) as f:
        if density is not None:
            f.create_dataset("density", data=np.asarray(density, dtype=np.float32))
        if halos is not None:
            f.create_dataset("halos", data=np.asarray(halos, dtype=np.float32))
        for name, data in (extra or {}).items():
            f.create_dataset(name, data=data)


@dataclass(frozen=True)
class FieldInfo:
    """What a field file says about itself (from its attrs and dataset shapes)."""

    path: str
    grid: int
    box_size: float              # [Mpc/h]
    redshift: float
    cosmology: Cosmology
    mass_bin_edges: np.ndarray | None  # [M☉/h], (n_bins+1,)
    has_density: bool
    has_halos: bool
    n_bins: int
    attrs: dict

    @property
    def voxel_size(self) -> float:
        """H = box_size / N [Mpc/h]."""
        return self.box_size / self.grid


class FieldFile:
    """Read-only access to a complete field file: whole fields or slabs of x-planes.

    Use as a context manager: `with FieldFile(path) as f: f.read_density(x0, x1)`.
    """

    def __init__(self, path: str | os.PathLike, require: tuple[str, ...] = ()):
        self.path = str(path)
        if not os.path.exists(self.path):
            raise FieldFileError(f"{self.path}: no such file")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise FieldFileError(f"{self.path}: not a readable HDF5 file ({exc.__class__.__name__})") from None
        try:
            self.info = self._inspect(require)
        except BaseException:
            self._h5.close()
            raise

    def _inspect(self, require: tuple[str, ...]) -> FieldInfo:
        f, p = self._h5, self.path
        if not bool(f.attrs.get("complete", False)):
            raise FieldFileError(f"{p}: file is incomplete (no complete=True attr); it was not finished")
        for key in REQUIRED_ATTRS:
            if key not in f.attrs:
                raise FieldFileError(f"{p}: missing required attribute '{key}'")
        for name in require:
            if name not in f:
                raise FieldFileError(f"{p}: missing required dataset '/{name}'")
        grid = None
        if "density" in f:
            shape = f["density"].shape
            if len(shape) != 3 or len(set(shape)) != 1:
                raise FieldFileError(f"{p}: /density must be (N, N, N), got {shape}")
            grid = shape[0]
        n_bins = 0
        edges = None
        if "halos" in f:
            shape = f["halos"].shape
            if len(shape) != 4 or len(set(shape[1:])) != 1:
                raise FieldFileError(f"{p}: /halos must be (n_bins, N, N, N), got {shape}")
            if grid is not None and shape[1] != grid:
                raise FieldFileError(f"{p}: /halos grid {shape[1]} differs from /density grid {grid}")
            grid = shape[1]
            n_bins = shape[0]
            if "mass_bin_edges" not in f.attrs:
                raise FieldFileError(f"{p}: /halos present but attribute 'mass_bin_edges' missing")
            edges = np.asarray(f.attrs["mass_bin_edges"], dtype=np.float64)
            if edges.shape != (n_bins + 1,):
                raise FieldFileError(f"{p}: mass_bin_edges has {edges.size} entries for {n_bins} bins")
        if grid is None:
            raise FieldFileError(f"{p}: holds neither /density nor /halos")
        box = float(f.attrs["box_size"])
        if not np.isfinite(box) or box <= 0:
            raise FieldFileError(f"{p}: box_size must be positive, got {box}")
        try:
            cosmo = Cosmology.from_json(str(f.attrs["cosmology"]))
        except (ValueError, TypeError) as exc:
            raise FieldFileError(f"{p}: cosmology attribute is not valid JSON cosmology ({exc})") from None
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        return FieldInfo(path=p, grid=int(grid), box_size=box, redshift=float(f.attrs["redshift"]),
                         cosmology=cosmo, mass_bin_edges=edges, has_density="density" in f,
                         has_halos="halos" in f, n_bins=n_bins, attrs=attrs)

    def __enter__(self) -> "FieldFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._h5.close()

    @property
    def h5(self) -> h5py.File:
        """The underlying open h5py file (read-only)."""
        return self._h5

    def _check_planes(self, x0: int, x1: int) -> None:
        if not (0 <= x0 <= x1 <= self.info.grid):
            raise FieldFileError(f"{self.path}: x-planes [{x0}, {x1}) outside the grid of {self.info.grid}")

    def read_density(self, x0: int = 0, x1: int | None = None) -> np.ndarray:
        """x-planes [x0, x1) of /density: (x1−x0, N, N) float32."""
        if not self.info.has_density:
            raise FieldFileError(f"{self.path}: missing required dataset '/density'")
        x1 = self.info.grid if x1 is None else x1
        self._check_planes(x0, x1)
        return np.asarray(self._h5["density"][x0:x1], dtype=np.float32)

    def read_halos(self, bins=None, x0: int = 0, x1: int | None = None) -> np.ndarray:
        """x-planes [x0, x1) of /halos for `bins` (all if None): (n_sel, x1−x0, N, N) float32."""
        if not self.info.has_halos:
            raise FieldFileError(f"{self.path}: missing required dataset '/halos'")
        x1 = self.info.grid if x1 is None else x1
        self._check_planes(x0, x1)
        sel = list(range(self.info.n_bins)) if bins is None else [int(b) for b in bins]
        for b in sel:
            if not 0 <= b < self.info.n_bins:
                raise FieldFileError(f"{self.path}: mass bin {b} does not exist (file has {self.info.n_bins})")
        ds = self._h5["halos"]
        return np.stack([np.asarray(ds[b, x0:x1], dtype=np.float32) for b in sel])


def read_info(path, require: tuple[str, ...] = ()) -> FieldInfo:
    """Validate a field file and return its FieldInfo without reading any field data."""
    with FieldFile(path, require=require) as f:
        return f.info


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_provenance(path: str, attrs: dict) -> dict:
    """Provenance record of a data file: name, SHA-256 of its bytes and the identifying root attrs."""
    rec = {"file": os.path.basename(path), "sha256": file_sha256(path)}
    for key in ("seed", "box_size", "command", "created", "halopaint_version"):
        if key in attrs:
            v = attrs[key]
            rec[key] = v.item() if isinstance(v, np.generic) else v
    return rec
