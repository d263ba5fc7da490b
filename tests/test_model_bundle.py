"""Model bundles: round trip, and refusal of tampered, foreign and code-carrying files."""

from __future__ import annotations

import pytest
import torch

from conftest import random_bundle
from engine.model import ModelBundle, ModelBundleError


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
