"""FoF mass function of a small PM run against Watson et al. (2013) (colossus).

The full check (256³ particles in 256 Mpc/h, ≥ 100-particle halos within 25 %) takes ~10 min here and
runs in jobs/bench/simulate.py (result in docs/performance.md). CI runs 96³ particles in 192 Mpc/h (particle
mass 7.0e11 M☉/h, 8× the default run's) and checks halos of ≥ 40 particles within 30 %
(bins with ≥ 40 halos; the Poisson error of the sparsest bin is ~15 %).
"""

from __future__ import annotations

import numpy as np
import pytest

from halopaint.config import SimulateConfig
from halopaint.sim import nbody_halos
from halopaint.sim.cosmology import T_CMB, LinearCosmology
from halopaint.sim.massfunction import mass_function

colossus_cosmology = pytest.importorskip("colossus.cosmology.cosmology")
from colossus.lss import mass_function as colossus_mf  # noqa: E402


@pytest.mark.slow
def test_fof_mass_function_matches_watson13():
    config = SimulateConfig(grid=16, box_size=192.0, particles_per_side=96, seed=3)
    c = config.cosmology
    lin = LinearCosmology(c)
    catalog, _ = nbody_halos(config, lin)
    mp = lin.particle_mass(config.box_size, config.n_particles_side)
    edges = mp * np.logspace(np.log10(40), np.log10(1280), 6)
    centres, dndlnm, counts = mass_function(catalog.mass, config.box_size, edges)
    colossus_cosmology.setCosmology("halopaint-mf-test", params=dict(
        flat=True, H0=100 * c.h, Om0=c.Omega_m, Ob0=c.Omega_b, sigma8=c.sigma8, ns=c.n_s, Tcmb0=T_CMB,
        relspecies=False), persistence="")
    watson = colossus_mf.massFunction(centres, 0.0, mdef="fof", model="watson13", q_out="dndlnM",
                                      ps_args=dict(model="eisenstein98"))
    good = counts >= 40
    assert good.sum() >= 3, counts
    ratio = dndlnm[good] / watson[good]
    assert np.all(np.abs(ratio - 1) < 0.30), (ratio, counts)


@pytest.mark.parametrize("z", [0.0, 0.5, 1.0])
def test_watson13_fit_matches_colossus(z):
    """sim.massfunction.watson13_dndlnm (the light cone's mass draws) against colossus' watson13 FoF."""
    from halopaint.config import Cosmology
    from halopaint.sim.massfunction import watson13_dndlnm
    c = Cosmology()
    colossus_cosmology.setCosmology("halopaint-w13", params=dict(
        flat=True, H0=100 * c.h, Om0=c.Omega_m, Ob0=c.Omega_b, sigma8=c.sigma8, ns=c.n_s, Tcmb0=T_CMB,
        relspecies=False), persistence="")
    m = np.logspace(12, 14.5, 41)
    ours = watson13_dndlnm(LinearCosmology(c), m, z)
    ref = colossus_mf.massFunction(m, z, mdef="fof", model="watson13", q_out="dndlnM",
                                   ps_args=dict(model="eisenstein98"))
    assert np.max(np.abs(ours[1:-1] / ref[1:-1] - 1)) < 0.01     # end points: one-sided slope
