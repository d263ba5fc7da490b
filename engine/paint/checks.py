"""Paint's errors and input checks: collective errors agreed over ranks, model/input compatibility,
mass-bin selection, density value scan."""

from __future__ import annotations

import math
from dataclasses import asdict

from halopaint.config import DensityRecipe
from halopaint.errors import HalopaintError
from halopaint.launch import agree_errors
from halopaint.fields import FieldInfo, same_voxel_size
from halopaint.model import ModelBundle
from halopaint.validation import scan_density

REDSHIFT_ATOL = 1e-3
COSMOLOGY_RTOL = 1e-4     # JSON round trips are exact; this only forgives printed-digit rounding


class PaintError(HalopaintError):
    """Painting cannot start or finish (bad input, impossible plan, unwritable output)."""


def collective_error(message: str) -> PaintError:
    """An error every rank raises with the same message (the CLI prints it once, from rank 0)."""
    exc = PaintError(message)
    exc.collective = True
    return exc


def agree(comm, local_error: str | None) -> None:
    """Collective check: if any rank has an error, every rank raises the first one (lowest rank)."""
    agree_errors(comm, local_error, PaintError)


def model_mismatches(info: FieldInfo, bundle: ModelBundle) -> list[str]:
    """What makes the density file differ from what the model was trained on (empty: compatible)."""
    meta, problems = bundle.metadata, []
    if not same_voxel_size(info.voxel_size, meta.voxel_size):
        problems.append(f"voxel size {info.voxel_size:g} Mpc/h differs from the model's {meta.voxel_size:g} Mpc/h")
    if abs(info.redshift - meta.redshift) > REDSHIFT_ATOL:
        problems.append(f"redshift {info.redshift:g} differs from the model's {meta.redshift:g}")
    recipe_text = info.attrs.get("density_recipe")
    if recipe_text is None:
        problems.append("input has no density_recipe attribute (the model needs "
                        f"{meta.density_recipe.to_json()})")
    else:
        try:
            recipe = DensityRecipe.from_json(str(recipe_text))
        except (ValueError, TypeError):
            recipe = None
        if recipe != meta.density_recipe:
            problems.append(f"density recipe {recipe_text} differs from the model's {meta.density_recipe.to_json()}")
    return problems + cosmology_mismatch(info, bundle)


def cosmology_mismatch(info: FieldInfo, bundle: ModelBundle) -> list[str]:
    """The input's cosmology against the model's (each parameter to COSMOLOGY_RTOL): refused like a voxel or
    redshift mismatch, the halo-density relation the network learnt depends on it."""
    a, b = asdict(info.cosmology), asdict(bundle.metadata.cosmology)
    if all(math.isclose(a[k], b[k], rel_tol=COSMOLOGY_RTOL, abs_tol=1e-12) for k in a):
        return []
    diff = ", ".join(f"{k} {a[k]:g} vs {b[k]:g}" for k in a
                     if not math.isclose(a[k], b[k], rel_tol=COSMOLOGY_RTOL, abs_tol=1e-12))
    return [f"cosmology differs from the model's ({diff})"]


def resolve_bins(requested: tuple[int, ...] | None, n_bins: int) -> tuple[int, ...]:
    """Mass bins to paint: all, or a contiguous sorted selection (so mass_bin_edges stays n_sel+1)."""
    if requested is None:
        return tuple(range(n_bins))
    bins = tuple(sorted(set(int(b) for b in requested)))
    if not bins:
        raise PaintError("--mass-bins selects no bin")
    for b in bins:
        if not 0 <= b < n_bins:
            raise PaintError(f"--mass-bins: bin {b} does not exist (the model has bins 0..{n_bins - 1})")
    if bins != tuple(range(bins[0], bins[-1] + 1)):
        raise PaintError(f"--mass-bins {','.join(map(str, bins))} is not a contiguous range "
                         "(paint them in separate runs)")
    return bins


def density_defects(ds, x0: int, x1: int, planes_per_read: int) -> tuple[int, int, int]:
    """Scan x-planes [x0, x1) of a density dataset: (# non-finite, # negative, first bad global plane or −1)."""
    st = scan_density(ds, x0, x1, planes_per_read)
    return st.nonfinite, st.negative, st.first_bad
