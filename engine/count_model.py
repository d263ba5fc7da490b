"""The count law of a bundle: how `halopaint sample` draws integer halos around the painted means.

- `CountModel`: per mass bin the dispersion law α_b(μ), the optional mean map m_b(μ) (kept in cells of
  `mean_cell`³ voxels, capped by `mean_cap`), the optional cross-bin law, and the catalogue's mass and
  velocity laws, with the provenance of their fit (jobs/fit_count_model.py). Stored in a bundle's metadata
  (halopaint.model.BundleMetadata.count_model) as JSON.
- `mean_map_values`: the piecewise-linear mean map; `merge_count_models`: per-bin concatenation of parts.

The draws themselves live in halopaint.sample.counts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np


def mean_map_values(mu: np.ndarray, knots, values) -> np.ndarray:
    """The piecewise-linear mean map through (knots, values): proportional to μ below the first knot, flat
    above the last. mu: any shape → float64 of its shape."""
    xs, ys = np.asarray(knots, np.float64), np.asarray(values, np.float64)
    mu = np.asarray(mu, np.float64)
    return np.where(mu < xs[0], mu * (ys[0] / xs[0]), np.interp(mu, xs, ys))


@dataclass(frozen=True)
class CountModel:
    """Per-mass-bin law of integer halo counts n around the painted mean μ (`halopaint sample`).

    Var[n | μ] = μ + α_b(μ)·μ² in mass bin b, i.e. E[n(n−1) | μ] = (1 + α_b(μ))·μ²: α < 0 sub-Poisson
    (binomial family), α = 0 Poisson, α > 0 negative binomial. α_b(μ) is piecewise constant in μ:
    alpha[b][j] holds on [mu_breaks[b][j−1], mu_breaks[b][j]) with mu_breaks[b] the len(alpha[b]) − 1
    increasing interior breaks [counts per voxel] (the outer ranges reach 0 and ∞).

    mean_mu[b], mean_n[b] (optional; None: E[n | μ] = μ in every bin, as in older bundles; two empty lists:
    E[n | μ] = μ in bin b alone): the knots of a monotone mean map m_b(μ) = E[n | μ], learned on training
    boxes (halopaint.sample.fit_mean_map: isotonic regression of the true counts on the painted means).
    With it the law is about m instead of μ: E[n | μ] = m_b(μ), Var[n | μ] = m + α_b(μ)·m² (α's ranges
    stay indexed by the painted μ). m_b is linear between the knots
    (mean_mu[b] increasing, mean_n[b] non-decreasing, both > 0), proportional to μ below the first knot
    (m(0) = 0) and flat above the last. The painted field itself is unchanged: it is the generator's output,
    whose statistics match the N-body field's (the paper's claim); m is the count law's conditional mean.
    mean_cell = c (optional; None: m = m_b(μ) voxel by voxel): in a bin with a map, m_b(μ) is rescaled inside
    every aligned cell of c³ voxels (planes [c·i, c·i + c) on each axis) to the cell's painted total Σμ, so the
    map moves halos only between the voxels of one cell and the field on scales above c voxels stays the
    painted one (halopaint.sample.law_means).
    exclusion[b][a] = q_ab (optional; None: bins are drawn independently given their means): the cross-bin
    law. Bins are drawn heaviest first; bin b's mean in a voxel is multiplied by q_ab^(n_a) for every heavier
    bin a > b drawn there (N-body halos of different masses exclude each other in a voxel), then rescaled
    inside every aligned cell of mean_cell³ voxels to the cell's total before the factors
    (halopaint.sample.exclusion_means); entries with a ≤ b are 1. Needs mean_cell.
    mean_cap[b] = c_b (optional; None, or None in bin b: no cap) [halos per voxel]: the most halos bin b's law
    expects in one voxel. Inside every aligned cell of mean_cell³ voxels the excess of the voxels above c_b
    goes to the cell's other voxels with m > 0, in proportion to their m (water filling), so the cell keeps its
    total (halopaint.sample.keep_cell_totals). With c_b = 1 the sub-Poisson family reaches any α ≥ −1 in every
    voxel (K = −1/α ≥ 1 = ⌈m⌉), so the law's pair count is the fitted one; above one halo per voxel the
    narrowest integer law of mean m still puts ⌊m⌋ halos in the voxel. Needs mean_cell.

    mass_slope[b] = β_b: catalogue masses follow dn/dlnM ∝ M^−β_b inside bin b's edges.
    velocity_bias[b] = g_b, velocity_infall[b] = γ_b [km/s] and velocity_dispersion[b] = σ_b [km/s]: a
    halo's velocity is g_b times the density file's /velocity at its position, plus γ_b times h∇δ of the
    density file's /density at its voxel (halopaint.sample.catalogue.voxel_density_gradient: infall towards
    the local overdensity), plus a per-component Gaussian of σ_b (None: not calibrated; g_b = 1 when only
    σ_b is given, γ_b = 0 without velocity_infall, as in older bundles).
    generator_sha256[b]: digest of bin b's generator weights the law was fitted with (a count model is
    only valid for the painted means it was fitted on; ModelBundle.load refuses a stale one).
    provenance: how it was fitted (command, data files with SHA-256, diagnostics).
    """

    alpha: list[list[float]]
    mu_breaks: list[list[float]]
    mass_slope: list[float] | None = None
    velocity_dispersion: list[float] | None = None
    velocity_bias: list[float] | None = None
    generator_sha256: list[str] | None = None
    velocity_infall: list[float] | None = None
    provenance: dict = field(default_factory=dict)
    law: str = "quadratic-variance"
    mean_mu: list[list[float]] | None = None
    mean_n: list[list[float]] | None = None
    mean_cell: int | None = None
    exclusion: list[list[float]] | None = None
    mean_cap: list[float | None] | None = None

    def __post_init__(self):
        n = len(self.alpha)
        if self.law != "quadratic-variance":
            raise ValueError(f"unknown count law {self.law!r}")
        if n == 0 or len(self.mu_breaks) != n:
            raise ValueError(f"count model: {n} alpha tables for {len(self.mu_breaks)} break lists")
        for b, (a, br) in enumerate(zip(self.alpha, self.mu_breaks)):
            if len(a) != len(br) + 1 or not all(math.isfinite(x) for x in a):
                raise ValueError(f"count model bin {b}: need len(alpha) = len(mu_breaks) + 1, finite alpha")
            if any(not (math.isfinite(x) and x > 0) for x in br) or any(y <= x for x, y in zip(br, br[1:])):
                raise ValueError(f"count model bin {b}: mu_breaks must be positive and increasing")
        for name, values in (("mass_slope", self.mass_slope), ("velocity_dispersion", self.velocity_dispersion),
                             ("velocity_bias", self.velocity_bias), ("generator_sha256", self.generator_sha256),
                             ("velocity_infall", self.velocity_infall)):
            if values is not None and len(values) != n:
                raise ValueError(f"count model: {len(values)} {name} entries for {n} mass bins")
        if self.mass_slope is not None and not all(math.isfinite(x) for x in self.mass_slope):
            raise ValueError("count model: mass_slope must be finite")
        if self.velocity_dispersion is not None and not all(
                math.isfinite(x) and x >= 0 for x in self.velocity_dispersion):
            raise ValueError("count model: velocity_dispersion must be finite and ≥ 0 [km/s]")
        if self.velocity_bias is not None and not all(math.isfinite(x) and x > 0 for x in self.velocity_bias):
            raise ValueError("count model: velocity_bias must be finite and > 0")
        if self.velocity_infall is not None and not all(math.isfinite(x) for x in self.velocity_infall):
            raise ValueError("count model: velocity_infall must be finite [km/s]")
        self._check_mean_map(n)

    def _check_mean_map(self, n: int) -> None:
        if (self.mean_mu is None) != (self.mean_n is None):
            raise ValueError("count model: mean_mu and mean_n come together (the knots of the mean map)")
        if self.mean_cell is not None and not (isinstance(self.mean_cell, int) and self.mean_cell >= 1):
            raise ValueError(f"count model: mean_cell must be a positive number of voxels, got {self.mean_cell!r}")
        self._check_exclusion(n)
        self._check_cap(n)
        if self.mean_mu is None:
            return
        if len(self.mean_mu) != n or len(self.mean_n) != n:
            raise ValueError(f"count model: mean map for {len(self.mean_mu)} bins, the model has {n}")
        for b, (xs, ys) in enumerate(zip(self.mean_mu, self.mean_n)):
            if len(xs) != len(ys):
                raise ValueError(f"count model bin {b}: the mean map needs as many values as knots")
            if not all(math.isfinite(v) and v > 0 for v in (*xs, *ys)):
                raise ValueError(f"count model bin {b}: mean-map knots and values must be finite and > 0")
            if any(x1 <= x0 for x0, x1 in zip(xs, xs[1:])) or any(y1 < y0 for y0, y1 in zip(ys, ys[1:])):
                raise ValueError(f"count model bin {b}: the mean map must be monotone (knots increasing, "
                                 "values non-decreasing)")

    def _check_exclusion(self, n: int) -> None:
        q = self.exclusion
        if q is None:
            return
        if len(q) != n or any(len(row) != n for row in q):
            raise ValueError(f"count model: the exclusion matrix must be {n} × {n} (one row per mass bin)")
        if not all(math.isfinite(x) and x > 0 for row in q for x in row):
            raise ValueError("count model: exclusion factors must be finite and > 0")
        if any(q[b][a] != 1.0 for b in range(n) for a in range(b + 1)):
            raise ValueError("count model: exclusion[b][a] must be 1 for a ≤ b (only heavier bins act on a bin)")
        if self.mean_cell is None:
            raise ValueError("count model: an exclusion law needs mean_cell (the cells it keeps totals in)")

    def _check_cap(self, n: int) -> None:
        caps = self.mean_cap
        if caps is None:
            return
        if len(caps) != n:
            raise ValueError(f"count model: {len(caps)} mean_cap entries for {n} mass bins")
        if not all(c is None or (math.isfinite(c) and c > 0) for c in caps):
            raise ValueError("count model: mean_cap entries must be None or finite and > 0 [halos per voxel]")
        if self.mean_cell is None and any(c is not None for c in caps):
            raise ValueError("count model: a mean cap needs mean_cell (the cells it keeps totals in)")

    @property
    def n_bins(self) -> int:
        return len(self.alpha)

    def cap_of(self, mass_bin: int) -> float | None:
        """Bin b's cap on the law's mean per voxel [halos], or None."""
        return None if self.mean_cap is None else self.mean_cap[mass_bin]

    def alpha_of(self, mass_bin: int, mu: np.ndarray) -> np.ndarray:
        """α_b(μ) for counts μ (any shape) → float64 array of μ's shape."""
        table = np.asarray(self.alpha[mass_bin], dtype=np.float64)
        breaks = np.asarray(self.mu_breaks[mass_bin], dtype=np.float64)
        return table[np.searchsorted(breaks, np.asarray(mu, dtype=np.float64), side="right")]

    @property
    def has_mean_map(self) -> bool:
        """Whether E[n | μ] ≠ μ in some bin."""
        return self.mean_mu is not None and any(self.mean_mu)

    @property
    def cell(self) -> int | None:
        """The cell size [voxels] a draw must see whole (mean map in cells, exclusion or a cap), or None."""
        capped = self.mean_cap is not None and any(c is not None for c in self.mean_cap)
        return self.mean_cell if (self.has_mean_map or self.exclusion is not None or capped) else None

    def exclusion_from(self, mass_bin: int) -> dict[int, float]:
        """{heavier bin a: q_ab} acting on bin b (q ≠ 1 only); empty without a cross-bin law."""
        if self.exclusion is None:
            return {}
        row = self.exclusion[mass_bin]
        return {a: float(row[a]) for a in range(mass_bin + 1, self.n_bins) if row[a] != 1.0}

    def has_mean_map_in(self, mass_bin: int) -> bool:
        return self.mean_mu is not None and bool(self.mean_mu[mass_bin])

    def mean_of(self, mass_bin: int, mu: np.ndarray) -> np.ndarray:
        """E[n | μ] = m_b(μ) for painted means μ ≥ 0 (any shape) → float64 array of μ's shape (μ itself
        where bin b has no mean map)."""
        mu = np.asarray(mu, dtype=np.float64)
        if not self.has_mean_map_in(mass_bin):
            return mu.copy()
        return mean_map_values(mu, self.mean_mu[mass_bin], self.mean_n[mass_bin])

    def velocity_law(self, mass_bin: int) -> tuple[float, float, float]:
        """(g_b, σ_b [km/s], γ_b [km/s]) of a catalogue's halo velocities in bin b: v = g_b · field +
        γ_b · h∇δ (at the halo's voxel) + N(0, σ_b²) per component; g = 1 without velocity_bias, σ = 0
        without velocity_dispersion, γ = 0 without velocity_infall."""
        gain = 1.0 if self.velocity_bias is None else float(self.velocity_bias[mass_bin])
        sigma = 0.0 if self.velocity_dispersion is None else float(self.velocity_dispersion[mass_bin])
        infall = 0.0 if self.velocity_infall is None else float(self.velocity_infall[mass_bin])
        return gain, sigma, infall

    @property
    def has_infall(self) -> bool:
        """Whether any bin's velocity law has an infall term (then catalogues need the density planes)."""
        return self.velocity_infall is not None and any(x != 0.0 for x in self.velocity_infall)

    def select(self, bins) -> "CountModel":
        """The count model of mass bins `bins` (indices into this model), in that order."""
        pick = lambda v: None if v is None else [v[b] for b in bins]  # noqa: E731
        return replace(self, alpha=[list(self.alpha[b]) for b in bins],
                       mu_breaks=[list(self.mu_breaks[b]) for b in bins], mass_slope=pick(self.mass_slope),
                       velocity_dispersion=pick(self.velocity_dispersion), velocity_bias=pick(self.velocity_bias),
                       velocity_infall=pick(self.velocity_infall), generator_sha256=pick(self.generator_sha256),
                       mean_mu=pick(self.mean_mu), mean_n=pick(self.mean_n), mean_cap=pick(self.mean_cap),
                       exclusion=None if self.exclusion is None else [[self.exclusion[b][a] for a in bins]
                                                                      for b in bins])

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.mean_mu is None:            # older readers and older bundles' JSON stay unchanged
            del d["mean_mu"], d["mean_n"]
        if self.mean_cell is None:
            del d["mean_cell"]
        if self.exclusion is None:
            del d["exclusion"]
        if self.mean_cap is None:
            del d["mean_cap"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CountModel":
        floats = lambda v: None if v is None else [float(x) for x in v]  # noqa: E731
        return cls(alpha=[floats(a) for a in d["alpha"]], mu_breaks=[floats(m) for m in d["mu_breaks"]],
                   mass_slope=floats(d.get("mass_slope")), velocity_dispersion=floats(d.get("velocity_dispersion")),
                   velocity_bias=floats(d.get("velocity_bias")), velocity_infall=floats(d.get("velocity_infall")),
                   generator_sha256=None if d.get("generator_sha256") is None else [str(s) for s in
                                                                                    d["generator_sha256"]],
                   provenance=dict(d.get("provenance", {})), law=str(d.get("law", "quadratic-variance")),
                   mean_mu=None if d.get("mean_mu") is None else [floats(m) for m in d["mean_mu"]],
                   mean_n=None if d.get("mean_n") is None else [floats(m) for m in d["mean_n"]],
                   mean_cell=None if d.get("mean_cell") is None else int(d["mean_cell"]),
                   exclusion=None if d.get("exclusion") is None else [floats(r) for r in d["exclusion"]],
                   mean_cap=None if d.get("mean_cap") is None else [None if c is None else float(c)
                                                                      for c in d["mean_cap"]])


def merge_count_models(models: list[CountModel | None]) -> CountModel | None:
    """Per-bin concatenation of the parts' count models (None unless every part has one)."""
    if not models or any(m is None for m in models):
        return None
    cat = lambda name: None if any(getattr(m, name) is None for m in models) else [  # noqa: E731
        v for m in models for v in getattr(m, name)]
    return CountModel(alpha=cat("alpha"), mu_breaks=cat("mu_breaks"), mass_slope=cat("mass_slope"),
                      velocity_dispersion=cat("velocity_dispersion"), velocity_bias=cat("velocity_bias"),
                      velocity_infall=cat("velocity_infall"), generator_sha256=cat("generator_sha256"),
                      mean_mu=_merged_mean_map(models, "mean_mu"), mean_n=_merged_mean_map(models, "mean_n"),
                      mean_cell=_merged_mean_cell(models), provenance={"parts": [m.provenance for m in models]},
                      mean_cap=None if all(m.mean_cap is None for m in models) else [
                          m.cap_of(b) for m in models for b in range(m.n_bins)])


def _merged_mean_cell(models: list[CountModel]) -> int | None:
    cells = {m.mean_cell for m in models if m.has_mean_map or m.cell is not None}
    if len(cells) > 1:
        raise ValueError("count models with mean maps in cells of different sizes cannot merge: "
                         f"{sorted(cells, key=str)}")
    return cells.pop() if cells else None


def _merged_mean_map(models: list[CountModel], name: str) -> list[list[float]] | None:
    """The parts' mean-map knots (or values) per bin; a part without a map contributes E[n | μ] = μ bins."""
    if not any(m.has_mean_map for m in models):
        return None
    return [list(v) for m in models for v in (getattr(m, name) or [[] for _ in range(m.n_bins)])]
