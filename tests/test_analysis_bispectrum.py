"""Bispectrum: three plane waves (analytic B), the float64 oracle, chunking and scheduler independence."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from halopaint.analysis import bispectrum
from halopaint.analysis.bispectrum import third_side
from halopaint.errors import HalopaintError
from test_analysis_oracle import count_triangles, oracle_bk


def test_three_plane_waves_give_analytic_bispectrum():
    n, box, amp = 16, 100.0, 0.2
    kf = 2 * np.pi / box
    q1, q2 = np.array([2, 0, 0]), np.array([3, 3, 0])          # |q1| = 2, |q2| = √18 = 4.24, θ = π/4
    q3 = -(q1 + q2)                                             # |q3| = √34 = 5.83
    x = np.indices((n, n, n)).reshape(3, -1).T
    delta = sum(amp * np.cos(2 * np.pi * x @ q / n) for q in (q1, q2, q3)).reshape(n, n, n)
    k1, k2, theta = 2 * kf, np.sqrt(18) * kf, np.pi / 4
    k3 = third_side(k1, k2, theta)
    assert np.isclose(k3, np.sqrt(34) * kf)
    b = bispectrum(delta, box, k1, k2, [theta], chunk_planes=4)
    # shells |n| ∈ [1, 3), [3.24, 5.24), [4.83, 6.83) each hold exactly one wave's ±q_i;
    # δ_k = amp·N³/2 at ±q_i, so Σ over closed triangles of δδδ = 2 (amp N³/2)³ and B = amp³ L⁶ / (4 T)
    T = count_triangles(n, box, k1, k2, k3)
    assert b.triangles[0] == T
    np.testing.assert_allclose(b.B[0], amp**3 * box**6 / (4 * T), rtol=1e-10)


@pytest.mark.parametrize("mas", ["none", "cic"])
def test_matches_oracle(mas):
    n, box = 20, 150.0
    g = np.random.default_rng(1).standard_normal((n, n, n))
    delta = np.exp(0.6 * g) - np.exp(0.18)
    thetas = np.linspace(0.1, 3.0, 4)
    b = bispectrum(delta, box, 0.2, 0.3, thetas, mas=mas, chunk_planes=6)
    B, Q, T = oracle_bk(delta, box, 0.2, 0.3, thetas, p={"none": 0, "cic": 2}[mas])
    np.testing.assert_allclose(b.B, B, rtol=1e-9)
    np.testing.assert_allclose(b.Q, Q, rtol=1e-9)
    np.testing.assert_array_equal(b.triangles, T)


def test_independent_of_chunking_and_scheduler():
    distributed = pytest.importorskip("distributed")
    n, box = 16, 120.0
    delta = np.random.default_rng(3).standard_normal((n, n, n)) ** 2 - 1
    ref = bispectrum(delta, box, 0.2, 0.35, [0.5, 2.0], chunk_planes=n, scheduler="sync")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        runs = [bispectrum(da.from_array(delta, chunks=(3, n, n)), box, 0.2, 0.35, [0.5, 2.0], scheduler=s)
                for s in ("threads", "sync", client)]
    for got in runs:
        np.testing.assert_allclose(got.B, ref.B, rtol=1e-11)
        np.testing.assert_allclose(got.Q, ref.Q, rtol=1e-11)


def test_empty_shell_is_an_error():
    n = 8
    delta = np.random.default_rng(0).standard_normal((n, n, n))
    with pytest.raises(HalopaintError, match="undefined"):
        bispectrum(delta, 10.0, 50.0, 60.0, [0.5])     # far beyond the grid's modes
