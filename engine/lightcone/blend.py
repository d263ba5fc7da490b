"""Which snapshot paints each voxel-replica of the light cone: a dithered linear blend in redshift, or the
nearest snapshot per shell.

    linear (default)  a voxel-replica whose centre lies at comoving distance r, z = z(r), between adjacent
                      snapshot redshifts z_i < z < z_j is painted from snapshot j with probability
                      w = (z − z_i)/(z_j − z_i) and from i otherwise; below the lowest (above the highest)
                      snapshot redshift from that snapshot. E[counts] is then the linear interpolation in z
                      of the snapshots' counts; a voxel's count distribution is a mixture of the two
                      snapshots' (not the distribution of an interpolated field).
    nearest           the snapshot of the shell holding the voxel centre (ShellPlan.snapshot: nearest the
                      shell's middle redshift); centres beyond the shells take the nearest shell's.

The uniform draws u (N, N) of one (x-plane, replica), indexed by the voxels' (y, z), come from
SeedSequence(seed, BLEND_KEY, plane, replica) — the same whichever snapshot is being processed and on
whichever rank — so exactly one snapshot owns each voxel-replica, and the maps and the catalogue use the
same choice. The catalogue's own streams (seed, snapshot, plane, replica) are separate.
"""

from __future__ import annotations

import numpy as np

from halopaint.config import SNAPSHOT_BLENDS
from halopaint.lightcone.geometry import DistanceRedshift, ShellPlan

BLENDS = SNAPSHOT_BLENDS
SNAPSHOT_RULES = {                # the light-cone file's `snapshot_choice_rule` attr
    "linear": "per voxel-replica: snapshot j with probability (z - z_i)/(z_j - z_i) between adjacent snapshot "
              "redshifts z_i < z < z_j (z of the voxel centre), else i; the nearest one outside their range",
    "nearest": "per shell: the snapshot nearest the shell's middle redshift",
}
BLEND_KEY = 0x424C4E44           # "BLND": the blend's streams never coincide with a catalogue stream's key


def blend_weights(z, snapshot_redshifts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For redshifts z (any shape): the input indices of the snapshots below and above (`lower`, `upper`,
    ints of z's shape) and the probability w ∈ [0, 1] of taking `upper`: w = (z − z_lower)/(z_upper − z_lower)
    between adjacent snapshot redshifts (in any input order), 0 below the lowest (lower = upper = the lowest),
    1 above the highest (lower = upper = the highest). One snapshot: lower = upper = 0, w = 0."""
    z = np.asarray(z, dtype=np.float64)
    zs = np.asarray(snapshot_redshifts, dtype=np.float64)
    order = np.argsort(zs)
    if zs.size == 1:
        zero = np.zeros(z.shape, dtype=np.int64)
        return zero, zero, np.zeros(z.shape)
    s = zs[order]
    k = np.clip(np.searchsorted(s, z, side="right") - 1, 0, s.size - 2)
    w = np.clip((z - s[k]) / (s[k + 1] - s[k]), 0.0, 1.0)
    lower, upper = order[k], order[k + 1]
    below, above = z <= s[0], z >= s[-1]
    return np.where(above, upper, lower), np.where(below, lower, upper), w


class Ownership:
    """The snapshot (input index) owning each voxel-replica of a plane: `owners(plane, rep, r)`."""

    def __init__(self, mode: str, plan: ShellPlan, dist: DistanceRedshift, snapshot_redshifts, seed: int):
        self.mode, self.plan, self.dist, self.seed = mode, plan, dist, int(seed)
        self.redshifts = np.asarray(snapshot_redshifts, dtype=np.float64)

    def owners(self, plane: int, rep, r: np.ndarray) -> np.ndarray:
        """(N, N) int64 owner of the voxels of x-plane `plane` in replica `rep`, whose centres are at
        distances r (N, N) [Mpc/h] from the observer."""
        if self.mode == "nearest" or self.redshifts.size == 1:
            shell = np.searchsorted(self.plan.chi_edges, r, side="right") - 1
            return self.plan.snapshot[np.clip(shell, 0, self.plan.count - 1)].astype(np.int64)
        lower, upper, w = blend_weights(self.dist.redshift(r), self.redshifts)
        if not np.any((w > 0) & (w < 1)):
            return np.where(w >= 1, upper, lower)
        return np.where(self.uniforms(plane, rep, r.shape) < w, upper, lower)

    def uniforms(self, plane: int, rep, shape) -> np.ndarray:
        """The plane-replica's blend draws, U[0, 1) of `shape` (N, N), keyed by (seed, plane, replica) only."""
        key = [self.seed, BLEND_KEY, int(plane), *(int(v) + (1 << 20) for v in rep)]
        return np.random.default_rng(np.random.SeedSequence(key)).random(shape)

    def _owned_redshifts(self, index: int) -> tuple[float, float]:
        """The open redshift interval (below, above) of voxel centres snapshot `index` can own (linear)."""
        s = np.sort(self.redshifts)
        k = int(np.searchsorted(s, self.redshifts[index]))
        below = s[k - 1] if k > 0 else -np.inf          # the snapshot owns z in (below, above), ends open
        above = s[k + 1] if k + 1 < s.size else np.inf
        return float(below), float(above)

    def may_own(self, index: int, z_lo: float, z_hi: float) -> bool:
        """Whether snapshot `index` can own any voxel whose centre redshift lies in [z_lo, z_hi]."""
        if self.mode == "nearest" or self.redshifts.size == 1:
            return bool(np.any(self.plan.snapshot == index))
        below, above = self._owned_redshifts(index)
        return bool(z_lo < above and z_hi > below)

    def chi_range(self, index: int) -> tuple[float, float]:
        """(lo, hi) [Mpc/h]: snapshot `index` owns no voxel-replica whose centre distance is outside (lo, hi)
        (±inf where it reaches past the shells). Lets a plane-replica beyond it be skipped unseen."""
        if self.redshifts.size == 1:
            return -np.inf, np.inf
        edges, count = self.plan.chi_edges, self.plan.count
        if self.mode == "nearest":
            shells = np.flatnonzero(self.plan.snapshot == index)
            if shells.size == 0:
                return np.inf, -np.inf
            lo = -np.inf if shells[0] == 0 else float(edges[shells[0]])
            hi = np.inf if shells[-1] == count - 1 else float(edges[shells[-1] + 1])
            return lo, hi
        below, above = self._owned_redshifts(index)
        top = self.dist.z_max                             # z(χ) is clamped there: stay open beyond it
        lo = -np.inf if below <= 0.0 else (float(self.dist.chi(below)) if below < top else np.inf)
        hi = np.inf if above >= top else float(self.dist.chi(above))
        return lo, hi
