"""The cross-bin count law's fit: how much a heavier halo in a voxel lowers the lighter bins' means there.

Drawn independently given their means, the bins' halos pile into the same dense voxels: E[n_a n_b] = m_a m_b
voxel by voxel, while N-body halos of different masses exclude each other (on the 16 z = 0 training boxes
the draws' ⟨n_a n_b⟩ is up to 3× the truth's; docs/model-card.md). The cross-bin law
(`CountModel.exclusion`, drawn by `sample_counts` through `exclusion_means`) draws the heaviest bin first and
multiplies bin b's mean by q_ab per halo of a heavier bin a in the voxel, keeping bin b's totals in every
aligned cell. `fit_exclusion` chooses q so that the law's expected Σ n_a n_b equals the truth's on the training
boxes for every pair a > b, then refits bin b's α about the lowered means (same number of μ ranges), so
its count variance stays the truth's.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from halopaint.count_model import CountModel
from halopaint.sample.counts import exclusion_means, fit_count_law, law_means, sample_counts

FIT_SEED = 24680                 # the fitting draws' seeds: FIT_SEED + r, r < draws
FIT_ITERATIONS = 40
FIT_RTOL = 1e-3                  # stop when every pair's expected Σ n_a n_b is within this of the truth's
Q_RANGE = (1e-3, 1e3)


def _pair_sums(counts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """Σ n_a n_b (n_bins, n_bins), Σ n_a (n_bins,) and the number of voxels, over boxes of (n_bins, N, N, N)."""
    n_bins = counts[0].shape[0]
    flat = [np.asarray(c, np.float64).reshape(n_bins, -1) for c in counts]
    return sum(f @ f.T for f in flat), sum(f.sum(axis=1) for f in flat), sum(f.shape[1] for f in flat)


def cross_moments(counts: list[np.ndarray]) -> np.ndarray:
    """⟨n_a n_b⟩ / (n̄_a n̄_b) per pair of bins (a ≠ b), ⟨n(n − 1)⟩ / n̄² on the diagonal, pooled over boxes.

    counts: per box (n_bins, N, N, N). → (n_bins, n_bins) float64 (1 everywhere for Poisson halos without
    clustering).
    """
    pairs, totals, voxels = _pair_sums(counts)
    mean = totals / voxels
    second = pairs / voxels
    second[np.diag_indices(len(mean))] -= mean
    with np.errstate(divide="ignore", invalid="ignore"):
        return second / np.outer(mean, mean)


def fit_exclusion(painted: list[np.ndarray], true: list[np.ndarray], law: CountModel,
                  draws: int = 4) -> tuple[CountModel, dict]:
    """The cross-bin law of the boxes: `law` with `exclusion` fitted and α refitted in the bins it acts on.

    painted, true: per training box (n_bins, N, N, N) painted means and true counts. law: the count law
    fitted without it (mean map, α, mean_cell — required: the cells the law keeps totals in). draws: fitting
    realizations of the heavier bins per box (the law's expectation is over them). Heaviest bin first: q_·b
    by multiplicative updates q_ab ← q_ab · T_ab / M_ab (T: the truth's Σ n_a n_b, M: Σ n_a m'_b over the
    draws) until within FIT_RTOL, then α_b about m'_b, then bin b is drawn for the lighter bins.
    → (the law with exclusion, diagnostics: per pair the truth's, independent draws' and fitted law's cross
    moment, the iterations used).
    """
    if law.mean_cell is None:
        raise ValueError("the cross-bin law keeps totals in cells: fit it on a count law with mean_cell")
    n_bins = law.n_bins
    true_cross = _pair_sums(true)[0]
    q = [[1.0] * n_bins for _ in range(n_bins)]
    alpha, breaks = [list(a) for a in law.alpha], [list(b) for b in law.mu_breaks]
    drawn = [[{} for _ in range(draws)] for _ in painted]            # [box][r] {bin: counts}
    iterations = {}
    for b in range(n_bins - 1, -1, -1):
        means = [law_means(p[b], law, b) for p in painted]
        heavier = list(range(b + 1, n_bins))
        for it in range(FIT_ITERATIONS if heavier else 0):
            factors = {a: q[b][a] for a in heavier}
            lowered = [[exclusion_means(m, d, factors, law.mean_cell, law.cap_of(b)) for d in per_box]
                       for m, per_box in zip(means, drawn)]
            model = {a: sum(float(np.sum(d[a] * low)) for per_box, lows in zip(drawn, lowered)
                            for d, low in zip(per_box, lows)) / draws for a in heavier}
            ratio = {a: true_cross[a, b] / model[a] if model[a] > 0 else 1.0 for a in heavier}
            iterations[b] = it
            if all(abs(r - 1.0) <= FIT_RTOL for r in ratio.values()) or it == FIT_ITERATIONS - 1:
                break               # `lowered` is then the means of the q kept, which α is refitted about
            for a in heavier:
                q[b][a] = float(np.clip(q[b][a] * ratio[a], *Q_RANGE))
        if heavier:
            fitted = [low for lows in lowered for low in lows]
            a_b, br_b, _ = fit_count_law([p[b] for p in painted for _ in range(draws)],
                                         [t[b] for t in true for _ in range(draws)], len(alpha[b]), means=fitted)
            alpha[b], breaks[b] = a_b, br_b
        current = replace(law, alpha=alpha, mu_breaks=breaks, exclusion=[list(row) for row in q])
        for box, p in enumerate(painted):
            for r in range(draws):
                real = sample_counts(p[b:], FIT_SEED + r, current, bins=list(range(b, n_bins)))
                drawn[box][r][b] = real[0]
    independent = [sample_counts(p, FIT_SEED, law) for p in painted]
    joint = [sample_counts(p, FIT_SEED, current) for p in painted]
    diag = {"truth": cross_moments(true).tolist(), "independent_draw": cross_moments(independent).tolist(),
            "joint_draw": cross_moments(joint).tolist(), "iterations_per_bin": iterations, "draws": draws,
            "seed": FIT_SEED,
            "rule": "q_ab: the law's expected sum n_a n_b over the boxes (mean over the fitting draws of the "
                    "heavier bins) equals the truth's, every a > b; alpha_b refitted about the lowered means"}
    return current, diag
