"""The count model's optional mean map E[n | μ] = m_b(μ): its form, its validation, its fit, and the draws
that use it (halopaint.model.CountModel.mean_of, halopaint.sample.fit_mean_map / fit_count_law / sample_counts),
and the rule that maps only the bins whose truth is narrower than any law about μ (fit_count_model.py
--mean-map where-needed, halopaint.sample.expected_pair_moment).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from halopaint.model import CountModel, merge_count_models
from halopaint.sample import (cell_aligned, draw_counts, expected_pair_moment, fit_count_law, fit_mean_map, law_means,
                              sample_counts)
from test_sample_fit import _fit_script

KNOTS, VALUES = [0.1, 0.5, 1.0, 2.0], [0.15, 0.4, 0.55, 0.6]    # a concave map: the sharp-field pattern


def law(alpha=-0.3, **extra) -> CountModel:
    return CountModel(alpha=[[alpha]], mu_breaks=[[]], mean_mu=[KNOTS], mean_n=[VALUES], **extra)


def test_mean_map_is_linear_between_knots_proportional_below_and_flat_above():
    cm = law()
    mu = np.array([0.0, 0.05, 0.1, 0.3, 0.75, 1.0, 2.0, 5.0])
    expect = [0.0, 0.075, 0.15, 0.275, 0.475, 0.55, 0.6, 0.6]
    np.testing.assert_allclose(cm.mean_of(0, mu), expect, rtol=1e-12)
    plain = CountModel(alpha=[[0.0]], mu_breaks=[[]])
    np.testing.assert_array_equal(plain.mean_of(0, mu), mu)
    assert cm.has_mean_map and not plain.has_mean_map


@pytest.mark.parametrize("knots,values,match", [
    ([0.1, 0.1], [0.2, 0.3], "monotone"), ([0.1, 0.2], [0.3, 0.2], "monotone"), ([0.1], [0.0], "> 0"),
    ([0.1, 0.2], [0.3], "as many"), ([float("nan")], [0.1], "finite")])
def test_a_bad_mean_map_is_refused(knots, values, match):
    with pytest.raises(ValueError, match=match):
        CountModel(alpha=[[0.0]], mu_breaks=[[]], mean_mu=[knots], mean_n=[values])
    with pytest.raises(ValueError, match="together"):
        CountModel(alpha=[[0.0]], mu_breaks=[[]], mean_mu=[KNOTS])


def test_mean_map_survives_json_select_and_merge_and_old_dicts_stay_as_they_were():
    cm = law(alpha=0.2)
    assert CountModel.from_dict(json.loads(json.dumps(cm.to_dict()))) == cm
    plain = CountModel(alpha=[[0.0]], mu_breaks=[[]])
    assert "mean_mu" not in plain.to_dict() and CountModel.from_dict(plain.to_dict()) == plain
    two = merge_count_models([cm, law(alpha=-0.1)])
    assert two.mean_mu == [KNOTS, KNOTS] and two.select([1]).alpha == [[-0.1]]
    mixed = merge_count_models([cm, plain])                     # a map in some bins: identity in the others
    assert mixed.mean_mu == [KNOTS, []] and mixed.has_mean_map_in(0) and not mixed.has_mean_map_in(1)
    assert CountModel.from_dict(json.loads(json.dumps(mixed.to_dict()))) == mixed
    np.testing.assert_array_equal(mixed.mean_of(1, np.array([0.3, 2.0])), [0.3, 2.0])
    assert merge_count_models([plain, plain]).mean_mu is None


def test_realizations_average_to_the_mapped_mean_with_the_target_variance():
    """Constant painted fields at five levels, 64³ voxels each: the mean of the draws is m(μ) within 5
    standard errors, the variance m + α m² within 3 %; without the map the mean is μ."""
    levels = np.array([0.05, 0.3, 0.8, 1.5, 3.0])
    mu = np.broadcast_to(levels[:, None, None, None], (5, 64, 64, 64)).astype(np.float32)
    cm = CountModel(alpha=[[-0.3]] * 5, mu_breaks=[[]] * 5, mean_mu=[KNOTS] * 5, mean_n=[VALUES] * 5)
    real = sample_counts(mu, 4, cm)
    m = cm.mean_of(0, levels)
    for b, level in enumerate(levels):
        target = m[b] - 0.3 * m[b] ** 2
        assert abs(real[b].mean() - m[b]) < 5 * np.sqrt(target / real[b].size), level
        assert real[b].var() == pytest.approx(target, rel=0.03), level
    plain = sample_counts(mu, 4, CountModel(alpha=[[0.0]] * 5, mu_breaks=[[]] * 5))
    assert abs(plain[3].mean() - 1.5) < 0.01


def test_fit_recovers_a_known_mean_map_and_the_law_around_it():
    """Truth drawn from a known map (and α = −0.3 about it) over a lognormal μ field: the isotonic fit is
    within 0.03 of m(μ) across μ's range, keeps the total within 1 %, and α is recovered within 0.06."""
    rng = np.random.default_rng(7)
    mu = np.exp(rng.normal(-1.5, 1.0, size=(1, 96, 96, 96))).astype(np.float32)
    truth_law = law()
    truth = sample_counts(mu, 21, truth_law)
    xs, ys, diag = fit_mean_map([mu[0]], [truth[0]])
    assert np.all(np.diff(xs) > 0) and np.all(np.diff(ys) >= 0)
    probe = np.array(xs)[(np.array(xs) > 0.05) & (np.array(xs) < 2.5)]
    fitted = CountModel(alpha=[[0.0]], mu_breaks=[[]], mean_mu=[xs], mean_n=[ys])
    np.testing.assert_allclose(fitted.mean_of(0, probe), truth_law.mean_of(0, probe), atol=0.03)
    assert diag["mapped_total"] == pytest.approx(diag["true_total"], rel=0.01)
    alpha, _, d = fit_count_law([mu[0]], [truth[0]], means=[fitted.mean_of(0, mu[0])])
    assert alpha[0] == pytest.approx(-0.3, abs=0.06) and d["mean_law"] == pytest.approx(truth[0].mean(), rel=0.01)


