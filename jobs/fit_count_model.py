#!/usr/bin/env python
"""Fit a bundle's count model (the law `halopaint sample` draws integer halos from) on N-body training boxes.

    python jobs/fit_count_model.py BUNDLE.pt --boxes a.h5 b.h5 … --out NEW.pt [--mu-ranges auto|K]
        [--mean-map none|isotonic|where-needed] [--mean-cell C] [--mean-cap none|where-needed]
        [--velocity-law infall|field]

Paints every box whole (periodic) with the bundle and fits, per mass bin, the law of the true counts n given
the painted mean μ: Var[n | μ] = m + α(μ)·m² (halopaint.sample.fit_count_law: 1 + α = Σ n(n−1) / Σ m²,
piecewise constant over K ranges of μ) about m = μ (`--mean-map none`, the default) or, with
`--mean-map isotonic`, about m(μ) = E[n | μ], the isotonic regression of n on μ over 32 ranges of μ
(halopaint.sample.fit_mean_map; the generator's sharp field over-predicts its densest voxels and
under-predicts its faint ones), in every bin; `--mean-map where-needed` fits it only in the bins where the law
about μ cannot be as narrow as the truth — its expected Σ n(n−1) on the boxes exceeds the truth's by more than
5 % (the narrowest integer law of mean μ still over-predicts pairs: halopaint.sample.expected_pair_moment).
The mean map in every bin failed its shipping rule on the validation box (16/20 per-bin criteria against 17/20;
docs/model-card.md): it lowers the large-scale bias of the bins whose law is feasible without it.
`--mean-cell C` rescales the mapped means inside every aligned cell of C³ voxels to the cell's painted total
(halopaint.sample.law_means), so the map moves halos only within a cell and the large-scale field stays the
painted one; the shipped z = 0 law is `--mean-map where-needed --mean-cell 4`. `--mean-cap where-needed`
then caps the law's mean at one halo per voxel inside the cells (CountModel.mean_cap; the excess water-filled
into the cell's other voxels) in the bins whose cell law still expects more than 5 % more pairs than the
truth, and refits them (the shipped z = 0.5 law: bin 3).
`--mu-ranges auto` chooses K in {1, 2, 4} by leave-one-box-out cross-validation on the given boxes (score:
mean over bins of log²(variance ratio) + log²(P(n ≥ 2) ratio) of a realization of the left-out box), a rule
fixed before any held-out box is looked at. Also fits the catalogue's mass function (dn/dlnM ∝ M^−β per bin,
from /catalog/mass) and, where every box has /catalog/vel and a velocity field, the per-bin velocity law about
/lpt_velocity (the 2LPT field a production --lpt-only density file holds as /velocity; /velocity where a box
has no /lpt_velocity): v_halo = g_b · field(x_halo) + γ_b · h∇δ(voxel of the halo) + N(0, σ_b²) per component,
∇δ of the box's /density (the 2LPT density a production file holds; halopaint.sample.fit_velocity_law,
voxel_density_gradient); `--velocity-law field` fits the earlier law without the infall term γ_b. Use training
boxes only. Everything, with the files' SHA-256, goes to metadata.count_model.provenance; the generators are
untouched (checked: the new bundle paints bit-identically). Written atomically and loaded back.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from halopaint.calibrate import file_bins_for  # noqa: E402
from halopaint.errors import HalopaintError  # noqa: E402
from halopaint.fields import FieldFile, file_provenance, same_voxel_size  # noqa: E402
from halopaint.model import CountModel, ModelBundle, generator_digest  # noqa: E402
from halopaint.paint import paint_whole_box  # noqa: E402
from halopaint.sample import (expected_pair_moment, fit_count_law, fit_mass_slope, fit_mean_map,  # noqa: E402
                              fit_velocity_law, law_means, sample_counts, slab_cic_readout,
                              voxel_density_gradient)

CANDIDATE_RANGES = (1, 2, 4)
PAIR_EXCESS_MAX = 1.05          # where-needed: law/truth sum n(n-1) above this needs the mean map (or the cap)
MEAN_CAP = 1.0                  # --mean-cap where-needed: halos per voxel; at m <= 1 every alpha >= -1 is reachable
CV_SEED = 12345


def load_boxes(bundle: ModelBundle, paths: list[str]) -> list[dict]:
    """Per box: painted (n_bins, N³), true counts, catalogue masses and (optional) velocities."""
    boxes = []
    for path in paths:
        with FieldFile(path, require=("density", "halos")) as f:
            info = f.info
            if not same_voxel_size(info.voxel_size, bundle.metadata.voxel_size):
                raise HalopaintError(f"{path}: voxel size {info.voxel_size:g} Mpc/h, the bundle's is "
                                     f"{bundle.metadata.voxel_size:g}")
            bins = file_bins_for(bundle, info.mass_bin_edges, path)
            rho = f.read_density()
            box = dict(path=path, info=info, true=f.read_halos(bins), painted=paint_whole_box(bundle, rho),
                       density=np.asarray(rho, np.float32), provenance=file_provenance(path, info.attrs))
            cat = f.h5.get("catalog")
            box["mass"] = None if cat is None else np.asarray(cat["mass"], np.float64)
            # the field the catalogue adds the dispersion to at run time is a production (--lpt-only) density
            # file's /velocity: the 2LPT particles' velocity, kept by a full run as /lpt_velocity
            field = "lpt_velocity" if "lpt_velocity" in f.h5 else "velocity"
            if cat is not None and "vel" in cat and field in f.h5:
                box.update(pos=np.asarray(cat["pos"], np.float64), vel=np.asarray(cat["vel"], np.float64),
                           velocity=np.asarray(f.h5[field], np.float32), velocity_field=field)
        boxes.append(box)
    return boxes


def fit_laws(boxes: list[dict], n_bins: int, ranges: int, mean_bins: frozenset[int],
             cell: int | None = None, capped: frozenset[int] = frozenset()) -> CountModel:
    """The count law (a mean map in the bins `mean_bins`, in cells of `cell` voxels if given; the mean capped
    at MEAN_CAP halos per voxel inside those cells in the bins `capped`; α(μ) over `ranges` ranges) of the
    boxes, pooled; diagnostics in its provenance["per_bin"]."""
    alpha, breaks, knots, values, diags = [], [], [], [], []
    for b in range(n_bins):
        painted, true = [x["painted"][b] for x in boxes], [x["true"][b] for x in boxes]
        means, d, xs, ys = None, {}, [], []
        if b in mean_bins:
            xs, ys, d["mean_map"] = fit_mean_map(painted, true)
        if b in mean_bins or b in capped:
            one = CountModel(alpha=[[0.0]], mu_breaks=[[]], mean_mu=[xs], mean_n=[ys], mean_cell=cell,
                             mean_cap=[MEAN_CAP if b in capped else None])
            means = [law_means(p, one, 0) for p in painted]
        knots.append(xs), values.append(ys)
        a, br, d["law"] = fit_count_law(painted, true, ranges, means=means)
        alpha.append(a), breaks.append(br), diags.append(d)
    return CountModel(alpha=alpha, mu_breaks=breaks, mean_mu=knots if mean_bins else None,
                      mean_n=values if mean_bins else None, mean_cell=cell if (mean_bins or capped) else None,
                      mean_cap=[MEAN_CAP if b in capped else None for b in range(n_bins)] if capped else None,
                      provenance={"per_bin": diags})


def pair_excess(boxes: list[dict], law: CountModel) -> list[float]:
    """Per bin: the law's expected Σ n(n−1) over the boxes (halopaint.sample.expected_pair_moment about its
    means, halopaint.sample.law_means) over the truth's. Above 1 the law cannot be as narrow as the truth:
    its means put more than one halo into voxels where the truth's pairs are fewer."""
    out = []
    for b in range(law.n_bins):
        law_pairs = true_pairs = 0.0
        for x in boxes:
            mu = np.asarray(x["painted"][b], np.float64)
            n = np.asarray(x["true"][b], np.float64).reshape(-1)
            m = law_means(mu, law, b).reshape(-1)
            law_pairs += float(expected_pair_moment(m, law.alpha_of(b, mu.reshape(-1))).sum())
            true_pairs += float(np.sum(n * (n - 1)))
        out.append(law_pairs / true_pairs if true_pairs > 0 else float("inf"))
    return out


