"""Power spectra, cross spectra and the cross statistics T(k), r_c(k), s(k), in Pylians' conventions.

Conventions (docs/formats.md; Pylians `Pk_library.Pk` / `XPk`, checked against Pylians 0.12 in jobs/bench):
- δ_k = numpy's unnormalised forward FFT of the density contrast δ on the N³ grid;
  P(k) = V·⟨|δ_k|²⟩/N⁶, cross P_ab = V·⟨Re(δ_a δ_b*)⟩/N⁶, V = box_size³ [(Mpc/h)³].
- Modes: integer wave vector n = (n_x, n_y, n_z), n_i ∈ (−N/2, N/2], |k| = k_F|n|, k_F = 2π/box_size.
  Bin i holds the modes with i ≤ |n| < i+1 (index ⌊|n|⌋), i = 1 … ⌊√3·N/2⌋; bin 0 (only the DC mode) is dropped.
- Independent modes only: the half space n_z ≥ 0, and in the n_z = 0 and n_z = N/2 planes only
  n_x > 0, or n_x ∈ {0, N/2} with n_y ≥ 0 (each conjugate pair counted once, self-conjugate modes once).
- Reported k = mode-averaged |k| of the bin [h/Mpc]; `nmodes` = number of independent modes.
- Mass-assignment compensation (explicit, default none): δ_k ← δ_k · Π_d [x_d / sin x_d]^p, x_d = π n_d/N,
  p = 1 (NGP), 2 (CIC). Shot noise is never subtracted silently: `shot_noise` is reported separately.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np

from halopaint.analysis import fft as dfft
from halopaint.errors import HalopaintError

MAS_ORDER = {"none": 0, "ngp": 1, "cic": 2}


def mas_order(mas: str | None) -> int:
    """'none' / 'ngp' / 'cic' (case-insensitive; None = 'none') → compensation power p."""
    key = "none" if mas is None else str(mas).lower()
    if key not in MAS_ORDER:
        raise HalopaintError(f"unknown mass-assignment scheme {mas!r} (use none, ngp or cic)")
    return MAS_ORDER[key]


def mas_window_inverse(n: int, wavenumbers: np.ndarray, p: int) -> np.ndarray:
    """[x/sin x]^p with x = π·n_d/N along one axis (1 at n_d = 0), float64."""
    x = np.pi * wavenumbers.astype(np.float64) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(x == 0.0, 1.0, x / np.sin(np.where(x == 0.0, 1.0, x)))
    return c ** p


def n_bins_for(n: int) -> int:
    """Number of |n| bins including the DC bin: ⌊√3·(N//2)⌋ + 1."""
    return math.isqrt(3 * (n // 2) ** 2) + 1


@functools.lru_cache(maxsize=16)
def _norm_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Tables over the squared norm v = |n|² ∈ [0, 3(N//2)²] plus one dump entry (dependent modes):
    bin index ⌊√v⌋ (exact integer square root; the dump entry → bin n_bins) and √v (dump → 0)."""
    vmax = 3 * (n // 2) ** 2
    v = np.arange(vmax + 2, dtype=np.int64)
    root = np.sqrt(v.astype(np.float64))
    idx = root.astype(np.intp)
    idx += (idx + 1) * (idx + 1) <= v       # guard float rounding at perfect squares
    idx -= idx * idx > v
    idx[-1] = n_bins_for(n)
    root[-1] = 0.0
    return idx, root


def _block_norms(n: int, y0: int, y1: int) -> np.ndarray:
    """|n|² of the rfft block x: all, y: [y0, y1), z: 0..N//2, as intp (N, y1−y0, N//2+1).

    Dependent modes get the dump value 3(N//2)² + 1. Independent modes: the half space n_z ≥ 0; in the
    n_z = 0 and n_z = N/2 (N even) planes only n_x > 0 (n_x ≠ N/2), or n_x ∈ {0, N/2} with n_y ≥ 0.
    """
    full, half = dfft.wavenumbers(n)
    ky = full[y0:y1]
    yz = ky[:, None] ** 2 + half[None, :] ** 2
    n2 = (full * full)[:, None, None] + yz[None, :, :]
    nyq_x = (full == n // 2) if n % 2 == 0 else np.zeros(n, bool)
    edge_x = (full == 0) | nyq_x
    keep_plane = (((full > 0) & ~edge_x)[:, None]) | (edge_x[:, None] & (ky[None, :] >= 0))
    dump = 3 * (n // 2) ** 2 + 1
    for z in [0] + ([n // 2] if n % 2 == 0 else []):
        n2[:, :, z] = np.where(keep_plane, n2[:, :, z], dump)
    return n2


def _bin_block_numpy(blocks: list[np.ndarray], y0: int, n: int, pairs: tuple, comp: tuple) -> np.ndarray:
    """Binned sums for one y-pencil block of every field (numpy reference of `_bin_block`).

    Returns (2 + len(pairs) + len(blocks), n_bins + 1) float64: row 0 mode counts, row 1 Σ|n|, then
    Σ Re(a b*) per pair (with the MAS compensation of both fields), then per field its DC value Re(δ_0)
    in column 0 (only the block holding y = 0 contributes). Column n_bins is the dump bin of dependent
    modes. Sums are first accumulated per exact |n|² (np.bincount, float64), then folded into ⌊|n|⌋ bins.
    """
    y1 = y0 + blocks[0].shape[1]
    flat = _block_norms(n, y0, y1).ravel()
    to_bin, root = _norm_tables(n)
    nv = to_bin.size
    nb = n_bins_for(n) + 1
    out = np.zeros((2 + len(pairs) + len(blocks), nb), dtype=np.float64)
    if y0 == 0:
        for f, blk in enumerate(blocks):
            out[2 + len(pairs) + f, 0] = float(np.real(blk[0, 0, 0]))
    per_norm = np.bincount(flat, minlength=nv).astype(np.float64)
    out[0] = np.bincount(to_bin, weights=per_norm, minlength=nb)
    out[1] = np.bincount(to_bin, weights=per_norm * root, minlength=nb)
    weights = {}
    if any(comp):
        full, half = dfft.wavenumbers(n)
        for p in set(comp):
            if p:
                weights[p] = (mas_window_inverse(n, full, p)[:, None, None]
                              * mas_window_inverse(n, full[y0:y1], p)[None, :, None]
                              * mas_window_inverse(n, half, p)[None, None, :])
    for row, (i, j) in enumerate(pairs, start=2):
        a, b = blocks[i], blocks[j]
        # float64 products straight from the float32/float64 parts (bincount needs float64 weights)
        if i == j:
            prod = np.square(a.real, dtype=np.float64)
            prod += np.square(a.imag, dtype=np.float64)
        else:
            prod = np.multiply(a.real, b.real, dtype=np.float64)
            prod += np.multiply(a.imag, b.imag, dtype=np.float64)
        if comp[i] or comp[j]:
            w = 1.0
            if comp[i]:
                w = weights[comp[i]]
            if comp[j]:
                w = w * weights[comp[j]]
            prod = prod * w
        summed = np.bincount(flat, weights=prod.ravel(), minlength=nv)
        out[row] = np.bincount(to_bin, weights=summed, minlength=nb)
    return out


try:  # compiled single-pass binning (numba is a core dependency; the numpy path is the reference)
    import numba
except ImportError:  # pragma: no cover
    numba = None


# Pair slots of the compiled pass: products of up to three fields (a, b, c) read once per mode.
_PAIR_SLOTS = {(0, 0): 0, (1, 1): 1, (2, 2): 2, (0, 1): 3, (0, 2): 4, (1, 2): 5}

if numba is not None:
    @numba.njit(nogil=True, cache=True)
    def _accumulate(a, b, c, use, weighted, y0, n, to_bin, root, wx, wy, wz, sums, counts, ksum):
        """One pass over the rfft blocks (N, ny, N//2+1) of up to three fields a, b, c.

        For every slot s with use[s] (slots: aa, bb, cc, ab, ac, bc) accumulates Σ w_s·Re(x y*) per ⌊|n|⌋
        bin into sums[s], plus mode counts and Σ|n|. Independent modes only (Pylians' rule in the n_z = 0
        and n_z = N/2 planes); w_s = wx[s]·wy[s]·wz[s] is the separable MAS compensation of the pair.
        Each field is read once whatever the number of pairs. float64 accumulators; releases the GIL.
        """
        nx, ny, nz = a.shape
        half = n // 2
        even = n % 2 == 0
        for i in range(nx):
            kx = i if i <= half else i - n
            for j in range(ny):
                jj = y0 + j
                ky = jj if jj <= half else jj - n
                for kz in range(nz):
                    if kz == 0 or (even and kz == half):
                        if kx < 0:
                            continue
                        if (kx == 0 or (even and kx == half)) and ky < 0:
                            continue
                    v2 = kx * kx + ky * ky + kz * kz
                    bn = to_bin[v2]
                    counts[bn] += 1.0
                    ksum[bn] += root[v2]
                    ar, ai = np.float64(a[i, j, kz].real), np.float64(a[i, j, kz].imag)
                    br, bi = np.float64(b[i, j, kz].real), np.float64(b[i, j, kz].imag)
                    cr, ci = np.float64(c[i, j, kz].real), np.float64(c[i, j, kz].imag)
                    # the six slots spelled out: a loop over a pair table measured 2× slower here
                    if use[0]:
                        sums[0, bn] += (ar * ar + ai * ai) * (wx[0, i] * wy[0, jj] * wz[0, kz] if weighted else 1.0)
                    if use[1]:
                        sums[1, bn] += (br * br + bi * bi) * (wx[1, i] * wy[1, jj] * wz[1, kz] if weighted else 1.0)
                    if use[2]:
                        sums[2, bn] += (cr * cr + ci * ci) * (wx[2, i] * wy[2, jj] * wz[2, kz] if weighted else 1.0)
                    if use[3]:
                        sums[3, bn] += (ar * br + ai * bi) * (wx[3, i] * wy[3, jj] * wz[3, kz] if weighted else 1.0)
                    if use[4]:
                        sums[4, bn] += (ar * cr + ai * ci) * (wx[4, i] * wy[4, jj] * wz[4, kz] if weighted else 1.0)
                    if use[5]:
                        sums[5, bn] += (br * cr + bi * ci) * (wx[5, i] * wy[5, jj] * wz[5, kz] if weighted else 1.0)


def _bin_block(blocks: list[np.ndarray], y0: int, n: int, pairs: tuple, comp: tuple) -> np.ndarray:
    """Binned sums for one y-pencil block of every field.

    Returns (2 + len(pairs) + len(blocks), n_bins + 1) float64: row 0 mode counts, row 1 Σ|n|, then
    Σ Re(a b*) per pair (with the MAS compensation of both fields), then per field its DC value Re(δ_0)
    in column 0 (only the block holding y = 0 contributes). Column n_bins is the dump bin of dependent
    modes (unused by the compiled path). One compiled pass over all pairs when numba is present, else numpy.
    """
    if numba is None or not pairs:
        return _bin_block_numpy(blocks, y0, n, pairs, comp)
    to_bin, root = _norm_tables(n)
    nb = n_bins_for(n) + 1
    out = np.zeros((2 + len(pairs) + len(blocks), nb), dtype=np.float64)
    full, half = dfft.wavenumbers(n)
    ones_full, ones_half = np.ones(n), np.ones(half.size)
    axis_w = {0: (ones_full, ones_half)}
    for p in set(comp):
        if p:
            axis_w[p] = (mas_window_inverse(n, full, p), mas_window_inverse(n, half, p))
    if len(blocks) > 3:
        return _bin_block_numpy(blocks, y0, n, pairs, comp)
    slots = [_PAIR_SLOTS[(min(i, j), max(i, j))] for i, j in pairs]
    use = np.zeros(6, np.bool_)
    use[slots] = True
    wf, wh = np.ones((6, n)), np.ones((6, half.size))
    for (i, j), slot in zip(pairs, slots):
        wf[slot] = axis_w[comp[i]][0] * axis_w[comp[j]][0]
        wh[slot] = axis_w[comp[i]][1] * axis_w[comp[j]][1]
    # one numba signature: same dtype and C layout for the three arguments (missing fields → the first)
    dtype = np.result_type(*blocks)
    fields = [np.ascontiguousarray(blk, dtype=dtype) for blk in blocks]
    fields += [fields[0]] * (3 - len(fields))
    sums = np.zeros((6, nb))
    _accumulate(*fields, use, any(comp), y0, n, to_bin, root, wf, wf, wh, sums, out[0], out[1])
    out[2:2 + len(pairs)] = sums[slots]
    if y0 == 0:
        for f, blk in enumerate(blocks):
            out[2 + len(pairs) + f, 0] = float(np.real(blk[0, 0, 0]))
    return out


def binned_sums(fields_k: list[da.Array], pairs: list[tuple[int, int]], mas: list[int]):
    """Delayed reduction over y-pencil blocks of several rfft fields (same grid, same chunking).

    Returns a Dask delayed of the summed `_bin_block` arrays (counts, Σ|n|, pair sums, DC values).
    """
    n = fields_k[0].shape[0]
    chunks = fields_k[0].chunks
    for f in fields_k[1:]:
        if f.shape != fields_k[0].shape:
            raise HalopaintError(f"fields have different grids: {fields_k[0].shape} vs {f.shape}")
        if f.chunks != chunks:
            raise HalopaintError("internal: k-space fields must share their chunking")
    if len(chunks[0]) != 1 or len(chunks[2]) != 1:
        raise HalopaintError("internal: k-space fields must be whole along x and z")
    delayed_blocks = [f.to_delayed().ravel() for f in fields_k]
    parts = []
    y0 = 0
    bin_block = dask.delayed(_bin_block, pure=True)
    for b, ny in enumerate(chunks[1]):
        parts.append(bin_block([blocks[b] for blocks in delayed_blocks], y0, n, tuple(pairs), tuple(mas)))
        y0 += ny
    while len(parts) > 1:  # pairwise tree sum
        parts = [dask.delayed(np.add)(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return parts[0]


@dataclass
class PowerSpectrum:
    """Binned (cross) power spectrum.

    k [h/Mpc] (mode-averaged), power [(Mpc/h)³], nmodes (independent modes per bin), all (n_bins,).
    `shot_noise` [(Mpc/h)³] is reported, never subtracted; `attrs` say how it was measured.
    """

    k: np.ndarray
    power: np.ndarray
    nmodes: np.ndarray
    box_size: float
    grid: int
    mas: str = "none"
    shot_noise: float | None = None
    attrs: dict = field(default_factory=dict)


def _finalise(sums: np.ndarray, n: int, box_size: float):
    """Drop the DC bin and the dump bin; keep bins with modes. Returns mask-selected k, nmodes, norm rows."""
    counts = sums[0, 1:-1]
    keep = counts > 0
    kf = 2.0 * np.pi / box_size
    k = np.where(keep, sums[1, 1:-1] / np.where(keep, counts, 1.0), 0.0) * kf
    norm = box_size**3 / float(n) ** 6
    powers = [np.where(keep, row[1:-1] / np.where(keep, counts, 1.0), 0.0) * norm for row in sums[2:]]
    return k[keep], counts[keep].astype(np.int64), [p[keep] for p in powers]


def spectra(fields_k: list[da.Array], box_size: float, pairs: list[tuple[int, int]], *,
            mas: list[str | None] | None = None, contrast_from_dc: bool = False,
            scheduler=None, progress: bool = False):
    """All requested (cross) spectra of k-space fields in one pass over the data.

    fields_k: rfft arrays from `halopaint.analysis.fft.rfftn`. pairs: (i, j) index pairs (i == j: auto).
    contrast_from_dc: the fields are raw (counts, ρ/ρ̄); δ = f/f̄ − 1 with f̄ = DC/N³ from the same FFT
    (an empty field, f̄ = 0, is an error). Returns (k, nmodes, [P per pair], means or None).
    """
    n = fields_k[0].shape[0]
    mas = [None] * len(fields_k) if mas is None else list(mas)
    orders = [mas_order(m) for m in mas]
    sums = np.asarray(dfft.compute(binned_sums(fields_k, pairs, orders), scheduler=scheduler,
                                   progress=progress)[0])
    dc = sums[2 + len(pairs):, 0]
    k, nmodes, powers = _finalise(sums[:2 + len(pairs)], n, box_size)
    means = None
    if contrast_from_dc:
        means = [float(d) / float(n) ** 3 for d in dc]
        for i, m in enumerate(means):
            if not np.isfinite(m) or m <= 0.0:
                raise HalopaintError(f"field {i} is empty or has non-positive mean ({m:g}): "
                                     "its density contrast δ = n/n̄ − 1 is undefined")
        powers = [p / (means[i] * means[j]) for p, (i, j) in zip(powers, pairs)]
    return k, nmodes, powers, means


def _as_field(x, chunk_planes: int | None) -> da.Array:
    arr = x if isinstance(x, da.Array) else da.from_array(np.asarray(x), chunks=(chunk_planes or 32, -1, -1))
    if arr.ndim != 3 or len(set(arr.shape)) != 1:
        raise HalopaintError(f"a field must be a cubic (N, N, N) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    return arr


def power_spectrum(delta, box_size: float, other=None, mas: str | None = None, *,
                   chunk_planes: int | None = None, scheduler=None, shot_noise: float | None = None
                   ) -> PowerSpectrum:
    """P(k) of a density contrast δ (numpy or Dask (N, N, N) array), or the cross spectrum with `other`.

    box_size [Mpc/h]. mas: 'none' (default) / 'ngp' / 'cic' compensation applied to both fields.
    scheduler: any Dask scheduler (None = current default: threads, or a connected distributed Client).
    Returns a `PowerSpectrum` (k [h/Mpc], power [(Mpc/h)³], nmodes).
    """
    if not box_size or box_size <= 0:
        raise HalopaintError(f"box_size must be positive, got {box_size}")
    a = _as_field(delta, chunk_planes)
    fields = [a]
    pairs = [(0, 0)]
    if other is not None:
        b = _as_field(other, chunk_planes)
        if b.shape != a.shape:
            raise HalopaintError(f"cross spectrum of fields with different grids {a.shape} and {b.shape}")
        fields.append(b.rechunk(a.chunks))
        pairs = [(0, 1)]
    planes = chunk_planes or max(a.chunks[0])
    method = dfft.rechunk_method(scheduler)
    fields_k = [dfft.rfftn(f, chunk_planes=planes, method=method) for f in fields]
    k, nmodes, powers, _ = spectra(fields_k, box_size, pairs, mas=[mas] * len(fields), scheduler=scheduler)
    return PowerSpectrum(k=k, power=powers[0], nmodes=nmodes, box_size=float(box_size), grid=a.shape[0],
                         mas=str(mas or "none").lower(), shot_noise=shot_noise,
                         attrs={"kind": "cross" if other is not None else "auto",
                                "convention": "Pylians: P = V|FFT|^2/N^6, bins floor(|n|), DC dropped"})


@dataclass
class CrossStatistics:
    """Prediction p against reference h: T = sqrt(P_pp/P_hh), r_c = P_hp/sqrt(P_hh P_pp), s = P_hh(1 − r_c²).

    All arrays (n_bins,): k [h/Mpc], nmodes, P_pp, P_hh, P_hp [(Mpc/h)³], T, r_c (dimensionless),
    s [(Mpc/h)³]. Poisson levels V/N_halos [(Mpc/h)³] where halo numbers are known (else None).
    """

    k: np.ndarray
    nmodes: np.ndarray
    P_pp: np.ndarray
    P_hh: np.ndarray
    P_hp: np.ndarray
    T: np.ndarray
    r_c: np.ndarray
    s: np.ndarray
    poisson_pred: float | None = None
    poisson_ref: float | None = None
    attrs: dict = field(default_factory=dict)


def cross_from_spectra(k, nmodes, P_pp, P_hh, P_hp, *, poisson_pred=None, poisson_ref=None,
                       what: str = "prediction vs reference") -> CrossStatistics:
    """T, r_c and s from the three spectra; a bin with P_hh ≤ 0 or P_pp ≤ 0 makes r_c undefined → error."""
    P_pp, P_hh, P_hp = (np.asarray(x, dtype=np.float64) for x in (P_pp, P_hh, P_hp))
    bad = ~((P_pp > 0) & (P_hh > 0) & np.isfinite(P_pp) & np.isfinite(P_hh) & np.isfinite(P_hp))
    if bad.any():
        kb = np.asarray(k)[bad][0]
        raise HalopaintError(f"{what}: a power spectrum is zero or not finite at k = {kb:.4g} h/Mpc "
                             f"({int(bad.sum())} bins); T and r_c are undefined (empty or constant field?)")
    T = np.sqrt(P_pp / P_hh)
    r_c = P_hp / np.sqrt(P_hh * P_pp)
    s = P_hh * (1.0 - r_c**2)
    return CrossStatistics(k=np.asarray(k), nmodes=np.asarray(nmodes), P_pp=P_pp, P_hh=P_hh, P_hp=P_hp,
                           T=T, r_c=r_c, s=s, poisson_pred=poisson_pred, poisson_ref=poisson_ref)


def cross_statistics(pred, ref, box_size: float, mas: str | None = None, *, chunk_planes: int | None = None,
                     scheduler=None, n_halos_pred: float | None = None, n_halos_ref: float | None = None,
                     k_max: float | None = None) -> CrossStatistics:
    """T(k), r_c(k), s(k) of a predicted contrast `pred` against a reference contrast `ref` (N³ arrays).

    Poisson levels V/N_halos are filled in when the halo numbers are given. k_max [h/Mpc]: keep only the
    k-bins up to it (a sparse integer field's few corner modes can sum to exactly 0, leaving r_c undefined
    in a bin nobody asked for).
    """
    a, b = _as_field(pred, chunk_planes), _as_field(ref, chunk_planes)
    if a.shape != b.shape:
        raise HalopaintError(f"prediction grid {a.shape} differs from reference grid {b.shape}")
    planes = chunk_planes or max(a.chunks[0])
    method = dfft.rechunk_method(scheduler)
    fk = [dfft.rfftn(a, chunk_planes=planes, method=method),
          dfft.rfftn(b.rechunk(a.chunks), chunk_planes=planes, method=method)]
    k, nm, (P_pp, P_hh, P_hp), _ = spectra(fk, box_size, [(0, 0), (1, 1), (0, 1)], mas=[mas, mas],
                                           scheduler=scheduler)
    vol = float(box_size) ** 3
    if k_max is not None:
        keep = np.asarray(k) <= k_max
        k, nm, P_pp, P_hh, P_hp = (np.asarray(x)[keep] for x in (k, nm, P_pp, P_hh, P_hp))
    return cross_from_spectra(k, nm, P_pp, P_hh, P_hp,
                              poisson_pred=None if not n_halos_pred else vol / n_halos_pred,
                              poisson_ref=None if not n_halos_ref else vol / n_halos_ref)


def poisson_level(box_size: float, n_halos: float) -> float:
    """Poisson shot-noise power V/N_halos [(Mpc/h)³] of a count field holding n_halos objects."""
    if n_halos <= 0:
        raise HalopaintError("Poisson level undefined: the field holds no halos")
    return float(box_size) ** 3 / float(n_halos)
