"""Integer halo counts around a painted mean: the count law's draws, its random streams and its fit.

A painted file holds expected counts μ (n_bins, N, N, N). A realization draws integer counts n from the
bundle's per-bin count model (`halopaint.model.CountModel`): E[n | μ] = m = m_b(μ) (m = μ without a mean
map) and Var[n | μ] = m + α_b(μ)·m², so E[n(n−1) | μ] = (1 + α)·m². Per voxel, with m in place of μ:

- α = 0: Poisson(μ);
- α > 0: negative binomial (gamma–Poisson) with shape 1/α;
- α < 0: binomial Bin(K, μ/K) with K = −1/α trials (a two-component mixture of Bin(⌊K⌋) and Bin(⌈K⌉) with
  the weight that keeps E[n(n−1)] exact when K is not an integer); where K < ⌈μ⌉ no binomial of mean μ is
  that narrow, and Bin(⌈μ⌉) is mixed with the two-point law on {⌊μ⌋, ⌊μ⌋+1} (the narrowest integer law of
  mean μ) to reach the target variance where it is feasible (the two-point law alone where it is not).

With `mean_cell` c, m is rescaled inside each aligned c³-voxel cell to the cell's painted total (`law_means`),
under the bin's `mean_cap` if it has one (the excess above it filled into the cell's other voxels), so a
block of planes must be aligned to c (`cell_aligned` gives the planes to read for any [a, b)).
With a cross-bin law (`exclusion`), bins are drawn heaviest first and a lighter bin's m is lowered by q_ab per
halo of a heavier bin a drawn in the voxel, then rescaled to its cell totals again (`exclusion_means`).

Random streams: one numpy Generator (PCG64) per (seed, purpose, mass bin, x-plane), seeded by
`SeedSequence(seed, spawn_key=(purpose, bin, plane))` — blocks of one x-plane, so any slab decomposition
over any number of ranks draws exactly the same numbers (given the numpy version, recorded in the attrs).
"""

from __future__ import annotations

import numpy as np

from halopaint.count_model import CountModel, mean_map_values

MEAN_MAP_KNOTS = 32                         # ranges of μ (equal shares of Σμ) the mean map is fitted over

STREAM_COUNTS, STREAM_CATALOGUE = 0, 1      # `purpose` entry of the stream key
COUNT_DTYPE = np.int32
ALPHA_POISSON_ATOL = 1e-12                  # |α| below this draws Poisson


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


