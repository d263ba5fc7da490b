"""One validation layer for every command: field-file attrs and datasets, field values, physical parameter
ranges, model-bundle metadata, outputs (never an input, one run at a time) and interruption.

Everything here raises a one-line `HalopaintError` subclass naming the file or option and the problem; the
CLI prints it as `halopaint <cmd>: error: …` and exits 2. docs/validation.md lists, per command, what is
checked and refused.

Pieces (used by halopaint.fields, halopaint.model, paint, train, lightcone, the commands):
- attrs read from a file: `check_complete` (`complete` must be the boolean true), `scalar_attr` (a finite real
  scalar, optionally positive), `cosmology_from_attr` (JSON flat ΛCDM inside PHYSICAL_RANGES),
  `check_dataset` (a real numeric HDF5 dataset of the right rank, not a group);
- values: `DensityStats` (a mergeable scan: non-finite, negative, sum, max) and `check_density_stats`
  (ρ/ρ̄ finite, ≥ 0, ≤ DENSITY_MAX, mean within DENSITY_MEAN_ATOL of 1), `CountStats`/`check_count_stats`
  (halo counts finite and ≥ 0);
- parameters: `check_cosmology`, `check_box_and_grid`, `validate_simulate_config`, `check_grid`;
- outputs: `check_output_not_input`, `check_output_dir`, `OutputLock` (an fcntl lock on `<out>.lock` held
  for the run; a second run on the same output is refused naming the holder);
- interruption: `interruption_point` (test hook HALOPAINT_TEST_SIGNAL="NAME:RANK:K:SIGNAL").
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import math
import os
import signal
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from halopaint.config import Cosmology
from halopaint.errors import HalopaintError


class ValidationError(HalopaintError):
    """An input or output that a command refuses (one line, names the file/option and the problem)."""


class FieldFileError(ValidationError):
    """A field file is missing, incomplete, or does not follow the contract."""


class OutputLockedError(ValidationError):
    """Another run holds the output's lock."""


# Physical ranges (inclusive) of what the simulator, and any field file or bundle, may state.
# (name, low, high, unit, why)
PHYSICAL_RANGES = {
    "box_size": (1.0, 2.0e4, "Mpc/h", "from a cluster-size box to beyond the Hubble volume"),
    "voxel_size": (0.05, 100.0, "Mpc/h", "halo painting needs voxels of galaxy-group to cluster scale"),
    "sigma8": (0.05, 2.0, "", "the linear amplitude of any viable cosmology"),
    "Omega_m": (0.01, 1.0, "", "flat ΛCDM: 0 < Ω_m ≤ 1"),
    "Omega_b": (0.0, 1.0, "", "0 ≤ Ω_b < Ω_m"),
    "h": (0.2, 2.0, "", "H0 / (100 km/s/Mpc)"),
    "n_s": (0.5, 1.5, "", "spectral index"),
    "redshift": (0.0, 20.0, "", "snapshot redshift"),
}
MAX_GRID = 32768                    # largest grid side any command plans for (32768³ float32 = 128 TiB)
DENSITY_MAX = 1.0e5                 # ρ/ρ̄ above this in one voxel is not a 2LPT CIC density
DENSITY_MEAN_ATOL = 0.05            # |mean ρ/ρ̄ − 1| allowed (CIC conserves mass: mean is 1 to rounding)
SIGNAL_HOOK_ENV = "HALOPAINT_TEST_SIGNAL"


def _range_text(name: str) -> str:
    lo, hi, unit, _ = PHYSICAL_RANGES[name]
    return f"[{lo:g}, {hi:g}]" + (f" {unit}" if unit else "")


def check_range(name: str, value, option: str | None = None, where: str = "") -> float:
    """`value` finite and inside PHYSICAL_RANGES[name] (the range is in the message)."""
    label = option or name
    prefix = f"{where}: " if where else ""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{prefix}{label} must be a number, got {value!r}") from None
    lo, hi, _, why = PHYSICAL_RANGES[name]
    if not (math.isfinite(v) and lo <= v <= hi):
        raise ValidationError(f"{prefix}{label} = {value!r} is outside the supported range {_range_text(name)} "
                              f"({why})")
    return v


