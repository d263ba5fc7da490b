"""P(k), cross P(k) and cross statistics: exact tests against the float64 oracle, analytic fields, statistics."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

from halopaint.analysis import cross_statistics, fit_linear_bias, lpt_baseline, power_spectrum
from halopaint.analysis.spectra import _bin_block, _finalise
from halopaint.errors import HalopaintError
from test_analysis_oracle import oracle_pk


@pytest.mark.parametrize("n", [8, 15, 16])
def test_mode_counts_sum_to_independent_modes(n):
    ps = power_spectrum(np.random.default_rng(1).standard_normal((n, n, n)), 50.0, chunk_planes=5)
    own = 8 if n % 2 == 0 else 1
    assert ps.nmodes.sum() == (n**3 - own) // 2 + own - 1
    assert np.all(ps.nmodes > 0)


@pytest.mark.parametrize("n,mas", [(16, "none"), (17, "cic"), (16, "ngp"), (12, "cic")])
def test_auto_and_cross_match_oracle(n, mas):
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n, n, n))
    b = a + 0.5 * rng.standard_normal((n, n, n))
    p = {"none": 0, "ngp": 1, "cic": 2}[mas]
    ps = power_spectrum(a, 123.0, mas=mas, chunk_planes=3)
    k, P, cnt = oracle_pk(a, 123.0, p=p)
    np.testing.assert_array_equal(ps.nmodes, cnt)
    np.testing.assert_allclose(ps.k, k, rtol=1e-12)
    np.testing.assert_allclose(ps.power, P, rtol=1e-10)
    px = power_spectrum(a, 123.0, other=b, mas=mas, chunk_planes=4)
    _, Px, _ = oracle_pk(a, 123.0, b, p=p)
    np.testing.assert_allclose(px.power, Px, rtol=1e-10)


def test_single_plane_wave_lands_in_its_bin():
    n, box, amp = 16, 200.0, 0.3
    q = np.array([3, 1, 2])                           # |n| = √14 = 3.74 → bin 3
    x = np.indices((n, n, n)).reshape(3, -1).T
    delta = (amp * np.cos(2 * np.pi * x @ q / n)).reshape(n, n, n)
    ps = power_spectrum(delta, box, chunk_planes=4)
    kf = 2 * np.pi / box
    i = int(np.argmin(np.abs(ps.k / kf - 3.5)))
    assert 3 <= ps.k[i] / kf < 4
    # δ_k = amp N³/2 at ±q; one independent mode of the bin carries it
    np.testing.assert_allclose(ps.power[i], box**3 * amp**2 / 4 / ps.nmodes[i], rtol=1e-12)
    others = np.delete(ps.power, i)
    assert np.all(np.abs(others) < 1e-20 * ps.power[i] + 1e-25)


def test_parseval_odd_grid():
    n, box = 21, 77.0                                # odd: the DC mode is the only self-conjugate mode
    a = np.random.default_rng(3).standard_normal((n, n, n))
    a -= a.mean()
    ps = power_spectrum(a, box, chunk_planes=6)
    total = np.sum(ps.power * ps.nmodes) * n**6 / box**3   # Σ over independent modes of |δ_k|²
    np.testing.assert_allclose(2 * total, n**3 * np.sum(a**2), rtol=1e-11)


@pytest.fixture
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


def test_independent_of_chunking_and_scheduler(client):
    n = 20
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((n, n, n)), rng.standard_normal((n, n, n))
    ref = power_spectrum(a, 100.0, other=b, chunk_planes=n, scheduler="sync")
    for planes in (1, 3, 7):
        for sched in ("threads", "sync", client):
            got = power_spectrum(da.from_array(a, chunks=(planes, n, n)), 100.0,
                                 other=da.from_array(b, chunks=(planes + 1, n, n)), scheduler=sched)
            np.testing.assert_array_equal(got.nmodes, ref.nmodes)
            np.testing.assert_allclose(got.power, ref.power, rtol=1e-12, atol=1e-14 * np.abs(ref.power).max())


def _gaussian_field(n, box, pk, seed):
    """δ with ⟨|δ_k|²⟩ = N⁶ P(k)/V: white noise coloured in Fourier space."""
    import scipy.fft
    w = np.random.default_rng(seed).standard_normal((n, n, n))
    kf = 2 * np.pi / box
    s = np.fft.fftfreq(n, 1.0 / n)
    kx, ky, kz = np.meshgrid(s, s, np.arange(n // 2 + 1), indexing="ij")
    k = kf * np.sqrt(kx**2 + ky**2 + kz**2)
    amp = np.sqrt(np.where(k > 0, pk(np.where(k > 0, k, 1.0)), 0.0) * n**3 / box**3)
    return scipy.fft.irfftn(scipy.fft.rfftn(w) * amp, s=(n, n, n)), k


def _expected_bins(n, box, pk):
    """Exact bin means of P over each bin's modes (the binning itself is tested against the oracle)."""
    kf = 2 * np.pi / box
    s = np.fft.fftfreq(n, 1.0 / n)
    kx, ky, kz = np.meshgrid(s, s, np.arange(n // 2 + 1), indexing="ij")
    k = kf * np.sqrt(kx**2 + ky**2 + kz**2)
    amp = np.sqrt(np.where(k > 0, pk(np.where(k > 0, k, 1.0)), 0.0) * n**6 / box**3) + 0j
    sums = _bin_block([amp], 0, n, ((0, 0),), (0,))
    _, _, (P,) = _finalise(sums[:3], n, box)
    return P


def test_gaussian_field_power_recovered_pulls():
    n, box = 48, 300.0
    pk = lambda k: 2000.0 * (k / 0.1) ** -1.5          # noqa: E731  [(Mpc/h)³]
    pulls = []
    for seed in range(3):
        delta, _ = _gaussian_field(n, box, pk, seed)
        ps = power_spectrum(delta, box, chunk_planes=8)
        expect = _expected_bins(n, box, pk)
        sel = ps.nmodes >= 30
        pulls.append((ps.power[sel] - expect[sel]) / (expect[sel] / np.sqrt(ps.nmodes[sel])))
    z = np.concatenate(pulls)
    assert abs(z.mean()) < 3.0 / np.sqrt(z.size) * 1.5
    assert 0.8 < z.std() < 1.2


def test_transfer_correlation_stochasticity_recovered():
    n, box, bias = 48, 300.0, 1.8
    pk = lambda k: 3000.0 * (k / 0.1) ** -1.0          # noqa: E731
    delta_m, _ = _gaussian_field(n, box, pk, 11)
    sigma = 0.4
    noise = sigma * np.random.default_rng(12).standard_normal((n, n, n))
    p_noise = sigma**2 * box**3 / n**3                # white noise power [(Mpc/h)³]
    delta_h = bias * delta_m + noise
    st = cross_statistics(delta_m, delta_h, box, chunk_planes=8)
    sel = st.nmodes >= 100
    expect_r = bias * st.P_pp / np.sqrt(st.P_pp * (bias**2 * st.P_pp + p_noise))
    # stochasticity recovers the noise power; r_c and T follow from P_mm, b and P_noise
    s_pull = (st.s[sel] - p_noise) / (p_noise * np.sqrt(2.0 / st.nmodes[sel]))
    assert abs(s_pull.mean()) < 0.6 and s_pull.std() < 2.0
    np.testing.assert_allclose(st.r_c[sel], expect_r[sel], atol=4 * np.max(1 / np.sqrt(st.nmodes[sel])))
    np.testing.assert_allclose(st.T[sel], 1 / np.sqrt(bias**2 + p_noise / st.P_pp[sel]), rtol=0.15)
    # the linear-bias fit recovers b once the noise power is subtracted
    b, _, _ = fit_linear_bias(st.k, st.nmodes, st.P_hh, st.P_pp, kmax=0.25, shot_noise=p_noise)
    assert abs(b - bias) < 0.06
    base = lpt_baseline(st.k, st.nmodes, st.P_hh, st.P_pp, st.P_hp, kmax=0.25, shot_noise=p_noise)
    np.testing.assert_allclose(base.stats.r_c, st.r_c, rtol=1e-12)   # r_c of b·δ_m does not depend on b
    np.testing.assert_allclose(base.stats.T, base.bias * np.sqrt(st.P_pp / st.P_hh), rtol=1e-12)


def test_empty_field_rc_undefined_is_an_error():
    n = 8
    a = np.random.default_rng(0).standard_normal((n, n, n))
    with pytest.raises(HalopaintError, match="undefined"):
        cross_statistics(a, np.zeros((n, n, n)), 10.0)


def test_k_max_keeps_exactly_the_low_bins():
    """k_max drops the bins above it (where a sparse field's power can vanish) and leaves the others as the
    full estimate has them."""
    n, box = 16, 64.0
    rng = np.random.default_rng(3)
    pred, ref = rng.standard_normal((n, n, n)), rng.standard_normal((n, n, n))
    full, low = cross_statistics(pred, ref, box), cross_statistics(pred, ref, box, k_max=0.4)
    keep = full.k <= 0.4
    assert 3 <= low.k.size == keep.sum() < full.k.size
    for name in ("k", "nmodes", "P_pp", "P_hh", "P_hp", "T", "r_c", "s"):
        np.testing.assert_array_equal(getattr(low, name), getattr(full, name)[keep])


def test_bad_arguments():
    with pytest.raises(HalopaintError):
        power_spectrum(np.zeros((4, 4, 5)), 10.0)
    with pytest.raises(HalopaintError):
        power_spectrum(np.zeros((4, 4, 4)), 10.0, other=np.zeros((6, 6, 6)))
    with pytest.raises(HalopaintError, match="mass-assignment"):
        power_spectrum(np.zeros((4, 4, 4)), 10.0, mas="tsc")
    with pytest.raises(HalopaintError, match="box_size"):
        power_spectrum(np.zeros((4, 4, 4)), -1.0)


def test_dask_config_scheduler_is_respected():
    n = 8
    a = np.random.default_rng(0).standard_normal((n, n, n))
    with dask.config.set(scheduler="sync"):
        p1 = power_spectrum(a, 10.0).power
    np.testing.assert_allclose(p1, power_spectrum(a, 10.0).power, rtol=1e-13)


@pytest.mark.parametrize("n,y0,ny,dtype", [(16, 0, 16, np.complex128), (17, 5, 6, np.complex64),
                                           (24, 12, 7, np.complex64)])
def test_compiled_binning_equals_numpy_reference(n, y0, ny, dtype):
    from halopaint.analysis import spectra as sp
    if sp.numba is None:
        pytest.skip("numba not installed: only the numpy path exists")
    rng = np.random.default_rng(n + y0)
    m = n // 2 + 1
    blocks = [(rng.standard_normal((n, ny, m)) + 1j * rng.standard_normal((n, ny, m))).astype(dtype)
              for _ in range(3)]
    pairs = ((0, 0), (1, 1), (0, 1), (2, 0))
    for comp in ((0, 0, 0), (2, 2, 1), (1, 0, 2)):
        fast = sp._bin_block(blocks, y0, n, pairs, comp)
        ref = sp._bin_block_numpy(blocks, y0, n, pairs, comp)
        nb = ref.shape[1] - 1                          # the numpy path also fills a dump column
        np.testing.assert_array_equal(fast[0, :nb], ref[0, :nb])
        np.testing.assert_allclose(fast[:, :nb], ref[:, :nb], rtol=1e-12, atol=1e-12 * np.abs(ref).max())
