"""Paint outputs: per-rank part files (`/halos` + `/tile_done` resume record) and the master file
(virtual dataset over the parts, `complete = True` last, atomic rename)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np

from halopaint.decomposition import SlabPlan
from halopaint.fields import check_writable, parts_dir, temporary_path
from halopaint.model import ModelBundle
from halopaint.paint.checks import PaintError


def part_path(out, rank: int) -> Path:
    return parts_dir(out) / f"rank-{rank:04d}.h5"


def model_digest(bundle: ModelBundle, bins) -> str:
    """SHA-256 of the painted generators' weights (resume refuses a different model)."""
    h = hashlib.sha256()
    for b in bins:
        for name in sorted(bundle.generators[b]):
            h.update(name.encode())
            h.update(bundle.generators[b][name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def resume_refusal(path: Path, plan_key: dict) -> str | None:
    """Why `--resume` cannot reuse the part at `path` (None: it can, or there is none / it is unreadable and
    will be repainted). Read-only: a refused resume touches no file."""
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as h5:
            key = h5.attrs.get("plan")
    except OSError:
        return None
    if key != json.dumps(plan_key, sort_keys=True):
        return (f"cannot resume: {path} was written for a different plan (model, input, ranks, bins, tiles or "
                "kernels changed); rerun without --resume (the existing output is left as it is)")
    return None


class PartFile:
    """One rank's part: `/halos` (n_bins, x1−x0, N, N) float32 and `/tile_done` (n_tiles,) uint8.

    Attr `plan` (JSON) identifies what was painted; `--resume` reuses a part only if it matches.
    Data of a tile is flushed before its `tile_done` flag, so a flag never claims unwritten data.
    """

    def __init__(self, path: Path, plan_key: dict, n_bins: int, thickness: int, grid: int, n_tiles: int,
                 resume: bool):
        self.path = path
        self.key = json.dumps(plan_key, sort_keys=True)
        self.reused = False
        self.note = None
        if resume and path.exists():
            try:
                h5 = h5py.File(path, "r+")
            except OSError:
                self.note = f"{path} was unreadable (killed mid-write?); repainting this rank's slab"
            else:
                if h5.attrs.get("plan") != self.key:
                    h5.close()
                    raise PaintError(f"cannot resume: {path} was written for a different plan "
                                     "(model, input, ranks, bins, tiles or kernels changed); "
                                     "rerun without --resume")
                self.h5, self.reused = h5, True
        if not self.reused:
            self.h5 = h5py.File(path, "w")
            self.h5.attrs["plan"] = self.key
            self.h5.attrs["part_complete"] = False
            self.h5.create_dataset("halos", shape=(n_bins, thickness, grid, grid), dtype=np.float32)
            self.h5.create_dataset("tile_done", shape=(n_tiles,), dtype=np.uint8, fillvalue=0)
            self.h5.flush()
        self.halos = self.h5["halos"]
        self.done = np.asarray(self.h5["tile_done"][...], dtype=bool)
        self.painted = 0          # tiles painted by this run

    def write_tile(self, index: int, tile, outputs: list[np.ndarray]) -> None:
        a, b, y0, y1, z0, z1 = tile
        for j, out in enumerate(outputs):
            self.halos[j, a:b, y0:y1, z0:z1] = out
        self.h5.flush()
        self.h5["tile_done"][index] = 1
        self.h5.flush()
        self.done[index] = True
        self.painted += 1

    def finish(self) -> None:
        self.h5.attrs["part_complete"] = True
        self.h5.close()

    def close(self) -> None:
        if self.h5:
            self.h5.close()


def write_master(out: Path, plan: SlabPlan, n_bins: int, attrs: dict) -> None:
    """Master OUT: `/halos` as a virtual dataset over the part files; complete=True last; atomic rename."""
    check_writable(out)
    layout = h5py.VirtualLayout(shape=(n_bins, plan.grid, plan.grid, plan.grid), dtype=np.float32)
    rel = parts_dir(out).name
    for r in range(plan.ranks):
        x0, x1 = plan.bounds(r)
        src = h5py.VirtualSource(f"{rel}/rank-{r:04d}.h5", "halos", shape=(n_bins, x1 - x0, plan.grid, plan.grid))
        layout[:, x0:x1] = src
    tmp = temporary_path(out)
    try:
        with h5py.File(tmp, "w") as f:
            for key, value in attrs.items():
                f.attrs[key] = value
            f.create_virtual_dataset("halos", layout, fillvalue=np.nan)
            f.attrs["complete"] = True
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
