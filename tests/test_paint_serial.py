"""The paint driver in one process: exactness against the whole-box paint, output format, bad inputs, resume.

Exactness criterion everywhere: max|painted − whole-box| ≤ 1e-6 · max|whole-box| (float32 convolutions
on different tile extents round differently; identical tiles are bit-equal).
"""

import json
import os
import shutil

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from conftest import lognormal_density, random_bundle, write_density_file
from halopaint.config import Cosmology, DensityRecipe, PaintConfig
from halopaint.errors import HalopaintError
from halopaint.fields import FieldFile, FieldFileError, standard_attrs, write_field
from halopaint.model import InputNormalisation, ModelBundle
from halopaint.paint import PaintError, dry_run, paint, paint_whole_box, parts_dir

N = 61


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    """A 2-bin random bundle with a non-trivial input normalisation, a 61³ density and its reference."""
    d = tmp_path_factory.mktemp("paint")
    bundle = random_bundle(n_bins=2, seed=5)
    bundle.metadata.input_normalisation = InputNormalisation(offset=1.0, scale=0.7)
    bundle.save(d / "model.pt")
    density = write_density_file(d / "density.h5", n=N, seed=11)
    with FieldFile(density) as f:
        rho = f.read_density()
    reference = paint_whole_box(ModelBundle.load(d / "model.pt"), rho)
    return dict(dir=d, model=str(d / "model.pt"), density=density, reference=reference)


def run_paint(box, out, **kw) -> str:
    cfg = PaintConfig(model=box["model"], density=kw.pop("density", box["density"]), out=str(out),
                      kernels="reference", **kw)
    paint(cfg, MPI.COMM_WORLD)
    return str(out)


def read_halos(path):
    with FieldFile(path, require=("halos",)) as f:
        return f.read_halos(), f.info


def assert_close(got, want):
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()


@pytest.mark.parametrize("tile", [None, (61, 61, 61), (8, 61, 61), (9, 17, 30)])
def test_single_rank_equals_whole_box_paint(box, tmp_path, tile):
    out = run_paint(box, tmp_path / "out.h5", tile=tile)
    halos, info = read_halos(out)
    assert_close(halos, box["reference"])
    if tile is None:  # one tile holding the whole box: the same computation, bit for bit
        np.testing.assert_array_equal(halos, box["reference"])
    assert info.grid == N and info.n_bins == 2 and info.voxel_size == pytest.approx(4.0)


def test_output_is_a_virtual_master_over_part_files_with_provenance(box, tmp_path):
    out = run_paint(box, tmp_path / "painted.h5", mass_bins=(1,), tile=(20, 61, 61))
    assert (tmp_path / "painted.parts" / "rank-0000.h5").exists()
    with h5py.File(out, "r") as f:
        assert f["halos"].is_virtual and f["halos"].shape == (1, N, N, N)
        attrs = dict(f.attrs)
        assert bool(attrs["complete"])
        np.testing.assert_allclose(attrs["mass_bin_edges"], random_bundle(2).metadata.mass_bin_edges[1:3])
        assert attrs["ranks"] == 1 and json.loads(attrs["kernels"]) == ["reference"]
        assert json.loads(attrs["devices"]) == ["cpu"] and attrs["wall_time_s"] > 0
        assert attrs["model"].endswith("model.pt") and len(attrs["model_sha256"]) == 64
        assert attrs["input"] == os.path.abspath(box["density"])
        assert list(attrs["painted_mass_bins"]) == [1] and json.loads(attrs["mismatch_warnings"]) == []
    # the master and its parts directory move together (relative virtual sources)
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(out, moved / "painted.h5")
    shutil.move(str(tmp_path / "painted.parts"), moved / "painted.parts")
    cwd = os.getcwd()
    try:
        os.chdir("/")
        halos, _ = read_halos(moved / "painted.h5")
    finally:
        os.chdir(cwd)
    assert_close(halos, box["reference"][1:2])


def test_resume_reuses_finished_tiles_and_is_bit_equal(box, tmp_path):
    out = run_paint(box, tmp_path / "cut.h5", tile=(11, 31, 61))
    want, _ = read_halos(out)
    # pretend the run died: master gone, half the tiles unrecorded and their data garbage
    os.unlink(out)
    with h5py.File(parts_dir(out) / "rank-0000.h5", "r+") as f:
        done = f["tile_done"][...]
        f["tile_done"][::2] = 0                   # tiles (x-part i, y-part 0): y in [0, 31)
        f["halos"][:, :11, :31] = -1.0
        f["halos"][:, 33:44, :31] = np.nan
        assert done.all() and len(done) == 12
        f.attrs["part_complete"] = False
    run_paint(box, out, tile=(11, 31, 61), resume=True)
    got, info = read_halos(out)
    np.testing.assert_array_equal(got, want)
    assert info.attrs["tiles_reused"] == 6


def test_resume_with_a_different_plan_is_refused(box, tmp_path):
    out = run_paint(box, tmp_path / "o.h5", tile=(31, 61, 61), mass_bins=(0,))
    with pytest.raises(PaintError, match="different plan"):
        run_paint(box, out, tile=(30, 61, 61), mass_bins=(0,), resume=True)
    assert not os.path.exists(out)


