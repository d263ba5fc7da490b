#!/usr/bin/env bash
# Packaging check (run by jobs/test.sh, so by CI): build the wheel, check that its only top-level entry is
# halopaint/ (plus dist-info) with the shipped model and native.c inside, install it non-editable into a
# fresh virtual environment beside the PyPI package `kernels` (whose name the old layout collided with),
# and run `halopaint --version`, a small `simulate` and `paint --model default` from a directory outside
# the checkout.
#   bash jobs/check_wheel.sh [WORKDIR]      WORKDIR defaults to a fresh temporary directory (removed after)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${1:-$(mktemp -d -t halopaint-wheel-XXXXXX)}"
[ -n "${1:-}" ] || trap 'rm -rf "$work"' EXIT
python="${PYTHON:-python3}"
pipq() { "$@" -q --disable-pip-version-check; }

echo "[wheel] building the wheel" >&2
pipq "$python" -m pip wheel --no-deps --no-build-isolation -w "$work/dist" "$root" >/dev/null 2>&1 \
    || pipq "$python" -m pip wheel --no-deps -w "$work/dist" "$root" >/dev/null
wheel="$(ls "$work"/dist/halopaint-*.whl)"
"$python" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
top = sorted({n.split("/")[0] for n in names})
print("[wheel] top-level entries:", ", ".join(top), file=sys.stderr)
bad = [t for t in top if t != "halopaint" and not t.endswith(".dist-info")]
need = ["halopaint/data/default_model.pt", "halopaint/kernels/native.c", "halopaint/kernels/triton/kernel.py",
        "halopaint/analysis/spectra.py", "halopaint/sim/lpt.py", "halopaint/commands/paint.py"]
missing = [n for n in need if n not in names]
if bad or missing:
    sys.exit(f"[wheel] bad wheel: extra top-level {bad}, missing {missing}")
PY

echo "[wheel] fresh venv: torch 2.13.0, the wheel, PyPI kernels" >&2
"$python" -m venv "$work/venv"
vpy="$work/venv/bin/python"
pipq "$vpy" -m pip install "torch==2.13.0"
pipq "$vpy" -m pip install "halopaint[mpich] @ file://$wheel" kernels   # mpich: an MPI library for mpi4py

run_dir="$work/elsewhere"
mkdir -p "$run_dir"
cd "$run_dir"
"$vpy" - <<'PY'
import importlib.metadata as md, kernels, halopaint
assert "site-packages" in halopaint.__file__, halopaint.__file__
assert "site-packages" in kernels.__file__ and not hasattr(kernels, "select"), kernels.__file__
print(f"[wheel] import halopaint {halopaint.__version__} ({halopaint.__file__}) beside kernels "
      f"{md.version('kernels')} ({kernels.__file__})")
PY
hp="$work/venv/bin/halopaint"
"$hp" --version
export HALOPAINT_CACHE="$work/cache"          # the C kernels' build cache: per user, never site-packages
"$hp" simulate --quiet --lpt-only --grid 32 --box 128 --seed 3 --out sim.h5
"$hp" paint --quiet --model default --density sim.h5 --out painted.h5
"$vpy" - <<'PY'
import h5py
with h5py.File("painted.h5") as f:
    assert f.attrs["complete"] and f["halos"].shape == (4, 32, 32, 32), dict(f.attrs)
    print(f"[wheel] painted {f['halos'].shape} outside the checkout, {f['halos'][...].sum():.0f} halos")
PY
echo "[wheel] ok" >&2
