"""Periodic friends-of-friends groups (scipy cKDTree pairs + sparse connected components)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class HaloCatalog:
    """FoF groups: centre of mass pos (h, 3) [Mpc/h] in [0, L), member count n_part (h,), mass (h,) [M☉/h],
    and vel (h, 3): the members' mean velocity (in the unit of the velocities given; None if none given).

    Sorted by decreasing n_part, then by the smallest member index (deterministic).
    """

    pos: np.ndarray
    n_part: np.ndarray
    mass: np.ndarray
    vel: np.ndarray | None = None


def fof_labels(pos: np.ndarray, box_size: float, linking_length: float) -> np.ndarray:
    """Group label of each particle (m,) int64; particles closer than linking_length [Mpc/h] (periodic)
    share a label. Labels are numbered by first appearance in particle order."""
    pos = np.ascontiguousarray(np.mod(pos, box_size), dtype=np.float64)
    # cKDTree needs coordinates strictly inside [0, L)
    pos[pos >= box_size] = 0.0
    m = pos.shape[0]
    tree = cKDTree(pos, boxsize=box_size)
    pairs = tree.query_pairs(linking_length, output_type="ndarray")
    del tree
    graph = coo_matrix((np.ones(pairs.shape[0], dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(m, m))
    del pairs
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def fof_groups(pos: np.ndarray, box_size: float, particle_mass: float, linking_length: float,
               min_particles: int, vel: np.ndarray | None = None) -> HaloCatalog:
    """FoF halos with ≥ min_particles members; centres of mass unwrapped across the periodic boundary
    around the group's first member. pos (m, 3) [Mpc/h], linking_length [Mpc/h]; vel (m, 3) optional
    particle velocities → the catalogue's mean member velocity (h, 3)."""
    pos = np.asarray(pos, dtype=np.float64)
    labels = fof_labels(pos, box_size, linking_length)
    counts = np.bincount(labels)
    keep = counts >= min_particles
    if not keep.any():
        return HaloCatalog(np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros(0),
                           None if vel is None else np.zeros((0, 3)))
    member = keep[labels]
    idx = np.nonzero(member)[0]
    lab = labels[idx]
    # first member of each group = reference point for unwrapping
    first = np.full(counts.size, -1, dtype=np.int64)
    first[lab[::-1]] = idx[::-1]
    ref = pos[first[lab]]
    offset = pos[idx] - ref
    offset -= box_size * np.round(offset / box_size)
    centre = np.empty((counts.size, 3))
    for d in range(3):
        centre[:, d] = np.bincount(lab, weights=offset[:, d], minlength=counts.size)
    groups = np.nonzero(keep)[0]
    n_part = counts[groups]
    centre = np.mod(centre[groups] / n_part[:, None] + pos[first[groups]], box_size)
    centre[centre >= box_size] = 0.0
    order = np.lexsort((first[groups], -n_part))
    mean_vel = None
    if vel is not None:
        vel = np.asarray(vel, dtype=np.float64).reshape(-1, 3)
        mean_vel = np.stack([np.bincount(lab, weights=vel[idx, d], minlength=counts.size)[groups]
                             for d in range(3)], axis=1) / n_part[:, None]
        mean_vel = mean_vel[order]
    return HaloCatalog(pos=centre[order], n_part=n_part[order].astype(np.int64),
                       mass=n_part[order] * float(particle_mass), vel=mean_vel)
