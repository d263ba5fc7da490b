"""Real- and redshift-space multipoles of halo catalogues: a sampled catalogue against the N-body truth.

Reads the catalogue of a field file — `/catalogue/{pos, vel, mass}` of a sampled file, or the simulator's
FoF `/catalog/{pos, vel, mass}` — keeps the halos with mass in [m_min, m_max) [M☉/h], and measures P0, P2,
P4 (halopaint.analysis.multipoles: plane-parallel, line of sight a grid axis, Pylians conventions, CIC mesh
with its compensation, shot noise reported not subtracted) in real space and in redshift space.
`compare(pred, ref)` gives the ratios the model card quotes: P0_pred/P0_ref in both spaces and
(P2/P0)_pred / (P2/P0)_ref in redshift space, per k bin.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import h5py
import numpy as np

from halopaint.analysis.multipoles import Multipoles, catalogue_multipoles
from halopaint.errors import HalopaintError
from halopaint.fields import FieldFile

GROUPS = ("catalogue", "catalog")      # sampled/painted outputs, the simulator's FoF truth


@dataclass
class Catalogue:
    """Halos of one file: pos (n, 3) [Mpc/h], vel (n, 3) [km/s], mass (n,) [M☉/h], and the file's facts."""

    pos: np.ndarray
    vel: np.ndarray
    mass: np.ndarray
    box_size: float
    redshift: float
    omega_m: float
    source: str

    def select(self, m_min: float = 0.0, m_max: float = np.inf) -> "Catalogue":
        """The halos with m_min ≤ mass < m_max [M☉/h] (possibly none)."""
        keep = (self.mass >= m_min) & (self.mass < m_max)
        return replace(self, pos=self.pos[keep], vel=self.vel[keep], mass=self.mass[keep])


def read_catalogue(path: str, m_min: float = 0.0, m_max: float = np.inf, group: str | None = None) -> Catalogue:
    """The halos of `path` with m_min ≤ mass < m_max [M☉/h] (group: 'catalogue', 'catalog' or auto)."""
    with FieldFile(path) as f:
        info, h5 = f.info, f.h5
        names = [group] if group else [g for g in GROUPS if g in h5]
        if not names or names[0] not in h5 or not isinstance(h5[names[0]], h5py.Group):
            raise HalopaintError(f"{path}: no halo catalogue (/catalogue or /catalog)")
        g = h5[names[0]]
        for col in ("pos", "vel", "mass"):
            if col not in g:
                raise HalopaintError(f"{path}: /{names[0]} has no '{col}' column (velocities: simulate and "
                                     "sample --catalogue write them)")
        mass = np.asarray(g["mass"][...], dtype=np.float64)
        pos = np.asarray(g["pos"][...], dtype=np.float64)
        vel = np.asarray(g["vel"][...], dtype=np.float64)
    n = len(mass)
    if mass.shape != (n,) or pos.shape != (n, 3) or vel.shape != (n, 3):
        raise HalopaintError(f"{path}: /{names[0]} columns must be pos (n, 3), vel (n, 3), mass (n,); got "
                             f"{pos.shape}, {vel.shape}, {mass.shape}")
    if not (np.isfinite(pos).all() and np.isfinite(vel).all() and np.isfinite(mass).all()):
        raise HalopaintError(f"{path}: /{names[0]} holds NaN/Inf")
    cat = Catalogue(pos=pos, vel=vel, mass=mass, box_size=info.box_size, redshift=info.redshift,
                    omega_m=info.cosmology.Omega_m, source=f"{path}:/{names[0]}").select(m_min, m_max)
    if not len(cat.mass):
        raise HalopaintError(f"{path}: no halo with mass in [{m_min:.3g}, {m_max:.3g}) M☉/h")
    return cat


def average_multipoles(sets: list[Multipoles]) -> Multipoles:
    """The mean of P0, P2, P4 over several lines of sight of one catalogue (same k bins); attrs['axes']
    lists them (the usual way to beat down the quadrupole's variance in a periodic box)."""
    first = sets[0]
    mean = {name: np.mean([getattr(m, name) for m in sets], axis=0) for name in ("P0", "P2", "P4")}
    return replace(first, **mean, attrs=dict(first.attrs, axes=[m.axis for m in sets]))


