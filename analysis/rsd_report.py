"""`halopaint spectra PRED.h5 --multipoles [--reference TRUE.h5] --out DIR`: the multipoles of halo catalogues.

`run(MultipolesConfig)` reads the halo catalogue of each file (a sampled `/catalogue` or the simulator's FoF
`/catalog`, halopaint.analysis.rsd), and for every mass bin of the prediction's `mass_bin_edges` and all of
them together ('sum') measures P0, P2, P4 in real and redshift space (plane-parallel along --los, CIC mesh
with its compensation, Pylians conventions: halopaint.analysis.multipoles); with a reference also the
ratios P0_pred/P0_ref (both spaces) and (P2/P0)_pred/(P2/P0)_ref. It writes `DIR/multipoles.h5`,
`DIR/multipoles.json` (the band summary, 0.05 ≤ k ≤ 0.2 h/Mpc) and `DIR/multipoles.png`, each atomically,
logs the band summary and returns it. Layout: docs/formats.md#multipoles-halopaint-spectra---multipoles.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from halopaint.analysis import rsd
from halopaint.analysis.report import _atomic_write_text, _jsonable, write_tree
from halopaint.config import MultipolesConfig
from halopaint.errors import HalopaintError
from halopaint.fields import FieldInfo, read_info
from halopaint.log import get_logger
from halopaint.validation import check_output_dir

log = get_logger(__name__)
LOS = {"x": 0, "y": 1, "z": 2}


def line_of_sight(los) -> int:
    """'x' | 'y' | 'z' → the grid axis 0 | 1 | 2."""
    if str(los).lower() not in LOS:
        raise HalopaintError(f"--los {los!r}: the line of sight must be x, y or z")
    return LOS[str(los).lower()]


def mesh_grid(grid, info: FieldInfo) -> int:
    """The multipole mesh side: `grid` (a positive even integer) or, when None, the prediction's grid
    (rounded up to even)."""
    if grid is None:
        return info.grid + info.grid % 2
    try:
        value = int(str(grid).strip())
    except ValueError:
        raise HalopaintError(f"--multipole-grid {grid!r}: must be a positive even integer") from None
    if value <= 0 or value % 2:
        raise HalopaintError(f"--multipole-grid {grid!r}: must be a positive even integer")
    return value


def _edges(info: FieldInfo):
    edges = info.mass_bin_edges if info.mass_bin_edges is not None else info.attrs.get("mass_bin_edges")
    return None if edges is None else np.asarray(edges, dtype=np.float64).ravel()


def validate(cfg: MultipolesConfig) -> dict:
    """Everything refused before any output: the line of sight, the mesh grid, each file a valid field file
    with a halo catalogue with velocities, the same box and the same mass-bin edges, --out a new or writable
    directory that is not an input's. Returns the facts
    run() needs: axis, grid, edges, the catalogues."""
    axis = line_of_sight(cfg.los)
    if not cfg.predicted:
        raise HalopaintError("no prediction file given")
    pred_info = read_info(cfg.predicted)
    ref_info = read_info(cfg.reference) if cfg.reference else None
    grid = mesh_grid(cfg.grid, pred_info)
    edges = _edges(pred_info)
    if ref_info is not None:
        if not math.isclose(ref_info.box_size, pred_info.box_size, rel_tol=1e-6):
            raise HalopaintError(f"{ref_info.path}: box_size {ref_info.box_size:g} Mpc/h differs from the "
                                 f"prediction's {pred_info.box_size:g} Mpc/h ({pred_info.path})")
        ref_edges = _edges(ref_info)
        if edges is not None and ref_edges is not None and (
                ref_edges.shape != edges.shape or not np.allclose(ref_edges, edges, rtol=1e-6)):
            raise HalopaintError(f"{ref_info.path}: mass_bin_edges {ref_edges.tolist()} differ from the "
                                 f"prediction's {edges.tolist()}")
    k_min, k_max = cfg.band
    if not 0 <= k_min < k_max:
        raise HalopaintError(f"band {cfg.band}: need 0 ≤ k_min < k_max [h/Mpc]")
    check_output_dir(cfg.out, [p for p in (cfg.predicted, cfg.reference) if p])
    pred = rsd.read_catalogue(cfg.predicted)
    ref = rsd.read_catalogue(cfg.reference) if cfg.reference else None
    return {"axis": axis, "grid": grid, "edges": edges, "pred": pred, "ref": ref, "pred_info": pred_info}


def run(cfg: MultipolesConfig) -> dict:
    """Everything `halopaint spectra --multipoles` does; returns the JSON-serialisable summary (also
    DIR/multipoles.json): per selection the band summary (rsd.Selection.summary), the skipped bins, the
    mesh, and 'files'. On error nothing is left in `cfg.out` (a directory this call created is removed)."""
    facts = validate(cfg)
    out = Path(cfg.out)
    created = not out.exists()
    try:
        return _run(cfg, facts, out)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def _run(cfg: MultipolesConfig, facts: dict, out: Path) -> dict:
    out.mkdir(exist_ok=True)
    pred, ref, grid, axis = facts["pred"], facts["ref"], facts["grid"], facts["axis"]
    skipped: dict[str, str] = {}

    def skip(name: str, reason: str) -> None:
        log.warning(f"{name}: multipoles skipped: {reason}")
        skipped[name] = reason

    log.info(f"multipoles of {pred.source}" + (f" against {ref.source}" if ref else "")
             + f" on a {grid}³ CIC mesh, line of sight {cfg.los}")
    sel = rsd.measure(pred, ref, grid=grid, axis=axis, mass_bin_edges=facts["edges"], on_skip=skip)
    k_min, k_max = cfg.band
    tree, bands = {}, {}
    for name, s in sel.items():
        node = rsd.comparison_tree(s.comparison) if s.comparison is not None else {"pred": rsd.multipoles_tree(s.pred)}
        bands[name] = s.summary(k_min, k_max)
        node["attrs"] = {"m_min": s.m_min, "m_max": s.m_max, "band": bands[name]}
        tree[name] = node
        log.info(_band_line(name, bands[name]))
    root = {"predicted": cfg.predicted, "reference": cfg.reference or "", "grid": grid,
            "box_size": pred.box_size, "redshift": pred.redshift, "omega_m": pred.omega_m, "los": cfg.los,
            "axis": axis, "mas": "cic", "mass_bin_edges": facts["edges"], "skipped": skipped,
            "conventions": "Pylians Pk(axis): P_l = (2l+1) V <|d_k|^2 L_l(mu)>/N^6 over independent modes, bins "
                           "floor(|n|), DC dropped, k = mode average; CIC mesh compensated; shot noise V/n "
                           "reported, not subtracted; s = x + v_los/(aH), periodic"}
    stats = out / "multipoles.h5"
    write_tree(tree, stats, "hdf5", root)
    files = {"statistics": str(stats)}
    if cfg.figures:
        from halopaint.analysis.plots import multipoles_figure
        title = (f"{Path(cfg.predicted).name}" + (f" vs {Path(cfg.reference).name}" if cfg.reference else "")
                 + f", all mass bins, line of sight {cfg.los}")
        files["figure"] = str(multipoles_figure(sel["sum"], out / "multipoles.png", title))
    summary = _jsonable({"grid": grid, "box_size": pred.box_size, "los": cfg.los, "k_min": k_min, "k_max": k_max,
                         "selections": bands, "skipped": skipped, "files": files})
    _atomic_write_text(out / "multipoles.json", json.dumps(summary, indent=1))
    summary["files"]["summary"] = str(out / "multipoles.json")
    log.info(f"wrote {stats} in {out}")
    return summary


def _band_line(name: str, band: dict) -> str:
    head = f"{name}: {band['k_min']:g} ≤ k ≤ {band['k_max']:g} h/Mpc"
    pred = band["pred"]
    if not pred["bins"]:
        return f"{head}: no k bin in the band"
    text = (f"{head} ({pred['bins']} bins): pred P2/P0 = {pred['p2_over_p0_redshift']:.3f}, "
            f"P0_s/P0_r = {pred['p0_redshift_over_real']:.3f}")
    if "ratios" in band:
        r = band["ratios"]
        text += (f"; ref P2/P0 = {band['ref']['p2_over_p0_redshift']:.3f}; pred/ref P0 real "
                 f"{r['p0_real_ratio']['mean']:.3f}, P0 redshift {r['p0_redshift_ratio']['mean']:.3f}, "
                 f"P2/P0 {r['p2_over_p0_ratio']['mean']:.3f}")
    return text
