#!/usr/bin/env python
"""Per-bin count statistics of integer realizations against N-body truth (issue 17's count figures).

    python jobs/bench/sample_counts.py --truth runs/data/sim-9001.h5 [--model default] [--realizations 8]

Paints the truth box's /density whole with the bundle (as `halopaint paint` does), then per mass bin prints
the count variance ratio Var(realization)/Var(N-body) and the P(n ≥ 2) ratio for: the painted expected
values themselves, a Poisson draw around them (`halopaint sample --poisson`), and the bundle's count model
(`halopaint sample`), as mean ± standard deviation over --realizations seeds (0, 1, …). Use a held-out box.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from halopaint.calibrate import file_bins_for  # noqa: E402
from halopaint.fields import FieldFile  # noqa: E402
from halopaint.model import ModelBundle, resolve_model_path  # noqa: E402
from halopaint.paint import paint_whole_box  # noqa: E402
from halopaint.sample import poisson_count_model, sample_counts  # noqa: E402


def ratios(field: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    return float(field.var() / truth.var()), float((field >= 2).mean() / (truth >= 2).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truth", required=True, help="N-body box (/density, /halos), never used in training")
    ap.add_argument("--model", default="default", help="bundle, or 'default': the shipped model of the truth's z")
    ap.add_argument("--realizations", type=int, default=8)
    args = ap.parse_args(argv)
    with FieldFile(args.truth) as f:
        bundle = ModelBundle.load(resolve_model_path(args.model, f.info.redshift))
    if bundle.metadata.count_model is None:
        print("the bundle has no count model", file=sys.stderr)
        return 2
    with FieldFile(args.truth, require=("density", "halos")) as f:
        truth = f.read_halos(file_bins_for(bundle, f.info.mass_bin_edges, args.truth))
        painted = paint_whole_box(bundle, f.read_density())
    laws = {"Poisson": poisson_count_model(bundle.n_bins), "count model": bundle.metadata.count_model}
    draws = {name: [sample_counts(painted, s, law) for s in range(args.realizations)] for name, law in laws.items()}
    print(f"{args.truth}, {args.model}, {args.realizations} realizations (seeds 0..{args.realizations - 1})")
    print("| bin | N-body var | N-body P(n≥2) | painted: var ratio, P(≥2) ratio | Poisson draw | count model |")
    print("|---|---|---|---|---|---|")
    for b in range(bundle.n_bins):
        t = truth[b]
        cells = [f"{t.var():.4g}", f"{(t >= 2).mean():.3g}"]
        v, p = ratios(painted[b], t)
        cells.append(f"{v:.3f}, {p:.3f}")
        for name in laws:
            r = np.array([ratios(d[b], t) for d in draws[name]])
            m, s = r.mean(axis=0), r.std(axis=0)
            cells.append(f"{m[0]:.3f} ± {s[0]:.3f}, {m[1]:.3f} ± {s[1]:.3f}")
        print(f"| {b} | " + " | ".join(cells) + " |")
    if bundle.metadata.count_model.mass_slope is not None:
        mass_table(args.truth, bundle)
    return 0


def mass_table(truth: str, bundle: ModelBundle) -> None:
    """Catalogue mass law per bin: the fitted β against the truth box's own MLE β, the mean mass of the law
    against the truth's FoF halos, and (if colossus is installed) Watson et al. 2013's log-slope."""
    from halopaint.sample import fit_mass_slope, sample_masses
    with FieldFile(truth) as f:
        if "catalog" not in f.h5:
            return
        mass, cosmo, z = np.asarray(f.h5["catalog"]["mass"], np.float64), f.info.cosmology, f.info.redshift
    edges, beta = bundle.metadata.mass_bin_edges, bundle.metadata.count_model.mass_slope
    watson = _watson_slopes(edges, cosmo, z)
    print("\n| bin | fitted β (training) | β of this box's FoF halos | Watson13 log-slope | mean M law / FoF |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for b in range(len(beta)):
        lo, hi = edges[b], edges[b + 1]
        sel = mass[(mass >= lo) & (mass < hi)]
        law = sample_masses(200_000, lo, hi, beta[b], rng).mean()
        w = "n/a" if watson is None else f"{watson[b]:.3f}"
        print(f"| {b} | {beta[b]:.3f} | {fit_mass_slope(sel, lo, hi):.3f} ({sel.size} halos) | {w} | "
              f"{law / sel.mean():.4f} |")


def _watson_slopes(edges, cosmo, z):
    """Mean −dln(dn/dlnM)/dlnM over each bin from colossus's Watson13 FoF fit (None without colossus)."""
    try:
        from colossus.cosmology import cosmology
        from colossus.lss import mass_function
    except ImportError:
        return None
    cosmology.setCosmology("halopaint", flat=True, H0=100 * cosmo.h, Om0=cosmo.Omega_m, Ob0=cosmo.Omega_b,
                           sigma8=cosmo.sigma8, ns=cosmo.n_s)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = np.geomspace(lo, hi, 33)
        dn = mass_function.massFunction(m, z, mdef="fof", model="watson13", q_out="dndlnM")
        out.append(float(-np.polyfit(np.log(m), np.log(dn), 1)[0]))
    return out


if __name__ == "__main__":
    sys.exit(main())
