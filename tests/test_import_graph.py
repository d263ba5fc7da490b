"""Arrows run one way: no module imports from a layer above it (jobs/import_graph.py states the layers)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "jobs" / "import_graph.py"


def _graph_module():
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_goes_up_a_layer():
    assert _graph_module().violations() == []


def test_the_checker_sees_a_violation():
    ig = _graph_module()
    graph = {"halopaint.sim.lpt": {"halopaint.fields"}, "halopaint.paint.driver": {"halopaint.analysis.fft"},
             "halopaint.fields": {"halopaint.model"}, "halopaint.model": {"halopaint.fields"}}
    found = ig.violations(graph)
    assert any("sim.lpt" in v for v in found)            # base → core
    assert any("paint.driver" in v for v in found)       # driver → another driver
    assert any("cycle" in v for v in found)              # core rooms importing each other both ways


def test_every_room_has_a_layer():
    ig = _graph_module()
    rooms = {ig.room(m) for m in ig.edges()} - {""}
    assert rooms <= set(ig.ROOM_LAYER), rooms - set(ig.ROOM_LAYER)
