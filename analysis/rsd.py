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
        keep = (mass >= m_min) & (mass < m_max)
        pos = np.asarray(g["pos"][...], dtype=np.float64)[keep]
        vel = np.asarray(g["vel"][...], dtype=np.float64)[keep]
    if not keep.any():
        raise HalopaintError(f"{path}: no halo with mass in [{m_min:.3g}, {m_max:.3g}) M☉/h")
    return Catalogue(pos=pos, vel=vel, mass=mass[keep], box_size=info.box_size, redshift=info.redshift,
                     omega_m=info.cosmology.Omega_m, source=f"{path}:/{names[0]}")


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
        """Largest deviation from 1 of each ratio for k_min ≤ k ≤ k_max, and the band's mean ratios."""
        sel = (self.k >= k_min) & (self.k <= k_max)
        out = {"k_min": k_min, "k_max": k_max, "bins": int(sel.sum())}
        for name in ("p0_real_ratio", "p0_redshift_ratio", "p2_over_p0_ratio"):
            r = getattr(self, name)[sel]
            out[name] = {"max_dev": float(np.max(np.abs(r - 1))), "mean": float(np.mean(r)),
                         "min": float(np.min(r)), "max": float(np.max(r))}
        return out


def compare(pred: Catalogue, ref: Catalogue, grid: int, axes: tuple[int, ...] = (2,)) -> RSDComparison:
    """Multipoles of a predicted catalogue against the reference one (same box) in both spaces, each the
    mean over the lines of sight `axes` (default z only)."""
    if abs(pred.box_size - ref.box_size) > 1e-6 * ref.box_size:
        raise HalopaintError(f"{pred.source} and {ref.source} are of different boxes")
    mp, mr = multipoles_of(pred, grid, axes), multipoles_of(ref, grid, axes)
    k = mr["real"].k
    return RSDComparison(k=k, p0_real_ratio=mp["real"].P0 / mr["real"].P0,
                         p0_redshift_ratio=mp["redshift"].P0 / mr["redshift"].P0,
                         p2_over_p0_ratio=(mp["redshift"].P2 / mp["redshift"].P0)
                         / (mr["redshift"].P2 / mr["redshift"].P0),
                         pred=mp, ref=mr)


def write(group: h5py.Group, comparison: RSDComparison) -> None:
    """/…/{pred,ref}/{real,redshift}/{k, P0, P2, P4, nmodes} and the three ratios, into an open group."""
    for who, sets in (("pred", comparison.pred), ("ref", comparison.ref)):
        for space, m in sets.items():
            g = group.create_group(f"{who}/{space}")
            for name in ("k", "P0", "P2", "P4", "nmodes"):
                g.create_dataset(name, data=getattr(m, name))
            g.attrs.update({"shot_noise": m.shot_noise, "n_objects": m.attrs["n_objects"],
                            "axes": np.asarray(m.attrs.get("axes", [m.axis]), np.int64)})
    for name in ("k", "p0_real_ratio", "p0_redshift_ratio", "p2_over_p0_ratio"):
        group.create_dataset(name, data=getattr(comparison, name))