# ------------------------------------------------------------------------------------------ file attrs

def check_complete(value, path: str) -> None:
    """`complete` must be the boolean true (h5py bool / numpy bool_), not a string, number or array."""
    if value is None:
        raise FieldFileError(f"{path}: file is incomplete (no complete=True attr); it was not finished")
    if not isinstance(value, (bool, np.bool_)):
        raise FieldFileError(f"{path}: attribute 'complete' must be the boolean true, got {type(value).__name__} "
                             f"{value!r}; the file is not marked complete")
    if not bool(value):
        raise FieldFileError(f"{path}: file is incomplete (complete=False); it was not finished")


def scalar_attr(attrs, key: str, path: str, *, positive: bool = False, minimum: float | None = None) -> float:
    """A root attr that must be one finite real number (not bool, string or array) [> 0 / ≥ minimum]."""
    if key not in attrs:
        raise FieldFileError(f"{path}: missing required attribute '{key}'")
    value = attrs[key]
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        shape = f" of shape {value.shape}" if isinstance(value, np.ndarray) else ""
        raise FieldFileError(f"{path}: attribute '{key}' must be a scalar number, got "
                             f"{type(value).__name__}{shape} {_short(value)}")
    v = float(value)
    if not math.isfinite(v):
        raise FieldFileError(f"{path}: attribute '{key}' must be finite, got {v}")
    if positive and v <= 0:
        raise FieldFileError(f"{path}: attribute '{key}' must be positive, got {v:g}")
    if minimum is not None and v < minimum:
        raise FieldFileError(f"{path}: attribute '{key}' must be ≥ {minimum:g}, got {v:g}")
    return v


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def check_cosmology(c: Cosmology, where: str) -> Cosmology:
    """Every parameter finite and inside PHYSICAL_RANGES, Ω_b < Ω_m."""
    for name, value in asdict(c).items():
        try:
            check_range(name, value)
        except ValidationError as exc:
            raise ValidationError(f"{where}: cosmology {exc}") from None
    if not c.Omega_b < c.Omega_m:
        raise ValidationError(f"{where}: cosmology needs Omega_b < Omega_m, got Omega_b={c.Omega_b:g}, "
                              f"Omega_m={c.Omega_m:g}")
    return c