@pytest.mark.parametrize("m,alpha", [(0.3, -0.5), (0.8, -0.9), (1.5, -0.95), (1.5, -0.2), (2.7, -0.6), (2.7, 0.3),
                                     (0.6, 0.0)])
def test_expected_pair_moment_is_what_the_draws_give(m, alpha):
    """E[n(n−1)] of draw_counts, infeasible targets included (α = −0.95 at μ = 1.5 asks for less than the
    two-point law on {1, 2} has): within 4 standard errors of 400,000 draws."""
    rng = np.random.default_rng(11)
    n = draw_counts(np.full(400_000, m), np.full(400_000, alpha), rng).astype(np.float64)
    pairs = n * (n - 1)
    expect = float(expected_pair_moment(np.array([m]), np.array([alpha]))[0])
    assert abs(pairs.mean() - expect) < 4 * pairs.std() / np.sqrt(n.size) + 1e-12


def test_where_needed_maps_only_the_bin_whose_truth_is_narrower_than_any_law_about_mu():
    """Bin 0: truth Poisson(μ), the law about μ is feasible → no map. Bin 1: μ ∈ [1.2, 1.8] but the truth is
    Bin(2, μ/4) (half the mean, few pairs): no law of mean μ is that narrow → the mean map, which brings the
    realizations' P(n ≥ 2) to the truth's."""
    fit = _fit_script()
    rng = np.random.default_rng(5)
    boxes = []
    for _ in range(3):
        mu = np.stack([rng.uniform(0.05, 0.6, 20**3), rng.uniform(1.2, 1.8, 20**3)]).reshape(2, 20, 20, 20)
        true = np.stack([rng.poisson(mu[0]), rng.binomial(2, mu[1] / 4)]).astype(np.float64)
        boxes.append({"painted": mu, "true": true})
    law, why = fit.choose_law(boxes, 2, "1", "where-needed")
    assert why["mean_map_bins"] == [1] and why["pair_excess_without_mean_map"][1] > 2
    assert abs(why["pair_excess_without_mean_map"][0] - 1) < 0.05
    assert law.has_mean_map_in(1) and not law.has_mean_map_in(0)
    real = sample_counts(boxes[0]["painted"], 3, law)
    for b in (0, 1):
        truth = np.mean(np.concatenate([x["true"][b].ravel() for x in boxes]) >= 2)
        assert np.mean(real[b] >= 2) == pytest.approx(truth, rel=0.15)
    plain, _ = fit.choose_law(boxes, 2, "1", "none")
    assert not plain.has_mean_map and np.mean(sample_counts(boxes[0]["painted"], 3, plain)[1] >= 2) > 3 * truth


