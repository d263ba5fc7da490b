"""Integer halo realizations of painted fields and halo catalogues (`halopaint sample`).

A painted file holds expected counts μ (n_bins, N, N, N). A realization draws integer counts n from the
bundle's per-bin count model (`halopaint.model.CountModel`): E[n | μ] = μ and Var[n | μ] = μ + α_b(μ)·μ²,
so E[n(n−1) | μ] = (1 + α)·μ². Per voxel:

- α = 0: Poisson(μ);
- α > 0: negative binomial (gamma–Poisson) with shape 1/α;
- α < 0: binomial Bin(K, μ/K) with K = −1/α trials (a two-component mixture of Bin(⌊K⌋) and Bin(⌈K⌉) with
  the weight that keeps E[n(n−1)] exact when K is not an integer); where K < ⌈μ⌉ no binomial of mean μ is
  that narrow, and Bin(⌈μ⌉) is mixed with the two-point law on {⌊μ⌋, ⌊μ⌋+1} (the narrowest integer law of
  mean μ) to reach the target variance where it is feasible (the two-point law alone where it is not).

Random streams: one numpy Generator (PCG64) per (seed, purpose, mass bin, x-plane), seeded by
`SeedSequence(seed, spawn_key=(purpose, bin, plane))` — blocks of one x-plane, so any slab decomposition
over any number of ranks draws exactly the same numbers (given the numpy version, recorded in the attrs).

Catalogue (`--density DENS.h5 --catalogue`): every sampled halo gets a position uniform in its voxel
[Mpc/h], a mass drawn from dn/dlnM ∝ M^−β_b inside its bin's edges [M☉/h], and a velocity [km/s] = the
density file's /velocity CIC-interpolated at the position + a Gaussian of σ_b per component.

The file driver (`sample`) runs on every rank of an MPI communicator: rank r samples its x-slab
(decomposition.SlabPlan) plane by plane into its part file `OUT.realization-parts/rank-RRRR.h5`, and rank 0
writes the master OUT whose datasets are virtual datasets over the parts, `complete = True` last.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from halopaint.decomposition import SlabPlan, periodic_ranges
from halopaint.errors import HalopaintError
from halopaint.fields import FieldFile, FieldInfo, check_writable, same_voxel_size, standard_attrs, temporary_path
from halopaint.log import get_logger, progress
from halopaint.launch import agree_errors
from halopaint.model import CountModel, ModelBundle, resolve_model_path
from halopaint.sim.grids import cic_corners

log = get_logger(__name__)

STREAM_COUNTS, STREAM_CATALOGUE = 0, 1      # `purpose` entry of the stream key
COUNT_DTYPE = np.int32
ALPHA_POISSON_ATOL = 1e-12                  # |α| below this draws Poisson
READ_BUDGET_BYTES = 64 * 2**20              # input planes read at once per rank (bounded memory)
CATALOGUE_COLUMNS = {"pos": (np.float32, 3), "vel": (np.float32, 3), "mass": (np.float64, 0),
                     "mass_bin": (np.int16, 0)}


class SampleError(HalopaintError):
    """Sampling cannot start or finish (bad input, mismatched files, unwritable output)."""


# ------------------------------------------------------------------------------------------ streams

def plane_rng(seed: int, purpose: int, mass_bin: int, plane: int) -> np.random.Generator:
    """The random stream of one (seed, purpose, mass bin, global x-plane) block."""
    if seed < 0:
        raise ValueError(f"seed must be ≥ 0, got {seed}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed),
                                                                      spawn_key=(purpose, mass_bin, plane))))


def poisson_count_model(n_bins: int) -> CountModel:
    """α = 0 in every bin: a Poisson draw around the painted mean (the reference without a fitted law)."""
    return CountModel(alpha=[[0.0] for _ in range(n_bins)], mu_breaks=[[] for _ in range(n_bins)],
                      provenance={"law": "Poisson (alpha = 0 in every bin)"})


# ------------------------------------------------------------------------------------------- counts

def draw_counts(mu: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Integer counts with mean μ and Var = μ + α·μ² (see the module docstring).

    mu, alpha: (m,) float64, μ > 0. → (m,) int64. Draw order: Poisson voxels, negative-binomial voxels,
    then the binomial voxels' mixture uniforms and binomials (fixed, so streams are reproducible).
    """
    mu = np.asarray(mu, np.float64)
    alpha = np.asarray(alpha, np.float64)
    out = np.zeros(mu.shape, np.int64)
    poi = np.abs(alpha) <= ALPHA_POISSON_ATOL
    sup = alpha > ALPHA_POISSON_ATOL
    sub = alpha < -ALPHA_POISSON_ATOL
    out[poi] = rng.poisson(mu[poi])
    if sup.any():
        shape = 1.0 / alpha[sup]
        out[sup] = rng.negative_binomial(shape, 1.0 / (1.0 + alpha[sup] * mu[sup]))
    if sub.any():
        out[sub] = _draw_sub_poisson(mu[sub], alpha[sub], rng)
    return out