def test_mismatch_is_refused_unless_allowed(box, tmp_path):
    wrong = write_density_file(tmp_path / "wrong.h5", n=N, box_size=2.0 * N, redshift=1.0, seed=1,
                               recipe=DensityRecipe(particles_per_voxel=1))
    with pytest.raises(HalopaintError) as err:
        run_paint(box, tmp_path / "o.h5", density=wrong)
    msg = str(err.value)
    assert "voxel size" in msg and "redshift" in msg and "density recipe" in msg and "--allow-mismatch" in msg
    assert getattr(err.value, "collective", False) and not (tmp_path / "o.h5").exists()
    out = run_paint(box, tmp_path / "o.h5", density=wrong, allow_mismatch=True, mass_bins=(0,))
    _, info = read_halos(out)
    warnings = json.loads(info.attrs["mismatch_warnings"])
    assert len(warnings) == 3 and bool(info.attrs["allow_mismatch"])


def _density_file(path, rho, **attrs_extra):
    attrs = standard_attrs(4.0 * rho.shape[-1], 0.0, Cosmology(), density_recipe=DensityRecipe().to_json())
    attrs.update(attrs_extra)
    write_field(path, attrs, density=rho)
    return str(path)


def bad_inputs(tmp_path):
    """(name, density path, expected message fragment) for every bad input docs/cli.md lists for paint."""
    rho = lognormal_density(32, 2)
    cases = []
    nan = rho.copy(); nan[17, 3, 4] = np.nan
    cases.append(("nan", _density_file(tmp_path / "nan.h5", nan), "NaN/Inf"))
    inf = rho.copy(); inf[5, 3, 4] = np.inf
    cases.append(("inf", _density_file(tmp_path / "inf.h5", inf), "first at x-plane 5"))
    neg = rho.copy(); neg[30, 0, 0] = -0.5
    cases.append(("negative", _density_file(tmp_path / "neg.h5", neg), "negative"))
    cases.append(("small", _density_file(tmp_path / "small.h5", lognormal_density(24, 1)), "N ≥ 25"))
    cases.append(("missing", str(tmp_path / "nope.h5"), "no such file"))
    with h5py.File(tmp_path / "nodensity.h5", "w") as f:
        for k, v in standard_attrs(128.0, 0.0, Cosmology()).items():
            f.attrs[k] = v
        f["halos"] = np.zeros((1, 32, 32, 32), np.float32)
        f.attrs["mass_bin_edges"] = np.array([1e12, 1e13])
        f.attrs["complete"] = True
    cases.append(("no dataset", str(tmp_path / "nodensity.h5"), "/density"))
    with h5py.File(tmp_path / "incomplete.h5", "w") as f:
        f["density"] = rho
    cases.append(("incomplete", str(tmp_path / "incomplete.h5"), "incomplete"))
    with h5py.File(tmp_path / "shape.h5", "w") as f:
        for k, v in standard_attrs(128.0, 0.0, Cosmology()).items():
            f.attrs[k] = v
        f["density"] = rho[:, :, :30]
        f.attrs["complete"] = True
    cases.append(("shape", str(tmp_path / "shape.h5"), "(N, N, N)"))
    with h5py.File(tmp_path / "rank.h5", "w") as f:
        for k, v in standard_attrs(128.0, 0.0, Cosmology()).items():
            f.attrs[k] = v
        f["density"] = rho[0]
        f.attrs["complete"] = True
    cases.append(("rank", str(tmp_path / "rank.h5"), "(N, N, N)"))
    return cases


def test_every_bad_input_is_one_clear_error_and_writes_nothing(box, tmp_path):
    for name, density, fragment in bad_inputs(tmp_path):
        out = tmp_path / f"out-{name.replace(' ', '_')}.h5"
        with pytest.raises(HalopaintError) as err:
            run_paint(box, out, density=density, allow_mismatch=False)
        assert fragment in str(err.value), (name, str(err.value))
        assert "\n" not in str(err.value)
        assert not out.exists(), name
        if not name.startswith(("missing", "no dataset", "incomplete")):
            assert isinstance(err.value, (PaintError, FieldFileError, HalopaintError))


def test_unwritable_output_is_refused_before_work(box, tmp_path):
    with pytest.raises(HalopaintError, match="does not exist"):
        run_paint(box, tmp_path / "no" / "such" / "dir.h5")
    with pytest.raises(HalopaintError, match="is the input file"):
        run_paint(box, box["density"])
    assert os.path.exists(box["density"])
    (tmp_path / "adir.h5").mkdir()
    with pytest.raises(HalopaintError, match="is a directory"):
        run_paint(box, tmp_path / "adir.h5")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):  # (root ignores permissions)
            with pytest.raises(HalopaintError, match="not writable"):
                run_paint(box, ro / "o.h5")
    finally:
        ro.chmod(0o700)


def test_non_contiguous_or_unknown_bins_are_refused(box, tmp_path):
    with pytest.raises(PaintError, match="does not exist"):
        run_paint(box, tmp_path / "o.h5", mass_bins=(5,))
    bundle3 = random_bundle(n_bins=3)
    bundle3.save(tmp_path / "m3.pt")
    with pytest.raises(PaintError, match="contiguous"):
        paint(PaintConfig(model=str(tmp_path / "m3.pt"), density=box["density"], out=str(tmp_path / "o.h5"),
                          mass_bins=(0, 2), kernels="reference"), MPI.COMM_WORLD)


def test_dry_run_plans_any_grid_and_rank_count(box):
    text = dry_run(PaintConfig(model=box["model"], plan_grid=2048, plan_ranks=64,
                               max_memory_bytes=4 << 30, kernels="reference"), MPI.COMM_WORLD)
    assert "N=2048" in text and "R=64" in text and "32 planes" in text
    assert "estimated wall time" in text and "exchange" in text and "memory ≤" in text
    with pytest.raises(HalopaintError, match="thinner than the ghost width"):
        dry_run(PaintConfig(model=box["model"], plan_grid=61, plan_ranks=16, kernels="reference"), MPI.COMM_WORLD)