def choose_law(boxes: list[dict], n_bins: int, mu_ranges: str, mean_map: str,
               cell: int | None = None, mean_cap: str = "none") -> tuple[CountModel, dict]:
    """The law `--mu-ranges`, `--mean-map`, `--mean-cell` and `--mean-cap` ask for, and what decided it (for
    the provenance)."""
    def with_ranges(mean_bins, capped=frozenset()):
        scores = (cross_validate(boxes, n_bins, mean_bins, cell, capped)
                  if mu_ranges == "auto" and len(boxes) > 1 else {})
        k = min(scores, key=scores.get) if scores else int(1 if mu_ranges == "auto" else mu_ranges)
        return fit_laws(boxes, n_bins, k, mean_bins, cell, capped), k, scores
    mean_bins = frozenset(range(n_bins)) if mean_map == "isotonic" else frozenset()
    law, k, scores = with_ranges(mean_bins)
    why = {}
    if mean_map == "where-needed":
        excess = pair_excess(boxes, law)
        mean_bins = frozenset(b for b, e in enumerate(excess) if e > PAIR_EXCESS_MAX)
        why = {"pair_excess_without_mean_map": excess, "mean_map_bins": sorted(mean_bins),
               "mean_map_rule": f"mean map in the bins whose law about mu expects more than {PAIR_EXCESS_MAX} "
                                "times the truth's sum n(n-1) on these boxes"}
        if mean_bins:
            law, k, scores = with_ranges(mean_bins)
    if mean_cap == "where-needed":
        excess = pair_excess(boxes, law)
        capped = frozenset(b for b, e in enumerate(excess) if e > PAIR_EXCESS_MAX)
        why.update(pair_excess_of_law=excess, mean_cap_bins=sorted(capped),
                   mean_cap_rule=f"mean capped at {MEAN_CAP:g} halo per voxel inside the cells in the bins whose "
                                 f"law (mean map, cells) expects more than {PAIR_EXCESS_MAX} times the truth's "
                                 "sum n(n-1) on these boxes")
        if capped:
            law, k, scores = with_ranges(mean_bins, capped)
    return law, dict(why, mu_ranges=k, cv_scores={str(c): v for c, v in scores.items()},
                     selection="K of min leave-one-box-out score over {1, 2, 4} (fixed before any held-out "
                               "look)" if scores else "given")