def multipoles_of(cat: Catalogue, grid: int, axes: tuple[int, ...] = (2,)) -> dict[str, Multipoles]:
    """{'real': …, 'redshift': …} multipoles of a catalogue on a grid³ CIC mesh; the redshift-space ones
    (and the real-space P2, P4) averaged over the lines of sight `axes`."""
    common = dict(box_size=cat.box_size, grid=grid, redshift=cat.redshift, omega_m=cat.omega_m, mas="cic")
    return {"real": average_multipoles([catalogue_multipoles(cat.pos, None, axis=a, **common) for a in axes]),
            "redshift": average_multipoles([catalogue_multipoles(cat.pos, cat.vel, axis=a, **common)
                                            for a in axes])}


@dataclass
class RSDComparison:
    """Per k bin [h/Mpc]: P0 ratios in real and redshift space, and the ratio of the quadrupole-to-monopole
    ratios in redshift space (prediction over reference); `pred` / `ref` hold the multipoles."""

    k: np.ndarray
    p0_real_ratio: np.ndarray
    p0_redshift_ratio: np.ndarray
    p2_over_p0_ratio: np.ndarray
    pred: dict
    ref: dict

    def band(self, k_min: float = 0.05, k_max: float = 0.2) -> dict:
        """Largest deviation from 1 of each ratio for k_min ≤ k ≤ k_max, the band's mean, min, max and the
        ratio in each of its k-bins (`values`)."""
        sel = (self.k >= k_min) & (self.k <= k_max)
        out = {"k_min": k_min, "k_max": k_max, "bins": int(sel.sum())}
        for name in ("p0_real_ratio", "p0_redshift_ratio", "p2_over_p0_ratio"):
            r = getattr(self, name)[sel]
            out[name] = {"max_dev": float(np.max(np.abs(r - 1))), "mean": float(np.mean(r)),
                         "min": float(np.min(r)), "max": float(np.max(r)), "values": r.tolist()}
        return out


def compare(pred: Catalogue, ref: Catalogue, grid: int, axes: tuple[int, ...] = (2,)) -> RSDComparison:
    """Multipoles of a predicted catalogue against the reference one (same box) in both spaces, each the
    mean over the lines of sight `axes` (default z only)."""
    check_same_box(pred, ref)
    return ratios(multipoles_of(pred, grid, axes), multipoles_of(ref, grid, axes))


def check_same_box(pred: Catalogue, ref: Catalogue) -> None:
    """Refuse catalogues of different box sides (their meshes and k bins would not match)."""
    if abs(pred.box_size - ref.box_size) > 1e-6 * ref.box_size:
        raise HalopaintError(f"{pred.source} (box {pred.box_size:g} Mpc/h) and {ref.source} (box "
                             f"{ref.box_size:g} Mpc/h) are of different boxes")


def ratios(mp: dict[str, Multipoles], mr: dict[str, Multipoles]) -> RSDComparison:
    """The comparison of already measured multipoles ({'real', 'redshift'} of each, same mesh)."""
    return RSDComparison(k=mr["real"].k, p0_real_ratio=mp["real"].P0 / mr["real"].P0,
                         p0_redshift_ratio=mp["redshift"].P0 / mr["redshift"].P0,
                         p2_over_p0_ratio=(mp["redshift"].P2 / mp["redshift"].P0)
                         / (mr["redshift"].P2 / mr["redshift"].P0),
                         pred=mp, ref=mr)


def multipoles_tree(sets: dict[str, Multipoles]) -> dict:
    """{real, redshift}/{k, P0, P2, P4, nmodes, attrs} of one catalogue, as a tree of arrays."""
    return {space: {"k": m.k, "P0": m.P0, "P2": m.P2, "P4": m.P4, "nmodes": m.nmodes,
                    "attrs": {"shot_noise": m.shot_noise, "n_objects": m.attrs["n_objects"], "axis": m.axis,
                              "axes": np.asarray(m.attrs.get("axes", [m.axis]), np.int64)}}
            for space, m in sets.items()}


def comparison_tree(comparison: RSDComparison) -> dict:
    """{pred,ref}/{real,redshift}/… and the three ratios per k bin, as a tree of arrays."""
    tree = {"pred": multipoles_tree(comparison.pred), "ref": multipoles_tree(comparison.ref)}
    for name in ("k", "p0_real_ratio", "p0_redshift_ratio", "p2_over_p0_ratio"):
        tree[name] = getattr(comparison, name)
    return tree


