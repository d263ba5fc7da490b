"""The paper's figures as PNGs (matplotlib, Agg): slices (Fig. 8), count PDFs (Fig. 9), P/T/r_c/s with the
2LPT baseline and Poisson level (Fig. 10), reduced bispectra (Figs. 11/14), per-mass-bin spectra (Fig. 13).

Every function takes the statistics already measured (nothing is computed here) and writes one PNG
atomically (temporary name, then rename); it returns the path.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from halopaint.fields import atomic_path  # noqa: E402

STYLE = {"pred": dict(color="C3", label="prediction"), "ref": dict(color="k", label="reference (N-body)"),
         "lpt": dict(color="C0", ls="--", label="2LPT baseline b·δ")}


def _save(fig, path: Path) -> Path:
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    return path


def _mass_label(edges, b: int) -> str:
    if edges is None:
        return f"bin {b}"
    return f"bin {b}: {np.log10(edges[b]):.2f}–{np.log10(edges[b + 1]):.2f} log M [M☉/h]"


def plot_slices(path, slices: dict, info) -> Path:
    """Rows: summed field and each mass bin; columns: 2LPT density, reference, prediction (x = N/2 plane)."""
    rows = list(slices)
    cols = [c for c in ("density", "reference", "prediction") if c in slices[rows[0]]]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(4.4 * len(cols), 3.6 * len(rows)), squeeze=False,
                             layout="constrained")
    extent = [0, info.box_size, 0, info.box_size]
    for r, name in enumerate(rows):
        halo_cols = [c for c in cols if c != "density"]
        halo_max = max(float(np.max(slices[name][c])) for c in halo_cols) if halo_cols else 1.0
        for c, col in enumerate(cols):
            ax = axes[r, c]
            data = slices[name][col]
            if col == "density":
                im = ax.imshow(np.log10(np.maximum(data, 1e-3)).T, origin="lower", extent=extent, cmap="magma")
                fig.colorbar(im, ax=ax, fraction=0.046, label="log10(1+δ)")
            else:
                im = ax.imshow(data.T, origin="lower", extent=extent, cmap="viridis", vmin=0,
                               vmax=max(halo_max, 1e-6))
                fig.colorbar(im, ax=ax, fraction=0.046, label="halo counts (slab column)")
            ax.set_title(f"{col} — {name}", fontsize=9)
            ax.set_xlabel("y [Mpc/h]")
            ax.set_ylabel("z [Mpc/h]")
    thick = slices[rows[0]].get("thickness", 1)
    fig.suptitle(f"slab x ∈ [{info.grid // 2}, {info.grid // 2 + thick}) of {info.grid}³ "
                 f"({thick * info.voxel_size:g} Mpc/h thick; density averaged, counts summed)")
    return _save(fig, path)


def _band(ax, k, ens, key, color):
    if ens is not None and f"{key}_mean" in ens:
        m, s = ens[f"{key}_mean"], ens[f"{key}_std"]
        ax.fill_between(ens["k"], m - s, m + s, color=color, alpha=0.2, lw=0)


def _below_nyquist(node: dict | None, knyq: float) -> dict | None:
    """The entries of a statistics node restricted to bins with k ≤ k_Nyq."""
    if node is None:
        return None
    sel = node["k"] <= knyq
    return {key: (v[sel] if isinstance(v, np.ndarray) and v.shape == node["k"].shape else v)
            for key, v in node.items()}


def _k_axis(ax) -> None:
    ax.set_xlabel("k [h/Mpc]")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def plot_power(path, node: dict, ens: dict | None = None, title: str = "") -> Path:
    """P(k), T(k), r_c(k), s(k): prediction, reference, 2LPT baseline, Poisson levels; patch ±1σ bands.

    Only bins up to the Nyquist wavenumber k_Nyq (attrs['k_nyquist']) are drawn; the files hold all bins.
    """
    knyq = node["attrs"].get("k_nyquist", np.inf)
    node, ens = _below_nyquist(node, knyq), _below_nyquist(ens, knyq)
    k = node["k"]
    have_ref = "P_ref" in node
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), squeeze=False)
    ax = axes[0, 0]
    ax.loglog(k, node["P_pred"], **STYLE["pred"])
    if have_ref:
        ax.loglog(k, node["P_ref"], **STYLE["ref"])
        ax.axhline(node["attrs"]["poisson_ref"], color="gray", ls=":", label="Poisson V/N_halos (ref)")
    else:
        ax.axhline(node["attrs"]["poisson_pred"], color="gray", ls=":", label="Poisson V/N_halos (pred)")
    if "P_lpt" in node:
        ax.loglog(k, node["P_lpt"], **STYLE["lpt"])
    _band(ax, k, ens, "P_pp", "C3")
    _band(ax, k, ens, "P_hh", "k")
    _k_axis(ax)
    ax.set_ylabel("P(k) [(Mpc/h)³]")
    ax.legend(fontsize=8)
    ax.set_title(f"power spectrum {title}", fontsize=10)
    if have_ref:
        for ax, key, lab in ((axes[0, 1], "T", "T(k) = √(P_pred / P_ref)"),
                             (axes[1, 0], "r_c", "r_c(k) = P_× / √(P_ref P_pred)")):
            ax.semilogx(k, node[key], **STYLE["pred"])
            if f"{key}_lpt" in node:
                ax.semilogx(k, node[f"{key}_lpt"], **STYLE["lpt"])
            _band(ax, k, ens, key, "C3")
            _band(ax, k, ens, f"{key}_lpt", "C0")
            ax.axhline(1.0, color="gray", lw=0.8)
            _k_axis(ax)
            ax.set_ylabel(lab)
            ax.legend(fontsize=8)
        ax = axes[1, 1]
        ax.loglog(k, np.abs(node["s"]), **STYLE["pred"])
        if "s_lpt" in node:
            ax.loglog(k, np.abs(node["s_lpt"]), **STYLE["lpt"])
        _band(ax, k, ens, "s", "C3")
        ax.axhline(node["attrs"]["poisson_ref"], color="gray", ls=":", label="Poisson V/N_halos (ref)")
        _k_axis(ax)
        ax.set_ylabel("|s(k)| = |P_ref (1 − r_c²)| [(Mpc/h)³]")
        ax.legend(fontsize=8)
        if "bias" in node["attrs"]:
            axes[0, 1].set_title(f"2LPT bias b = {node['attrs']['bias']:.3f} (fit k ≤ "
                                 f"{node['attrs']['bias_fit_kmax']:g} h/Mpc)", fontsize=9)
    else:
        for ax in (axes[0, 1], axes[1, 0], axes[1, 1]):
            ax.axis("off")
        axes[0, 1].text(0.05, 0.5, "no reference given:\nT, r_c, s not measured", transform=axes[0, 1].transAxes)
    fig.tight_layout()
    return _save(fig, path)


def plot_power_bins(path, power: dict, edges) -> Path:
    """P(k) per mass bin (prediction solid, reference dashed) and T(k) per bin (Fig. 13)."""
    names = [n for n in power if n != "sum"]
    have_ref = "P_ref" in power["sum"]
    fig, axes = plt.subplots(1, 2 if have_ref else 1, figsize=(11 if have_ref else 6, 4.5), squeeze=False)
    knyq = power["sum"]["attrs"].get("k_nyquist", np.inf)
    for b, name in enumerate(names):
        node = _below_nyquist(power[name], knyq)
        c = f"C{b}"
        axes[0, 0].loglog(node["k"], node["P_pred"], color=c, label=f"pred {_mass_label(edges, b)}")
        if have_ref:
            axes[0, 0].loglog(node["k"], node["P_ref"], color=c, ls="--")
            axes[0, 1].semilogx(node["k"], node["T"], color=c, label=_mass_label(edges, b))
    _k_axis(axes[0, 0])
    axes[0, 0].set_ylabel("P(k) [(Mpc/h)³]")
    axes[0, 0].set_title("per mass bin: prediction (solid), reference (dashed)", fontsize=9)
    axes[0, 0].legend(fontsize=7)
    if have_ref:
        axes[0, 1].axhline(1.0, color="gray", lw=0.8)
        _k_axis(axes[0, 1])
        axes[0, 1].set_ylabel("T(k) = √(P_pred / P_ref)")
        axes[0, 1].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_pdfs(path, pdf: dict, edges) -> Path:
    """Per selection: PDFs of true and predicted counts (log), and the conditional P(pred | true) image."""
    names = list(pdf)
    fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 6.6), squeeze=False)
    for c, name in enumerate(names):
        node = pdf[name]
        counts = node["counts"]
        ax = axes[0, c]
        ax.semilogy(counts, np.where(node["pdf_true"] > 0, node["pdf_true"], np.nan), "ko-", ms=3,
                    label="reference")
        ax.semilogy(counts, np.where(node["pdf_pred"] > 0, node["pdf_pred"], np.nan), "s-", color="C3", ms=3,
                    label="prediction")
        ax.set_xlabel("halo counts per voxel")
        ax.set_ylabel("fraction of voxels")
        ax.set_title(f"{name}: |pred−true|>3 in {node['attrs']['frac_off_by_3']:.2e}", fontsize=8)
        ax.legend(fontsize=7)
        ax = axes[1, c]
        cond = np.where(node["conditional"] > 0, node["conditional"], np.nan)
        im = ax.imshow(np.log10(cond).T, origin="lower", cmap="viridis", aspect="auto",
                       extent=[-0.5, counts[-1] + 0.5, -0.5, counts[-1] + 0.5])
        ax.plot([0, counts[-1]], [0, counts[-1]], "w--", lw=0.8)
        fig.colorbar(im, ax=ax, fraction=0.046, label="log10 P(pred | true)")
        ax.set_xlabel("true counts per voxel")
        ax.set_ylabel("predicted counts (rounded)")
    fig.tight_layout()
    return _save(fig, path)


def plot_bispectra(path, bispectrum: dict, edges=None) -> Path:
    """Reduced bispectrum Q(θ): one row per mass selection ({"sum": …, "bin0": …}), one column per (k1, k2)
    configuration; prediction, reference and the 2LPT baseline (Fig. 11 for the sum, Fig. 14 per bin)."""
    rows = list(bispectrum)
    cols = sorted({c for r in rows for c in bispectrum[r]})
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(5 * len(cols), 3.6 * len(rows)), squeeze=False)
    for i, sel in enumerate(rows):
        for j, name in enumerate(cols):
            ax = axes[i, j]
            node = bispectrum[sel].get(name)
            if node is None:
                ax.set_axis_off()
                continue
            th = node["theta"] / np.pi
            ax.plot(th, node["Q_pred"], "o-", ms=3, **STYLE["pred"])
            if "Q_ref" in node:
                ax.plot(th, node["Q_ref"], "o-", ms=3, **STYLE["ref"])
            if "Q_lpt" in node:
                ax.plot(th, node["Q_lpt"], **STYLE["lpt"])
            ax.set_xlabel("θ / π (angle between k₁ and k₂)")
            ax.set_ylabel("Q(k₁, k₂, θ)")
            what = "summed over mass bins" if sel == "sum" else _mass_label(edges, int(sel[3:]))
            ax.set_title(f"{what}\nk₁ = {node['attrs']['k1']:g}, k₂ = {node['attrs']['k2']:g} h/Mpc", fontsize=9)
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def multipoles_figure(comparison, path: Path, title: str = "") -> Path:
    """k·P0 and k·P2 of a predicted and a reference catalogue in real and redshift space (top), and the
    ratios P0_pred/P0_ref (both spaces) and (P2/P0)_pred/(P2/P0)_ref (bottom). `comparison`: an
    halopaint.analysis.rsd.RSDComparison, or an rsd.Selection (without a reference: the top panel of the
    prediction alone)."""
    ratios = comparison if hasattr(comparison, "p0_real_ratio") else comparison.comparison
    if ratios is None:
        fig, top = plt.subplots(1, 1, figsize=(6.4, 4.3))
    else:
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True,
                                          gridspec_kw=dict(height_ratios=[2, 1]))
    for who, sets in (("pred", comparison.pred), ("ref", comparison.ref)):
        if sets is None:
            continue
        style = STYLE[who]
        real, red = sets["real"], sets["redshift"]
        top.plot(real.k, real.k * real.P0, color=style["color"], ls=":", label=f"{style['label']}: P0 real space")
        top.plot(red.k, red.k * red.P0, color=style["color"], label=f"{style['label']}: P0 redshift space")
        top.plot(red.k, red.k * red.P2, color=style["color"], ls="--", label=f"{style['label']}: P2 redshift space")
    top.set_ylabel(r"$k\,P_\ell(k)$ [(Mpc/h)$^2$]")
    top.legend(fontsize=7)
    top.set_title(title, fontsize=9)
    if ratios is None:
        top.set_xscale("log")
        top.set_xlabel(r"$k$ [h/Mpc]")
        return _save(fig, path)
    k = ratios.k
    bottom.plot(k, ratios.p0_real_ratio, "C2:", label="P0 real")
    bottom.plot(k, ratios.p0_redshift_ratio, "C2", label="P0 redshift")
    bottom.plot(k, ratios.p2_over_p0_ratio, "C1--", label="P2/P0 redshift")
    bottom.axhline(1.0, color="k", lw=0.5)
    bottom.axvspan(0.05, 0.2, color="0.9", zorder=0)
    bottom.set_ylim(0.5, 1.5)
    bottom.set_xscale("log")
    bottom.set_xlabel(r"$k$ [h/Mpc]")
    bottom.set_ylabel("pred / ref")
    bottom.legend(fontsize=7, ncol=3)
    return _save(fig, path)
