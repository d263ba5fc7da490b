"""The Python API: the CLI's verbs on numpy arrays, for notebooks and users' scripts (docs/api.md).

Each function is a thin wrapper over exactly the code its command runs: the array is written to a
temporary field file, the command's driver runs on it in this process (one rank, `MPI.COMM_SELF`, so a
script started under mpiexec does not turn these calls collective), and the result is read back. So an
array painted here equals `halopaint paint` on the same density (the same tiles, kernels and checks;
tests/test_api.py measures it), and every refusal of the CLI is raised here as a `ValueError`.

    import halopaint
    halos = halopaint.paint_density(rho, box_size=256.0)        # (n_bins, N, N, N) float32

Bad input raises `ValueError` with the same one-line message the CLI prints.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from halopaint.config import Cosmology, PaintConfig, SimulateConfig
from halopaint.decomposition import MIN_GRID
from halopaint.errors import HalopaintError
from halopaint.fields import FieldFile, atomic_h5, standard_attrs
from halopaint.model import ModelBundle

__all__ = ["load_model", "paint_density", "simulate"]

VOXEL_RTOL = 1e-3          # relative voxel-size agreement asked of an input (as `halopaint paint`)


def load_model(name_or_path: str = "default") -> ModelBundle:
    """A model bundle: "default" (the model shipped in the package) or the path of a bundle file.

    Returns a `ModelBundle` (`.n_bins`, `.metadata.mass_bin_edges` [M☉/h], `.metadata.voxel_size`
    [Mpc/h], `.metadata.redshift`, `.spec.ghost_width`). Never executes code from the file.
    Raises ValueError for a missing, foreign or damaged file.
    """
    try:
        return ModelBundle.load(name_or_path)
    except HalopaintError as exc:
        raise ValueError(str(exc)) from None


def _check_density_array(rho, bundle: ModelBundle, box_size: float, allow_mismatch: bool) -> np.ndarray:
    arr = np.asarray(rho)
    if arr.ndim != 3:
        raise ValueError(f"rho must be a 3D array (N, N, N), got shape {arr.shape}")
    if len(set(arr.shape)) != 1:
        raise ValueError(f"rho must be cubic (N, N, N), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"rho must be real numbers, got dtype {arr.dtype}")
    n = arr.shape[0]
    if n < MIN_GRID:
        raise ValueError(f"rho has N = {n}: too small to paint (needs N ≥ {MIN_GRID}; the network's "
                         f"ghost width is {bundle.ghost_width})")
    try:
        box = float(box_size)
    except (TypeError, ValueError):
        raise ValueError(f"box_size must be a number [Mpc/h], got {box_size!r}") from None
    if not np.isfinite(box) or box <= 0:
        raise ValueError(f"box_size must be positive and finite [Mpc/h], got {box_size!r}")
    if not np.isfinite(arr).all():
        raise ValueError(f"rho has {int(np.count_nonzero(~np.isfinite(arr)))} NaN/Inf values; "
                         "a density ρ/ρ̄ must be finite")
    if (arr < 0).any():
        raise ValueError(f"rho has {int(np.count_nonzero(arr < 0))} negative values; "
                         "a density ρ/ρ̄ must be ≥ 0")
    voxel, want = box / n, bundle.metadata.voxel_size
    if abs(voxel - want) > VOXEL_RTOL * want and not allow_mismatch:
        raise ValueError(f"voxel size {voxel:g} Mpc/h (box_size {box:g} / N {n}) differs from the model's "
                         f"{want:g} Mpc/h; pass allow_mismatch=True to paint anyway")
    return arr.astype(np.float32, copy=False)


def _resolve_bins(mass_bins, n_bins: int) -> tuple[int, ...] | None:
    if isinstance(mass_bins, str):
        if mass_bins != "all":
            raise ValueError(f"mass_bins must be 'all' or a list of bin indices, got {mass_bins!r}")
        return None
    try:
        bins = tuple(int(b) for b in np.atleast_1d(mass_bins))
    except (TypeError, ValueError):
        raise ValueError(f"mass_bins must be 'all' or a list of bin indices, got {mass_bins!r}") from None
    bad = [b for b in bins if not 0 <= b < n_bins]
    if not bins or bad or len(set(bins)) != len(bins):
        raise ValueError(f"mass_bins {list(bins)}: need distinct indices in 0..{n_bins - 1}")
    return bins


def paint_density(rho, box_size: float, model: str | ModelBundle = "default", mass_bins="all",
                  kernels: str = "auto", *, redshift: float | None = None, cosmology: Cosmology | None = None,
                  allow_mismatch: bool = False, device: str = "cpu", max_memory_bytes: int | None = None,
                  workdir: str | None = None) -> np.ndarray:
    """Paint expected halo counts from a density field, as `halopaint paint` does.

    rho: (N, N, N) array of ρ/ρ̄ (mean ≈ 1, ≥ 0, finite; the 2LPT CIC density the model was trained on),
    index order (x, y, z); box_size: its side [Mpc/h]; model: "default", a bundle path or a ModelBundle;
    mass_bins: "all" or a list of bin indices; kernels: auto | cpu | reference | triton.
    redshift / cosmology: the density's (default: the model's, i.e. no mismatch is claimed);
    allow_mismatch: paint although voxel size, redshift or cosmology differ from the model's.
    Returns float32 (n_bins, N, N, N): expected halo counts per voxel per selected mass bin.
    Raises ValueError naming the problem (shape, values, N too small, voxel mismatch, bad bins).
    """
    bundle = model if isinstance(model, ModelBundle) else load_model(model)
    arr = _check_density_array(rho, bundle, box_size, allow_mismatch)
    bins = _resolve_bins(mass_bins, bundle.n_bins)
    meta = bundle.metadata
    attrs = standard_attrs(float(box_size), meta.redshift if redshift is None else float(redshift),
                           meta.cosmology if cosmology is None else cosmology,
                           density_recipe=meta.density_recipe.to_json())
    with tempfile.TemporaryDirectory(prefix="halopaint-api-", dir=workdir) as tmp:
        density_path, out_path = Path(tmp) / "density.h5", Path(tmp) / "painted.h5"
        bundle_path = Path(tmp) / "model.pt"
        if isinstance(model, ModelBundle):
            bundle.save(bundle_path)
        with atomic_h5(density_path, attrs) as f:
            f.create_dataset("density", data=arr)
        cfg = PaintConfig(model=str(bundle_path) if isinstance(model, ModelBundle) else str(model),
                          density=str(density_path), out=str(out_path), mass_bins=bins, device=device,
                          kernels=kernels, allow_mismatch=allow_mismatch)
        if max_memory_bytes is not None:
            cfg = replace(cfg, max_memory_bytes=int(max_memory_bytes))
        _run_paint(cfg)
        with FieldFile(out_path, require=("halos",)) as ff:
            return np.asarray(ff.h5["halos"][...], dtype=np.float32)


def _run_paint(cfg: PaintConfig) -> None:
    from mpi4py import MPI

    from halopaint.paint import paint
    try:
        paint(cfg, comm=MPI.COMM_SELF)
    except HalopaintError as exc:
        raise ValueError(str(exc)) from None


def simulate(grid: int = 64, box_size: float = 256.0, seed: int = 1, redshift: float = 0.0, *,
             lpt_only: bool = True, cosmology: Cosmology | None = None, workdir: str | None = None,
             **options) -> dict:
    """Run the embedded simulator (as `halopaint simulate`) and return its output as arrays.

    grid: N; box_size [Mpc/h]; seed; redshift; lpt_only: only the 2LPT density (fast; the painter's
    input), else also PM N-body + FoF halos; cosmology: a `halopaint.config.Cosmology` (default Planck-like);
    options: any other `SimulateConfig` field (e.g. particles_per_side, pm_steps, mass_bin_edges).
    Returns a dict: every dataset of the file by name ("density" (N, N, N) float32 ρ/ρ̄, and without
    lpt_only "halos" (n_bins, N, N, N), "nbody_density", "catalog/pos" …) and "attrs" (the root attrs).
    Raises ValueError for parameters the CLI refuses.
    """
    from halopaint.sim import simulate as run_simulation
    with tempfile.TemporaryDirectory(prefix="halopaint-api-", dir=workdir) as tmp:
        out = Path(tmp) / "sim.h5"
        try:
            cfg = SimulateConfig(grid=int(grid), box_size=float(box_size), seed=int(seed),
                                 redshift=float(redshift), lpt_only=bool(lpt_only), out=str(out),
                                 cosmology=cosmology or Cosmology(), **options)
            run_simulation(cfg, quiet=True)
        except HalopaintError as exc:
            raise ValueError(str(exc)) from None
        except TypeError as exc:
            raise ValueError(f"simulate: {exc}") from None
        return _read_all(out)


def _read_all(path: Path) -> dict:
    import h5py
    result: dict = {}
    with FieldFile(path) as ff:
        result["attrs"] = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in ff.h5.attrs.items()}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                result[name] = obj[...]
        ff.h5.visititems(visit)
    return result
