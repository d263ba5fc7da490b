"""Training data: the boxes read and cross-checked from field files, train/validation regions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from halopaint.config import Cosmology, DensityRecipe, TrainConfig
from halopaint.errors import HalopaintError
from halopaint.fields import FieldFile, FieldFileError, file_provenance, same_voxel_size
from halopaint.patches import Region
from halopaint.validation import ValidationError, check_counts_array, check_density_array

MIN_CRITIC_PATCH = 19   # 19 → 7 → 3 → 1 → 1 through the paper critic's valid convs


class TrainingError(HalopaintError):
    """Bad training input or an inconsistent checkpoint."""


@dataclass
class TrainingData:
    """Boxes in memory: train/validation lists of (density (N³), halos (n_sel, N³)) and their regions.

    `bins` are the absolute mass-bin indices selected; halos[j] is bin bins[j].
    """

    train: list
    train_regions: list
    validation: list
    validation_regions: list
    bins: tuple[int, ...]
    mass_bin_edges: list[float]          # all edges of the files [M☉/h]
    voxel_size: float                    # [Mpc/h]
    redshift: float
    cosmology: Cosmology
    density_recipe: DensityRecipe
    provenance: dict

    @classmethod
    def from_arrays(cls, train, validation=(), mass_bin_edges=None, voxel_size: float = 4.0,
                    bins=None) -> "TrainingData":
        """In-memory boxes (full periodic regions): train/validation lists of (density, halos (n, N³))."""
        n_bins = train[0][1].shape[0]
        bins = tuple(range(n_bins)) if bins is None else tuple(bins)
        edges = list(np.logspace(12, 14, n_bins + 1)) if mass_bin_edges is None else list(mass_bin_edges)
        sel = lambda boxes: [(d, h[list(bins)]) for d, h in boxes]  # noqa: E731
        return cls(train=sel(train), train_regions=[Region(d.shape[0]) for d, _ in train],
                   validation=sel(validation), validation_regions=[Region(d.shape[0]) for d, _ in validation],
                   bins=bins, mass_bin_edges=edges, voxel_size=voxel_size, redshift=0.0,
                   cosmology=Cosmology(), density_recipe=DensityRecipe(), provenance={"data": "in memory"})

    @property
    def selected_edges(self) -> list[float]:
        return [float(e) for e in self.mass_bin_edges[self.bins[0]:self.bins[-1] + 2]]


def _read_boxes(paths, bins, role: str):
    boxes, infos = [], []
    for path in paths:
        try:
            with FieldFile(path, require=("density", "halos")) as f:
                info = f.info
                for b in bins:
                    if not 0 <= b < info.n_bins:
                        raise TrainingError(f"{path}: mass bin {b} does not exist "
                                            f"(the file has {info.n_bins} bins: 0..{info.n_bins - 1})")
                density, halos = f.read_density(), f.read_halos(bins)
                check_density_array(density, path)
                check_counts_array(halos, path)
                boxes.append((density, halos))
                infos.append(info)
        except (FieldFileError, ValidationError):
            raise
        except OSError as exc:
            raise TrainingError(f"{path}: cannot read {role} data ({exc})") from None
    return boxes, infos


def load_data(cfg: TrainConfig, ghost: int) -> TrainingData:
    """Read and cross-check the training (and validation) files; choose regions; check the patch fits."""
    if not cfg.data:
        raise TrainingError("no training data given (--data FILE.h5 …)")
    with FieldFile(cfg.data[0], require=("density", "halos")) as f:
        first = f.info
    n_bins = first.n_bins
    bins = tuple(range(n_bins)) if cfg.mass_bins is None else tuple(sorted(set(cfg.mass_bins)))
    for b in bins:
        if not 0 <= b < n_bins:
            raise TrainingError(f"mass bin {b} does not exist (the data has {n_bins} bins: 0..{n_bins - 1})")
    if list(bins) != list(range(bins[0], bins[-1] + 1)):
        raise TrainingError(f"mass bins {','.join(map(str, bins))} are not adjacent: a bundle covers "
                            "adjacent bins; train the others in a separate run")
    train, tinfos = _read_boxes(cfg.data, bins, "training")
    val, vinfos = _read_boxes(cfg.validation, bins, "validation")
    for info in tinfos + vinfos:
        if not same_voxel_size(info.voxel_size, first.voxel_size):
            raise TrainingError(f"{info.path}: voxel size {info.voxel_size:g} Mpc/h differs from "
                                f"{first.path} ({first.voxel_size:g} Mpc/h)")
        if not np.allclose(info.mass_bin_edges, first.mass_bin_edges, rtol=1e-6):
            raise TrainingError(f"{info.path}: mass_bin_edges differ from {first.path}")
        if not np.isclose(info.redshift, first.redshift, atol=1e-6):
            raise TrainingError(f"{info.path}: redshift {info.redshift:g} differs from {first.path} "
                                f"({first.redshift:g})")
    side = cfg.patch + 2 * ghost
    if cfg.patch < 1:
        raise TrainingError(f"--patch must be positive, got {cfg.patch}")
    if cfg.adversarial_weight > 0 and cfg.patch < MIN_CRITIC_PATCH:
        raise TrainingError(f"--patch {cfg.patch} is too small for the critic (needs ≥ {MIN_CRITIC_PATCH}; "
                            "or train supervised only with --adversarial-weight 0)")
    if val:
        t_regions = [Region(i.grid) for i in tinfos]
        v_regions = [Region(i.grid) for i in vinfos]
    elif cfg.validation_fraction > 0:
        t_regions, v_regions = [], []
        for info, box in zip(tinfos, list(train)):
            n_val = int(round(cfg.validation_fraction * info.grid))
            if n_val < 1 or n_val >= info.grid:
                raise TrainingError(f"validation fraction {cfg.validation_fraction} leaves no "
                                    f"{'validation' if n_val < 1 else 'training'} planes in {info.path}")
            t_regions.append(Region(info.grid, 0, info.grid - n_val))
            v_regions.append(Region(info.grid, info.grid - n_val, info.grid))
            val.append(box)
        vinfos = list(tinfos)
    else:
        t_regions = [Region(i.grid) for i in tinfos]
        v_regions = []
    for info, region in list(zip(tinfos, t_regions)) + list(zip(vinfos, v_regions)):
        extent = region.stop - region.x0
        if side > info.grid or (not region.full and side > extent):
            where = f"box of {info.grid}³" if region.full else \
                f"x-range [{region.x0}, {region.stop}) of {info.path}'s {info.grid}³ box"
            raise TrainingError(f"patch {cfg.patch} (+2×{ghost} ghost = {side}) is larger than the {where}: "
                                "use a smaller --patch" + ("" if region.full else
                                                           " or a separate --validation file"))
    recipe_text = first.attrs.get("density_recipe")
    try:
        recipe = DensityRecipe.from_json(recipe_text) if recipe_text else DensityRecipe()
    except (TypeError, ValueError):
        recipe = DensityRecipe()
    provenance = {
        "training_files": [file_provenance(p, i.attrs) for p, i in zip(cfg.data, tinfos)],
        "validation_files": [file_provenance(p, i.attrs) for p, i in zip(cfg.validation, vinfos)]
        if cfg.validation else [],
        "validation": "files" if cfg.validation else
        (f"held-out last {cfg.validation_fraction:g} of the x-range of each training box"
         if cfg.validation_fraction > 0 else "none"),
    }
    return TrainingData(train=train, train_regions=t_regions, validation=val, validation_regions=v_regions,
                        bins=bins, mass_bin_edges=[float(e) for e in first.mass_bin_edges],
                        voxel_size=float(first.voxel_size), redshift=float(first.redshift),
                        cosmology=first.cosmology, density_recipe=recipe, provenance=provenance)
