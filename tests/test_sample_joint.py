"""The cross-bin count law (`CountModel.exclusion`): its draws, its cell totals, its fit (serial).

Synthetic inputs with fixed seeds; tolerances are stated per test (several σ of the estimator on 32³–40³
voxels; independent draws, the law the fit replaces, miss them by far more).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from test_sample import expected_field, make_count_model
from halopaint.model import CountModel
from halopaint.sample import exclusion_means, keep_cell_totals, sample_counts
from halopaint.sample.joint import cross_moments, fit_exclusion

Q = [[1.0, 0.7, 0.4], [1.0, 1.0, 0.3], [1.0, 1.0, 1.0]]


def cell_model(exclusion=None) -> CountModel:
    return replace(make_count_model(alpha=(-0.2, -0.4, -0.7)), mean_cell=4, exclusion=exclusion)


def test_unit_factors_draw_exactly_the_independent_law():
    mu = expected_field(3, 16, seed=1, means=(0.8, 0.3, 0.1))
    ones = [[1.0] * 3 for _ in range(3)]
    np.testing.assert_array_equal(sample_counts(mu, 3, cell_model(ones)), sample_counts(mu, 3, cell_model()))


def test_exclusion_keeps_cell_totals_and_lowers_voxels_with_heavier_halos():
    rng = np.random.default_rng(0)
    m = rng.gamma(2.0, 0.2, (8, 8, 8))
    heavy = (rng.random((8, 8, 8)) < 0.2).astype(np.int32)
    out = exclusion_means(m, {2: heavy}, {2: 0.25}, 4)
    cells = lambda v: v.reshape(2, 4, 2, 4, 2, 4).sum(axis=(1, 3, 5))  # noqa: E731
    np.testing.assert_allclose(cells(out), cells(m), rtol=1e-12)
    ratio = out / m
    assert (ratio[heavy == 1] < ratio[heavy == 0].min() + 1e-12).all()
    np.testing.assert_allclose(keep_cell_totals(2 * m, m, 4), m, rtol=1e-12)


def test_a_bins_draw_depends_only_on_the_heavier_bins_and_on_no_split():
    mu = expected_field(3, 16, seed=2, means=(0.8, 0.3, 0.1))
    law = cell_model(Q)
    full = sample_counts(mu, 5, law)
    np.testing.assert_array_equal(full[1:], sample_counts(mu[1:], 5, law, bins=[1, 2]))
    parts = [sample_counts(mu[:, a:b], 5, law, x0=a) for a, b in ((0, 4), (4, 12), (12, 16))]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), full)
    with pytest.raises(ValueError, match="aligned to 4"):
        sample_counts(mu[:, 2:10], 5, law, x0=2)


def test_the_fit_recovers_the_truths_cross_moments():
    """Truth drawn from a known cross-bin law; fitted on 2 boxes: the joint law's ⟨n_a n_b⟩/(n̄_a n̄_b) is
    within 5 % of the truth's on a third box (independent draws: 20–60 % above it) and q within 25 %."""
    truth_law = cell_model(Q)
    boxes = [expected_field(3, 32, seed=10 * s, means=(0.8, 0.3, 0.1)) for s in (1, 2, 3)]
    boxes = [np.where(b > 0, b, 1e-3).astype(np.float32) for b in boxes]
    true = [sample_counts(b, 100 + i, truth_law).astype(np.float64) for i, b in enumerate(boxes)]
    start = cell_model()
    law, diag = fit_exclusion(boxes[:2], true[:2], start, draws=2)
    q = np.asarray(law.exclusion)
    for b, a in ((0, 1), (0, 2), (1, 2)):
        assert abs(q[b, a] / Q[b][a] - 1) < 0.25, (b, a, q)
    t = cross_moments([true[2]])
    joint = cross_moments([sample_counts(boxes[2], 7, law)])
    independent = cross_moments([sample_counts(boxes[2], 7, start)])
    off = ~np.eye(3, dtype=bool)
    assert np.abs(joint[off] / t[off] - 1).max() < 0.05, (joint, t)
    assert (independent[off] / t[off] - 1).min() > 0.2
    np.testing.assert_allclose(np.diag(diag["joint_draw"]), np.diag(diag["truth"]), rtol=0.1)


def test_a_bad_exclusion_matrix_is_refused():
    with pytest.raises(ValueError, match="3 × 3"):
        cell_model([[1.0, 0.5], [1.0, 1.0]])
    with pytest.raises(ValueError, match="must be 1 for a ≤ b"):
        cell_model([[1.0, 0.5, 0.5], [0.5, 1.0, 0.5], [1.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="finite and > 0"):
        cell_model([[1.0, 0.0, 0.5], [1.0, 1.0, 0.5], [1.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="needs mean_cell"):
        replace(make_count_model(), exclusion=Q)


def test_the_cross_bin_law_round_trips_and_selects():
    law = cell_model(Q)
    back = CountModel.from_dict(law.to_dict())
    assert back.exclusion == Q and back.cell == 4
    assert "exclusion" not in cell_model().to_dict()
    assert law.select([1, 2]).exclusion == [[1.0, 0.3], [1.0, 1.0]]
    assert law.exclusion_from(0) == {1: 0.7, 2: 0.4} and law.exclusion_from(2) == {}
