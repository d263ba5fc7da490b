#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install halopaint into it.
#   bash jobs/setup.sh [EXTRAS]      EXTRAS defaults to "mpich" (the PyPI MPI for a machine without one)
# torch 2.13.0 (CPU wheel) is installed first so the package's torch range pulls nothing more.
# Idempotent: a second run with an unchanged pyproject.toml and extras does nothing.
# Source it (". jobs/setup.sh") to keep the environment activated.
set -euo pipefail
_hp_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_hp_extras="${1:-mpich}"
_hp_venv="${HALOPAINT_VENV:-$_hp_root/.venv}"
_hp_python="${PYTHON:-python3}"
if [ ! -x "$_hp_venv/bin/python" ]; then
    echo "[setup] creating virtual environment $_hp_venv" >&2
    "$_hp_python" -m venv "$_hp_venv"
fi
# shellcheck disable=SC1091
. "$_hp_venv/bin/activate"
_hp_stamp="$_hp_venv/.halopaint-installed"
_hp_want="$(cat "$_hp_root/pyproject.toml" | sha256sum | cut -c1-16) $_hp_extras"
if [ ! -f "$_hp_stamp" ] || [ "$(cat "$_hp_stamp")" != "$_hp_want" ]; then
    echo "[setup] installing torch 2.13.0 and halopaint[$_hp_extras] (first run: about a minute)" >&2
    python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
    python -m pip install -q --disable-pip-version-check "torch==2.13.0"
    python -m pip install -q --disable-pip-version-check -e "$_hp_root[$_hp_extras]"
    echo "$_hp_want" > "$_hp_stamp"
else
    echo "[setup] environment up to date ($_hp_venv)" >&2
fi
