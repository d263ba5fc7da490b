"""`halopaint sample`: the count laws, the streams, the catalogue and the file driver (serial).

Statistical tolerances are stated per test; every random input has a fixed seed, so the tests are
deterministic (they can still fail if the code is wrong: each bound is several σ of the estimator, and the
wrong law — e.g. Poisson where α ≠ 0 — misses it by far more).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import lognormal_density, random_bundle, write_density_file
from halopaint.config import Cosmology, DensityRecipe
from halopaint.fields import FieldFile, standard_attrs, write_field
from halopaint.model import BundleMetadata, CountModel, ModelBundle, ModelBundleError, generator_digest
from halopaint.sample import (SampleConfig, catalogue_plane, draw_counts, fit_count_law, fit_mass_slope,
                              fit_velocity_law, poisson_count_model, realization_parts_dir, sample,
                              sample_counts, sample_masses, slab_cic_readout, voxel_counts, voxel_density_gradient)
# the numpy reference of the numba kernel: no numba thread pool in this process (it changes torch's last bits
# in later in-process paint tests)
from halopaint.sim.grids import cic_readout_numpy as cic_readout

EDGES = [1e12, 3e12, 1e13, 3e13]


# ------------------------------------------------------------------------------------------ helpers

def make_count_model(alpha=(-0.4, 0.5, -0.8), slope=(0.8, 1.0, 1.2), sigma=(150.0, 100.0, 0.0),
                     gain=(1.15, 0.9, 1.0)) -> CountModel:
    n = len(alpha)
    return CountModel(alpha=[[a] for a in alpha], mu_breaks=[[] for _ in range(n)], mass_slope=list(slope),
                      velocity_dispersion=None if sigma is None else list(sigma),
                      velocity_bias=None if gain is None else list(gain), provenance={"test": True})


def expected_field(n_bins: int, n: int, seed: int, means=(0.4, 0.1, 0.03)) -> np.ndarray:
    """(n_bins, n, n, n) float32 expected counts: a lognormal field scaled to `means`, with some zeros."""
    out = np.stack([means[b] * lognormal_density(n, seed + b, sigma=0.8) for b in range(n_bins)])
    out[:, :, :2] = 0.0
    return out.astype(np.float32)


def write_painted(path, mu: np.ndarray, count_model: CountModel | None, box: float | None = None, seed: int = 5,
                  bins=None, edges=EDGES) -> str:
    """A painted field file as `halopaint paint` writes it (attrs incl. model_metadata, painted_mass_bins)."""
    n = mu.shape[1]
    box = 4.0 * n if box is None else box
    bins = list(range(mu.shape[0])) if bins is None else list(bins)
    meta = BundleMetadata(mass_bin_edges=list(edges), voxel_size=box / n, redshift=0.0, count_model=count_model)
    attrs = standard_attrs(box, 0.0, Cosmology(), mass_bin_edges=edges[bins[0]:bins[-1] + 2], seed=seed,
                           density_recipe=DensityRecipe().to_json(), model_metadata=meta.to_json(),
                           painted_mass_bins=np.asarray(bins, np.int64), model="test.pt")
    write_field(path, attrs, halos=mu)
    return str(path)


def smooth_velocity(n: int, seed: int) -> np.ndarray:
    """(3, n, n, n) float32 [km/s]: a smooth periodic random field (long-wavelength modes only)."""
    rng = np.random.default_rng(seed)
    x = np.arange(n) * 2 * np.pi / n
    out = np.zeros((3, n, n, n))
    for c in range(3):
        for _ in range(3):
            k = rng.integers(-2, 3, size=3)
            ph = rng.uniform(0, 2 * np.pi)
            out[c] += 200 * np.cos(k[0] * x[:, None, None] + k[1] * x[None, :, None] + k[2] * x[None, None, :] + ph)
    return out.astype(np.float32)


def write_density_velocity(path, n: int, seed: int = 5, box: float | None = None, velocity=True) -> str:
    box = 4.0 * n if box is None else box
    attrs = standard_attrs(box, 0.0, Cosmology(), seed=seed, density_recipe=DensityRecipe().to_json())
    extra = {"velocity": smooth_velocity(n, seed)} if velocity else {}
    write_field(path, attrs, density=lognormal_density(n, seed), extra=extra)
    return str(path)


def run_cli(*args, ranks: int = 1, timeout: int = 180):
    import shutil
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "halopaint.cli", "sample", *args]
    if ranks > 1:
        cmd = [shutil.which("mpiexec"), "-n", str(ranks), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def serial_comm():
    from mpi4py import MPI
    return MPI.COMM_SELF


# ------------------------------------------------------------------------------------------ the laws

@pytest.mark.parametrize("mu,alpha", [(0.3, -0.5), (0.8, -0.2), (1.5, -0.3), (3.0, -0.15), (0.3, 0.0),
                                      (0.3, 0.7), (2.0, 0.4), (0.05, -0.9), (0.6, -1.0 / 3)])
def test_draws_reproduce_mean_and_target_variance(mu, alpha):
    """m = 400k draws: mean within 5 standard errors; variance within 3 % (≈ 7σ of the sample variance)
    of μ + αμ² (sub- and super-Poisson; K = −1/α integer or not)."""
    m = 400_000
    n = draw_counts(np.full(m, mu), np.full(m, alpha), np.random.default_rng(1))
    target = mu + alpha * mu**2
    assert abs(n.mean() - mu) < 5 * np.sqrt(target / m)
    assert n.var() == pytest.approx(target, rel=0.03)
    assert n.dtype.kind == "i" and n.min() >= 0


def test_too_narrow_targets_get_the_narrowest_law_of_that_mean():
    """μ = 1.3 with α = −0.9 asks for a negative variance: the two-point law on {1, 2} (var 0.21) is drawn."""
    n = draw_counts(np.full(200_000, 1.3), np.full(200_000, -0.9), np.random.default_rng(2))
    assert set(np.unique(n)) == {1, 2}
    assert n.mean() == pytest.approx(1.3, abs=0.005) and n.var() == pytest.approx(0.21, rel=0.03)


def test_fitted_law_reproduces_the_truths_variance_on_synthetic_boxes():
    """Truth drawn with a known α (sub- and super-Poisson) around μ: the fit recovers α within 0.05 and a
    realization from the fitted law has the truth's count variance within 3 %; Poisson misses by > 10 %."""
    mu = expected_field(2, 48, seed=3, means=(0.3, 0.2))      # μ < K = −1/α almost everywhere in bin 0
    true_model = make_count_model(alpha=(-0.3, 0.8), slope=(1, 1), sigma=None, gain=None)
    truth = sample_counts(mu, 11, true_model)
    alpha = [fit_count_law([mu[b]], [truth[b]])[0] for b in range(2)]
    assert alpha[0][0] == pytest.approx(-0.3, abs=0.05) and alpha[1][0] == pytest.approx(0.8, abs=0.1)
    fitted = CountModel(alpha=alpha, mu_breaks=[[], []])
    real = sample_counts(mu, 12, fitted)
    poisson = sample_counts(mu, 12, poisson_count_model(2))
    for b in range(2):
        assert real[b].var() == pytest.approx(truth[b].var(), rel=0.03)
        assert abs(poisson[b].var() / truth[b].var() - 1) > 0.1


