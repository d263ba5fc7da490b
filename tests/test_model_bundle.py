"""Model bundles: round trip, and refusal of tampered, foreign and code-carrying files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import random_bundle
from halopaint.model import ModelBundle, ModelBundleError


def _one_line_error(path) -> str:
    with pytest.raises(ModelBundleError) as exc:
        ModelBundle.load(path)
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_round_trip(tmp_path):
    b = random_bundle(n_bins=4, seed=3)
    b.metadata.training = {"command": "halopaint train --data a.h5", "seeds": [1, 2]}
    path = tmp_path / "m.pt"
    b.save(path)
    c = ModelBundle.load(path)
    assert c.n_bins == 4 and c.ghost_width == 4 and c.spec == b.spec
    assert c.metadata.to_json() == b.metadata.to_json()
    for sd_a, sd_b in zip(b.generators, c.generators):
        assert sd_a.keys() == sd_b.keys()
        for k in sd_a:
            assert torch.equal(sd_a[k], sd_b[k])
    x = torch.rand(1, 1, 12, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(b.generator(2)(x), c.generator(2)(x), rtol=0, atol=0)
    assert not list(tmp_path.glob(".*tmp*"))


def test_tampered_weights_are_refused(tmp_path):
    path = tmp_path / "m.pt"
    random_bundle().save(path)
    payload = torch.load(path, weights_only=True)
    payload["generators"][1]["out.bias"] += 0.5
    torch.save(payload, path)
    assert "checksum" in _one_line_error(path)


def test_tampered_metadata_is_refused(tmp_path):
    path = tmp_path / "m.pt"
    random_bundle().save(path)
    payload = torch.load(path, weights_only=True)
    payload["metadata"] = payload["metadata"].replace('"voxel_size": 4.0', '"voxel_size": 2.0')
    torch.save(payload, path)
    assert "checksum" in _one_line_error(path)


def test_damaged_bytes_are_refused(tmp_path):
    path = tmp_path / "m.pt"
    random_bundle().save(path)
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) // 3, len(raw) // 3 + 64):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    _one_line_error(path)
    path.write_bytes(bytes(raw[: len(raw) // 2]))  # truncated
    _one_line_error(path)


def test_foreign_files_are_refused(tmp_path):
    p1 = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, p1)
    assert "not a halopaint model bundle" in _one_line_error(p1)
    p2 = tmp_path / "text.pt"
    p2.write_text("hello\nworld\n")
    _one_line_error(p2)
    p3 = tmp_path / "state_dict.pt"
    torch.save(random_bundle().generators[0], p3)
    _one_line_error(p3)
    _one_line_error(tmp_path / "missing.pt")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.mkdir, (str(self.marker),))


def test_pickle_with_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "code_was_executed"
    path = tmp_path / "evil.pt"
    torch.save({"format": "halopaint-model-bundle", "version": 1, "x": _Exploit(marker)}, path)
    _one_line_error(path)
    assert not marker.exists()


def test_merge_adjacent_bundles_in_mass_order(tmp_path):
    import dataclasses
    import subprocess
    import sys
    whole = random_bundle(n_bins=4, seed=2)
    edges = whole.metadata.mass_bin_edges

    def part(lo, hi):
        meta = dataclasses.replace(whole.metadata, mass_bin_edges=edges[lo:hi + 1], training={"bins": [lo, hi]})
        return ModelBundle(spec=whole.spec, generators=whole.generators[lo:hi], metadata=meta)

    script = str(Path(__file__).resolve().parents[1] / "jobs" / "merge_bundles.py")
    paths = [tmp_path / "lo.pt", tmp_path / "hi.pt"]
    part(0, 1).save(paths[0])
    part(1, 4).save(paths[1])
    out = tmp_path / "merged.pt"
    res = subprocess.run([sys.executable, script, "--out", str(out), *map(str, paths),
                          "--summary", "test"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    merged = ModelBundle.load(out)
    assert merged.metadata.mass_bin_edges == edges
    for got, want in zip(merged.generators, whole.generators):
        assert all(torch.equal(got[k], want[k]) for k in want)
    assert merged.metadata.training["parts"] == [{"bins": [0, 1]}, {"bins": [1, 4]}]
    assert merged.metadata.training["summary"] == "test"
    # --init-of records the warm-start bundle as `halopaint train --init` does: name, SHA-256, its training
    from halopaint.fields import file_sha256
    res = subprocess.run([sys.executable, script, "--out", str(out), *map(str, paths), "--init-of", str(paths[0])],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    init = ModelBundle.load(out).metadata.training["init"]
    assert init == {"model": str(paths[0]), "file": "lo.pt", "sha256": file_sha256(paths[0]),
                    "training": {"bins": [0, 1]}}
    # out of order or a different voxel size: one clear error, nothing written
    bad = tmp_path / "bad.pt"
    res = subprocess.run([sys.executable, script, "--out", str(bad), str(paths[1]), str(paths[0])],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "adjacent" in res.stderr and not bad.exists(), res.stderr
    other = dataclasses.replace(part(1, 4).metadata, voxel_size=2.0)
    ModelBundle(spec=whole.spec, generators=whole.generators[1:], metadata=other).save(tmp_path / "vox.pt")
    res = subprocess.run([sys.executable, script, "--out", str(bad), str(paths[0]),
                          str(tmp_path / "vox.pt")], capture_output=True, text=True)
    assert res.returncode == 2 and "voxel size" in res.stderr and not bad.exists(), res.stderr
