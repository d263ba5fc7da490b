"""jobs/lightcone_production.py resumes: complete and current steps are skipped; a painted file that no longer
records the shipped bundle of its z (e.g. after a new count law was shipped) is repainted, and every step that
reads a rewritten file is redone."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import h5py

ROOT = Path(__file__).resolve().parents[1]


def _job():
    spec = importlib.util.spec_from_file_location("lightcone_production", ROOT / "jobs" / "lightcone_production.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _steps(stderr: str) -> dict[str, str]:
    """step name → 'ran' | 'skipped' | 'redone: …' from the job's stderr."""
    out = {}
    for line in stderr.splitlines():
        if not line.startswith("["):
            continue
        name, rest = line[1:].split("] ", 1)
        if rest == "complete, skipped":
            out[name] = "skipped"
        elif rest.startswith("redone: "):
            out[name] = rest
        else:
            out.setdefault(name, "ran")
    return out


def test_production_resumes_and_redoes_what_a_new_shipped_law_makes_stale(tmp_path, capsys):
    job = _job()
    argv = ["--out-dir", str(tmp_path), "--grid", "32", "--box", "128", "--redshifts", "0.0", "--ranks", "1",
            "--launcher", "", "--z-max", "0.02", "--shells", "1", "--nside", "8"]
    assert job.main(argv) == 0
    first = _steps(capsys.readouterr().err)
    assert set(first.values()) == {"ran"} and set(first) == {"simulate", "paint z=0", "sample z=0", "lightcone"}

    assert job.main(argv) == 0
    assert set(_steps(capsys.readouterr().err).values()) == {"skipped"}

    painted = tmp_path / "painted_z0.h5"
    with h5py.File(painted, "r+") as f:          # as if painted before the shipped count law changed
        meta = json.loads(f.attrs["model_metadata"])
        meta["count_model"]["alpha"] = [[0.0] * len(row) for row in meta["count_model"]["alpha"]]
        f.attrs["model_metadata"] = json.dumps(meta)
    assert job.main(argv) == 0
    third = _steps(capsys.readouterr().err)
    assert third["simulate"] == "skipped"
    assert third["paint z=0"].startswith("redone: painted with another bundle")
    assert third["sample z=0"].startswith("redone: its input was rewritten") and "painted_z0.h5" in third["sample z=0"]
    assert third["lightcone"].startswith("redone: its input was rewritten")
    assert job._stale_model(painted, 0.0) is None
