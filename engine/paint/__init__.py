"""The distributed paint driver (`halopaint paint`), as a package along the jobs it does:

- `checks`: PaintError, collective errors agreed over ranks, model/input compatibility, density scan;
- `plan`:   tile planning and per-rank memory (`choose_tile`, `tiles_of_slab`, `tile_bytes`, …);
- `tiles`:  the padded input of one tile, input normalisation, the whole-box reference paint;
- `io`:     per-rank part files and the virtual-dataset master file;
- `driver`: the distributed loop (`paint`) and the plan printer (`dry_run`).

The names other modules and tests import from `halopaint.paint` are re-exported here.
"""

from halopaint.paint.checks import (REDSHIFT_ATOL, PaintError, agree, collective_error, cosmology_mismatch,
                                    density_defects, model_mismatches, resolve_bins)
from halopaint.paint.driver import KILL_HOOK_ENV, RankReport, dry_run, measure_throughput, paint
from halopaint.paint.io import PartFile, model_digest, part_path, parts_dir, resume_refusal, write_master
from halopaint.paint.plan import (ACTIVATION_CHANNELS, DEFAULT_WORKING_SET_FACTOR, RUNTIME_OVERHEAD_BYTES,
                                  TileShape, choose_tile, fixed_bytes, forced_tile, kernel_fixed_bytes,
                                  kernel_working_set_factor, padded_work, split_extent, tile_bytes,
                                  tiles_of_slab)
from halopaint.paint.tiles import normalise_input, paint_whole_box, read_tile_input

__all__ = [
    "ACTIVATION_CHANNELS", "DEFAULT_WORKING_SET_FACTOR", "KILL_HOOK_ENV", "REDSHIFT_ATOL", "RUNTIME_OVERHEAD_BYTES",
    "PaintError", "PartFile", "RankReport", "TileShape", "agree", "choose_tile", "collective_error",
    "cosmology_mismatch", "density_defects", "dry_run", "fixed_bytes", "forced_tile", "kernel_fixed_bytes",
    "padded_work", "resume_refusal",
    "kernel_working_set_factor", "measure_throughput", "model_digest", "model_mismatches", "normalise_input",
    "paint", "paint_whole_box", "part_path", "parts_dir", "read_tile_input", "resolve_bins", "split_extent",
    "tile_bytes", "tiles_of_slab", "write_master",
]