def test_a_mean_map_in_cells_keeps_every_cells_painted_total():
    """law_means with mean_cell 4: inside each aligned 4³ cell the mapped means sum to the painted ones (to
    1e-12); without cells they are m(μ) voxel by voxel; a block that cuts cells is refused."""
    rng = np.random.default_rng(8)
    mu = rng.gamma(0.5, 0.4, size=(8, 12, 12))
    cm = CountModel(alpha=[[-0.3]], mu_breaks=[[]], mean_mu=[KNOTS], mean_n=[VALUES], mean_cell=4)
    m = law_means(mu, cm, 0, x0=4)
    cells = lambda a: a.reshape(2, 4, 3, 4, 3, 4).sum(axis=(1, 3, 5))  # noqa: E731
    np.testing.assert_allclose(cells(m), cells(mu), rtol=1e-12)
    assert not np.allclose(m, mu)
    np.testing.assert_array_equal(law_means(mu, law(), 0), law().mean_of(0, mu))
    with pytest.raises(ValueError, match="aligned"):
        law_means(mu[:6], cm, 0)
    with pytest.raises(ValueError, match="aligned"):
        law_means(mu, cm, 0, x0=2)
    assert cell_aligned(5, 11, cm, 12) == (4, 12) and cell_aligned(5, 11, law(), 12) == (5, 11)
    assert CountModel.from_dict(json.loads(json.dumps(cm.to_dict()))) == cm
    assert "mean_cell" not in law().to_dict()
    with pytest.raises(ValueError, match="mean_cell"):
        CountModel(alpha=[[0.0]], mu_breaks=[[]], mean_cell=0)


def test_a_block_read_through_cell_aligned_draws_what_the_whole_box_draws():
    """sample_counts on the aligned superset of any plane range, cut back to the range: the same counts as
    the whole box's draw (streams by plane, means by cell)."""
    rng = np.random.default_rng(9)
    mu = rng.gamma(0.5, 0.6, size=(1, 16, 8, 8))
    cm = CountModel(alpha=[[-0.3]], mu_breaks=[[]], mean_mu=[KNOTS], mean_n=[VALUES], mean_cell=4)
    whole = sample_counts(mu, 6, cm)
    for a, b in ((0, 3), (3, 9), (9, 16), (5, 6)):
        lo, hi = cell_aligned(a, b, cm, 16)
        np.testing.assert_array_equal(sample_counts(mu[:, lo:hi], 6, cm, x0=lo)[:, a - lo:b - lo], whole[:, a:b])


def test_cells_that_do_not_tile_the_grid_or_differ_between_parts_are_refused(tmp_path):
    from halopaint.sample import SampleConfig, SampleError, sample
    from test_sample import expected_field, write_painted
    cm = CountModel(alpha=[[-0.3]] * 3, mu_breaks=[[]] * 3, mean_mu=[KNOTS, [], KNOTS], mean_n=[VALUES, [], VALUES],
                    mean_cell=4)
    painted = write_painted(tmp_path / "p.h5", expected_field(3, 10, seed=1), cm)
    with pytest.raises(SampleError, match="cells of 4 voxels, which do not tile the 10-voxel grid"):
        sample(SampleConfig(painted=painted, out=str(tmp_path / "r.h5"), seed=0))
    assert not (tmp_path / "r.h5").exists()
    with pytest.raises(ValueError, match="cells of different sizes"):
        merge_count_models([law(), replace(law(), mean_cell=2)])