def test_fit_with_mu_ranges_recovers_a_piecewise_law():
    """The μ breaks depend on μ only; a law piecewise at that break is recovered within 0.08 per range."""
    mu = expected_field(1, 48, seed=4, means=(0.3,))
    _, breaks, _ = fit_count_law([mu[0]], [mu[0]], mu_ranges=2)
    law = CountModel(alpha=[[0.6, -0.3]], mu_breaks=[breaks])
    truth = sample_counts(mu, 3, law)
    alpha, again, _ = fit_count_law([mu[0]], [truth[0]], mu_ranges=2)
    assert again == breaks and len(alpha) == 2
    np.testing.assert_allclose(alpha, [0.6, -0.3], atol=0.08)


# ---------------------------------------------------------------------------------------- streams

def test_sample_counts_is_deterministic_integer_and_split_invariant():
    mu = expected_field(3, 24, seed=5)
    cm = make_count_model()
    a = sample_counts(mu, 7, cm)
    assert a.dtype == np.int32 and a.shape == mu.shape
    np.testing.assert_array_equal(a, sample_counts(mu, 7, cm))
    assert (a != sample_counts(mu, 8, cm)).mean() > 0.05
    parts = [sample_counts(mu[:, x0:x1], 7, cm, x0=x0) for x0, x1 in ((0, 5), (5, 6), (6, 24))]
    np.testing.assert_array_equal(a, np.concatenate(parts, axis=1))
    # a bin keeps its stream whatever else is sampled with it
    np.testing.assert_array_equal(a[1:2], sample_counts(mu[1:2], 7, cm, bins=[1]))
    assert (a[mu == 0] == 0).all()


