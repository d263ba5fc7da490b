#!/usr/bin/env python
"""Quality of a model bundle on a held-out simulation (simple numpy estimator, one box).

Paints the whole held-out box (periodic ghosts, expected counts per voxel), then per mass bin and for
the sum over bins compares with the true halo counts:
  T(k)    = sqrt(P_pred / (P_true − P_shot)),   P_shot = V / N_halos (the painted field is an expected-count
            field without shot noise, so the truth's Poisson shot noise is removed before the ratio);
  r_c(k)  = P_pred×true / sqrt(P_pred · P_true) (raw, truth with its shot noise; the baseline's r_c is
            computed the same way, so both carry the same shot-noise ceiling);
  S(k)    = P(δ_true − δ_pred): stochasticity, against the linear-bias 2LPT baseline δ_base = b·δ_2LPT,
            b = Σ P_hm / Σ P_mm over k ≤ 0.1 h/Mpc.
δ = n/n̄ − 1 per field. Bins of width k_F on |n|, DC dropped, mode-averaged k, all modes of the full FFT.

    python jobs/model_quality.py --model engine/data/default_model.pt --data runs/data/val.h5 [--json out]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.fields import FieldFile  # noqa: E402
from engine.model import ModelBundle  # noqa: E402


def paint_box(bundle: ModelBundle, density: np.ndarray) -> np.ndarray:
    """(n_bins, N, N, N) expected counts for a periodic density box (N³)."""
    g = bundle.ghost_width
    x = bundle.metadata.input_normalisation.apply(np.pad(density, g, mode="wrap")).astype(np.float32)
    xt = torch.from_numpy(x)[None, None]
    out = []
    with torch.no_grad():
        for b in range(bundle.n_bins):
            out.append(bundle.generator(b)(xt)[0, 0].numpy())
    return np.stack(out)


def spectra(fields: dict[str, np.ndarray], pairs, box: float):
    """Auto/cross spectra [(Mpc/h)³] in linear k bins: returns k [h/Mpc], {pair: P(k)}."""
    n = next(iter(fields.values())).shape[0]
    ffts = {k: np.fft.fftn(v) for k, v in fields.items()}
    freq = np.fft.fftfreq(n, 1.0 / n)
    nx, ny, nz = np.meshgrid(freq, freq, freq, indexing="ij")
    nmag = np.sqrt(nx**2 + ny**2 + nz**2)
    ibin = np.floor(nmag).astype(int).ravel()
    kf = 2 * np.pi / box
    nb = n // 2
    sel = (ibin >= 1) & (ibin < nb)
    counts = np.bincount(ibin[sel], minlength=nb)
    k = np.bincount(ibin[sel], weights=nmag.ravel()[sel], minlength=nb) * kf
    norm = box**3 / n**6
    out = {}
    for a, b in pairs:
        p = (ffts[a] * np.conj(ffts[b])).real.ravel() * norm
        out[(a, b)] = np.bincount(ibin[sel], weights=p[sel], minlength=nb)[1:] / counts[1:]
    return k[1:] / counts[1:], out


def delta(f: np.ndarray) -> np.ndarray:
    return f / f.mean() - 1.0


def quality(pred: np.ndarray, true: np.ndarray, rho: np.ndarray, box: float, kmax_bias: float = 0.1) -> dict:
    pred, true, rho = (np.asarray(a, dtype=np.float64) for a in (pred, true, rho))
    fields = {"p": delta(pred), "t": delta(true), "m": rho / rho.mean() - 1.0}
    pairs = [("p", "p"), ("t", "t"), ("m", "m"), ("p", "t"), ("t", "m")]
    k, P = spectra(fields, pairs, box)
    shot = box**3 / true.sum()
    low = k <= kmax_bias
    bias = P[("t", "m")][low].sum() / P[("m", "m")][low].sum()
    fields2 = {"ep": fields["t"] - fields["p"], "eb": fields["t"] - bias * fields["m"]}
    _, E = spectra(fields2, [("ep", "ep"), ("eb", "eb")], box)
    T = np.sqrt(P[("p", "p")] / np.maximum(P[("t", "t")] - shot, 1e-30))
    rc = P[("p", "t")] / np.sqrt(P[("p", "p")] * P[("t", "t")])
    rc_base = P[("t", "m")] / np.sqrt(P[("m", "m")] * P[("t", "t")])
    m02 = k <= 0.2
    m01 = k < 0.1
    i01 = int(np.argmin(abs(k - 0.1)))
    return {
        "n_halos": float(true.sum()), "n_painted": float(pred.sum()), "shot_noise": float(shot),
        "baseline_bias": float(bias),
        "k": k.tolist(), "T": T.tolist(), "r_c": rc.tolist(), "r_c_baseline": rc_base.tolist(),
        "stoch_model": E[("ep", "ep")].tolist(), "stoch_baseline": E[("eb", "eb")].tolist(),
        "max_abs_T_minus_1_k_le_0.2": float(np.max(np.abs(T[m02] - 1))),
        "k_at_0.1": float(k[i01]), "r_c_at_0.1": float(rc[i01]), "r_c_baseline_at_0.1": float(rc_base[i01]),
        "stoch_ratio_k_lt_0.1": (E[("ep", "ep")][m01] / E[("eb", "eb")][m01]).tolist(),
        "stoch_below_baseline_k_lt_0.1": bool(np.all(E[("ep", "ep")][m01] < E[("eb", "eb")][m01])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", required=True, help="held-out field file with /density and /halos")
    ap.add_argument("--json", default=None, help="write the full curves here")
    args = ap.parse_args()
    bundle = ModelBundle.load(args.model)
    with FieldFile(args.data, require=("density", "halos")) as f:
        rho, halos, box = f.read_density(), f.read_halos(), f.info.box_size
        edges = f.info.mass_bin_edges
    if not np.allclose(edges, bundle.metadata.mass_bin_edges, rtol=1e-6):
        sys.exit(f"mass bins of {args.data} differ from the model's")
    torch.set_num_threads(1)
    pred = paint_box(bundle, rho)
    results = {}
    for b in range(bundle.n_bins):
        results[f"bin{b}"] = quality(pred[b], halos[b], rho, box)
    results["sum"] = quality(pred.sum(0), halos.sum(0), rho, box)
    for name, r in results.items():
        print(f"{name:5s} halos {r['n_halos']:8.0f} painted {r['n_painted']:9.1f}  "
              f"max|T-1|(k≤0.2) {r['max_abs_T_minus_1_k_le_0.2']:.3f}  "
              f"r_c({r['k_at_0.1']:.3f}) {r['r_c_at_0.1']:.3f} (baseline {r['r_c_baseline_at_0.1']:.3f})  "
              f"S/S_base(k<0.1) {np.round(r['stoch_ratio_k_lt_0.1'], 3).tolist()}  b_lin {r['baseline_bias']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
