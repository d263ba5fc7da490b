"""A float64 numpy oracle re-implementing Pylians' P(k), cross P(k) and Bk definitions independently.

It avoids every shortcut of analysis/: the full complex FFT over all N³ modes is used, and "independent
modes" are expressed by weights (a mode and its conjugate share weight 1, a self-conjugate mode has
weight 1), not by the half-space rule. The bispectrum oracle filters full complex spectra. The tests in
this file check the oracle itself against brute-force definitions on tiny grids.
"""

from __future__ import annotations

import itertools

import numpy as np


def signed_index(n: int) -> np.ndarray:
    """Integer wavenumbers with the Nyquist index taken as +N/2 (Pylians)."""
    i = np.arange(n)
    return np.where(i > n // 2, i - n, i)


def mode_grid(n: int):
    """(|n|², weight) over the full N³ FFT grid; weight = 1/2 unless the mode is its own conjugate."""
    s = signed_index(n)
    kx, ky, kz = np.meshgrid(s, s, s, indexing="ij")
    n2 = kx**2 + ky**2 + kz**2
    self_conj = ((2 * kx) % n == 0) & ((2 * ky) % n == 0) & ((2 * kz) % n == 0)
    return n2, np.where(self_conj, 1.0, 0.5), (kx, ky, kz)


def mas_comp(n: int, comps, p: int) -> np.ndarray:
    out = np.ones((n, n, n))
    for c in comps:
        x = np.pi * c / n
        out *= np.where(x == 0, 1.0, x / np.sin(np.where(x == 0, 1.0, x))) ** p
    return out


def oracle_pk(a: np.ndarray, box: float, b: np.ndarray | None = None, p: int = 0):
    """(k [h/Mpc], P [(Mpc/h)³], nmodes) per Pylians' rules, from full FFTs in float64."""
    n = a.shape[0]
    n2, w, comps = mode_grid(n)
    fa = np.fft.fftn(a.astype(np.float64))
    fb = fa if b is None else np.fft.fftn(b.astype(np.float64))
    c = mas_comp(n, comps, p)
    prod = (fa * c * np.conj(fb * c)).real
    idx = np.array([int(np.floor(np.sqrt(v) + 1e-12)) for v in range(int(n2.max()) + 1)])[n2]
    nb = idx.max() + 1
    cnt = np.bincount(idx.ravel(), weights=w.ravel(), minlength=nb)
    ks = np.bincount(idx.ravel(), weights=(w * np.sqrt(n2)).ravel(), minlength=nb)
    ps = np.bincount(idx.ravel(), weights=(w * prod).ravel(), minlength=nb)
    keep = np.arange(nb) > 0
    keep &= cnt > 0
    kf = 2 * np.pi / box
    return ks[keep] / cnt[keep] * kf, ps[keep] / cnt[keep] * box**3 / n**6, cnt[keep]


def oracle_bk(a: np.ndarray, box: float, k1: float, k2: float, thetas, p: int = 0):
    """(B, Q, triangles) per Pylians' Bk: shells |n| ∈ [k/k_F − 1, k/k_F + 1), full complex spectra."""
    n = a.shape[0]
    n2, _, comps = mode_grid(n)
    mag = np.sqrt(n2)
    fa = np.fft.fftn(a.astype(np.float64)) * mas_comp(n, comps, p)
    kf = 2 * np.pi / box

    def shell(k):
        m = (mag >= k / kf - 1) & (mag < k / kf + 1) & (n2 > 0)
        return np.fft.ifftn(np.where(m, fa, 0)).real, np.fft.ifftn(m.astype(float)).real

    d1, i1 = shell(k1)
    d2, i2 = shell(k2)
    P1 = (d1**2).sum() / (i1**2).sum() * box**3 / n**6
    P2 = (d2**2).sum() / (i2**2).sum() * box**3 / n**6
    B, Q, T = [], [], []
    for th in np.atleast_1d(thetas):
        k3 = np.sqrt((k2 * np.sin(th)) ** 2 + (k2 * np.cos(th) + k1) ** 2)
        d3, i3 = shell(k3)
        P3 = (d3**2).sum() / (i3**2).sum() * box**3 / n**6
        b = (d1 * d2 * d3).sum() / (i1 * i2 * i3).sum() * box**6 / n**9
        B.append(b)
        Q.append(b / (P1 * P2 + P1 * P3 + P2 * P3))
        T.append((i1 * i2 * i3).sum() * n**6)
    return np.array(B), np.array(Q), np.rint(np.array(T))


def count_triangles(n: int, box: float, k1: float, k2: float, k3: float) -> int:
    """Closed triangles q1 + q2 + q3 = 0 (mod N) with q_i in the shells, by explicit enumeration."""
    kf = 2 * np.pi / box
    s = signed_index(n)
    vecs = np.array(list(itertools.product(s, s, s)))
    mag = np.sqrt((vecs**2).sum(axis=1))

    def members(k):
        return vecs[(mag >= k / kf - 1) & (mag < k / kf + 1) & (mag > 0)]

    s3 = {tuple(v % n) for v in members(k3)}
    total = 0
    for q1 in members(k1):
        for q2 in members(k2):
            if tuple((-q1 - q2) % n) in s3:
                total += 1
    return total


# ---------------------------------------------------------------------------------------------
# the oracle against brute-force definitions
# ---------------------------------------------------------------------------------------------

def test_oracle_counts_independent_modes():
    for n in (4, 5, 6):
        _, _, cnt = oracle_pk(np.zeros((n, n, n)), 1.0)
        own = 8 if n % 2 == 0 else 1
        assert cnt.sum() == (n**3 - own) // 2 + own - 1   # DC dropped


def test_oracle_power_matches_explicit_dft():
    n, box = 4, 10.0
    a = np.random.default_rng(0).standard_normal((n, n, n))
    k, P, cnt = oracle_pk(a, box)
    x = np.arange(n)
    X = np.stack(np.meshgrid(x, x, x, indexing="ij"), -1).reshape(-1, 3)
    sums, modes = {}, {}
    seen = set()
    s = signed_index(n)
    for q in itertools.product(s, s, s):
        key, conj = tuple(np.mod(q, n)), tuple(np.mod(-np.array(q), n))
        if key in seen or q == (0, 0, 0):
            continue
        seen.add(key)
        seen.add(conj)
        amp = np.sum(a.reshape(-1) * np.exp(-2j * np.pi * (X @ np.array(q)) / n))
        b = int(np.floor(np.sqrt(np.dot(q, q)) + 1e-12))
        sums[b] = sums.get(b, 0.0) + abs(amp) ** 2
        modes[b] = modes.get(b, 0) + 1
    bins = sorted(sums)
    np.testing.assert_array_equal(cnt, [modes[b] for b in bins])
    np.testing.assert_allclose(P, [sums[b] / modes[b] * box**3 / n**6 for b in bins], rtol=1e-12)
