"""Mean-count calibration of a model bundle: paint the training boxes, scale each bin's output layer so the
painted mean count equals the true one.

The generator ends in a 1×1×1 conv followed by ReLU, and ReLU is positively homogeneous
(ReLU(c·z) = c·ReLU(z) for c > 0), so multiplying that conv's weight and bias by c multiplies the painted
field by exactly c: the calibrated bundle paints c_b × the original field in bin b, nothing else changes
(T, r_c and every other statistic of the overdensity are untouched; the number of painted halos and the
relative weight of the bins in a summed field are fixed). Fitted on training data only: 1 number per bin.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from halopaint.errors import HalopaintError
from halopaint.fields import FieldFile, file_provenance, same_voxel_size
from halopaint.model import ModelBundle
from halopaint.paint import paint_whole_box

OUTPUT_LAYER = "out"  # name of the generator's last conv (followed by ReLU) in its state_dict


class CalibrationError(HalopaintError):
    """Calibration data that do not fit the bundle, or a factor that cannot be applied."""


def file_bins_for(bundle: ModelBundle, file_edges: np.ndarray, path: str) -> list[int]:
    """Indices of the file's mass bins matching the bundle's bins (the bundle may cover a sub-range)."""
    edges = np.asarray(bundle.metadata.mass_bin_edges, dtype=np.float64)
    for start in range(len(file_edges) - len(edges) + 1):
        if np.allclose(file_edges[start:start + len(edges)], edges, rtol=1e-6):
            return list(range(start, start + bundle.n_bins))
    fmt = lambda e: "[" + ", ".join(f"{x:.3g}" for x in e) + "]"  # noqa: E731
    raise CalibrationError(f"{path}: its mass-bin edges {fmt(file_edges)} M☉/h do not contain the bundle's "
                           f"{fmt(edges)}")


def measure_mean_counts(bundle: ModelBundle, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Paint each box with the bundle (whole box, periodic) and sum the counts.

    Returns (true, painted): (n_bins,) float64 mean halo counts per voxel over all boxes.
    """
    if not paths:
        raise CalibrationError("no calibration data given (--data FILE.h5 …)")
    true = np.zeros(bundle.n_bins)
    painted = np.zeros(bundle.n_bins)
    voxels = 0
    for path in paths:
        with FieldFile(path, require=("density", "halos")) as f:
            info = f.info
            if not same_voxel_size(info.voxel_size, bundle.metadata.voxel_size):
                raise CalibrationError(f"{path}: voxel size {info.voxel_size:g} Mpc/h, the bundle was trained "
                                       f"at {bundle.metadata.voxel_size:g}")
            bins = file_bins_for(bundle, info.mass_bin_edges, path)
            halos = f.read_halos(bins)
            density = f.read_density()
        true += halos.reshape(bundle.n_bins, -1).sum(axis=1, dtype=np.float64)
        painted += paint_whole_box(bundle, density).reshape(bundle.n_bins, -1).sum(axis=1, dtype=np.float64)
        voxels += density.size
    return true / voxels, painted / voxels


def scale_counts(bundle: ModelBundle, factors, note: dict | None = None) -> ModelBundle:
    """A bundle painting factors[b] × the original field in bin b (output conv weight and bias scaled).

    `note` is stored as metadata.training["count_calibration"] (with the factors). A count model is
    dropped (it was fitted for the old painted means and would be refused as stale): refit it on the new
    bundle with jobs/fit_count_model.py.
    """
    factors = [float(c) for c in factors]
    if len(factors) != bundle.n_bins:
        raise CalibrationError(f"{len(factors)} calibration factors for {bundle.n_bins} mass bins")
    for b, c in enumerate(factors):
        if not (math.isfinite(c) and c > 0):
            raise CalibrationError(f"calibration factor of bin {b} must be positive and finite, got {c}")
    generators = []
    for sd, c in zip(bundle.generators, factors):
        sd = dict(sd)
        for name in (f"{OUTPUT_LAYER}.weight", f"{OUTPUT_LAYER}.bias"):
            sd[name] = sd[name] * c
        generators.append(sd)
    training = dict(bundle.metadata.training)
    record = {"factors": factors, **(note or {})}
    if "count_calibration" in training:   # calibrating twice: keep the history, factors multiply
        record["previous"] = training["count_calibration"]
    if bundle.metadata.count_model is not None:
        record["count_model_dropped"] = "fitted for the uncalibrated means; refit with jobs/fit_count_model.py"
    training["count_calibration"] = record
    return replace(bundle, generators=generators,
                   metadata=replace(bundle.metadata, training=training, count_model=None))


def calibrate_counts(bundle: ModelBundle, paths: list[str],
                     command: str | None = None) -> tuple[ModelBundle, np.ndarray, np.ndarray]:
    """Fit and apply the per-bin factors true/painted on `paths` (`command`, if given, is recorded).

    Returns (calibrated bundle, true means, painted means before), means per voxel, (n_bins,).
    """
    true, painted = measure_mean_counts(bundle, paths)
    for b in range(bundle.n_bins):
        if painted[b] <= 0:
            raise CalibrationError(f"mass bin {b} paints no halos at all on the calibration data: "
                                   "nothing to scale")
        if true[b] <= 0:
            raise CalibrationError(f"mass bin {b} has no true halos in the calibration data")
    provenance = []
    for p in paths:
        with FieldFile(p) as f:
            provenance.append(file_provenance(p, f.info.attrs))
    note = {"data": provenance, "true_mean": true.tolist(), "painted_mean_before": painted.tolist()}
    if command:
        note["command"] = command
    return scale_counts(bundle, true / painted, note), true, painted
