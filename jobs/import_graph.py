"""The package's import graph by room, and the layer rule it must keep (docs/architecture.md).

    python jobs/import_graph.py            # room → rooms it imports, then any violation (exit 1 if one)
    python jobs/import_graph.py --modules  # module-level edges instead of rooms

Every `import` / `from … import` in the package's sources is read with `ast` (function-level imports
included; strings passed to importlib are not imports and are not seen). Layers, lowest first:

  0 foundation     errors, config, log, fourier, partition (import nothing but each other)
  1 base           kernels.*, sim.*                     (pure numerics and physics, no file I/O)
  2 core           model, count_model, fields, decomposition, launch, ddp, patches, allocator, validation
  3 drivers        paint, train, simulation, analysis.* (each independent of the others)
  4 derived        calibrate, sample                    (built on the painter's output)
  5 production     lightcone, api
  6 composition    demo                                 (runs every command, summarises their outputs)
  7 orchestration  cli, commands.*

A module may import modules of lower layers and of its own room (e.g. paint.plan → paint.io). Rooms of
the same layer do not import each other, except in layers 0 and 2 (small mutually supporting
utilities), where the room graph must stay acyclic. The package root's
`halopaint/__init__.py` (the lazy API facade) is outside the rule: Python runs it for every import.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"engine": "halopaint", "kernels": "halopaint.kernels", "analysis": "halopaint.analysis"}
PACKAGE = "halopaint"

LAYERS = {
    0: ("errors", "config", "log", "fourier", "partition"),
    1: ("kernels", "sim"),
    2: ("model", "count_model", "fields", "decomposition", "launch", "ddp", "patches", "allocator", "validation"),
    3: ("paint", "train", "simulation", "analysis"),
    4: ("calibrate", "sample"),
    5: ("lightcone", "api"),
    6: ("demo",),
    7: ("cli", "commands"),
}
ROOM_LAYER = {room: layer for layer, rooms in LAYERS.items() for room in rooms}
SHARED_LAYERS = {0, 2}          # layers whose rooms may import each other (acyclically)


def module_name(path: Path) -> str:
    """halopaint module name of a source file (engine/paint/io.py → halopaint.paint.io)."""
    rel = path.relative_to(ROOT)
    parts = [FOLDERS[rel.parts[0]], *rel.with_suffix("").parts[1:]]
    name = ".".join(parts)
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def room(module: str) -> str:
    """The room of a halopaint module: its first component under halopaint (the root: '')."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")
            base = base if is_package else base[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        # `from halopaint import sim` imports the module halopaint.sim (`__version__` is the root's)
        return [f"{target}.{a.name}" if target == PACKAGE and not a.name.startswith("__") else target
                for a in node.names]
    return []


def edges() -> dict[str, set[str]]:
    """module → halopaint modules it imports."""
    graph: dict[str, set[str]] = defaultdict(set)
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            module = module_name(path)
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                for target in _imported(node, module, path.name == "__init__.py"):
                    if target == PACKAGE or target.startswith(PACKAGE + "."):
                        graph[module].add(target)
    return graph


def violations(graph: dict[str, set[str]] | None = None) -> list[str]:
    """Every import that breaks the layer rule, as 'a (room, layer) imports b (room, layer)'."""
    graph = edges() if graph is None else graph
    found = []
    for source, targets in sorted(graph.items()):
        rs = room(source)
        if rs == "":
            continue                                    # the lazy API facade (halopaint/__init__.py)
        for target in sorted(targets):
            rt = room(target)
            if rt == "" and target != PACKAGE:
                rt = target.split(".")[-1]
            if rs not in ROOM_LAYER or (rt and rt not in ROOM_LAYER):
                found.append(f"{source} → {target}: room {rs or rt!r} has no layer (add it to LAYERS)")
                continue
            if target == PACKAGE:
                continue                                # `import halopaint` alone: the version string
            ls, lt = ROOM_LAYER[rs], ROOM_LAYER[rt]
            if rs != rt and (lt > ls or (lt == ls and ls not in SHARED_LAYERS)):
                found.append(f"{source} (layer {ls}, {rs}) → {target} (layer {lt}, {rt})")
    found += [f"import cycle between rooms: {' → '.join(c)}" for c in room_cycles(room_graph(graph))]
    return found


def room_cycles(rooms: dict[str, set[str]]) -> list[list[str]]:
    """Cycles in the room graph (depth-first search; one reported per back edge)."""
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(r: str) -> None:
        state[r] = 1
        stack.append(r)
        for t in sorted(rooms.get(r, ())):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[r] = 2

    for r in sorted(rooms):
        if r not in state:
            visit(r)
    return cycles


def room_graph(graph: dict[str, set[str]], with_root: bool = False) -> dict[str, set[str]]:
    """room → rooms it imports; the package root ('(root)': the API facade, __version__) only if asked."""
    rooms: dict[str, set[str]] = defaultdict(set)
    for source, targets in graph.items():
        for target in targets:
            rs, rt = room(source) or "(root)", room(target) or "(root)"
            if rs != rt and (with_root or "(root)" not in (rs, rt)):
                rooms[rs].add(rt)
    return rooms


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", action="store_true", help="module-level edges instead of rooms")
    args = ap.parse_args(argv)
    graph = edges()
    shown = graph if args.modules else room_graph(graph, with_root=True)
    key = lambda r: (ROOM_LAYER.get(r, -1), r)  # noqa: E731
    for source in sorted(shown, key=key, reverse=True):
        layer = ROOM_LAYER.get(source.split(".")[1] if args.modules and "." in source else source, "-")
        print(f"[{layer}] {source:28s} → {', '.join(sorted(shown[source], key=key, reverse=True))}")
    bad = violations(graph)
    print(f"\n{len(bad)} layer violation(s)" + (":" if bad else ""))
    for line in bad:
        print("  " + line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
