"""Binned halo mass function dn/dlnM of a catalogue (for the simulator's checks and figures)."""

from __future__ import annotations

import numpy as np


def mass_function(mass: np.ndarray, box_size: float, edges: np.ndarray):
    """dn/dlnM [(Mpc/h)⁻³] in bins `edges` [M☉/h] → (geometric bin centres, dn/dlnM, counts)."""
    edges = np.asarray(edges, dtype=np.float64)
    counts, _ = np.histogram(np.asarray(mass, dtype=np.float64), bins=edges)
    dlnm = np.diff(np.log(edges))
    return np.sqrt(edges[:-1] * edges[1:]), counts / box_size**3 / dlnm, counts
