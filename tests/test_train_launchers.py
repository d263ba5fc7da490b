"""`halopaint train` end to end under both launchers a user has: torchrun and mpiexec (2 ranks, gloo, CPU).

The rank/world discovery and the rendezvous differ (torchrun's env:// variables vs rank 0 broadcasting a host
and port over MPI); the training must not: both runs must write the same bundle and record two ranks, and a
checkpoint written under one launcher must resume under the other.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from halopaint.model import ModelBundle
from train_data import write_training_file

BIN = os.path.dirname(sys.executable)
MPIEXEC = shutil.which("mpiexec") or shutil.which("mpiexec", path=BIN)
TORCHRUN = shutil.which("torchrun", path=BIN) or shutil.which("torchrun")
TIMEOUT = 300


def _train_args(data: str, val: str, out, steps: int = 2) -> list[str]:
    return ["-m", "halopaint.cli", "train", "--data", data, "--validation", val, "--out", str(out),
            "--steps", str(steps), "--patch", "20", "--n-critic", "2", "--seed", "3", "--supervised-weight", "0.5",
            "--checkpoint-every", "1", "--validate-every", "1", "--quiet"]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MASTER_", "RANK", "LOCAL_RANK", "WORLD_SIZE", "PMI_", "OMPI_", "SLURM_"))}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env)


@pytest.mark.slow
@pytest.mark.skipif(MPIEXEC is None or TORCHRUN is None, reason="needs both mpiexec and torchrun on PATH")
def test_torchrun_and_mpiexec_train_the_same_bundle(tmp_path):
    data = write_training_file(tmp_path / "a.h5", 28, seed=1, n_bins=1)
    val = write_training_file(tmp_path / "v.h5", 28, seed=2, n_bins=1)
    outs = {"torchrun": tmp_path / "torchrun.pt", "mpiexec": tmp_path / "mpiexec.pt"}
    launch = {"torchrun": [TORCHRUN, "--standalone", "--nnodes", "1", "--nproc-per-node", "2", "--no-python",
                           sys.executable],
              "mpiexec": [MPIEXEC, "-n", "2", sys.executable]}
    for name, prefix in launch.items():
        res = _run([*prefix, *_train_args(data, val, outs[name])])
        assert res.returncode == 0, f"{name}: {res.stderr[-2000:]}"
    bundles = {name: ModelBundle.load(path) for name, path in outs.items()}
    for name, bundle in bundles.items():
        assert bundle.metadata.training["world_size"] == 2, name
        assert bundle.metadata.training["steps"] == 2, name
    a, b = (bundles[n].generators[0] for n in ("torchrun", "mpiexec"))          # state dicts
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7, msg=key)
    # a checkpoint written under one launcher resumes under the other (same world size)
    res = _run([MPIEXEC, "-n", "2", sys.executable, *_train_args(data, val, outs["torchrun"], steps=3), "--resume"])
    assert res.returncode == 0, res.stderr[-2000:]
    assert ModelBundle.load(outs["torchrun"]).metadata.training["steps"] == 3
