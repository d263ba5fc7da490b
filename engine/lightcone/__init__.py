"""Light cones from painted or sampled boxes: comoving shells around an observer, the periodic box replicated
to cover them, HEALPix maps per shell and mass bin (HDF5, and FITS with --fits), and halo catalogues with
positions, masses, peculiar velocities and observed redshifts (docs/lightcones.md).

    geometry   χ(z), shells and their nearest snapshots, periodic replicas
    blend      which snapshot owns each voxel-replica (dithered linear blend in z, or nearest)
    inputs     what is accepted (snapshots, density files, options) and what is refused
    maps       HEALPix accumulation, MPI reduction, FITS maps, the figure
    catalogue  halos per voxel → (ra, dec, chi, z_cos, z_obs, v_los, mass, mass_bin)
    driver     `build`: the distributed run and its output files
    summary    `lightcone_summary`: what a finished light-cone file holds (demo, production report)
"""

from halopaint.lightcone.blend import BLENDS, Ownership, blend_weights
from halopaint.lightcone.catalogue import CATALOGUE_COLUMNS, VelocitySlab, observed_redshift
from halopaint.lightcone.driver import build, parts_dir, write_fits_catalogue
from halopaint.lightcone.geometry import (C_OVER_H0, DistanceRedshift, Geometry, ShellPlan, plan_shells, replicas,
                                          subsample_offsets)
from halopaint.lightcone.inputs import LightconeError
from halopaint.lightcone.maps import fits_paths, write_fits_maps
from halopaint.lightcone.summary import lightcone_summary

__all__ = ["build", "BLENDS", "CATALOGUE_COLUMNS", "C_OVER_H0", "DistanceRedshift", "Geometry", "ShellPlan",
           "LightconeError", "Ownership", "VelocitySlab", "blend_weights", "fits_paths", "lightcone_summary",
           "observed_redshift", "parts_dir", "plan_shells", "replicas", "subsample_offsets", "write_fits_catalogue",
           "write_fits_maps"]