def expected_pair_moment(mu: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """E[n(n−1)] per voxel of draw_counts(mu, alpha): the target (1 + α)·μ², or the two-point law's
    2⌊μ⌋f + ⌊μ⌋(⌊μ⌋−1) (f = μ − ⌊μ⌋, the least any integer law of mean μ has) where the target is below it.

    mu, alpha: (m,) float64, μ ≥ 0, α ≥ −1. → (m,) float64. Summed over a box and divided by the truth's
    Σ n(n−1), it says whether the law can reproduce the truth's pair count at all (1 if so, when fitted).
    """
    mu = np.asarray(mu, np.float64)
    lo = np.floor(mu)
    narrowest = lo * (lo - 1.0) + 2.0 * lo * (mu - lo)
    target = (1.0 + np.asarray(alpha, np.float64)) * mu * mu
    return np.maximum(target, narrowest)


def law_means(expected: np.ndarray, count_model: CountModel, mass_bin: int, x0: int = 0) -> np.ndarray:
    """The law's E[n | μ] of one bin's x-planes [x0, x0 + nx): m_b(μ) voxel by voxel, rescaled inside each
    aligned cell of `mean_cell`³ voxels to the cell's painted total when the model has cells and bin b a map
    or a cap (then no voxel's m exceeds the cap where its cell can hold the total below it).

    expected: (nx, N, N) painted means (with cells: x0 and nx multiples of the cell, N too). → float64 (nx, N, N).
    """
    mu = np.asarray(expected, np.float64)
    m = count_model.mean_of(mass_bin, mu)
    c, cap = count_model.mean_cell, count_model.cap_of(mass_bin)
    if c is None or c == 1 or not (count_model.has_mean_map_in(mass_bin) or cap is not None):
        return m
    _check_cells(mu.shape, x0, c)
    return keep_cell_totals(m, mu, c, cap)


def _check_cells(shape: tuple, x0: int, c: int) -> None:
    nx, n = shape[0], shape[1]
    if x0 % c or nx % c or n % c:
        raise ValueError(f"a count law in cells of {c} voxels needs planes and a grid aligned to {c}: "
                         f"x-planes [{x0}, {x0 + nx}) of a {n}-voxel grid")


def keep_cell_totals(values: np.ndarray, reference: np.ndarray, c: int, cap: float | None = None) -> np.ndarray:
    """`values` rescaled inside every aligned c³ cell to the cell's total of `reference` (0 where the values'
    cell total is 0). values, reference: (nx, N, N), nx and N multiples of c. → float64 (nx, N, N).

    cap (optional) [per voxel]: no voxel ends above it where the cell can hold its total below it — the
    voxels the rescale lifts above `cap` are set to it and their excess goes to the cell's other voxels with
    values > 0 in proportion to their values (water filling; the total is kept either way). A cell whose
    total exceeds cap × its voxels with values > 0 is rescaled without the cap.
    """
    shape = (values.shape[0] // c, c, values.shape[1] // c, c, values.shape[2] // c, c)
    v = np.asarray(values, np.float64).reshape(shape)
    target = np.asarray(reference, np.float64).reshape(shape).sum(axis=(1, 3, 5))
    have = v.sum(axis=(1, 3, 5))
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(have > 0, target / have, 0.0)
    out = v * factor[:, None, :, None, :, None]
    if cap is not None:
        over = np.nonzero((out > cap).any(axis=(1, 3, 5)))          # (x, y, z) indices of the cells to fill
        if over[0].size:
            pick = (over[0], slice(None), over[1], slice(None), over[2], slice(None))   # → (k, c, c, c)
            rows = lambda a: a[pick].reshape(-1, c**3)  # noqa: E731
            filled = _water_fill(rows(v), rows(out), target[over], float(cap))
            out[pick] = filled.reshape(-1, c, c, c)
    return out.reshape(values.shape)


def _water_fill(v: np.ndarray, rescaled: np.ndarray, total: np.ndarray, cap: float) -> np.ndarray:
    """Rows w ∝ v (v ≥ 0, (k, M)) with Σ w = total (k,) and w ≤ cap, from the plain rescale `rescaled` =
    v·total/Σv: voxels pinned at the cap, the rest rescaled to the remainder, until none is above it (at most
    M rounds). Rows with total > cap × their voxels with v > 0 keep the plain rescale."""
    pinned = np.zeros(v.shape, bool)
    w = rescaled
    for _ in range(v.shape[1]):
        lift = (w > cap) & ~pinned
        if not lift.any():
            break
        pinned |= lift
        free = np.where(pinned, 0.0, v)
        rest, free_sum = total - cap * pinned.sum(axis=1), free.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(free_sum > 0, rest / free_sum, 0.0)
        w = np.where(pinned, cap, free * scale[:, None])
    infeasible = total > cap * (v > 0).sum(axis=1)
    w[infeasible] = rescaled[infeasible]
    return w


def exclusion_means(means: np.ndarray, drawn: dict[int, np.ndarray], factors: dict[int, float],
                    cell: int, cap: float | None = None) -> np.ndarray:
    """Bin b's law means after the cross-bin law: m·Π_a q_a^(n_a) over the heavier bins a drawn in the same
    voxel, rescaled inside every aligned cell³ to the cell's Σm, so the bin keeps its cell totals and only
    moves halos away from the voxels that got heavier ones (q < 1) within a cell.

    means: (nx, N, N) law means of bin b (law_means); drawn: {a: (nx, N, N) counts of bin a}; factors:
    {a: q_ab}, only those with a in `drawn` act; cap: bin b's mean cap (CountModel.cap_of). → float64 (nx, N, N).
    """
    log_factor = np.zeros(means.shape, np.float64)
    for a, q in factors.items():
        if a in drawn:
            log_factor += np.log(q) * drawn[a]
    if not log_factor.any():
        return np.asarray(means, np.float64)
    return keep_cell_totals(means * np.exp(log_factor), means, cell, cap)


def cell_aligned(a: int, b: int, count_model: CountModel, grid: int) -> tuple[int, int]:
    """The planes [A, B) ⊇ [a, b) sample_counts needs to draw planes [a, b): aligned to the model's cells
    (mean map in cells or cross-bin law; A = a, B = b without cells). B may pass `grid` only when [a, b) reaches it (then B = grid)."""
    c = count_model.cell
    if not c or c == 1:
        return a, b
    return a - a % c, min(grid, -(-b // c) * c)


def sample_counts(expected: np.ndarray, seed: int, count_model: CountModel, x0: int = 0,
                  bins=None) -> np.ndarray:
    """Integer realization of painted expected counts.

    expected: (n_sel, nx, N, N) float, finite, ≥ 0 — x-planes [x0, x0+nx) of the painted /halos (aligned to
    the model's mean cells when it has them: `cell_aligned`);
    bins[i]: the mass-bin index of expected[i] in `count_model` and in the stream key (default 0..n_sel−1).
    → (n_sel, nx, N, N) int32. Identical for any split of the planes (streams keyed by global plane).
    With a cross-bin law (count_model.exclusion) the bins are drawn heaviest first and each bin's means see
    the counts of the heavier bins among `bins` (pass every heavier bin for the full law: a bin's draw is
    then the same whichever lighter bins come with it).
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
    drawn: dict[int, np.ndarray] = {}
    for i in sorted(range(len(bins)), key=lambda i: -bins[i]):       # heaviest first: the cross-bin law
        b = bins[i]
        means = law_means(expected[i], count_model, b, x0)
        factors = count_model.exclusion_from(b)
        if factors:
            _check_cells(means.shape, x0, count_model.mean_cell)
            means = exclusion_means(means, drawn, factors, count_model.mean_cell, count_model.cap_of(b))
        for j in range(expected.shape[1]):
            mu = np.asarray(expected[i, j], np.float64).reshape(-1)
            idx = np.flatnonzero(mu > 0)
            rng = plane_rng(seed, STREAM_COUNTS, b, x0 + j)
            plane = out[i, j].reshape(-1)
            plane[idx] = draw_counts(means[j].reshape(-1)[idx], count_model.alpha_of(b, mu[idx]), rng)
        drawn[b] = out[i]
    return out


# -------------------------------------------------------------------------------------- count-law fit

def _pairs(painted: list[np.ndarray], true: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    mu = np.concatenate([np.asarray(p, np.float64).reshape(-1) for p in painted])
    n = np.concatenate([np.asarray(t, np.float64).reshape(-1) for t in true])
    if mu.shape != n.shape:
        raise ValueError("painted and true fields differ in size")
    return mu, n


def fit_mean_map(painted: list[np.ndarray], true: list[np.ndarray], knots: int = MEAN_MAP_KNOTS,
                 ) -> tuple[list[float], list[float], dict]:
    """The mean map m(μ) = E[n | μ] of one mass bin: knots (μ_j, m_j) for CountModel.mean_mu/mean_n.

    painted, true: as for fit_count_law. The voxels with μ > 0 are cut into `knots` ranges of μ carrying
    equal shares of Σμ; μ_j is a range's mean painted count, m_j the isotonic (non-decreasing) regression,
    weighted by voxel numbers, of its mean true count (scipy.optimize.isotonic_regression), which keeps the
    total per range group; the piecewise-linear map through the knots keeps it closely (diagnostics:
    true_total vs mapped_total over the fitted voxels).
    → (mu knots (≤ knots,), values, diagnostics).
    """
    from scipy.optimize import isotonic_regression
    mu, n = _pairs(painted, true)
    pos = mu > 0
    mu, n = mu[pos], n[pos]
    if mu.size == 0 or n.sum() <= 0:
        raise ValueError("no painted voxel with a true halo: nothing to fit a mean map to")
    order = np.argsort(mu, kind="stable")
    mu, n = mu[order], n[order]
    cum = np.cumsum(mu) / mu.sum()
    cuts = np.unique(np.searchsorted(cum, np.arange(1, knots) / knots))
    ranges = [r for r in np.split(np.arange(mu.size), cuts) if r.size]
    size = np.array([r.size for r in ranges], np.float64)
    x = np.array([mu[r].mean() for r in ranges])
    y = isotonic_regression(np.array([n[r].mean() for r in ranges]), weights=size).x
    keep = np.r_[np.diff(x) > 0, True] & (y > 0)   # ranges of equal μ cannot be knots twice; m > 0
    xs, ys = [float(v) for v in x[keep]], [float(v) for v in y[keep]]
    diag = {"knots": len(xs), "voxels_with_mu_positive": int(mu.size), "true_total": float(n.sum()),
            "mapped_total": float(mean_map_values(mu, xs, ys).sum()), "painted_total": float(mu.sum())}
    return xs, ys, diag


def fit_count_law(painted: list[np.ndarray], true: list[np.ndarray], mu_ranges: int = 1,
                  means: list[np.ndarray] | None = None) -> tuple[list[float], list[float], dict]:
    """α(μ) of one mass bin from pairs of painted means and true counts (same boxes, same voxels).

    painted, true: lists of arrays of equal shapes (counts per voxel). means: the law's E[n | μ] per array
    (law_means of this bin; None: μ itself). With K = mu_ranges, the μ axis is cut
    at the quantiles of the m²-weight (each range carries the same share of Σm², m = mean(μ)); in range j
    1 + α_j = Σ n(n−1) / Σ m², the second factorial moment of the truth over that of the law — so the
    realization's count variance equals the truth's on the fitted data (when Σm = Σn). α ≥ −1.
    → (alpha (K,), interior breaks in μ (K−1,), diagnostics).
    """
    mu, n = _pairs(painted, true)
    m = mu if means is None else np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in means])
    w = m**2
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
            "mean_law": float(m.mean()), "var_true": float(n.var()), "var_painted": float(mu.var()),
            "true_pairs_per_range": pairs}
    return alpha, breaks, diag
