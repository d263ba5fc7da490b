"""Integer halo realizations of painted fields and halo catalogues (`halopaint sample`).

- halopaint.sample.counts: the count law (draws, random streams keyed by seed/bin/x-plane, its fit);
- halopaint.sample.catalogue: catalogue columns (positions, masses, velocities) and their fits;
- halopaint.sample.driver: the MPI file driver (`sample`, `SampleConfig`).
"""

from halopaint.sample.catalogue import (CATALOGUE_COLUMNS, catalogue_plane, fit_mass_slope, fit_velocity_law,
                                        float32_inside_voxel, halo_velocities, sample_masses, slab_cic_readout,
                                        voxel_counts, voxel_density_gradient)
from halopaint.sample.counts import (COUNT_DTYPE, STREAM_CATALOGUE, STREAM_COUNTS, cell_aligned, draw_counts,
                                     exclusion_means, expected_pair_moment, fit_count_law, fit_mean_map, keep_cell_totals,
                                     law_means, plane_rng,
                                     poisson_count_model, sample_counts)
from halopaint.sample.driver import SampleConfig, SampleError, realization_parts_dir, sample

__all__ = ["CATALOGUE_COLUMNS", "COUNT_DTYPE", "STREAM_CATALOGUE", "STREAM_COUNTS", "SampleConfig", "SampleError",
           "catalogue_plane", "cell_aligned", "draw_counts", "exclusion_means", "expected_pair_moment", "fit_count_law",
           "fit_mean_map", "fit_mass_slope", "fit_velocity_law", "float32_inside_voxel", "halo_velocities",
           "keep_cell_totals", "law_means", "plane_rng", "poisson_count_model", "realization_parts_dir", "sample", "sample_counts",
           "sample_masses", "slab_cic_readout", "voxel_counts", "voxel_density_gradient"]
