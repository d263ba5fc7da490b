"""What a finished light-cone file holds, in one dictionary: shells, halos, snapshot choice, files.

Used by `halopaint demo` and by jobs/lightcone_production.py's closing report.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from halopaint.fields import parts_dir
from halopaint.lightcone.inputs import LightconeError
from halopaint.lightcone.maps import fits_paths


def lightcone_summary(path: str | Path) -> dict:
    """A complete light-cone file OUT.h5 → {shells, z_edges (S+1,), nside, maps (shape), snapshot_choice,
    expected_per_shell (S,) [halos, all selected bins], catalogue_halos (0 without a catalogue), files: OUT.h5,
    its catalogue parts, OUT_shellNN.fits, OUT_catalogue.fits and OUT.png where they exist}. An incomplete
    file is refused (LightconeError)."""
    path = Path(path)
    with h5py.File(path, "r") as h5:
        if not h5.attrs.get("complete", False):
            raise LightconeError(f"{path}: light-cone file incomplete")
        z_edges = np.asarray(h5["shells/z_edges"][...], dtype=np.float64)
        expected = np.asarray(h5["shells/total_expected"][...], dtype=np.float64).sum(axis=1)
        halos = int(h5["catalogue/ra"].shape[0]) if isinstance(h5.get("catalogue"), h5py.Group) else 0
        nside, maps = int(h5.attrs["nside"]), list(h5["maps"].shape)
        choice = str(h5.attrs.get("snapshot_choice", "nearest"))
    stem = path.stem if path.suffix else path.name
    parts = sorted(parts_dir(path).glob("catalogue-rank-*.h5")) if parts_dir(path).is_dir() else []
    extra = [path.with_name(f"{stem}_catalogue.fits"), path.with_suffix(".png")]
    files = [path, *parts, *[p for p in fits_paths(path, len(z_edges) - 1) if p.exists()],
             *[p for p in extra if p.exists()]]
    return {"lightcone": str(path), "shells": len(z_edges) - 1, "z_edges": [round(float(z), 6) for z in z_edges],
            "nside": nside, "maps": maps, "snapshot_choice": choice,
            "expected_per_shell": [round(float(v), 2) for v in expected], "catalogue_halos": halos,
            "files": [str(p) for p in files]}