def cosmology_from_attr(text, path: str) -> Cosmology:
    """The `cosmology` attr: JSON of the five flat-ΛCDM parameters, each a number in range."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    if not isinstance(text, str):
        raise FieldFileError(f"{path}: attribute 'cosmology' must be a JSON string, got {type(text).__name__}")
    try:
        d = json.loads(text)
        if not isinstance(d, dict):
            raise TypeError("not an object")
        for k, v in d.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{k} is {v!r}, not a number")
        c = Cosmology(**d)
    except (ValueError, TypeError) as exc:
        raise FieldFileError(f"{path}: cosmology attribute is not valid JSON cosmology ({exc})") from None
    try:
        return check_cosmology(c, path)
    except ValidationError as exc:
        raise FieldFileError(str(exc)) from None


def check_dataset(h5, name: str, path: str, ndim: int, what: str):
    """`/name` must be a real numeric HDF5 dataset of `ndim` dimensions (not a group, string or compound)."""
    import h5py
    obj = h5.get(name, getlink=False)
    if not isinstance(obj, h5py.Dataset):
        raise FieldFileError(f"{path}: /{name} must be a dataset {what}, got {type(obj).__name__}")
    if obj.dtype.kind not in "fiu":
        raise FieldFileError(f"{path}: /{name} must hold real numbers, got dtype {obj.dtype}")
    if len(obj.shape) != ndim:
        raise FieldFileError(f"{path}: /{name} must be {what}, got shape {obj.shape}")
    return obj


# ------------------------------------------------------------------------------------------------ values

@dataclass
class DensityStats:
    """Running scan of a ρ/ρ̄ field (float64 accumulators); merge per-rank scans with `+`."""

    count: int = 0
    nonfinite: int = 0
    negative: int = 0
    total: float = 0.0              # Σ ρ/ρ̄ over finite voxels
    maximum: float = -math.inf
    first_bad: int = -1             # first x-plane (global) with a non-finite or negative value

    def add(self, block: np.ndarray, plane0: int = 0) -> "DensityStats":
        """Scan (planes, N, N) values whose first plane is global x-plane `plane0`."""
        finite = np.isfinite(block)
        nf = block.size - int(np.count_nonzero(finite))
        neg = int(np.count_nonzero(block < 0))
        if (nf or neg) and self.first_bad < 0:
            per_plane = (~finite | (block < 0)).reshape(block.shape[0], -1).any(axis=1)
            self.first_bad = plane0 + int(np.argmax(per_plane))
        good = np.where(finite, block, 0)
        self.count += block.size
        self.nonfinite += nf
        self.negative += neg
        self.total += float(good.sum(dtype=np.float64))
        if block.size:
            self.maximum = max(self.maximum, float(good.max()))
        return self

    def __add__(self, other: "DensityStats") -> "DensityStats":
        firsts = [f for f in (self.first_bad, other.first_bad) if f >= 0]
        return DensityStats(self.count + other.count, self.nonfinite + other.nonfinite,
                            self.negative + other.negative, self.total + other.total,
                            max(self.maximum, other.maximum), min(firsts) if firsts else -1)


def scan_density(ds, x0: int, x1: int, planes_per_read: int) -> DensityStats:
    """DensityStats of x-planes [x0, x1) of a /density dataset, `planes_per_read` planes at a time."""
    stats = DensityStats()
    for a in range(x0, x1, max(1, planes_per_read)):
        b = min(x1, a + max(1, planes_per_read))
        stats.add(np.asarray(ds[a:b], dtype=np.float32), a)
    return stats


def check_density_stats(stats: DensityStats, path: str) -> None:
    """ρ/ρ̄ finite, ≥ 0, no voxel above DENSITY_MAX, mean within DENSITY_MEAN_ATOL of 1."""
    if stats.nonfinite or stats.negative:
        what = " and ".join(s for s in (f"{stats.nonfinite} NaN/Inf" if stats.nonfinite else "",
                                        f"{stats.negative} negative" if stats.negative else "") if s)
        raise ValidationError(f"{path}: /density has {what} values (first at x-plane {stats.first_bad}); "
                              "a density ρ/ρ̄ must be finite and ≥ 0")
    if stats.maximum > DENSITY_MAX:
        raise ValidationError(f"{path}: /density has a voxel of ρ/ρ̄ = {stats.maximum:.3g} > {DENSITY_MAX:g}; "
                              "not a 2LPT CIC density ρ/ρ̄")
    mean = stats.total / max(stats.count, 1)
    if not abs(mean - 1.0) <= DENSITY_MEAN_ATOL:
        raise ValidationError(f"{path}: /density has mean {mean:.4g}; a density ρ/ρ̄ has mean 1 "
                              f"(± {DENSITY_MEAN_ATOL:g}) — an all-zero field, or δ or ρ instead of ρ/ρ̄?")


def check_density_array(rho: np.ndarray, path: str) -> None:
    """check_density_stats of a whole in-memory (N, N, N) field."""
    check_density_stats(DensityStats().add(np.asarray(rho, np.float32)), path)


@dataclass
class CountStats:
    """Running scan of halo counts (n_bins, planes, N, N): non-finite and negative values."""

    nonfinite: int = 0
    negative: int = 0
    minimum: float = math.inf

    def add(self, block: np.ndarray) -> "CountStats":
        finite = np.isfinite(block)
        self.nonfinite += block.size - int(np.count_nonzero(finite))
        self.negative += int(np.count_nonzero(block < 0))
        if block.size:
            self.minimum = min(self.minimum, float(np.where(finite, block, np.inf).min()))
        return self

    def as_tuple(self) -> tuple[int, int, float]:
        return (self.nonfinite, self.negative, self.minimum)


def check_count_stats(stats: CountStats, path: str, dataset: str = "halos") -> None:
    """Halo counts (expected or sampled) must be finite and ≥ 0."""
    if stats.nonfinite:
        raise ValidationError(f"{path}: /{dataset} has {stats.nonfinite} NaN/Inf values; halo counts must be "
                              "finite")
    if stats.negative:
        raise ValidationError(f"{path}: /{dataset} has {stats.negative} negative values (min {stats.minimum:.3g});"
                              " halo counts must be ≥ 0")


def scan_counts_file(path: str, dataset: str = "halos", planes_per_read: int = 8) -> CountStats:
    """CountStats of a whole `/dataset` (n_bins, N, N, N), read `planes_per_read` x-planes at a time."""
    import h5py
    stats = CountStats()
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        n = ds.shape[1]
        for a in range(0, n, planes_per_read):
            stats.add(np.asarray(ds[:, a:a + planes_per_read], dtype=np.float32))
    return stats


def check_counts_file(path: str, dataset: str = "halos") -> None:
    check_count_stats(scan_counts_file(path, dataset), path, dataset)


def check_counts_array(counts: np.ndarray, path: str, dataset: str = "halos") -> None:
    check_count_stats(CountStats().add(np.asarray(counts)), path, dataset)


# --------------------------------------------------------------------------------------------- parameters

def check_grid(n, option: str = "--grid", minimum: int = 1) -> int:
    """A grid side: an integer in [minimum, MAX_GRID]."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValidationError(f"{option} must be an integer, got {n!r}")
    if not minimum <= n <= MAX_GRID:
        raise ValidationError(f"{option} {n} is outside [{minimum}, {MAX_GRID}]")
    return int(n)