def cross_validate(boxes: list[dict], n_bins: int, mean_bins: frozenset[int],
                   cell: int | None = None, capped: frozenset[int] = frozenset()) -> dict[int, float]:
    """Leave-one-box-out score of each candidate K (lower is better)."""
    scores = {}
    for k in CANDIDATE_RANGES:
        total = []
        for i, held in enumerate(boxes):
            law = fit_laws(boxes[:i] + boxes[i + 1:], n_bins, k, mean_bins, cell, capped)
            real = sample_counts(held["painted"], CV_SEED, law)
            for b in range(n_bins):
                t = held["true"][b]
                var = real[b].var() / t.var()
                p2 = max((real[b] >= 2).mean(), 1e-12) / max((t >= 2).mean(), 1e-12)
                total.append(np.log(var) ** 2 + np.log(p2) ** 2)
        scores[k] = float(np.mean(total))
    return scores


def fit_velocities(boxes: list[dict], edges: np.ndarray, law: str) -> tuple[list, list, list | None, str]:
    """The catalogue velocity law of the boxes' FoF halos, pooled: (g_b, σ_b [km/s], γ_b [km/s] or None for
    the field-only law, a description for the provenance)."""
    at_halo, grads = [], []
    for x in boxes:
        n, box = x["density"].shape[-1], x["info"].box_size
        at_halo.append(slab_cic_readout(x["velocity"], 0, x["pos"], box))
        cells = np.floor(x["pos"] * (n / box)).astype(np.int64) % n
        grads.append(voxel_density_gradient(x["density"], 0, cells))
    fit = fit_velocity_law(np.concatenate(at_halo), np.concatenate([x["vel"] for x in boxes]),
                           np.concatenate([x["mass"] for x in boxes]), edges,
                           gradient_at_halo=np.concatenate(grads) if law == "infall" else None)
    gain = [float(v) if np.isfinite(v) else 1.0 for v in fit[0]]
    sigma = [float(np.nan_to_num(v)) for v in fit[1]]
    infall = [float(np.nan_to_num(v)) for v in fit[3]] if law == "infall" else None
    fields = sorted({x["velocity_field"] for x in boxes})
    term = " + gamma_b * h grad(delta) at the halo's voxel (/density, 3x3x3 stencil)" if law == "infall" else ""
    note = (f"/catalog/vel of the N-body halos = g_b * CIC({', '.join(fields)}) at the halo{term} + N(0, sigma_b) "
            "per component; least squares through 0, sigma_b the residual RMS, over all boxes")
    return gain, sigma, infall, note


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", help="bundle to extend ('default' = the shipped one)")
    ap.add_argument("--boxes", nargs="+", required=True, help="N-body training boxes (/density, /halos, /catalog)")
    ap.add_argument("--out", required=True, help="bundle to write (the same weights + metadata.count_model)")
    ap.add_argument("--mu-ranges", default="auto", help="K ranges of μ for α(μ), or auto (cross-validated)")
    ap.add_argument("--mean-map", choices=("none", "isotonic", "where-needed"), default="none",
                    help="E[n | mu]: mu (default), the isotonic regression of the true counts on the painted mean, "
                         "or that regression only in the bins where the law about mu over-predicts pairs")
    ap.add_argument("--mean-cell", type=int, default=None, metavar="C",
                    help="rescale the mean map inside aligned cells of C³ voxels to the painted total of each cell")
    ap.add_argument("--mean-cap", choices=("none", "where-needed"), default="none",
                    help="cap the law's mean at one halo per voxel inside the cells (excess filled into the cell's "
                         "other voxels) in the bins whose law still over-predicts pairs (needs --mean-cell)")
    ap.add_argument("--velocity-law", choices=("infall", "field"), default="infall",
                    help="catalogue velocity law: g·field + γ·h∇δ + noise (infall, default) or g·field + noise")
    args = ap.parse_args(argv)
    command = " ".join(["python jobs/fit_count_model.py", *(argv if argv is not None else sys.argv[1:])])
    try:
        if args.mean_cell is not None and (args.mean_cell < 1 or args.mean_map == "none"):
            raise HalopaintError("--mean-cell needs a positive cell size and a --mean-map")
        if args.mean_cap != "none" and args.mean_cell is None:
            raise HalopaintError("--mean-cap needs --mean-cell (the cells the capped means keep their totals in)")
        bundle = ModelBundle.load(args.bundle)
        edges = np.asarray(bundle.metadata.mass_bin_edges)
        n_bins = bundle.n_bins
        boxes = load_boxes(bundle, args.boxes)
        law, chosen = choose_law(boxes, n_bins, args.mu_ranges, args.mean_map, args.mean_cell, args.mean_cap)
        slopes = None
        if all(x["mass"] is not None for x in boxes):
            masses = np.concatenate([x["mass"] for x in boxes])
            slopes = [fit_mass_slope(masses, edges[b], edges[b + 1]) for b in range(n_bins)]
        gain, sigma, infall = None, None, None
        note = "not calibrated: the boxes have no /velocity and /catalog/vel"
        if all("vel" in x for x in boxes):
            gain, sigma, infall, note = fit_velocities(boxes, edges, args.velocity_law)
        provenance = dict(command=command, data=[x["provenance"] for x in boxes], **chosen,
                          mean_map="E[n | mu] = isotonic regression of the true counts on mu over 32 ranges of "
                                   "equal sum mu, linear between the knots, in bins "
                                   f"{[b for b in range(n_bins) if law.has_mean_map_in(b)]}; mu elsewhere"
                                   + (f"; rescaled in aligned cells of {law.mean_cell}^3 voxels to the painted "
                                      "total of each cell" if law.mean_cell else "")
                                   + (f"; capped at {MEAN_CAP:g} halo per voxel (excess filled into the cell's other "
                                      f"voxels) in bins {chosen['mean_cap_bins']}" if chosen.get("mean_cap_bins") else "")
                          if law.has_mean_map else "none (E[n | mu] = mu)",
                          fit="1 + alpha = sum n(n-1) / sum m^2 per mu range (second factorial moment), "
                              "m = E[n | mu]",
                          per_bin=law.provenance["per_bin"],
                          mass_function="dn/dlnM ~ M^-beta per bin, MLE on /catalog/mass",
                          velocity_dispersion=note)
        cm = replace(law, mass_slope=slopes, velocity_dispersion=sigma, velocity_bias=gain, velocity_infall=infall,
                     generator_sha256=[generator_digest(g) for g in bundle.generators], provenance=provenance)
        new = replace(bundle, metadata=replace(bundle.metadata, count_model=cm))
        new.save(args.out)
        back = ModelBundle.load(args.out)
        with FieldFile(args.boxes[0]) as f:
            rho = f.read_density()
        if not np.array_equal(paint_whole_box(back, rho), paint_whole_box(bundle, rho)):
            raise HalopaintError(f"{args.out} does not paint identically to {args.bundle}")
    except HalopaintError as exc:
        print(f"fit_count_model: error: {exc}", file=sys.stderr)
        return 2
    if chosen["cv_scores"]:
        print("leave-one-box-out scores: " + ", ".join(f"K={k}: {v:.4f}" for k, v in chosen["cv_scores"].items()))
    if "pair_excess_without_mean_map" in chosen:
        print("law/truth sum n(n-1) without a mean map: "
              + ", ".join(f"{e:.3f}" for e in chosen["pair_excess_without_mean_map"])
              + f" -> mean map in bins {chosen['mean_map_bins']}")
    if "pair_excess_of_law" in chosen:
        print("law/truth sum n(n-1) with the mean map: " + ", ".join(f"{e:.3f}" for e in chosen["pair_excess_of_law"])
              + f" -> mean capped at {MEAN_CAP:g} in bins {chosen['mean_cap_bins']}")
    for b in range(n_bins):
        extra = "" if slopes is None else f", mass slope beta {slopes[b]:.3f}"
        extra += "" if sigma is None else f", velocity gain {gain[b]:.3f}, sigma_v {sigma[b]:.1f} km/s"
        extra += "" if infall is None else f", infall {infall[b]:.1f} km/s"
        if cm.has_mean_map_in(b):
            knots = ", ".join(f"{x:.3g}->{y:.3g}" for x, y in zip(cm.mean_mu[b][::8], cm.mean_n[b][::8]))
            extra += f", mean map {len(cm.mean_mu[b])} knots ({knots}, ...)"
        print(f"bin {b}: alpha {np.round(cm.alpha[b], 4).tolist()} "
              f"(mu breaks {np.round(cm.mu_breaks[b], 4).tolist()}){extra}")
    print(f"velocity dispersion: {note}")
    print(f"wrote {args.out} (paints identically to {args.bundle})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