def write(group: h5py.Group, comparison: RSDComparison) -> None:
    """/…/{pred,ref}/{real,redshift}/{k, P0, P2, P4, nmodes} and the three ratios, into an open group."""
    def put(g: h5py.Group, node: dict) -> None:
        for key, value in node.items():
            if key == "attrs":
                g.attrs.update(value)
            elif isinstance(value, dict):
                put(g.create_group(key), value)
            else:
                g.create_dataset(key, data=value)
    put(group, comparison_tree(comparison))


def band_means(sets: dict[str, Multipoles], k_min: float = 0.05, k_max: float = 0.2) -> dict:
    """One catalogue's band averages for k_min ≤ k ≤ k_max: ⟨P2/P0⟩ in redshift space (the Kaiser ratio)
    and ⟨P0_redshift/P0_real⟩ (the monopole boost)."""
    real, red = sets["real"], sets["redshift"]
    sel = (red.k >= k_min) & (red.k <= k_max)
    if not sel.any():
        return {"bins": 0}
    return {"bins": int(sel.sum()), "p2_over_p0_redshift": float(np.mean(red.P2[sel] / red.P0[sel])),
            "p0_redshift_over_real": float(np.mean(red.P0[sel] / real.P0[sel])),
            "n_objects": int(red.attrs["n_objects"])}


@dataclass
class Selection:
    """The multipoles of one mass selection: 'sum' (every bin) or 'binB'; ref and comparison with a
    reference catalogue, else None."""

    name: str
    m_min: float
    m_max: float
    pred: dict
    ref: dict | None = None
    comparison: RSDComparison | None = None

    def summary(self, k_min: float = 0.05, k_max: float = 0.2) -> dict:
        """Band summary: each catalogue's band_means and, with a reference, comparison.band()."""
        out = {"m_min": self.m_min, "m_max": self.m_max, "k_min": k_min, "k_max": k_max,
               "pred": band_means(self.pred, k_min, k_max)}
        if self.ref is not None:
            out["ref"] = band_means(self.ref, k_min, k_max)
            if out["pred"]["bins"]:
                out["ratios"] = self.comparison.band(k_min, k_max)
        return out


def selections(edges) -> list[tuple[str, float, float]]:
    """('sum', edges[0], edges[-1]) and ('binB', edges[B], edges[B+1]) of mass-bin edges [M☉/h];
    without edges (None) the one selection 'sum' of every halo."""
    if edges is None:
        return [("sum", 0.0, np.inf)]
    e = [float(v) for v in edges]
    return [("sum", e[0], e[-1])] + [(f"bin{b}", e[b], e[b + 1]) for b in range(len(e) - 1)]


def measure(pred: Catalogue, ref: Catalogue | None = None, grid: int = 64, axis: int = 2,
            mass_bin_edges=None, on_skip=None) -> dict[str, Selection]:
    """Multipoles of `pred` (and `ref`, with the ratios) in real and redshift space, for every mass bin
    of `mass_bin_edges` [M☉/h] and all of them together ('sum'); grid³ CIC mesh, line of sight `axis`.

    A bin empty in either catalogue is left out (`on_skip(name, reason)` is told); an empty 'sum' is an error.
    """
    if ref is not None:
        check_same_box(pred, ref)
    out: dict[str, Selection] = {}
    for name, lo, hi in selections(mass_bin_edges):
        p = pred.select(lo, hi)
        r = ref.select(lo, hi) if ref is not None else None
        empty = [c.source for c in (p, r) if c is not None and not len(c.mass)]
        if empty:
            reason = f"no halo with mass in [{lo:.3g}, {hi:.3g}) M☉/h in {', '.join(empty)}"
            if name == "sum":
                raise HalopaintError(reason)
            if on_skip:
                on_skip(name, reason)
            continue
        mp = multipoles_of(p, grid, (axis,))
        mr = multipoles_of(r, grid, (axis,)) if r is not None else None
        out[name] = Selection(name, lo, hi, mp, mr, ratios(mp, mr) if mr is not None else None)
    return out