def check_box_and_grid(box_size: float, grid: int, box_option: str = "--box", where: str = "") -> None:
    """Box side and voxel size H = box/grid inside PHYSICAL_RANGES."""
    check_range("box_size", box_size, box_option, where)
    h = float(box_size) / grid
    lo, hi, unit, why = PHYSICAL_RANGES["voxel_size"]
    if not lo <= h <= hi:
        prefix = f"{where}: " if where else ""
        raise ValidationError(f"{prefix}voxel size {box_option}/--grid = {float(box_size):g}/{grid} = {h:.4g} "
                              f"{unit} is outside the supported range {_range_text('voxel_size')} ({why})")


def validate_simulate_config(cfg) -> None:
    """`halopaint simulate`'s physical ranges (SimulateConfig or anything with its fields): box, voxel size,
    redshift, cosmology (σ8, Ω_m, Ω_b, h, n_s). Structural checks (grid ≥ 8, particles, …) stay with the
    simulator's own validate_config."""
    grid = check_grid(cfg.grid, "--grid", 8)
    check_box_and_grid(cfg.box_size, grid)
    check_range("redshift", cfg.redshift, "--redshift")
    option = {"Omega_m": "--omega-m", "Omega_b": "--omega-b", "h": "--h", "sigma8": "--sigma8", "n_s": "--n-s"}
    for name, value in asdict(cfg.cosmology).items():
        check_range(name, value, option[name])
    if not cfg.cosmology.Omega_b < cfg.cosmology.Omega_m:
        raise ValidationError(f"--omega-b {cfg.cosmology.Omega_b:g} must be below --omega-m "
                              f"{cfg.cosmology.Omega_m:g} (need Omega_b < Omega_m)")


def check_bundle_metadata(meta, path: str) -> None:
    """A bundle's metadata: increasing positive mass-bin edges, voxel size and redshift in range, cosmology."""
    edges = np.asarray(meta.mass_bin_edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.isfinite(edges)) or np.any(edges <= 0) \
            or np.any(np.diff(edges) <= 0):
        raise ValidationError(f"{path}: mass_bin_edges must be ≥ 2 increasing positive masses, got "
                              f"{_short(list(meta.mass_bin_edges))}")
    check_range("voxel_size", meta.voxel_size, "voxel_size", path)
    check_range("redshift", meta.redshift, "redshift", path)
    check_cosmology(meta.cosmology, path)
    norm = meta.input_normalisation
    if not (math.isfinite(norm.offset) and math.isfinite(norm.scale) and norm.scale != 0):
        raise ValidationError(f"{path}: input_normalisation must be finite with scale ≠ 0, got {norm}")


