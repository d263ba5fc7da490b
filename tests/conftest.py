"""Shared test helpers: synthetic field files and randomly initialised model bundles.

Area-specific helpers live in their own test modules; keep this file to what several areas share.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile

import numpy as np
import pytest
import torch

from halopaint.config import Cosmology, DensityRecipe, default_mass_bin_edges
from halopaint.fields import standard_attrs, write_field
from halopaint.model import BundleMetadata, Generator, ModelBundle


def lognormal_density(n: int, seed: int, sigma: float = 0.5) -> np.ndarray:
    """A positive (n, n, n) float32 field with mean exactly ~1 (not a physical simulation)."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, n, n))
    rho = np.exp(sigma * g - 0.5 * sigma**2)
    return (rho / rho.mean()).astype(np.float32)


def write_density_file(path, n: int = 32, box_size: float | None = None, seed: int = 0,
                       redshift: float = 0.0, recipe: DensityRecipe | None = None, density=None) -> str:
    """A complete /density field file (voxel 4 Mpc/h unless box_size given)."""
    box_size = 4.0 * n if box_size is None else box_size
    recipe = recipe or DensityRecipe()
    rho = lognormal_density(n, seed) if density is None else density
    attrs = standard_attrs(box_size, redshift, Cosmology(), seed=seed, density_recipe=recipe.to_json())
    write_field(path, attrs, density=rho)
    return str(path)


def random_bundle(n_bins: int = 2, seed: int = 0, voxel_size: float = 4.0, redshift: float = 0.0) -> ModelBundle:
    """A bundle of randomly initialised paper generators (exercises every paint path)."""
    torch.manual_seed(seed)
    gens = [Generator() for _ in range(n_bins)]
    edges = list(np.logspace(12, 14, n_bins + 1)) if n_bins != 4 else list(default_mass_bin_edges())
    meta = BundleMetadata(mass_bin_edges=edges, voxel_size=voxel_size, redshift=redshift,
                          training={"note": "random initialisation (tests)"})
    return ModelBundle.from_generators(gens, meta)


@pytest.fixture
def bundle_path(tmp_path):
    path = tmp_path / "random_bundle.pt"
    random_bundle().save(path)
    return str(path)


@contextlib.contextmanager
def mpi_shared_dir(comm, prefix: str, populate=None):
    """A temporary directory every rank of `comm` sees (rank 0 makes it and runs `populate(dir)`, the other
    ranks wait); removed by rank 0 when all ranks are done. Yields its path."""
    d = tempfile.mkdtemp(prefix=prefix) if comm.Get_rank() == 0 else None
    d = comm.bcast(d, root=0)
    if comm.Get_rank() == 0 and populate is not None:
        populate(d)
    comm.Barrier()
    try:
        yield d
    finally:
        comm.Barrier()
        if comm.Get_rank() == 0:
            shutil.rmtree(d, ignore_errors=True)
