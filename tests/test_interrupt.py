"""Interruption and concurrency (issue 21): SIGINT / SIGTERM during paint, simulate, train and lightcone leave
no file marked complete and one clear message; `--resume` after SIGKILL (and after SIGINT/SIGTERM) gives a
bit-identical result; a second run on an output that a running job holds is refused naming the holder; under
`mpiexec -n 2` one rank signalled → the whole job ends (no hang), nothing complete.

Signals are sent at a fixed point of the work by the test hook HALOPAINT_TEST_SIGNAL="NAME:RANK:K:SIGNAL"
(halopaint.validation.interruption_point; paint also keeps HALOPAINT_TEST_KILL_AFTER_TILES), or from outside
for simulate once it reports progress. Every run is a subprocess with a timeout, so a hang fails the test.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import random_bundle, write_density_file
from halopaint.config import Cosmology
from halopaint.fields import FieldFile, standard_attrs, write_field
from halopaint.model import ModelBundle
from halopaint.paint import KILL_HOOK_ENV
from halopaint.validation import SIGNAL_HOOK_ENV, OutputLock, OutputLockedError, lock_path
from train_data import write_training_file

BIN = os.path.dirname(sys.executable)
MPIEXEC = shutil.which("mpiexec", path=BIN) or shutil.which("mpiexec")
needs_mpiexec = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec")
TIMEOUT = 180
N = 28
TILE = ["--tile", f"7,{N},{N}"]             # 4 tiles per rank-slab of 28 planes


def _env(extra=None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (KILL_HOOK_ENV, SIGNAL_HOOK_ENV)
           and not k.startswith(("MASTER_", "RANK", "LOCAL_RANK", "WORLD_SIZE", "PMI_", "OMPI_", "SLURM_"))}
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra or {})
    return env


def cli(*args, ranks: int = 1, hook: str | None = None, env_extra=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "halopaint.cli", *args]
    if ranks > 1:
        cmd = [MPIEXEC, "-n", str(ranks), *cmd]
    extra = dict(env_extra or {})
    if hook:
        extra[SIGNAL_HOOK_ENV] = hook
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=_env(extra))


def error_lines(stderr: str, command: str) -> list[str]:
    return [line for line in stderr.splitlines() if f"halopaint {command}: error:" in line]


def is_complete(path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("complete") is not None and bool(f.attrs["complete"]) is True
    except OSError:
        return False


def no_leftovers(directory) -> None:
    """No temporary file of an atomic write and no lock file left behind."""
    left = [p for p in glob.glob(os.path.join(str(directory), "**", ".*"), recursive=True) if ".tmp-" in p]
    locks = glob.glob(os.path.join(str(directory), "**", "*.lock"), recursive=True)
    assert not left and not locks, (left, locks)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("interrupt")
    random_bundle(n_bins=1, seed=3).save(d / "model.pt")
    write_density_file(d / "dens.h5", n=N, seed=4)
    write_training_file(d / "train.h5", n=N, seed=1, n_bins=1)
    write_training_file(d / "val.h5", n=N, seed=2, n_bins=1)
    with FieldFile(d / "dens.h5") as f:
        rho = f.read_density()
    attrs = standard_attrs(4.0 * N, 0.0, Cosmology(), mass_bin_edges=[1e12, 1e14], seed=1)
    write_field(d / "painted.h5", attrs, halos=(0.3 * rho[None]).astype(np.float32))
    full = d / "full.h5"
    res = cli("paint", "--kernels", "reference", "--model", str(d / "model.pt"), "--density", str(d / "dens.h5"),
              "--out", str(full), *TILE)
    assert res.returncode == 0, res.stderr
    return d


def paint_args(files, out) -> list[str]:
    return ["paint", "--kernels", "reference", "--model", str(files / "model.pt"), "--density",
            str(files / "dens.h5"), "--out", str(out), *TILE]


def read_halos(path) -> np.ndarray:
    with FieldFile(path, require=("halos",)) as f:
        return f.read_halos()


# ------------------------------------------------------------------------------------------------ paint

@pytest.mark.parametrize("sig", ["INT", "TERM", "KILL"])
def test_paint_interrupted_then_resumed_is_bit_identical(files, tmp_path, sig):
    out = tmp_path / "cut.h5"
    if sig == "KILL":
        res = cli(*paint_args(files, out), env_extra={KILL_HOOK_ENV: "0:2"})
        assert res.returncode == -signal.SIGKILL
    else:
        res = cli(*paint_args(files, out), hook=f"paint:0:2:{sig}")
        assert res.returncode == 2, res.stderr
        lines = error_lines(res.stderr, "paint")
        assert len(lines) == 1 and f"interrupted by SIG{sig}" in lines[0] and "--resume" in lines[0], res.stderr
        assert "Traceback" not in res.stderr
        no_leftovers(tmp_path)
    assert not out.exists()                        # the master is written last: nothing marked complete
    if sig == "INT":
        return                                     # resume is checked after SIGTERM and SIGKILL
    res = cli(*paint_args(files, out), "--resume")
    assert res.returncode == 0, res.stderr
    np.testing.assert_array_equal(read_halos(out), read_halos(files / "full.h5"))
    with h5py.File(out, "r") as f:
        assert int(f.attrs["tiles_reused"]) == 2
    no_leftovers(tmp_path)


@needs_mpiexec
@pytest.mark.parametrize("sig", ["TERM", "INT"])
def test_paint_one_rank_of_two_signalled_ends_the_job(files, tmp_path, sig):
    out = tmp_path / "cut.h5"
    res = cli(*paint_args(files, out), ranks=2, hook=f"paint:1:1:{sig}")
    assert res.returncode != 0
    assert f"interrupted by SIG{sig}" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not out.exists() and not is_complete(out)
    if sig == "INT":
        return
    res = cli(*paint_args(files, out), "--resume", ranks=2)
    assert res.returncode == 0, res.stderr
    with h5py.File(out, "r") as f:
        assert int(f.attrs["tiles_reused"]) >= 1
    want = read_halos(files / "full.h5")
    np.testing.assert_allclose(read_halos(out), want, rtol=0, atol=1e-6 * np.abs(want).max())


def _wait_stopped(proc: subprocess.Popen, timeout: float = TIMEOUT) -> None:
    """Until `proc` has stopped itself (SIGSTOP from the hook): state 'T' in /proc/PID/stat."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.communicate()}")
        with open(f"/proc/{proc.pid}/stat") as f:
            if f.read().split(")")[-1].split()[0] == "T":
                return
        time.sleep(0.05)
    raise AssertionError("never stopped")