def test_mean_of_many_realizations_is_the_painted_mean():
    """200 realizations of a 24³ field. Per voxel with μ·200 ≥ 20 (normal regime): |mean − μ| < 5 standard
    errors (from the realizations' own variance) in ≥ 99.9 % of voxels; per bin over the box: the mean
    count within 5 standard errors of μ's."""
    mu = expected_field(3, 24, seed=6)
    cm = make_count_model()
    reps = 200
    acc, acc2 = np.zeros(mu.shape), np.zeros(mu.shape)
    for s in range(reps):
        n = sample_counts(mu, s, cm)
        acc += n
        acc2 += n.astype(np.float64) ** 2
    mean = acc / reps
    var = np.maximum(acc2 / reps - mean**2, 1e-12) * reps / (reps - 1)
    normal = mu * reps >= 20
    z = np.abs(mean - mu) / np.sqrt(var / reps)
    assert normal.sum() > 10_000 and (z[normal] < 5).mean() >= 0.999
    for b in range(3):
        se = np.sqrt(var[b].sum() / reps) / mu[b].size
        assert abs(mean[b].mean() - mu[b].mean()) < 5 * se


# -------------------------------------------------------------------------------- masses, velocities

def test_masses_stay_in_their_bin_and_the_slope_is_recovered():
    rng = np.random.default_rng(0)
    for beta in (-0.5, 0.0, 0.9, 2.0):
        m = sample_masses(50_000, 1e12, 3e12, beta, rng)
        assert m.min() >= 1e12 and m.max() < 3e12
        assert fit_mass_slope(m, 1e12, 3e12) == pytest.approx(beta, abs=0.05)


def test_slab_readout_equals_whole_box_cic_readout():
    n, box = 16, 100.0                            # n/box not a power of 2: slab offsets would round
    v = smooth_velocity(n, 2)
    rng = np.random.default_rng(1)
    pos = rng.uniform(0, box, (500, 3))
    ref = cic_readout(np.moveaxis(v, 0, -1).astype(np.float64), pos, box)
    np.testing.assert_allclose(slab_cic_readout(v.astype(np.float64), 0, pos, box), ref, rtol=0, atol=1e-9)
    for plane in (0, 7, 15):                      # a slab of planes plane−1 … plane+1 (periodic)
        p = pos.copy()
        p[:, 0] = plane * box / n + (pos[:, 0] % (box / n))
        idx = [(plane - 1) % n, plane, (plane + 1) % n]
        got = slab_cic_readout(v[:, idx].astype(np.float64), plane - 1, p, box)
        np.testing.assert_allclose(got, cic_readout(np.moveaxis(v, 0, -1).astype(np.float64), p, box), atol=1e-9)
        # bit for bit the whole box's: a halo's velocity must not depend on which rank's slab holds it
        assert np.array_equal(got, slab_cic_readout(v.astype(np.float64), 0, p, box))


def test_velocity_law_is_recovered_from_synthetic_halos():
    """Halo velocities = g_b · field at the halo + N(0, σ_b): g_b within 2 %, σ_b within 3 % (20k halos per
    bin); a third, empty bin gives NaN."""
    n, box = 16, 64.0
    v = smooth_velocity(n, 4)
    rng = np.random.default_rng(3)
    sigmas, gains, edges = [80.0, 250.0], [1.2, 0.85], [1e12, 1e13, 1e14, 1e15]
    pos, vel, mass = [], [], []
    for b, (s, g) in enumerate(zip(sigmas, gains)):
        p = rng.uniform(0, box, (20_000, 3))
        pos.append(p)
        field = cic_readout(np.moveaxis(v, 0, -1).astype(np.float64), p, box)
        vel.append(g * field + s * rng.standard_normal((20_000, 3)))
        mass.append(rng.uniform(edges[b], edges[b + 1], 20_000))
    pos = np.concatenate(pos)
    at_halo = slab_cic_readout(v.astype(np.float64), 0, pos, box)
    gain, sigma, counts = fit_velocity_law(at_halo, np.concatenate(vel), np.concatenate(mass), edges)
    assert counts.tolist() == [20_000, 20_000, 0]
    np.testing.assert_allclose(gain[:2], gains, rtol=0.02)
    np.testing.assert_allclose(sigma[:2], sigmas, rtol=0.03)
    assert np.isnan(gain[2]) and np.isnan(sigma[2])
    with pytest.raises(ValueError, match="must both be"):
        fit_velocity_law(at_halo[:, :2], np.concatenate(vel)[:, :2], np.concatenate(mass), edges)


