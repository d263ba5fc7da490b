"""`halopaint spectra` end to end: read field files, measure every statistic on Dask, write them and the figures.

`run(config)` validates the inputs (same grid, box and mass bins; complete files), then for the summed
halo field and each mass bin measures P(k) of the prediction, and with a reference the cross statistics
T, r_c, s, the Poisson levels and the count PDFs; with a 2LPT density the linear-bias baseline; the
bispectra of the summed field and of each bin; optional patch ensembles. It writes `<out>/spectra.h5` (or `.json`),
`<out>/summary.json` and PNG figures, each atomically, and returns the JSON-serialisable summary.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np

from halopaint.analysis import fft as dfft
from halopaint.analysis.baseline import lpt_baseline
from halopaint.analysis.bispectrum import bispectrum_k, default_thetas
from halopaint.analysis.ensemble import PatchSource, patch_ensemble
from halopaint.analysis.pdf import count_pdf
from halopaint.analysis.spectra import cross_from_spectra, mas_order, spectra
from halopaint.config import SpectraConfig
from halopaint.errors import HalopaintError
from halopaint.fields import FieldFile, FieldInfo, atomic_path
from halopaint.log import get_logger

SUMMARY_K = (0.05, 0.1, 0.2)  # [h/Mpc] where the summary quotes T, r_c, s


log = get_logger(__name__)


def _log(msg: str, enabled: bool = True) -> None:
    """Progress record (info; debug when the run asked for no progress)."""
    log.log(logging.INFO if enabled else logging.DEBUG, msg)


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------

def _open_info(path: str, require: tuple[str, ...], role: str) -> FieldInfo:
    if not path:
        raise HalopaintError(f"no {role} file given")
    with FieldFile(path, require=require) as f:
        return f.info


def validate_inputs(config: SpectraConfig) -> dict[str, FieldInfo]:
    """FieldInfo of each given file; mismatched grids, boxes or mass bins → HalopaintError."""
    infos = {"pred": _open_info(config.predicted, ("halos",), "prediction")}
    if config.reference:
        infos["ref"] = _open_info(config.reference, ("halos",), "reference")
    if config.density:
        infos["dens"] = _open_info(config.density, ("density",), "density")
    base = infos["pred"]
    for role, info in infos.items():
        if info.grid != base.grid:
            raise HalopaintError(f"{info.path}: grid {info.grid}³ differs from the prediction's {base.grid}³ "
                                 f"({base.path})")
        if not math.isclose(info.box_size, base.box_size, rel_tol=1e-9):
            raise HalopaintError(f"{info.path}: box_size {info.box_size:g} Mpc/h differs from the prediction's "
                                 f"{base.box_size:g} Mpc/h")
    if "ref" in infos:
        ref = infos["ref"]
        if ref.n_bins != base.n_bins:
            raise HalopaintError(f"{ref.path}: {ref.n_bins} mass bins, prediction has {base.n_bins}")
        if not np.allclose(ref.mass_bin_edges, base.mass_bin_edges, rtol=1e-6):
            raise HalopaintError(f"{ref.path}: mass_bin_edges differ from the prediction's")
    mas_order(config.mas)
    mas_order(config.density_mas)
    if config.output_format not in ("hdf5", "json"):
        raise HalopaintError(f"output format must be hdf5 or json, got {config.output_format!r}")
    if config.patches < 0:
        raise HalopaintError(f"--patches must be ≥ 0, got {config.patches}")
    if config.spill_dir and config.scheduler:
        raise HalopaintError("--spill-dir is for the local scheduler (one HDF5 writer process); on a "
                             "distributed cluster the P2P shuffle spills to the workers' disks by itself")
    if config.patches and not config.reference:
        raise HalopaintError("--patches needs --reference (the ensemble is of the cross statistics)")
    return infos


@contextlib.contextmanager
def dask_scheduler(address: str | None):
    """None → Dask's threaded scheduler; an address → a `distributed.Client` connected to it."""
    if not address:
        yield None
        return
    try:
        from distributed import Client
        client = Client(address, timeout="30s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise HalopaintError(f"cannot connect to the Dask scheduler at {address}: {exc}") from None
    try:
        yield client
    finally:
        client.close()


# --------------------------------------------------------------------------------------------------
# Output tree → HDF5 / JSON
# --------------------------------------------------------------------------------------------------

def _check_finite(tree: dict, where: str = "") -> None:
    for key, value in tree.items():
        name = f"{where}/{key}"
        if isinstance(value, dict):
            _check_finite(value, name)
        elif isinstance(value, (np.ndarray, float, np.floating)) and np.asarray(value).dtype.kind == "f":
            if not np.all(np.isfinite(value)):
                raise HalopaintError(f"internal: non-finite values in {name}; refusing to write NaN")


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_tree(tree: dict, path: Path, fmt: str, root_attrs: dict) -> None:
    """Statistics tree (nested dicts of arrays; 'attrs' keys become HDF5 attributes) → file, atomically."""
    _check_finite(tree)
    if fmt == "json":
        _atomic_write_text(path, json.dumps(_jsonable({"attrs": root_attrs, **tree}), indent=1))
        return
    from halopaint.fields import atomic_h5

    def put(group, sub: dict) -> None:
        for key, value in sub.items():
            if key == "attrs":
                for ak, av in value.items():
                    group.attrs[ak] = json.dumps(_jsonable(av)) if isinstance(av, (dict, list, tuple)) else av
            elif isinstance(value, dict):
                put(group.create_group(key), value)
            else:
                group.create_dataset(key, data=np.asarray(value))

    attrs = {k: (json.dumps(_jsonable(v)) if isinstance(v, (dict, list, tuple)) else v)
             for k, v in root_attrs.items() if v is not None}
    with atomic_h5(path, attrs) as f:
        put(f, tree)


# --------------------------------------------------------------------------------------------------
# The analysis
# --------------------------------------------------------------------------------------------------

def _nearest(k: np.ndarray, values: np.ndarray, target: float) -> tuple[float, float]:
    i = int(np.argmin(np.abs(k - target)))
    return float(k[i]), float(values[i])


def _selections(n_bins: int) -> list[tuple[str, tuple[int, ...]]]:
    return [("sum", tuple(range(n_bins)))] + [(f"bin{b}", (b,)) for b in range(n_bins)]


def run(config: SpectraConfig) -> dict:
    """Everything `halopaint spectra` does; returns a JSON-serialisable summary (also in summary.json).

    Summary: grid, box_size, per selection ('sum', 'bin0', …) the halo numbers, T/r_c/s of the prediction
    and of the 2LPT baseline at k ≈ 0.05, 0.1, 0.2 h/Mpc (nearest bin; its k quoted), the fitted bias,
    the fraction of voxels with |pred − true| > 3, and the paths written ('files').
    On error nothing is left in `config.out` (a directory this call created is removed).
    """
    out = Path(config.out)
    created = not out.exists()
    try:
        return _run(config)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    finally:
        dfft.release_spills()


def _run(config: SpectraConfig) -> dict:
    infos = validate_inputs(config)
    pred, ref, dens = infos["pred"], infos.get("ref"), infos.get("dens")
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise HalopaintError(f"--out {out} exists and is not a directory")
    if not out.parent.exists() and str(out.parent):
        raise HalopaintError(f"cannot create {out}: directory {out.parent} does not exist")
    out.mkdir(exist_ok=True)
    n, box = pred.grid, pred.box_size
    vol = box**3
    say = config.progress
    tree: dict = {"power": {}}
    summary: dict = {"grid": n, "box_size": box, "mas": config.mas, "density_mas": config.density_mas,
                     "bins": {}, "files": {}}
    planes = max(1, min(config.chunk_planes, n))

    def load(info: FieldInfo, dataset: str, bins=None):
        return dfft.field_from_h5(info.path, dataset, bins=bins, chunk_planes=planes)

    def transform(field):
        return dfft.rfftn(field, chunk_planes=planes, spill_dir=config.spill_dir)

    with dask_scheduler(config.scheduler) as client:
        sched = client
        dens_k = transform(load(dens, "density")) if dens is not None else None
        pdfs, bispectra, ensembles, slices = {}, {}, {}, {}
        for name, bins in _selections(pred.n_bins):
            _log(f"{name}: spectra (mass bins {list(bins)})", say)
            fields = [transform(load(pred, "halos", bins))]
            mas = [config.mas]
            if ref is not None:
                fields.append(transform(load(ref, "halos", bins)))
                mas.append(config.mas)
            if dens_k is not None and ref is not None:
                fields.append(dens_k)
                mas.append(config.density_mas)
            pairs = [(0, 0)]
            if ref is not None:
                pairs += [(1, 1), (0, 1)]
                if dens_k is not None:
                    pairs += [(2, 2), (1, 2)]
            try:
                k, nmodes, powers, means = spectra(fields, box, pairs, mas=mas, contrast_from_dc=True,
                                                   scheduler=sched, progress=say)
            except HalopaintError as exc:
                raise HalopaintError(f"mass selection '{name}': {exc}") from None
            n_pred = means[0] * n**3
            node = {"k": k, "nmodes": nmodes, "P_pred": powers[0],
                    "attrs": {"poisson_pred": vol / n_pred, "n_halos_pred": n_pred, "mass_bins": list(bins),
                              "k_fundamental": 2 * np.pi / box, "k_nyquist": np.pi * n / box,
                              "units": "k [h/Mpc], P [(Mpc/h)^3]"}}
            bsum = {"k_targets": list(SUMMARY_K), "n_halos_pred": n_pred}
            if ref is not None:
                n_ref = means[1] * n**3
                stats = cross_from_spectra(k, nmodes, powers[0], powers[1], powers[2],
                                           poisson_pred=vol / n_pred, poisson_ref=vol / n_ref,
                                           what=f"mass selection '{name}'")
                node.update({"P_ref": stats.P_hh, "P_cross": stats.P_hp, "T": stats.T, "r_c": stats.r_c,
                             "s": stats.s})
                node["attrs"].update({"poisson_ref": vol / n_ref, "n_halos_ref": n_ref})
                bsum.update({"n_halos_ref": n_ref, "prediction": _at_targets(k, stats)})
                base = None
                if dens_k is not None:
                    shot = vol / n_ref if config.bias_fit_subtract_shot_noise else 0.0
                    try:
                        base = lpt_baseline(k, nmodes, powers[1], powers[3], powers[4],
                                            kmax=config.bias_fit_kmax, shot_noise=shot)
                    except HalopaintError as exc:  # e.g. shot-noise dominated bin in a small box
                        log.warning(f"{name}: 2LPT baseline skipped: {exc}")
                        node["attrs"]["baseline_skipped"] = str(exc)
                        bsum["lpt_baseline_skipped"] = str(exc)
                if base is not None:
                    node.update({"P_matter": powers[3], "P_lpt": base.stats.P_pp, "P_lpt_cross": base.stats.P_hp,
                                 "T_lpt": base.stats.T, "r_c_lpt": base.stats.r_c, "s_lpt": base.stats.s})
                    node["attrs"].update({"bias": base.bias, "bias_fit_kmax": base.kmax,
                                          "bias_fit_bins": base.fit_bins, "bias_fit_modes": base.fit_modes,
                                          "bias_fit_shot_noise": base.shot_noise_subtracted})
                    bsum.update({"bias": base.bias, "lpt_baseline": _at_targets(k, base.stats)})
                _log(f"{name}: count PDFs", say)
                pdf = count_pdf(load(pred, "halos", bins), load(ref, "halos", bins), scheduler=sched)
                pdfs[name] = pdf
                tree.setdefault("pdf", {})[name] = {
                    "counts": pdf.counts, "pdf_pred": pdf.pdf_pred, "pdf_true": pdf.pdf_true, "joint": pdf.joint,
                    "conditional": pdf.conditional,
                    "attrs": {"frac_off_by_3": pdf.frac_off_by_3, "n_voxels": pdf.n_voxels,
                              "binning": pdf.attrs["binning"]}}
                bsum["frac_off_by_3"] = pdf.frac_off_by_3
                if config.patches:
                    _log(f"{name}: {config.patches} patches", say)
                    psize = config.patch_size or box / 4
                    bias = node["attrs"].get("bias")
                    ens = patch_ensemble(
                        PatchSource(pred.path, "halos", bins, config.mas), PatchSource(ref.path, "halos", bins,
                                                                                       config.mas),
                        box, n, count=config.patches, patch_size=psize, seed=config.patch_seed,
                        density=PatchSource(dens.path, "density", None, config.density_mas) if dens else None,
                        bias=bias, scheduler=sched, progress=say)
                    ensembles[name] = ens
                    enode = {"k": ens.k, "nmodes": ens.nmodes,
                             "attrs": {"n_patches": ens.n_patches, "n_excluded": ens.n_excluded,
                                       "patch_size": ens.patch_size, "patch_grid": ens.patch_grid,
                                       "seed": ens.seed}}
                    for key in ens.mean:
                        enode[f"{key}_mean"] = ens.mean[key]
                        enode[f"{key}_std"] = ens.std[key]
                    tree.setdefault("ensemble", {})[name] = enode
            tree["power"][name] = node
            summary["bins"][name] = bsum
            slices[name] = _read_slices(pred, ref, dens, bins)
        # bispectra of every mass selection (or of the sum only)
        if config.bispectrum_configs and config.bispectrum_thetas > 0:
            bispectra = _bispectra(config, pred, ref, dens, tree, planes, transform, load, sched)
    _check_finite(tree)  # before anything is written
    figures = _figures(config, out, tree, pdfs, bispectra, ensembles, slices, pred) if config.figures else {}
    stats_path = out / ("spectra.h5" if config.output_format == "hdf5" else "spectra.json")
    root_attrs = {"grid": n, "box_size": box, "predicted": pred.path, "reference": ref.path if ref else "",
                  "density": dens.path if dens else "", "mas": config.mas, "density_mas": config.density_mas,
                  "redshift": pred.redshift,
                  "conventions": "Pylians: P = V|FFT(delta)|^2/N^6; bins floor(|n|) of width k_F, independent "
                                 "modes, DC dropped, k = mode average; delta = n/mean(n) - 1; shot noise not "
                                 "subtracted (Poisson level V/N_halos reported)"}
    write_tree(tree, stats_path, config.output_format, root_attrs)
    summary["files"] = {"statistics": str(stats_path), **{k: str(v) for k, v in figures.items()}}
    summary["bispectrum"] = {name: {"k1": b["attrs"]["k1"], "k2": b["attrs"]["k2"]}
                             for name, b in tree.get("bispectrum", {}).get("sum", {}).items()}
    summary = _jsonable(summary)
    _atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    summary["files"]["summary"] = str(out / "summary.json")
    _log(f"wrote {stats_path} and {len(figures)} figures in {out}", say)
    return summary


def _at_targets(k, stats) -> dict:
    res = {}
    for target in SUMMARY_K:
        if target > k.max() * 1.5 or target < k.min() / 1.5:
            continue
        kk, T = _nearest(k, stats.T, target)
        _, r = _nearest(k, stats.r_c, target)
        _, s = _nearest(k, stats.s, target)
        res[f"{target:g}"] = {"k": kk, "T": T, "r_c": r, "s": s}
    return res


def _read_slices(pred, ref, dens, bins) -> dict:
    """A slab x ∈ [N/2, N/2 + t), t = max(1, N//32) planes: halo counts summed over the slab and over
    `bins`, density averaged over the slab; (N, N) arrays (and 'thickness' = t)."""
    x = pred.grid // 2
    t = max(1, pred.grid // 32)
    res = {"thickness": t}
    with FieldFile(pred.path) as f:
        res["prediction"] = f.read_halos(bins, x, x + t).sum(axis=(0, 1))
    if ref is not None:
        with FieldFile(ref.path) as f:
            res["reference"] = f.read_halos(bins, x, x + t).sum(axis=(0, 1))
    if dens is not None:
        with FieldFile(dens.path) as f:
            res["density"] = f.read_density(x, x + t).mean(axis=0)
    return res


def _bispectra(config, pred, ref, dens, tree, planes, transform, load, sched) -> dict:
    """B and Q of every mass selection (sum, bin0 …; `bispectrum_sum_only` keeps the sum) and of the matter.

    The 2LPT density's bispectrum is computed once; each selection's baseline Q_lpt = Q_matter / b uses that
    selection's fitted bias (B ∝ b³, P ∝ b²). Results land in tree["bispectrum"][selection]["config{i}"].
    """
    n, box = pred.grid, pred.box_size
    thetas = default_thetas(config.bispectrum_thetas)
    selections = _selections(pred.n_bins)[:1] if config.bispectrum_sum_only else _selections(pred.n_bins)

    def field(info, ds, bins, mas):
        fk = transform(load(info, ds, bins))
        if n <= 256:  # keep δ_k in memory for the 4 + 2·n_θ inverse transforms
            fk = fk.persist(scheduler=sched)
        dc = float(np.real(dfft.compute(fk[0, 0, 0], scheduler=sched)[0]))
        if dc <= 0:
            raise HalopaintError(f"{info.path}: empty field; its bispectrum is undefined")
        return fk, float(n) ** 3 / dc, mas

    def measure(key, fk, scale, mas, k1, k2):
        _log(f"bispectrum k1={k1:g} k2={k2:g} h/Mpc: {key}", config.progress)
        return bispectrum_k(fk, box, k1, k2, thetas, mas=mas, scale=scale, scheduler=sched)

    matter = {}
    if dens is not None:
        fk = field(dens, "density", None, config.density_mas)
        for c, (k1, k2) in enumerate(config.bispectrum_configs):
            try:
                matter[c] = measure("matter", *fk, k1, k2)
            except HalopaintError as exc:
                log.warning(f"bispectrum k1={k1:g} k2={k2:g} skipped: {exc}")
    results = {}
    for sel, bins in selections:
        sources = {"pred": (pred, bins)}
        if ref is not None:
            sources["ref"] = (ref, bins)
        try:
            fields = {key: field(info, "halos", b, config.mas) for key, (info, b) in sources.items()}
        except HalopaintError as exc:
            if sel == "sum":
                raise
            log.warning(f"{sel}: bispectrum skipped: {exc}")   # an empty mass bin in a small box
            continue
        for c, (k1, k2) in enumerate(config.bispectrum_configs):
            name = f"config{c}"
            node = {"theta": thetas, "attrs": {"k1": float(k1), "k2": float(k2), "mass_bins": list(bins),
                                               "units": "theta [rad], k [h/Mpc], B [(Mpc/h)^6]",
                                               "estimator": "FFT shells |k-k_i|<k_F (Pylians Bk)"}}
            try:
                for key, f in fields.items():
                    b = measure(f"{sel} {key}", *f, k1, k2)
                    node.update({"k3": b.k3, "triangles": b.triangles, f"B_{key}": b.B, f"Q_{key}": b.Q})
                    results[(sel, name, key)] = b
            except HalopaintError as exc:
                log.warning(f"{sel}: bispectrum k1={k1:g} k2={k2:g} skipped: {exc}")
                continue
            if c in matter:
                node["B_matter"], node["Q_matter"] = matter[c].B, matter[c].Q
                bias = tree["power"][sel]["attrs"].get("bias")
                if bias:
                    node["Q_lpt"] = matter[c].Q / bias
                    node["B_lpt"] = matter[c].B * bias**3
            tree.setdefault("bispectrum", {}).setdefault(sel, {})[name] = node
    return results


def _figures(config, out, tree, pdfs, bispectra, ensembles, slices, pred) -> dict:
    from halopaint.analysis import plots
    figs = {}
    figs["slices"] = plots.plot_slices(out / "slices.png", slices, pred)
    figs["power"] = plots.plot_power(out / "power.png", tree["power"]["sum"], tree.get("ensemble", {}).get("sum"),
                                     title="summed over mass bins")
    figs["power_bins"] = plots.plot_power_bins(out / "power_bins.png", tree["power"], pred.mass_bin_edges)
    if pdfs:
        figs["pdf"] = plots.plot_pdfs(out / "pdf.png", tree["pdf"], pred.mass_bin_edges)
    if tree.get("bispectrum", {}).get("sum"):
        figs["bispectrum"] = plots.plot_bispectra(out / "bispectrum.png", {"sum": tree["bispectrum"]["sum"]})
    if len(tree.get("bispectrum", {})) > 1:
        figs["bispectrum_bins"] = plots.plot_bispectra(out / "bispectrum_bins.png", tree["bispectrum"],
                                                       pred.mass_bin_edges)
    return figs
