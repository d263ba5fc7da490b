"""The count law's mean cap (CountModel.mean_cap): no voxel's law mean above c_b halos where its cell can hold
its total below it, the excess water-filled into the cell's other voxels (halopaint.sample.keep_cell_totals),
and the rule that caps only the bins whose law still over-predicts pairs (fit_count_model.py --mean-cap
where-needed).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from halopaint.model import CountModel, merge_count_models
from halopaint.sample import cell_aligned, keep_cell_totals, law_means, sample_counts
from test_sample_fit import _fit_script


def cells(a: np.ndarray, c: int = 4) -> np.ndarray:
    """Per aligned c³ cell: the voxels, (n_cells, c³)."""
    x, y, z = (s // c for s in a.shape)
    return a.reshape(x, c, y, c, z, c).transpose(0, 2, 4, 1, 3, 5).reshape(-1, c**3)


def spiky_means(seed: int, shape=(8, 8, 12)) -> np.ndarray:
    """Sparse means (a third of the voxels 0) with one voxel of 1.5–3.5 halos in every cell."""
    rng = np.random.default_rng(seed)
    m = rng.gamma(0.6, 0.08, shape) * (rng.random(shape) > 0.33)
    m[::4, ::4, ::4] = rng.uniform(1.5, 3.5, m[::4, ::4, ::4].shape)
    return m


def capped_law(cap=1.0, **extra) -> CountModel:
    return CountModel(alpha=[[-0.8]], mu_breaks=[[]], mean_cell=4, mean_cap=[cap], **extra)


def test_the_cap_keeps_every_cell_total_and_fills_the_excess_in_proportion():
    """Feasible cells: Σ kept to 1e-12, every voxel ≤ cap, voxels with m = 0 stay 0, the uncapped voxels keep
    their ratios. A cell whose total exceeds cap × its positive voxels is rescaled without the cap."""
    m = spiky_means(1)
    ref = m * 1.1
    out = keep_cell_totals(m, ref, 4, cap=1.0)
    np.testing.assert_allclose(cells(out).sum(axis=1), cells(ref).sum(axis=1), rtol=1e-12)
    assert out.max() <= 1.0 + 1e-12 and np.all(out[m == 0] == 0)
    for v, w in zip(cells(m), cells(out)):
        free = (w < 1.0) & (v > 0)
        np.testing.assert_allclose(w[free] / v[free], (w[free] / v[free])[0], rtol=1e-12)
    np.testing.assert_array_equal(keep_cell_totals(m, ref, 4), keep_cell_totals(m, ref, 4, cap=None))
    full = np.zeros((4, 4, 4))
    full[0, 0, :2] = [3.0, 1.0]                                          # 4 halos, 2 positive voxels, cap 1
    np.testing.assert_allclose(keep_cell_totals(full, full, 4, cap=1.0), full, rtol=1e-12)


def test_a_capped_law_draws_its_capped_means_with_fewer_pairs():
    """Realizations average to the capped means (z-scores against the law's variance m − 0.8m²: all below 5
    where m > 0.05, mean z² within 3σ of 1); at the capped spikes (m = 1) P(n = 2) is the law's (1 + α)/2,
    where without the cap they get ⌊m⌋ ≥ 1 halos every time and two or more in most draws."""
    mu = spiky_means(2)[None]
    law = capped_law()
    m = law_means(mu[0], law, 0)
    draws = np.stack([sample_counts(mu, s, law)[0] for s in range(300)]).astype(np.float64)
    pos = m > 0
    z = (draws.mean(axis=0)[pos] - m[pos]) / np.sqrt((m[pos] - 0.8 * m[pos] ** 2) / len(draws))
    assert np.abs(z[m[pos] > 0.05]).max() < 5 and abs(np.mean(z**2) - 1) < 3 * np.sqrt(2 / z.size)
    uncapped = replace(law, mean_cap=None, mean_mu=[[0.5, 1.0]], mean_n=[[0.5, 1.0]])  # a map of m = μ: cells only
    spikes = mu[0] > 1.5
    free = np.stack([sample_counts(mu, s, uncapped)[0] for s in range(20)])[:, spikes]
    assert free.min() >= 1 and (free >= 2).mean() > 0.4
    assert (draws[:, spikes] >= 2).mean() == pytest.approx((1 - 0.8) / 2, abs=0.03)    # m = 1: P(2) = (1 + α)/2


def test_a_block_of_a_capped_law_draws_what_the_whole_box_draws():
    mu = spiky_means(3, (16, 8, 8))[None]
    law = capped_law()
    whole = sample_counts(mu, 6, law)
    for a, b in ((0, 3), (3, 9), (9, 16)):
        lo, hi = cell_aligned(a, b, law, 16)
        assert lo % 4 == 0
        np.testing.assert_array_equal(sample_counts(mu[:, lo:hi], 6, law, x0=lo)[:, a - lo:b - lo], whole[:, a:b])


def test_mean_cap_validation_round_trip_select_and_merge():
    law = CountModel(alpha=[[0.0], [-0.5]], mu_breaks=[[], []], mean_cell=4, mean_cap=[None, 1.0])
    assert law.cell == 4 and law.cap_of(0) is None and law.cap_of(1) == 1.0
    assert CountModel.from_dict(json.loads(json.dumps(law.to_dict()))) == law
    assert law.select([1]).mean_cap == [1.0]
    plain = CountModel(alpha=[[0.0]], mu_breaks=[[]])
    assert "mean_cap" not in plain.to_dict() and plain.cell is None
    assert merge_count_models([replace(plain, mean_cell=4), law]).mean_cap == [None, None, 1.0]
    for bad, match in (([1.0], "2 mass bins"), ([None, 0.0], "> 0"), ([None, float("inf")], "finite")):
        with pytest.raises(ValueError, match=match):
            replace(law, mean_cap=bad)
    with pytest.raises(ValueError, match="needs mean_cell"):
        CountModel(alpha=[[0.0]], mu_breaks=[[]], mean_cap=[1.0])


def test_where_needed_caps_only_the_bin_whose_law_still_over_predicts_pairs():
    """Bin 0: Poisson truth about μ → no cap. Bin 1: one voxel per cell painted 1.5–3.5 halos where the truth
    holds at most one (the rest of the cell's total spread around it): the law about μ cannot be that narrow
    (pair excess ≫ 1) → capped at 1, after which the law's expected pairs are the truth's and the
    realizations' count variance too."""
    fit = _fit_script()
    rng = np.random.default_rng(7)
    boxes = []
    for i in range(4):
        mu1 = spiky_means(10 + i, (16, 16, 16))
        spike = np.zeros(mu1.shape, bool)
        spike[::4, ::4, ::4] = True
        rest = np.where(spike, 0.0, mu1).reshape(4, 4, 4, 4, 4, 4)
        excess = np.where(spike, mu1 - 0.8, 0.0).reshape(rest.shape).sum(axis=(1, 3, 5), keepdims=True)
        truth_mean = (rest * (1 + excess / rest.sum(axis=(1, 3, 5), keepdims=True))).reshape(mu1.shape)
        t1 = np.where(spike, rng.random(mu1.shape) < 0.8, rng.poisson(truth_mean))
        mu0 = rng.uniform(0.05, 0.6, mu1.shape)
        boxes.append({"painted": np.stack([mu0, mu1]), "true": np.stack([rng.poisson(mu0), t1]).astype(np.float64)})
    law, why = fit.choose_law(boxes, 2, "1", "none", cell=4, mean_cap="where-needed")
    assert why["mean_cap_bins"] == [1] and why["pair_excess_of_law"][1] > 2
    assert law.cap_of(0) is None and law.cap_of(1) == fit.MEAN_CAP
    assert fit.pair_excess(boxes, law)[1] == pytest.approx(1.0, rel=1e-6)
    real = np.concatenate([sample_counts(x["painted"], 3, law)[1].ravel() for x in boxes])
    truth = np.concatenate([x["true"][1].ravel() for x in boxes])
    assert real.var() == pytest.approx(truth.var(), rel=0.15)
    plain, _ = fit.choose_law(boxes, 2, "1", "none")
    assert plain.mean_cap is None
