"""The paper's baseline: the "2LPT halo field" δ_b = b·δ_2LPT with the linear bias b fitted on large scales.

Fit (stated, configurable): b² = Σ_i N_i (P_hh(k_i) − P_shot) / Σ_i N_i P_mm(k_i) over the bins with
mode-averaged k_i ≤ kmax (default 0.1 h/Mpc), N_i the mode counts, P_shot = V/N_halos when shot-noise
subtraction is on (default) and 0 otherwise. Its cross statistics against the halo field h:
T_b = b·sqrt(P_mm/P_hh), r_c,b = P_hm / sqrt(P_hh P_mm) (independent of b), s_b = P_hh (1 − r_c,b²).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from halopaint.analysis.spectra import CrossStatistics, cross_from_spectra
from halopaint.errors import HalopaintError


@dataclass
class Baseline:
    """bias b, fit range kmax [h/Mpc], number of bins and modes used, and the baseline's CrossStatistics."""

    bias: float
    kmax: float
    fit_bins: int
    fit_modes: int
    shot_noise_subtracted: float
    stats: CrossStatistics


def fit_linear_bias(k, nmodes, P_hh, P_mm, kmax: float = 0.1, shot_noise: float = 0.0) -> tuple[float, int, int]:
    """b from the mode-weighted large-scale power ratio; returns (b, bins used, modes used)."""
    k, nmodes, P_hh, P_mm = (np.asarray(x, dtype=np.float64) for x in (k, nmodes, P_hh, P_mm))
    sel = k <= kmax
    if not sel.any():
        raise HalopaintError(f"bias fit: no k bin below kmax = {kmax:g} h/Mpc (lowest k = {k.min():.4g}); "
                             "raise --bias-kmax or use a larger box")
    num = np.sum(nmodes[sel] * (P_hh[sel] - shot_noise))
    den = np.sum(nmodes[sel] * P_mm[sel])
    if not (den > 0 and num > 0):
        raise HalopaintError(f"bias fit: non-positive large-scale power (halo−shot {num:g}, matter {den:g}) "
                             f"for k ≤ {kmax:g} h/Mpc; the 2LPT baseline is undefined")
    return float(np.sqrt(num / den)), int(sel.sum()), int(nmodes[sel].sum())


def lpt_baseline(k, nmodes, P_hh, P_mm, P_hm, *, kmax: float = 0.1, shot_noise: float = 0.0) -> Baseline:
    """The 2LPT halo-field baseline from the halo, matter and halo×matter spectra (same bins)."""
    b, nb, nm = fit_linear_bias(k, nmodes, P_hh, P_mm, kmax, shot_noise)
    P_mm = np.asarray(P_mm, dtype=np.float64)
    stats = cross_from_spectra(k, nmodes, b * b * P_mm, P_hh, b * np.asarray(P_hm, dtype=np.float64),
                               what="2LPT baseline vs reference")
    stats.attrs.update({"bias": b, "fit_kmax": kmax})
    return Baseline(bias=b, kmax=float(kmax), fit_bins=nb, fit_modes=nm, shot_noise_subtracted=float(shot_noise),
                    stats=stats)