def test_two_paints_on_one_output_the_second_is_refused_and_the_first_completes(files, tmp_path):
    out = tmp_path / "shared.h5"
    first = subprocess.Popen([sys.executable, "-m", "halopaint.cli", *paint_args(files, out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_env({SIGNAL_HOOK_ENV: "paint:0:1:STOP"}))
    try:
        _wait_stopped(first)                       # mid-run, holding the lock
        second = cli(*paint_args(files, out))
        assert second.returncode == 2
        lines = error_lines(second.stderr, "paint")
        assert len(lines) == 1 and f"another run (pid {first.pid}" in lines[0], second.stderr
        assert not out.exists()                    # the loser touched nothing
        os.kill(first.pid, signal.SIGCONT)
        _, err = first.communicate(timeout=TIMEOUT)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
    np.testing.assert_array_equal(read_halos(out), read_halos(files / "full.h5"))
    assert not lock_path(out).exists()


def test_a_killed_holder_releases_the_lock(files, tmp_path):
    out = tmp_path / "o.h5"
    res = cli(*paint_args(files, out), env_extra={KILL_HOOK_ENV: "0:1"})
    assert res.returncode == -signal.SIGKILL and lock_path(out).exists()   # stale file, no holder
    res = cli(*paint_args(files, out))
    assert res.returncode == 0, res.stderr
    assert is_complete(out) and not lock_path(out).exists()


def test_output_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    out = tmp_path / "x.h5"
    with OutputLock(out, "halopaint test"):
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}.*halopaint test"):
            OutputLock(out).acquire()
    with OutputLock(out):                          # released: free again
        pass
    assert not lock_path(out).exists()


# --------------------------------------------------------------------------------------------- simulate

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_simulate_interrupted_leaves_nothing(tmp_path, sig):
    out = tmp_path / "sim.h5"
    proc = subprocess.Popen([sys.executable, "-m", "halopaint.cli", "simulate", "--grid", "32", "--box", "128",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
    try:
        for line in proc.stderr:                   # first progress line: the simulation is under way
            if line.startswith("halopaint simulate:") and "error" not in line:
                break
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err
    lines = error_lines(err, "simulate")
    assert len(lines) == 1 and f"interrupted by {sig.name}" in lines[0], err
    assert "Traceback" not in err
    assert not out.exists()
    no_leftovers(tmp_path)


@pytest.mark.parametrize("sig", ["INT", "TERM"])
def test_simulate_one_rank_of_two_signalled_ends_the_job(tmp_path, sig):
    """Distributed simulate: rank 1 signals itself before writing its second redshift → the job ends (no
    hang), one clear message, no file marked complete."""
    out = tmp_path / "snap_z{z}.h5"
    res = cli("simulate", "--lpt-only", "--grid", "24", "--box", "96", "--redshift", "0.0,1.0", "--out", str(out),
              ranks=2, hook=f"simulate:1:2:{sig}")
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    # the signalled rank's one line is printed before it aborts the job; the launcher may cut it short
    assert all("interrupted by SIG" in line for line in error_lines(res.stderr, "simulate")), res.stderr
    assert not is_complete(tmp_path / "snap_z1.h5")


# ------------------------------------------------------------------------------------------------ train

def train_args(files, out, steps: int = 4) -> list[str]:
    return ["train", "--data", str(files / "train.h5"), "--validation", str(files / "val.h5"), "--out", str(out),
            "--steps", str(steps), "--patch", "8", "--adversarial-weight", "0", "--supervised-weight", "1",
            "--checkpoint-every", "1", "--validate-every", "2", "--validation-patches", "1", "--seed", "5",
            "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(files):
    out = files / "full.pt"
    res = cli(*train_args(files, out))
    assert res.returncode == 0, res.stderr
    return ModelBundle.load(out)


@pytest.mark.parametrize("sig", ["INT", "TERM", "KILL"])
def test_train_interrupted_is_not_complete_and_resumes_bit_identical(files, trained, tmp_path, sig):
    out = tmp_path / "m.pt"
    res = cli(*train_args(files, out), hook=f"train:0:2:{sig}")
    if sig == "KILL":
        assert res.returncode == -signal.SIGKILL
    else:
        assert res.returncode == 2, res.stderr
        lines = error_lines(res.stderr, "train")
        assert len(lines) == 1 and f"interrupted by SIG{sig}" in lines[0], res.stderr
        assert "Traceback" not in res.stderr
    cut = ModelBundle.load(out)                    # the last atomic checkpoint: step 1 of 4, not complete
    assert cut.metadata.training["steps"] == 1 and cut.metadata.training["complete"] is False
    if sig == "INT":
        no_leftovers(tmp_path)
        return                                     # resume is checked after SIGTERM and SIGKILL
    res = cli(*train_args(files, out), "--resume")
    assert res.returncode == 0, res.stderr
    done = ModelBundle.load(out)
    assert done.metadata.training["complete"] is True and trained.metadata.training["complete"] is True
    for key, value in trained.generators[0].items():
        assert np.array_equal(done.generators[0][key].numpy(), value.numpy()), key
    if sig != "KILL":
        no_leftovers(tmp_path)


@needs_mpiexec
def test_train_one_rank_of_two_terminated_ends_the_job(files, tmp_path):
    out = tmp_path / "m.pt"
    res = cli(*train_args(files, out, steps=6), ranks=2, hook="train:1:2:TERM")
    assert res.returncode != 0
    assert "interrupted by SIGTERM" in res.stderr, res.stderr
    if out.exists():
        assert ModelBundle.load(out).metadata.training["complete"] is False


# -------------------------------------------------------------------------------------------- lightcone

def lightcone_args(files, out) -> list[str]:
    return ["lightcone", str(files / "painted.h5"), "--out", str(out), "--z-max", "0.03", "--shells", "2",
            "--nside", "8"]


@pytest.mark.parametrize("catalogue", [[], ["--catalogue"]], ids=["maps", "catalogue"])
@pytest.mark.parametrize("sig", ["INT", "TERM"])
def test_lightcone_interrupted_leaves_nothing(files, tmp_path, sig, catalogue):
    """With --catalogue one rank writes its rows into the master's temporary file as it goes: interrupted,
    that file is removed and nothing appears under the final name."""
    out = tmp_path / "lc.h5"
    res = cli(*lightcone_args(files, out), *catalogue, hook=f"lightcone:0:8:{sig}")
    assert res.returncode == 2, res.stderr
    lines = error_lines(res.stderr, "lightcone")
    assert len(lines) == 1 and f"interrupted by SIG{sig}" in lines[0], res.stderr
    assert not out.exists() and not out.with_suffix(".png").exists()
    no_leftovers(tmp_path)


@needs_mpiexec
@pytest.mark.parametrize("catalogue", [[], ["--catalogue"]], ids=["maps", "catalogue"])
def test_lightcone_one_rank_of_two_terminated_ends_the_job(files, tmp_path, catalogue):
    """Rank 1 stops after its first plane block while rank 0 runs on: no master, and no part file marked
    complete (a rank's part is completed only after every rank has finished its planes)."""
    out = tmp_path / "lc.h5"
    res = cli(*lightcone_args(files, out), *catalogue, ranks=2, hook="lightcone:1:8:TERM")
    assert res.returncode != 0
    assert "interrupted by SIGTERM" in res.stderr, res.stderr
    assert not out.exists()
    assert not [p for p in glob.glob(str(tmp_path / "lc.h5.parts" / "*.h5")) if is_complete(p)]
