"""Light cones from painted or sampled boxes: comoving shells around an observer, the periodic box replicated
to cover them, HEALPix maps per shell and mass bin (HDF5, and FITS with --fits), and halo catalogues with
positions, masses, peculiar velocities and observed redshifts (docs/lightcones.md).

    geometry   χ(z), shells and their snapshots, periodic replicas
    inputs     what is accepted (snapshots, density files, options) and what is refused
    maps       HEALPix accumulation, MPI reduction, FITS maps, the figure
    catalogue  halos per voxel → (ra, dec, chi, z_cos, z_obs, v_los, mass, mass_bin)
    driver     `build`: the distributed run and its output files
"""

from halopaint.lightcone.catalogue import CATALOGUE_COLUMNS, VelocitySlab, observed_redshift
from halopaint.lightcone.driver import build, parts_dir, write_fits_catalogue
from halopaint.lightcone.geometry import (C_OVER_H0, DistanceRedshift, Geometry, ShellPlan, plan_shells, replicas,
                                          subsample_offsets)
from halopaint.lightcone.inputs import LightconeError
from halopaint.lightcone.maps import fits_paths, write_fits_maps

__all__ = ["build", "CATALOGUE_COLUMNS", "C_OVER_H0", "DistanceRedshift", "Geometry", "ShellPlan", "LightconeError",
           "VelocitySlab", "fits_paths", "observed_redshift", "parts_dir", "plan_shells", "replicas",
           "subsample_offsets", "write_fits_catalogue", "write_fits_maps"]