def test_voxel_density_gradient_on_slabs_equals_the_whole_box():
    """The 3×3×3 gradient from a slab of the halo's plane ± 1 (periodic wrap included) equals the whole box's;
    a density linear in y has h∇δ = (0, slope, 0) away from the wrap."""
    n = 12
    rho = lognormal_density(n, 4).astype(np.float64)
    rng = np.random.default_rng(2)
    cells = rng.integers(0, n, (300, 3))
    whole = voxel_density_gradient(rho, 0, cells)
    for plane in (0, 5, n - 1):
        c = cells.copy()
        c[:, 0] = plane
        idx = [(plane - 1) % n, plane, (plane + 1) % n]
        np.testing.assert_allclose(voxel_density_gradient(rho[idx], plane - 1, c),
                                   voxel_density_gradient(rho, 0, c), atol=1e-12)
    assert whole.shape == (300, 3) and np.isfinite(whole).all()
    ramp = np.broadcast_to(1.0 + 0.05 * np.arange(n)[None, :, None], (n, n, n))
    inner = cells[(cells[:, 1] > 0) & (cells[:, 1] < n - 1)]
    np.testing.assert_allclose(voxel_density_gradient(ramp, 0, inner), np.tile([0.0, 0.05, 0.0], (len(inner), 1)),
                               atol=1e-12)
    with pytest.raises(ValueError, match="outside the given slab"):
        voxel_density_gradient(rho[3:6], 3, np.array([[3, 0, 0]]))


def test_velocity_infall_law_is_recovered_from_synthetic_halos():
    """v = g_b · field + γ_b · h∇δ (voxel) + N(0, σ_b): g within 2 %, γ within 5 %, σ within 3 %; without the
    gradient the same call gives the field-only law (three items)."""
    n, box = 16, 64.0
    v = smooth_velocity(n, 4)
    rho = lognormal_density(n, 6, sigma=0.8)
    rng = np.random.default_rng(5)
    edges, laws = [1e12, 1e13, 1e14], [(1.02, 130.0, 120.0), (1.05, -60.0, 80.0)]
    pos, vel, mass, grads = [], [], [], []
    for b, (g, gamma, s) in enumerate(laws):
        p = rng.uniform(0, box, (30_000, 3))
        grad = voxel_density_gradient(rho, 0, np.floor(p * n / box).astype(np.int64))
        field = cic_readout(np.moveaxis(v, 0, -1).astype(np.float64), p, box)
        pos.append(p), grads.append(grad), mass.append(rng.uniform(edges[b], edges[b + 1], 30_000))
        vel.append(g * field + gamma * grad + s * rng.standard_normal((30_000, 3)))
    at_halo = slab_cic_readout(v.astype(np.float64), 0, np.concatenate(pos), box)
    gain, sigma, counts, infall = fit_velocity_law(at_halo, np.concatenate(vel), np.concatenate(mass), edges,
                                                   gradient_at_halo=np.concatenate(grads))
    assert counts.tolist() == [30_000, 30_000]
    np.testing.assert_allclose(gain, [x[0] for x in laws], rtol=0.02)
    np.testing.assert_allclose(infall, [x[1] for x in laws], rtol=0.05)
    np.testing.assert_allclose(sigma, [x[2] for x in laws], rtol=0.03)
    assert len(fit_velocity_law(at_halo, np.concatenate(vel), np.concatenate(mass), edges)) == 3