def _draw_sub_poisson(m: np.ndarray, a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Counts of mean m and variance m + a·m² (a < 0), or the narrowest feasible where that is too narrow.

    K = −1/a trials. Where K ≥ ⌈m⌉: Bin(⌊K⌋, m/⌊K⌋) or Bin(⌊K⌋+1, ·), mixed to make E[n(n−1)] = (1+a)m²
    exactly. Where K < ⌈m⌉ (no binomial of mean m is that narrow): Bin(⌈m⌉, m/⌈m⌉) mixed with the two-point
    law on {⌊m⌋, ⌊m⌋+1} (variance f(1−f), f = m − ⌊m⌋, the least any integer law of mean m has) to reach
    the target variance, or the two-point law alone below f(1−f). One uniform per voxel picks the component.
    """
    k, c = -1.0 / a, np.ceil(m)
    family = k >= c
    k_lo = np.where(family, np.floor(np.minimum(k, 2.0**62)), c)
    k_hi = k_lo + 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        w_lo = np.clip((1.0 / k - 1.0 / k_hi) / (1.0 / k_lo - 1.0 / k_hi), 0.0, 1.0)
        f = m - np.floor(m)
        v_min, v_bin = f * (1.0 - f), m * (1.0 - m / c)
        v = np.maximum(m + a * m * m, 0.0)
        w_bin = np.where(v_bin > v_min, np.clip((v - v_min) / (v_bin - v_min), 0.0, 1.0), 1.0)
    u = rng.random(m.size)
    trials = np.where(family, np.where(u < w_lo, k_lo, k_hi), c)
    binomial = family | (u < w_bin)
    out = np.empty(m.size, np.int64)
    out[binomial] = rng.binomial(trials[binomial].astype(np.int64), np.minimum(m[binomial] / trials[binomial], 1.0))
    two = ~binomial
    out[two] = np.floor(m[two]).astype(np.int64) + (rng.random(int(two.sum())) < f[two])
    return out


def sample_counts(expected: np.ndarray, seed: int, count_model: CountModel, x0: int = 0,
                  bins=None) -> np.ndarray:
    """Integer realization of painted expected counts.

    expected: (n_sel, nx, N, N) float, finite, ≥ 0 — x-planes [x0, x0+nx) of the painted /halos;
    bins[i]: the mass-bin index of expected[i] in `count_model` and in the stream key (default 0..n_sel−1).
    → (n_sel, nx, N, N) int32. Identical for any split of the planes (streams keyed by global plane).
    """
    expected = np.asarray(expected)
    if expected.ndim != 4:
        raise ValueError(f"expected counts must be (n_bins, nx, N, N), got shape {expected.shape}")
    bins = list(range(expected.shape[0])) if bins is None else [int(b) for b in bins]
    if len(bins) != expected.shape[0]:
        raise ValueError(f"{len(bins)} bin indices for {expected.shape[0]} fields")
    if not np.isfinite(expected).all() or (expected < 0).any():
        raise ValueError("expected counts must be finite and ≥ 0")
    for b in bins:
        if not 0 <= b < count_model.n_bins:
            raise ValueError(f"mass bin {b} not in the count model ({count_model.n_bins} bins)")
    out = np.zeros(expected.shape, COUNT_DTYPE)
    for i, b in enumerate(bins):
        for j in range(expected.shape[1]):
            mu = np.asarray(expected[i, j], np.float64).reshape(-1)
            idx = np.flatnonzero(mu > 0)
            rng = plane_rng(seed, STREAM_COUNTS, b, x0 + j)
            plane = out[i, j].reshape(-1)
            plane[idx] = draw_counts(mu[idx], count_model.alpha_of(b, mu[idx]), rng)
    return out


# ------------------------------------------------------------------------------------------ masses

def sample_masses(n: int, lo: float, hi: float, beta: float, rng: np.random.Generator) -> np.ndarray:
    """n masses [M☉/h] in [lo, hi) from dn/dlnM ∝ M^−β (inverse CDF in t = ln(M/lo)). → (n,) float64."""
    t_max = np.log(hi / lo)
    u = rng.random(n)
    if abs(beta * t_max) < 1e-8:
        t = u * t_max
    else:
        t = -np.log1p(-u * -np.expm1(-beta * t_max)) / beta
    return np.minimum(lo * np.exp(t), np.nextafter(hi, lo))


def fit_mass_slope(mass: np.ndarray, lo: float, hi: float) -> float:
    """Maximum-likelihood β of dn/dlnM ∝ M^−β for masses [M☉/h] inside [lo, hi).

    In t = ln(M/lo) ∈ [0, T] the density ∝ e^{−βt}, whose mean 1/β − T/(e^{βT} − 1) is matched to the data's.
    """
    from scipy.optimize import brentq
    mass = np.asarray(mass, np.float64)
    mass = mass[(mass >= lo) & (mass < hi)]
    if mass.size < 2:
        raise ValueError(f"need at least 2 masses in [{lo:g}, {hi:g}) to fit a slope, got {mass.size}")
    t_max, t_mean = np.log(hi / lo), float(np.mean(np.log(mass / lo)))

    def excess(beta):
        if abs(beta * t_max) < 1e-6:
            return t_max / 2 - beta * t_max**2 / 12 - t_mean
        return 1.0 / beta - t_max / np.expm1(beta * t_max) - t_mean

    limit = 200.0 / t_max
    return float(brentq(excess, -limit, limit, xtol=1e-10))


# -------------------------------------------------------------------------------------- velocities

def slab_cic_readout(field: np.ndarray, first_plane: int, pos: np.ndarray, box_size: float) -> np.ndarray:
    """CIC interpolation of a vector field held as an x-slab, same convention as sim.grids.cic_readout.

    field: (c, nx, N, N) float, global x-planes first_plane, first_plane+1, … (mod N), covering every plane
    the CIC of `pos` touches; pos (m, 3) [Mpc/h] in [0, box_size). → (m, c) float64.
    """
    c, nx, n = field.shape[0], field.shape[1], field.shape[2]
    flat = np.moveaxis(np.asarray(field), 0, -1).reshape(nx * n * n, c)
    out = np.zeros((len(pos), c), np.float64)
    for index, weight in cic_corners(np.asarray(pos, np.float64).reshape(-1, 3), n, box_size):
        ix, rest = np.divmod(index, n * n)
        local = (ix - first_plane) % n
        if (local >= nx).any():
            raise ValueError("slab_cic_readout: a position needs a plane outside the given slab")
        out += flat[local * n * n + rest] * weight[:, None]
    return out


def fit_velocity_dispersion(pos: np.ndarray, vel: np.ndarray, mass: np.ndarray, velocity: np.ndarray,
                            box_size: float, edges) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin velocity dispersion of halos about the velocity field at their positions.

    pos (h, 3) [Mpc/h], vel (h, 3) [km/s], mass (h,) [M☉/h]: N-body halos; velocity (3, N, N, N) [km/s]:
    the density file's /velocity; edges (b+1,) [M☉/h]. σ_b = RMS over the halos of bin b and the three
    components of vel − CIC(velocity)(pos). → (σ (b,) [km/s] (NaN for an empty bin), halos per bin (b,)).
    """
    edges = np.asarray(edges, np.float64)
    resid = np.asarray(vel, np.float64) - slab_cic_readout(velocity, 0, pos, box_size)
    b = np.searchsorted(edges, np.asarray(mass, np.float64), side="right") - 1
    sigma = np.full(edges.size - 1, np.nan)
    counts = np.zeros(edges.size - 1, np.int64)
    for i in range(edges.size - 1):
        sel = b == i
        counts[i] = int(sel.sum())
        if counts[i]:
            sigma[i] = float(np.sqrt(np.mean(resid[sel] ** 2)))
    return sigma, counts


# ------------------------------------------------------------------------------------------ catalogue

def catalogue_plane(counts: np.ndarray, plane: int, seed: int, count_model: CountModel, bins, edges,
                    box_size: float, velocity: np.ndarray | None = None, velocity_first: int = 0,
                    ) -> dict[str, np.ndarray]:
    """One entry per halo of one x-plane's counts.

    counts: (n_sel, N, N) int, global x-plane `plane`; bins[i]: mass-bin index of counts[i] (count model
    and stream key); edges: (n_sel+1,) [M☉/h] of the selected bins; velocity: (3, nx, N, N) [km/s] planes
    velocity_first… covering plane−1 … plane+1, or None (zero velocities). Order: bin, then voxel (C order
    in y, z), then halo. → {pos (h, 3) float32 [Mpc/h], vel (h, 3) float32 [km/s], mass (h,) float64
    [M☉/h], mass_bin (h,) int16}.
    """
    n = counts.shape[-1]
    h = box_size / n
    cols = {k: [] for k in CATALOGUE_COLUMNS}
    for i, b in enumerate(bins):
        c = np.asarray(counts[i]).reshape(-1).astype(np.int64)
        voxel = np.repeat(np.arange(c.size), c)
        m = voxel.size
        rng = plane_rng(seed, STREAM_CATALOGUE, b, plane)
        u = rng.random((m, 3))
        iy, iz = np.divmod(voxel, n)
        cell = np.stack([np.full(m, plane), iy, iz], axis=1)
        pos = float32_inside_voxel((cell + u) * h, cell, n, box_size)
        beta = count_model.mass_slope[b]
        mass = sample_masses(m, float(edges[i]), float(edges[i + 1]), beta, rng)
        vel = np.zeros((m, 3))
        if velocity is not None:
            vel = slab_cic_readout(velocity, velocity_first, pos, box_size)
        sigma = 0.0 if count_model.velocity_dispersion is None else count_model.velocity_dispersion[b]
        if sigma > 0:
            vel += sigma * rng.standard_normal((m, 3))
        cols["pos"].append(pos)
        cols["vel"].append(vel.astype(np.float32))
        cols["mass"].append(mass)
        cols["mass_bin"].append(np.full(m, b, np.int16))
    out = {}
    for k, (dtype, width) in CATALOGUE_COLUMNS.items():
        empty = np.zeros((0, width) if width else (0,), dtype)
        out[k] = np.concatenate(cols[k]).astype(dtype) if cols[k] else empty
    return out


def float32_inside_voxel(pos: np.ndarray, cell: np.ndarray, n: int, box_size: float) -> np.ndarray:
    """pos (m, 3) float64 [Mpc/h] as float32, nudged by single ulps so that floor(pos·N/L) == cell still
    holds after rounding (a float32 position can otherwise round onto the next voxel's edge)."""
    p = pos.astype(np.float32)
    for _ in range(4):
        got = np.floor(p.astype(np.float64) * (n / box_size)).astype(np.int64)
        high, low = got > cell, got < cell
        if not (high.any() or low.any()):
            return p
        p[high] = np.nextafter(p[high], np.float32(-np.inf))
        p[low] = np.nextafter(p[low], np.float32(np.inf))
    raise AssertionError("float32_inside_voxel did not converge")


def voxel_counts(pos: np.ndarray, mass_bin: np.ndarray, bins, grid: int, box_size: float) -> np.ndarray:
    """Per-voxel halo counts of a catalogue (NGP): → (len(bins), N, N, N) int64 (for checks)."""
    cell = np.floor(np.asarray(pos, np.float64) * (grid / box_size)).astype(np.int64)
    out = np.zeros((len(bins), grid, grid, grid), np.int64)
    for i, b in enumerate(bins):
        sel = np.asarray(mass_bin) == b
        np.add.at(out[i], tuple(cell[sel].T), 1)
    return out


# -------------------------------------------------------------------------------------- count-law fit

def fit_count_law(painted: list[np.ndarray], true: list[np.ndarray], mu_ranges: int = 1,
                  ) -> tuple[list[float], list[float], dict]:
    """α(μ) of one mass bin from pairs of painted means and true counts (same boxes, same voxels).

    painted, true: lists of arrays of equal shapes (counts per voxel). With K = mu_ranges, the μ axis is cut
    at the quantiles of the μ²-weight (each range carries the same share of Σμ²); in range j
    1 + α_j = Σ n(n−1) / Σ μ², the second factorial moment of the truth over that of the law — so the
    realization's count variance equals the truth's on the fitted data (when Σμ = Σn). α ≥ −1.
    → (alpha (K,), interior breaks (K−1,), diagnostics).
    """
    mu = np.concatenate([np.asarray(p, np.float64).reshape(-1) for p in painted])
    n = np.concatenate([np.asarray(t, np.float64).reshape(-1) for t in true])
    if mu.shape != n.shape:
        raise ValueError("painted and true fields differ in size")
    w = mu**2
    if w.sum() <= 0:
        raise ValueError("the painted field is zero everywhere: nothing to fit")
    order = np.argsort(mu, kind="stable")
    cum = np.cumsum(w[order]) / w.sum()
    breaks = []
    for q in np.arange(1, mu_ranges) / mu_ranges:
        value = float(mu[order][np.searchsorted(cum, q)])
        if value > 0 and (not breaks or value > breaks[-1]):
            breaks.append(value)
    region = np.searchsorted(np.asarray(breaks), mu, side="right")
    alpha, pairs = [], []
    for j in range(len(breaks) + 1):
        sel = region == j
        f2 = float(np.sum(n[sel] * (n[sel] - 1)))
        alpha.append(max(-1.0, f2 / float(np.sum(w[sel])) - 1.0))
        pairs.append(f2 / 2)
    diag = {"voxels": int(mu.size), "mean_true": float(n.mean()), "mean_painted": float(mu.mean()),
            "var_true": float(n.var()), "var_painted": float(mu.var()), "true_pairs_per_range": pairs}
    return alpha, breaks, diag


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
        cm = CountModel(alpha=[[0.0]] * base.n_bins, mu_breaks=[[]] * base.n_bins, mass_slope=base.mass_slope,
                        velocity_dispersion=base.velocity_dispersion, generator_sha256=base.generator_sha256,
                        provenance={"law": "Poisson (--poisson)", "catalogue_parts_from": base.provenance})
        source += " with --poisson"
    if cfg.catalogue:
        _check_density(cfg, info)
        if cm.mass_slope is None:
            raise SampleError(f"count model ({source}) has no mass function (mass_slope): cannot draw catalogue "
                              "masses; refit it with jobs/fit_count_model.py")
        if cm.velocity_dispersion is None:
            warnings.append("the count model has no calibrated velocity dispersion: catalogue velocities are "
                            "the density file's /velocity at the halo positions only")
    return _Setup(info, bins, file_bins, edges, cm, source, warnings)


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


def _read_velocity(ds, a: int, b: int, n: int) -> np.ndarray:
    """Velocity planes a−1 … b (periodic): (3, b−a+2, N, N) float32."""
    parts = [np.asarray(ds[:, s0:s1], np.float32) for s0, s1, _ in periodic_ranges(a - 1, b + 1, n)]
    return np.concatenate(parts, axis=1)


def _sample_slab(cfg: SampleConfig, s: _Setup, x0: int, x1: int, part: h5py.File) -> dict:
    """Sample planes [x0, x1) into the open part file; → per-bin totals and halo count of this rank."""
    n = s.info.grid
    totals = np.zeros(len(s.bins), np.int64)
    step = max(1, READ_BUDGET_BYTES // max(1, len(s.bins) * n * n * 16))
    rows = 0
    with FieldFile(cfg.painted) as pf, (FieldFile(cfg.density) if cfg.catalogue else _Null()) as df:
        ds = pf.h5["halos"]
        for a in progress(range(x0, x1, step), total=-(-(x1 - x0) // step), desc="sample", unit="slab"):
            b = min(x1, a + step)
            mu = _read_planes(ds, s.file_bins, a, b)
            if not np.isfinite(mu).all() or (mu < 0).any():
                bad = int(np.count_nonzero(~np.isfinite(mu) | (mu < 0)))
                raise SampleError(f"{cfg.painted}: /halos has {bad} NaN/Inf or negative values in x-planes "
                                  f"[{a}, {b}); expected counts must be finite and ≥ 0")
            counts = sample_counts(mu, cfg.seed, s.count_model, x0=a, bins=s.bins)
            part["halos"][:, a - x0:b - x0] = counts
            totals += counts.reshape(len(s.bins), -1).sum(axis=1)
            if cfg.catalogue:
                vel = _read_velocity(df.h5["velocity"], a, b, n)
                for x in range(a, b):
                    cat = catalogue_plane(counts[:, x - a], x, cfg.seed, s.count_model, s.bins, s.edges,
                                          s.info.box_size, velocity=vel, velocity_first=a - 1)
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
