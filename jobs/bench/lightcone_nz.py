#!/usr/bin/env python
"""Halo counts per light-cone shell and mass bin against the Watson et al. (2013) FoF mass function.

    python jobs/bench/lightcone_nz.py LC.h5 [--json out.json] [--figure nz.png]

For every shell [χ1, χ2) (full sky) and selected mass bin [M1, M2) the expected number is
    N_W13 = ∫ 4π χ² dχ ∫_{M1}^{M2} dn/dlnM(M, z(χ)) dlnM
with dn/dlnM from colossus (mdef 'fof', model 'watson13', the light cone's cosmology), integrated by
Gauss–Legendre in χ (16 points) and ln M (32 points). The measured number is the shell's total of /maps
(the halos of a sampled snapshot; expected counts for painted ones). Prints the ratio measured / W13 per
shell and bin, the snapshots each shell used (with a blend, their shares of its voxels), and the worst ratio among bins holding ≥ 100 halos; with
--fof-boxes, the training simulations' own FoF counts / Watson13 per bin (what the models learned).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from halopaint.config import Cosmology  # noqa: E402
from halopaint.lightcone.geometry import DistanceRedshift  # noqa: E402

MIN_HALOS = 100


def watson13_counts(cosmo: Cosmology, chi_edges, mass_edges, dist: DistanceRedshift) -> np.ndarray:
    """(shells, bins) expected halo numbers on the full sky."""
    from colossus.cosmology import cosmology as ccosmo
    from colossus.lss import mass_function
    ccosmo.setCosmology("halopaint", dict(flat=True, H0=100 * cosmo.h, Om0=cosmo.Omega_m, Ob0=cosmo.Omega_b,
                                          sigma8=cosmo.sigma8, ns=cosmo.n_s))
    xc, wc = np.polynomial.legendre.leggauss(16)
    xm, wm = np.polynomial.legendre.leggauss(32)
    out = np.zeros((len(chi_edges) - 1, len(mass_edges) - 1))
    for i, (c1, c2) in enumerate(zip(chi_edges[:-1], chi_edges[1:])):
        chi = 0.5 * (c2 - c1) * xc + 0.5 * (c2 + c1)
        for b, (m1, m2) in enumerate(zip(mass_edges[:-1], mass_edges[1:])):
            lnm = 0.5 * np.log(m2 / m1) * xm + 0.5 * np.log(m2 * m1)
            per_volume = np.array([np.sum(wm * mass_function.massFunction(np.exp(lnm), float(z), mdef="fof",
                                                                            model="watson13", q_out="dndlnM"))
                                   * 0.5 * np.log(m2 / m1) for z in dist.redshift(chi)])
            out[i, b] = np.sum(wc * 4 * np.pi * chi**2 * per_volume) * 0.5 * (c2 - c1)
    return out


def fof_ratio(path: str, mass_edges: np.ndarray) -> dict:
    """An N-body box's own FoF halo counts per bin over the Watson13 expectation in its volume."""
    from colossus.lss import mass_function
    with h5py.File(path, "r") as f:
        mass = f["catalog/mass"][...]
        box, z = float(f.attrs["box_size"]), float(f.attrs["redshift"])
        cosmo = Cosmology.from_json(str(f.attrs["cosmology"]))
    watson13_counts(cosmo, [1.0, 2.0], mass_edges, DistanceRedshift(cosmo, 1.0))      # sets the cosmology
    xm, wm = np.polynomial.legendre.leggauss(32)
    ratio = []
    for m1, m2 in zip(mass_edges[:-1], mass_edges[1:]):
        lnm = 0.5 * np.log(m2 / m1) * xm + 0.5 * np.log(m2 * m1)
        n = np.sum(wm * mass_function.massFunction(np.exp(lnm), z, mdef="fof", model="watson13",
                                                   q_out="dndlnM")) * 0.5 * np.log(m2 / m1) * box**3
        ratio.append(float(np.count_nonzero((mass >= m1) & (mass < m2)) / n))
    return dict(file=path, redshift=z, ratio=ratio)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lightcone")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--figure", type=Path)
    ap.add_argument("--fof-boxes", nargs="*", default=[],
                    help="N-body files (any z): their own FoF counts per bin / Watson13, for reference")
    args = ap.parse_args(argv)
    with h5py.File(args.lightcone, "r") as f:
        measured = f["shells/total_expected"][...].astype(np.float64)         # (shells, bins)
        chi_edges, z_edges = f["shells/chi_edges"][...], f["shells/z_edges"][...]
        snap_z = f["shells/snapshot_redshift"][...]
        fraction = f["shells/snapshot_fraction"][...] if "snapshot_fraction" in f["shells"] else None
        choice = str(f.attrs.get("snapshot_choice", "nearest"))
        source_z = [float(s["redshift"]) for s in json.loads(str(f.attrs["sources"]))]
        cosmo = Cosmology.from_json(str(f.attrs["cosmology"]))
        edges = np.asarray(f.attrs["mass_bin_edges"], np.float64)
        bins = np.asarray(f.attrs["mass_bins"], np.int64)
    mass_edges = np.concatenate([edges[bins], [edges[bins[-1] + 1]]])
    expected = watson13_counts(cosmo, chi_edges, mass_edges, DistanceRedshift(cosmo, float(z_edges[-1]) + 0.01))
    ratio = measured / expected
    print(f"{args.lightcone}: halos per shell and mass bin / Watson13 FoF (colossus), full sky; snapshot choice "
          f"{choice}")

    def used(s: int) -> str:
        """The snapshots that painted shell s: their z (and share of the shell's voxels when blended)."""
        if fraction is None or choice == "nearest":
            return f"{snap_z[s]:g}"
        return ", ".join(f"{z:g} ({v:.2f})" for z, v in sorted(zip(source_z, fraction[s])) if v > 0)

    print("| shell | z | snapshot z | " + " | ".join(f"bin {b} [{mass_edges[i]:.2g}, {mass_edges[i + 1]:.2g})"
                                                 for i, b in enumerate(bins)) + " |")
    print("|---|---|---|" + "---|" * len(bins))
    for s in range(len(measured)):
        cells = [f"{ratio[s, i]:.3f} ({measured[s, i]:.3g})" for i in range(len(bins))]
        print(f"| {s} | {z_edges[s]:.3f}–{z_edges[s + 1]:.3f} | {used(s)} | " + " | ".join(cells) + " |")
    held = measured >= MIN_HALOS
    worst = float(np.max(np.abs(ratio[held] - 1))) if held.any() else float("nan")
    print(f"largest |ratio − 1| over shell×bin cells with ≥ {MIN_HALOS} halos: {worst:.3f}; within 25 %: "
          f"{int(np.count_nonzero(np.abs(ratio[held] - 1) <= 0.25))} of {int(held.sum())}")
    for i, b in enumerate(bins):
        sel = held[:, i]
        if sel.any():
            print(f"bin {b}: ratio range {ratio[sel, i].min():.3f} – {ratio[sel, i].max():.3f}")
    fof = [fof_ratio(path, mass_edges) for path in args.fof_boxes]
    for row in fof:
        print(f"FoF / Watson13 of {row['file']} (z = {row['redshift']:g}): "
              + ", ".join(f"{r:.3f}" for r in row["ratio"]))
    if args.json:
        args.json.write_text(json.dumps(dict(lightcone=args.lightcone, fof_boxes=fof, z_edges=z_edges.tolist(),
                                             snapshot_redshift=snap_z.tolist(), snapshot_choice=choice,
                                             snapshot_fraction=None if fraction is None else fraction.tolist(),
                                             bins=bins.tolist(),
                                             measured=measured.tolist(), watson13=expected.tolist(),
                                             ratio=ratio.tolist(), worst_abs_dev=worst), indent=1))
    if args.figure:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        zc = 0.5 * (z_edges[1:] + z_edges[:-1])
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, b in enumerate(bins):
            ax.plot(zc, ratio[:, i], "o-", label=f"bin {b}")
        ax.axhline(1, color="k", lw=0.5)
        ax.axhspan(0.75, 1.25, color="0.9", zorder=0)
        ax.set_xlabel("shell redshift")
        ax.set_ylabel("halos / Watson13 FoF")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.figure, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