def test_catalogue_velocities_with_the_infall_term(tmp_path):
    """sample --catalogue with a count model with γ_b: v − g_b·CIC(/velocity) − γ_b·h∇δ(/density) is the
    N(0, σ_b) dispersion (exactly 0 where σ_b = 0); the same seed without γ gives the same positions,
    masses and dispersion draws (the streams do not change)."""
    from dataclasses import replace
    n = 26
    mu = expected_field(3, n, seed=10, means=(1.0, 0.5, 0.3))
    cm = replace(make_count_model(), velocity_infall=[200.0, -80.0, 150.0])
    dens = write_density_velocity(tmp_path / "d.h5", n)
    cats = {}
    for name, law in (("infall", cm), ("field", replace(cm, velocity_infall=None))):
        painted = write_painted(tmp_path / f"p-{name}.h5", mu, law)
        out = tmp_path / f"c-{name}.h5"
        sample(SampleConfig(painted=painted, out=str(out), seed=3, density=dens, catalogue=True), serial_comm())
        with h5py.File(out, "r") as f:
            cats[name] = {k: f["catalogue"][k][...] for k in ("pos", "vel", "mass", "mass_bin")}
    with h5py.File(dens, "r") as d:
        velocity, rho = d["velocity"][...], d["density"][...]
    cat, b = cats["infall"], cats["infall"]["mass_bin"]
    for k in ("pos", "mass", "mass_bin"):
        np.testing.assert_array_equal(cat[k], cats["field"][k])
    pos = cat["pos"].astype(np.float64)
    field = cic_readout(np.moveaxis(velocity, 0, -1).astype(np.float64), pos, 4.0 * n)
    grad = voxel_density_gradient(rho, 0, np.floor(pos / 4.0).astype(np.int64))
    resid = cat["vel"] - field * np.take(cm.velocity_bias, b)[:, None] - grad * np.take(cm.velocity_infall, b)[:, None]
    np.testing.assert_allclose(resid, cats["field"]["vel"] - field * np.take(cm.velocity_bias, b)[:, None], atol=0.05)
    assert np.abs(resid[b == 2]).max() < 0.05 and np.abs(grad[b == 2]).max() > 0.01


def test_count_models_without_infall_load_and_mean_no_infall():
    """A count model dict from before velocity_infall existed loads; its law has γ = 0 (g, σ as stored)."""
    old = make_count_model().to_dict()
    del old["velocity_infall"]
    cm = CountModel.from_dict(old)
    assert cm.velocity_infall is None and not cm.has_infall
    assert cm.velocity_law(0) == (1.15, 150.0, 0.0)
    assert CountModel.from_dict(json.loads(json.dumps(cm.to_dict()))) == cm
    with pytest.raises(ValueError, match="velocity_infall"):
        CountModel(alpha=[[0.0]], mu_breaks=[[]], velocity_infall=[float("nan")])


def test_catalogue_plane_matches_counts_voxels_and_bins():
    n, box = 12, 48.0
    counts = np.zeros((2, n, n), np.int32)
    counts[0, 3, 4], counts[1, 0, 11], counts[0, 11, 0] = 3, 1, 2
    cm = make_count_model(alpha=(-0.3, 0.2), slope=(1.0, 0.5), sigma=(0.0, 0.0), gain=None)
    cat = catalogue_plane(counts, 5, 9, cm, [0, 1], [1e12, 1e13, 1e14], box)
    assert len(cat["mass"]) == 6 and cat["pos"].shape == (6, 3) and cat["vel"].shape == (6, 3)
    assert (cat["mass_bin"] == [0, 0, 0, 0, 0, 1]).all()
    cells = np.floor(cat["pos"].astype(np.float64) / (box / n)).astype(int)
    assert (cells[:, 0] == 5).all()
    assert [tuple(c) for c in cells[:, 1:]] == [(3, 4)] * 3 + [(11, 0)] * 2 + [(0, 11)]
    assert np.all((cat["mass"][:5] >= 1e12) & (cat["mass"][:5] < 1e13))
    assert np.all(cat["vel"] == 0)


# -------------------------------------------------------------------------------------- the bundle