# ------------------------------------------------------------------------------------------------ outputs

def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.abspath(a) == os.path.abspath(b)


def check_output_not_input(outputs, inputs, option: str = "--out") -> None:
    """Refuse when any output path (the main one first, then side files) is one of the input files."""
    outputs = [Path(o) for o in outputs if o]
    for inp in (Path(i) for i in inputs if i):
        for k, out in enumerate(outputs):
            if _same_file(out, inp):
                what = f"{option} {outputs[0]}" if k == 0 else f"{option} {outputs[0]} (its side file {out.name})"
                raise ValidationError(f"{what} would overwrite the input {inp}; choose another output name")


def check_output_dir(out: str | os.PathLike, inputs=(), option: str = "--out") -> Path:
    """An output directory: not an existing file, not the directory of an input (the outputs would land
    among the inputs), and writable — probed by creating (and removing) a file in it, or the directory
    itself, so a read-only file system is caught even where os.access says yes (root)."""
    import tempfile
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValidationError(f"{option} {out} exists and is not a directory")
    for inp in (Path(i) for i in inputs if i):
        parent = inp.parent if str(inp.parent) else Path(".")
        if out.is_dir() and parent.is_dir() and os.path.samefile(out, parent):
            raise ValidationError(f"{option} {out} is the directory of the input {inp}; the outputs would be "
                                  "written among the inputs (choose a new directory)")
    try:
        if out.is_dir():
            with tempfile.TemporaryFile(dir=out):
                pass
        else:
            parent = out.parent if str(out.parent) else Path(".")
            if not parent.is_dir():
                raise ValidationError(f"{option} {out}: cannot create it, directory {parent} does not exist")
            out.mkdir()
            out.rmdir()
    except OSError as exc:
        raise ValidationError(f"{option} {out}: cannot write there ({exc.strerror or exc.__class__.__name__})") \
            from None
    return out


def lock_path(out: str | os.PathLike) -> Path:
    """The lock file of an output: `<out>.lock` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".lock")


class OutputLock:
    """Exclusive lock on one output for the duration of a run: `fcntl.flock` on `<out>.lock`.

    The lock file holds the holder's pid, host, start time and command; a second run on the same output
    is refused with an OutputLockedError naming them. The lock is the kernel's, so a killed holder
    (even SIGKILL) releases it; the stale file is reused. Released (and the file removed) on exit.
    """

    def __init__(self, out: str | os.PathLike, command: str = "halopaint"):
        self.out, self.path, self.command = Path(out), lock_path(out), command
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        import fcntl
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise ValidationError(f"cannot create the lock {self.path}: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise OutputLockedError(f"{self.out} is being written by another run ({holder}); wait for it "
                                            f"to finish or choose another output (lock {self.path})") from None
                raise ValidationError(f"cannot lock {self.path}: {exc.strerror}") from None
            try:                                    # the file we locked must still be the one at the path
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(info).encode())
                self._fd = fd
                return self
            os.close(fd)
        raise ValidationError(f"cannot lock {self.path}: it keeps being replaced")

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)                          # closing releases the flock
        self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode() or "{}")
        return f"pid {info.get('pid')} on {info.get('host')}, {info.get('command', 'halopaint')}, " \
               f"started {info.get('started')}"
    except (OSError, ValueError):
        return "holder unknown"


# ------------------------------------------------------------------------------------------- interruption

def interruption_point(name: str, count: int, rank: int = 0) -> None:
    """Test hook: HALOPAINT_TEST_SIGNAL="NAME:RANK:K:SIGNAL" (e.g. "train:0:2:TERM") makes rank RANK send
    itself SIGNAL (INT, TERM, KILL) when `count` reaches K at the interruption point `name`."""
    text = os.environ.get(SIGNAL_HOOK_ENV)
    if not text:
        return
    try:
        hook_name, r, k, sig = text.split(":")
    except ValueError:
        return
    if hook_name == name and int(r) == rank and count == int(k):
        sys.stderr.flush()
        os.kill(os.getpid(), getattr(signal, f"SIG{sig.upper()}"))
