"""The package list in pyproject.toml maps every source folder into `halopaint` (the wheel's only
top-level import); jobs/check_wheel.sh (run by jobs/test.sh) builds and installs the real wheel."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"engine": "halopaint", "kernels": "halopaint.kernels", "analysis": "halopaint.analysis"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join([name, *rel]))
    assert found == listed, (found - listed, listed - found)
    assert all(p == "halopaint" or p.startswith("halopaint.") for p in listed)


def test_package_dirs_and_entry_point():
    tool = _pyproject()["tool"]["setuptools"]
    assert tool["package-dir"] == {name: folder for folder, name in FOLDERS.items()}
    assert _pyproject()["project"]["scripts"]["halopaint"] == "halopaint.cli:main"
    assert "data/*.pt" in _pyproject()["tool"]["setuptools"]["package-data"]["halopaint"]


def test_installed_package_is_this_checkout():
    import halopaint
    import halopaint.analysis
    import halopaint.kernels
    assert Path(halopaint.__file__).parent == ROOT / "engine"
    assert Path(halopaint.kernels.__file__).parent == ROOT / "kernels"
    assert Path(halopaint.analysis.__file__).parent == ROOT / "analysis"