def test_count_model_round_trips_and_old_bundles_still_load(tmp_path):
    old = random_bundle(n_bins=3, seed=1)
    old.save(tmp_path / "old.pt")
    assert "count_model" not in ModelBundle.load(tmp_path / "old.pt").metadata.to_json()
    cm = make_count_model()
    from dataclasses import replace
    cm = replace(cm, generator_sha256=[generator_digest(g) for g in old.generators])
    new = replace(old, metadata=replace(old.metadata, count_model=cm))
    new.save(tmp_path / "new.pt")
    back = ModelBundle.load(tmp_path / "new.pt")
    assert back.metadata.count_model == cm
    stale = replace(new, generators=[{k: v * 2 for k, v in g.items()} for g in new.generators])
    stale.save(tmp_path / "stale.pt")
    with pytest.raises(ModelBundleError, match="count model was fitted for other weights"):
        ModelBundle.load(tmp_path / "stale.pt")


def test_shipped_bundle_has_a_fitted_count_model():
    cm = ModelBundle.load("default").metadata.count_model
    assert cm is not None and cm.n_bins == 4 and all(-1 <= a < 0.2 for row in cm.alpha for a in row)
    # the mean map where the law about μ over-predicts pairs (bins 0, 2, 3), kept in 16 Mpc/h cells
    assert cm.mean_cell == 4 and [b for b in range(4) if cm.has_mean_map_in(b)] == cm.provenance["mean_map_bins"]
    assert cm.provenance["mean_map_bins"] == [0, 2, 3]
    assert [d["seed"] for d in cm.provenance["data"]] == [*range(1, 16), 101]     # the 16 training boxes
    assert cm.velocity_dispersion is not None and all(50 < s < 300 for s in cm.velocity_dispersion)
    assert cm.velocity_bias is not None and all(0.9 < g < 1.5 for g in cm.velocity_bias)
    assert cm.has_infall and all(50 < g < 200 for g in cm.velocity_infall)


@pytest.mark.parametrize("z, bins, seeds", [(0.5, [0, 1, 2, 3], [*range(1, 16), 101]), (1.0, [2, 3], [1, 2, 101])])
def test_shipped_z_bundles_keep_their_mean_maps_in_cells(z, bins, seeds):
    """The z = 0.5 and 1 laws (shipped 2026-12-07 under the cell-law rule): the mean map in the bins the
    where-needed rule picked, fitted on the training boxes of each z's generators."""
    from halopaint.model import shipped_models
    cm = ModelBundle.load(shipped_models()[z]).metadata.count_model
    assert cm.mean_cell == 4 and cm.provenance["mean_map_bins"] == bins
    assert [b for b in range(4) if cm.has_mean_map_in(b)] == bins
    assert [d["seed"] for d in cm.provenance["data"]] == seeds


# -------------------------------------------------------------------------------------- the driver

def test_driver_writes_an_integer_realization_with_attrs(tmp_path):
    mu = expected_field(3, 26, seed=8)
    cm = make_count_model()
    painted = write_painted(tmp_path / "p.h5", mu, cm)
    before = open(painted, "rb").read()
    out = tmp_path / "r.h5"
    sample(SampleConfig(painted=painted, out=str(out), seed=4), serial_comm())
    with FieldFile(out, require=("halos",)) as f:
        halos = np.asarray(f.h5["halos"])
        a = f.info.attrs
        assert f.h5["halos"].dtype == np.int32 and halos.shape == mu.shape
        assert int(a["sample_seed"]) == 4 and int(a["seed"]) == 5 and a["complete"]
        assert json.loads(a["count_model"])["alpha"] == cm.alpha
        assert a["model"] == "test.pt" and "model_metadata" in a
    np.testing.assert_array_equal(halos, sample_counts(mu, 4, cm))
    assert open(painted, "rb").read() == before
    assert os.listdir(realization_parts_dir(out)) == ["rank-0000.h5"]


def test_mass_bin_selection_keeps_each_bins_stream(tmp_path):
    mu = expected_field(3, 26, seed=9)
    painted = write_painted(tmp_path / "p.h5", mu, make_count_model())
    sample(SampleConfig(painted=painted, out=str(tmp_path / "all.h5"), seed=1), serial_comm())
    sample(SampleConfig(painted=painted, out=str(tmp_path / "12.h5"), seed=1, mass_bins=(1, 2)), serial_comm())
    with FieldFile(tmp_path / "all.h5") as a, FieldFile(tmp_path / "12.h5") as b:
        np.testing.assert_array_equal(np.asarray(a.h5["halos"][1:]), np.asarray(b.h5["halos"]))
        np.testing.assert_allclose(b.info.mass_bin_edges, EDGES[1:])


