"""`mpiexec -n 2 halopaint paint …` as a user runs it: bad input, a rank killed mid-run, resume, dry run.

Each run is a subprocess with a timeout, so a hang fails the test instead of stalling CI.
"""

import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import lognormal_density, random_bundle, write_density_file
from halopaint.fields import FieldFile
from halopaint.paint import KILL_HOOK_ENV, parts_dir

MPIEXEC = shutil.which("mpiexec")
needs_mpiexec = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec on PATH")
TIMEOUT = 120


def halopaint(*args, ranks=2, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != KILL_HOOK_ENV}
    env.update(OMP_NUM_THREADS="1", **(env_extra or {}))
    cmd = [sys.executable, "-m", "halopaint.cli", "paint", "--kernels", "reference", *args]
    if ranks > 1:
        cmd = [MPIEXEC, "-n", str(ranks), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "halopaint paint: error:" in line]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("paintcli")
    random_bundle(n_bins=1, seed=3).save(d / "model.pt")
    write_density_file(d / "density.h5", n=41, seed=4)
    return d


@needs_mpiexec
def test_bad_input_gives_one_line_and_nonzero_exit_from_every_rank(files, tmp_path):
    rho = lognormal_density(41, 1)
    rho[3, 4, 5] = -1.0
    bad = write_density_file(tmp_path / "neg.h5", n=41, density=rho)
    out = tmp_path / "o.h5"
    res = halopaint("--model", str(files / "model.pt"), "--density", bad, "--out", str(out))
    assert res.returncode != 0
    lines = error_lines(res.stderr)
    assert len(lines) == 1 and "negative" in lines[0], res.stderr
    assert not out.exists()
    res = halopaint("--model", str(files / "model.pt"), "--density", str(tmp_path / "missing.h5"),
                    "--out", str(out))
    assert res.returncode != 0 and "no such file" in res.stderr and not out.exists()


@needs_mpiexec
@pytest.mark.slow
def test_killed_rank_does_not_hang_and_resume_is_bit_equal(files, tmp_path):
    common = ["--model", str(files / "model.pt"), "--density", str(files / "density.h5"), "--tile", "5,41,41"]
    full = tmp_path / "full.h5"
    res = halopaint(*common, "--out", str(full))
    assert res.returncode == 0, res.stderr
    out = tmp_path / "cut.h5"
    res = halopaint(*common, "--out", str(out), env_extra={KILL_HOOK_ENV: "1:2"})
    assert res.returncode != 0  # rank 1 SIGKILLed itself after 2 of its 4 tiles; mpiexec ended the job
    assert not out.exists()
    with h5py.File(parts_dir(out) / "rank-0001.h5", "r") as f:
        assert int(f["tile_done"][...].sum()) == 2 and not bool(f.attrs["part_complete"])
    res = halopaint(*common, "--out", str(out), "--resume")
    assert res.returncode == 0, res.stderr
    with FieldFile(full) as a, FieldFile(out) as b:
        np.testing.assert_array_equal(a.read_halos(), b.read_halos())
        assert int(b.info.attrs["tiles_reused"]) >= 2


@needs_mpiexec
def test_dry_run_under_mpiexec_prints_the_plan_once(files):
    res = halopaint("--model", str(files / "model.pt"), "--dry-run", "--grid", "1024", "--max-memory", "4GiB")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("plan: N=1024") == 1 and "R=2" in res.stdout
    assert "ranks 0..1 (2): 512 planes" in res.stdout


@needs_mpiexec
def test_local_job_script_paints_with_two_ranks(files, tmp_path):
    out = tmp_path / "job.h5"
    env = {k: v for k, v in os.environ.items() if k != KILL_HOOK_ENV}
    env.update(MODEL=str(files / "model.pt"), OMP_NUM_THREADS="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run(["bash", os.path.join(root, "jobs", "paint_local.sh"), str(files / "density.h5"), str(out),
                          "2", "--kernels", "reference"], capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert res.returncode == 0, res.stderr
    with FieldFile(out) as f:
        assert f.read_halos().shape == (1, 41, 41, 41) and int(f.info.attrs["ranks"]) == 2
