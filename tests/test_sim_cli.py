"""`halopaint simulate` as a user runs it under mpiexec: refusals on every rank, a rank failing mid-run,
the --dry-run plan and --max-memory. Each run is a subprocess with a timeout (a hang fails the test)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from halopaint.cli import main
from halopaint.simulation import FAIL_HOOK_ENV

MPIEXEC = shutil.which("mpiexec")
needs_mpiexec = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec on PATH")
TIMEOUT = 120


def simulate_cli(*args, ranks=2, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != FAIL_HOOK_ENV}
    env.update(OMP_NUM_THREADS="1", **(env_extra or {}))
    cmd = [sys.executable, "-m", "halopaint.cli", "simulate", *args]
    if ranks > 1:
        cmd = [MPIEXEC, "-n", str(ranks), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "halopaint simulate: error:" in line]


@needs_mpiexec
def test_full_nbody_under_mpi_is_refused_once_on_every_rank(tmp_path):
    out = tmp_path / "x.h5"
    res = simulate_cli("--grid", "8", "--box", "64", "--particles-per-side", "16", "--out", str(out), ranks=2)
    assert res.returncode == 2, res.stderr
    lines = error_lines(res.stderr)
    assert len(lines) == 1 and "--lpt-only" in lines[0] and "one process" in lines[0], res.stderr
    assert list(tmp_path.iterdir()) == []


@needs_mpiexec
@pytest.mark.parametrize("args, message", [
    (["--box", "-5"], "--box"),
    (["--box", "abc"], "invalid float"),
    (["--grid", "0"], "--grid"),
    (["--grid", "4"], "--grid"),
    (["--redshift", "0,1"], "{z}"),
])
def test_bad_input_under_mpi_exits_nonzero_with_one_line(tmp_path, args, message):
    out = tmp_path / "x.h5"
    base = ["--lpt-only", "--grid", "16", "--box", "64", "--out", str(out)]
    res = simulate_cli(*base, *args, ranks=3)
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if "error:" in line]
    assert lines and message in lines[0], res.stderr
    assert list(tmp_path.iterdir()) == []


def test_more_ranks_than_planes_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--lpt-only", "--grid", "8", "--dry-run", "--ranks", "9", "--out", str(tmp_path / "x.h5")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "9 ranks cannot split a grid of 8" in err


@needs_mpiexec
def test_a_rank_failing_mid_run_leaves_no_complete_file(tmp_path):
    out = tmp_path / "x.h5"
    res = simulate_cli("--lpt-only", "--grid", "16", "--box", "64", "--out", str(out), ranks=2,
                       env_extra={FAIL_HOOK_ENV: "1"})
    assert res.returncode != 0
    assert "rank 1 fails" in res.stderr
    assert not out.exists()
    parts = tmp_path / "x.h5.parts"
    assert not parts.exists() or list(parts.iterdir()) == []
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("x.h5.parts", "x.h5.lock")]
    assert leftovers == []


@needs_mpiexec
def test_distributed_cli_run_writes_parts_and_a_complete_master(tmp_path):
    import h5py
    out = tmp_path / "x.h5"
    res = simulate_cli("--lpt-only", "--grid", "16", "--box", "64", "--out", str(out), "-q", ranks=3)
    assert res.returncode == 0, res.stderr
    with h5py.File(out) as f:
        assert f.attrs["complete"] and f["density"].is_virtual and f["velocity"].shape == (3, 16, 16, 16)
        assert len(f.attrs["peak_rss_bytes"]) == 3
    assert sorted(p.name for p in (tmp_path / "x.h5.parts").iterdir()) == [f"rank-{r:04d}.h5" for r in range(3)]


def test_dry_run_2048_on_64_ranks_writes_nothing(tmp_path, capsys):
    assert main(["simulate", "--lpt-only", "--grid", "2048", "--box", "8192", "--dry-run", "--ranks", "64",
                 "--out", str(tmp_path / "X.h5")]) == 0
    text = capsys.readouterr().out
    assert "64 rank(s)" in text and "memory per rank ≈" in text and "GiB" in text
    assert str(tmp_path / "X.h5") in text and "rank-0063.h5" in text
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--lpt-only", "--grid", "2048", "--box", "8192", "--dry-run", "--ranks", "64",
              "--max-memory", "8GiB", "--out", str(tmp_path / "X.h5")])
    assert exc.value.code == 2
    assert "--max-memory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_max_memory_refuses_a_real_run_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--lpt-only", "--grid", "64", "--max-memory", "100MiB", "--out", str(tmp_path / "x.h5")])
    assert exc.value.code == 2 and "--max-memory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