def test_catalogue_is_consistent_with_the_realization(tmp_path):
    """counts of /catalogue per voxel == /halos; positions in [0, L); masses inside their bin's edges;
    velocities = g_b · CIC of /velocity + N(0, σ_b): residual RMS within 10 % of σ_b, exactly 0 where
    σ_b = 0."""
    n = 26
    mu = expected_field(3, n, seed=10, means=(1.0, 0.5, 0.3))
    cm = make_count_model()
    painted = write_painted(tmp_path / "p.h5", mu, cm)
    dens = write_density_velocity(tmp_path / "d.h5", n)
    out = tmp_path / "c.h5"
    res = run_cli(painted, "--out", str(out), "--seed", "3", "--density", dens, "--catalogue")
    assert res.returncode == 0, res.stderr
    with h5py.File(out, "r") as f, h5py.File(dens, "r") as d:
        halos = f["halos"][...]
        cat = {k: f["catalogue"][k][...] for k in ("pos", "vel", "mass", "mass_bin")}
        velocity = d["velocity"][...]
        assert int(f.attrs["catalogue_halos"]) == halos.sum() == len(cat["mass"])
    np.testing.assert_array_equal(voxel_counts(cat["pos"], cat["mass_bin"], [0, 1, 2], n, 4.0 * n), halos)
    assert cat["pos"].min() >= 0 and cat["pos"].max() < 4.0 * n
    b = cat["mass_bin"]
    assert np.all((cat["mass"] >= np.take(EDGES, b)) & (cat["mass"] < np.take(EDGES, b + 1)))
    field = cic_readout(np.moveaxis(velocity, 0, -1).astype(np.float64), cat["pos"].astype(np.float64), 4.0 * n)
    resid = cat["vel"] - field * np.take(cm.velocity_bias, b)[:, None]
    for k, s in enumerate(cm.velocity_dispersion):
        r = resid[b == k]
        if s == 0:
            assert np.abs(r).max() < 1e-2     # float32 storage of the interpolated field
        else:
            assert np.sqrt(np.mean(r**2)) == pytest.approx(s, rel=0.1)


def test_paint_then_sample_uses_the_bundles_count_model(tmp_path):
    """End to end: a bundle with a count model → `halopaint paint` → `halopaint sample` (model auto)."""
    from dataclasses import replace
    bundle = random_bundle(n_bins=3, seed=2)
    cm = replace(make_count_model(), generator_sha256=[generator_digest(g) for g in bundle.generators])
    replace(bundle, metadata=replace(bundle.metadata, count_model=cm)).save(tmp_path / "m.pt")
    dens = write_density_file(tmp_path / "d.h5", n=26, seed=3)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "halopaint.cli", "paint", "--model", str(tmp_path / "m.pt"),
                          "--density", dens, "--out", str(tmp_path / "p.h5"), "--kernels", "reference"],
                         capture_output=True, text=True, timeout=180, env=env)
    assert res.returncode == 0, res.stderr
    res = run_cli(str(tmp_path / "p.h5"), "--out", str(tmp_path / "r.h5"), "--seed", "0")
    assert res.returncode == 0, res.stderr
    with FieldFile(tmp_path / "p.h5") as p, FieldFile(tmp_path / "r.h5") as r:
        np.testing.assert_array_equal(np.asarray(r.h5["halos"]), sample_counts(p.read_halos(), 0, cm))
        assert "model_metadata" in r.info.attrs["count_model_source"]


def test_float32_positions_never_leave_their_voxel():
    """Offsets u just below 1 round onto the next voxel's edge in float32 unless nudged back."""
    from halopaint.sample import float32_inside_voxel
    n, box = 64, 256.0
    cell = np.array([[63, 10, 0], [5, 5, 5], [31, 62, 1]])
    u = np.array([[1 - 1e-9, 1 - 1e-9, 1 - 1e-9], [0.0, 1 - 1e-12, 0.5], [1 - 2e-8, 0.0, 1 - 1e-10]])
    naive = ((cell + u) * (box / n)).astype(np.float32)
    assert (np.floor(naive.astype(np.float64) * n / box) != cell).any()
    p = float32_inside_voxel((cell + u) * (box / n), cell, n, box)
    assert p.dtype == np.float32 and (np.floor(p.astype(np.float64) * n / box) == cell).all()
    assert p.max() < box
