"""The bad-input suite (issue 21): every command, as a user types it, given wrong types, shapes, NaN/Inf,
negative values, truncated/empty/non-HDF5 files, missing datasets, wrong attrs, mismatched files, absurd
numbers, unknown flags and outputs that would overwrite an input.

Each case runs `halopaint.cli.main(argv)` in this process (fast: the tiny inputs of tests/bad_inputs.py are
made once per session) and asserts: exit code ≠ 0, exactly one `halopaint <cmd>: error:` line naming the
problem (the expected fragment), no traceback, every input byte-identical (sha256 of the whole input
directory before and after), and nothing under the case's output location marked complete.

The table is (id, argv, expected fragment); `{name}` is a file of bad_inputs.make_inputs, `{out}` a fresh
output path, `{outdir}` a fresh output directory, `{tmp}` the case's own directory. Another command's cases
(e.g. `halopaint sample`) are added by appending rows to CASES.
"""

from __future__ import annotations

import glob
import hashlib
import os

import h5py
import pytest

from bad_inputs import make_inputs
from halopaint.cli import main

# (id, argv, fragment of the one-line message)
CASES: list[tuple[str, str, str]] = [
    # ---------------------------------------------------------------- simulate
    ("sim-box-tiny", "simulate --grid 16 --box 1e-6 --out {out}", "--box"),
    ("sim-box-huge", "simulate --grid 16 --box 1e12 --out {out}", "outside the supported range"),
    ("sim-box-nan", "simulate --grid 16 --box nan --out {out}", "--box"),
    ("sim-sigma8-50", "simulate --grid 16 --sigma8 50 --out {out}", "--sigma8"),
    ("sim-sigma8-negative", "simulate --grid 16 --sigma8 -1 --out {out}", "--sigma8"),
    ("sim-omega-m-negative", "simulate --grid 16 --omega-m -0.3 --out {out}", "--omega-m"),
    ("sim-omega-b-above-m", "simulate --grid 16 --omega-b 0.5 --omega-m 0.3 --out {out}", "--omega-b"),
    ("sim-h-zero", "simulate --grid 16 --h 0 --out {out}", "--h"),
    ("sim-ns-5", "simulate --grid 16 --n-s 5 --out {out}", "--n-s"),
    ("sim-voxel-huge", "simulate --grid 8 --box 10000 --out {out}", "voxel size"),
    ("sim-voxel-tiny", "simulate --grid 1024 --box 10 --out {out}", "voxel size"),
    ("sim-grid-4", "simulate --grid 4 --out {out}", "--grid"),
    ("sim-grid-text", "simulate --grid abc --out {out}", "invalid int value"),
    ("sim-redshift-negative", "simulate --grid 16 --redshift -0.5 --out {out}", "--redshift"),
    ("sim-unknown-flag", "simulate --grid 16 --frobnicate --out {out}", "unrecognized arguments"),
    ("sim-out-no-dir", "simulate --grid 16 --out {tmp}/no/such/dir/x.h5", "does not exist"),
    ("sim-edges-decreasing", "simulate --grid 16 --mass-bin-edges 1e14,1e12 --out {out}", "increasing"),
    # ---------------------------------------------------------------- paint: attrs
    ("paint-complete-string", "paint --model {model} --density {complete_str} --out {out}", "'complete'"),
    ("paint-complete-int", "paint --model {model} --density {complete_int} --out {out}", "boolean"),
    ("paint-complete-false", "paint --model {model} --density {complete_false} --out {out}", "incomplete"),
    ("paint-no-complete", "paint --model {model} --density {no_complete} --out {out}", "incomplete"),
    ("paint-box-array", "paint --model {model} --density {box_array} --out {out}", "'box_size' must be a scalar"),
    ("paint-box-negative", "paint --model {model} --density {box_negative} --out {out}", "box_size"),
    ("paint-box-string", "paint --model {model} --density {box_string} --out {out}", "box_size"),
    ("paint-box-nan", "paint --model {model} --density {box_nan} --out {out}", "box_size"),
    ("paint-no-box", "paint --model {model} --density {no_box} --out {out}", "missing required attribute"),
    ("paint-redshift-negative", "paint --model {model} --density {redshift_negative} --out {out}", "redshift"),
    ("paint-cosmology-not-json", "paint --model {model} --density {cosmo_json} --out {out}", "cosmology"),
    ("paint-cosmology-negative", "paint --model {model} --density {cosmo_negative} --out {out}", "Omega_m"),
    # ---------------------------------------------------------------- paint: datasets and files
    ("paint-density-group", "paint --model {model} --density {density_group} --out {out}", "must be a dataset"),
    ("paint-density-2d", "paint --model {model} --density {density_2d} --out {out}", "/density must be"),
    ("paint-density-noncubic", "paint --model {model} --density {density_noncubic} --out {out}", "(N, N, N)"),
    ("paint-density-strings", "paint --model {model} --density {density_strings} --out {out}", "real numbers"),
    ("paint-density-empty", "paint --model {model} --density {density_empty} --out {out}", "empty grid"),
    ("paint-no-density", "paint --model {model} --density {painted} --out {out}", "missing required dataset"),
    ("paint-truncated", "paint --model {model} --density {truncated} --out {out}", "not a readable HDF5"),
    ("paint-empty-file", "paint --model {model} --density {empty} --out {out}", "not a readable HDF5"),
    ("paint-text-file", "paint --model {model} --density {text} --out {out}", "not a readable HDF5"),
    ("paint-missing-file", "paint --model {model} --density {missing} --out {out}", "no such file"),
    # ---------------------------------------------------------------- paint: values
    ("paint-nan", "paint --model {model} --density {dens_nan} --out {out}", "NaN/Inf"),
    ("paint-inf", "paint --model {model} --density {dens_inf} --out {out}", "NaN/Inf"),
    ("paint-negative", "paint --model {model} --density {dens_negative} --out {out}", "negative"),
    ("paint-1e30-voxel", "paint --model {model} --density {dens_huge} --out {out}", "voxel of"),
    ("paint-all-zero", "paint --model {model} --density {dens_zero} --out {out}", "mean"),
    ("paint-mean-10", "paint --model {model} --density {dens_mean10} --out {out}", "mean 10"),
    # ---------------------------------------------------------------- paint: mismatches, options, outputs
    ("paint-cosmology-mismatch", "paint --model {model} --density {dens_cosmo} --out {out}", "cosmology differs"),
    ("paint-voxel-mismatch", "paint --model {model} --density {dens_voxel} --out {out}", "voxel size"),
    ("paint-redshift-mismatch", "paint --model {model} --density {dens_z1} --out {out}", "redshift 1"),
    ("paint-out-is-input", "paint --model {model} --density {dens} --out {dens}", "would overwrite the input"),
    ("paint-out-is-model", "paint --model {model} --density {dens} --out {model}", "would overwrite the input"),
    ("paint-tile-1", "paint --model {model} --density {dens} --out {out} --tile 1", "ghost width"),
    ("paint-tile-cost", "paint --model {model} --density {dens} --out {out} --tile 4", "padded work"),
    ("paint-tile-text", "paint --model {model} --density {dens} --out {out} --tile a,b", "--tile"),
    ("paint-tile-zero", "paint --model {model} --density {dens} --out {out} --tile 0", "--tile"),
    ("paint-dry-grid-1e9", "paint --model {model} --dry-run --grid 1000000000", "--grid"),
    ("paint-grid-without-dry", "paint --model {model} --density {dens} --out {out} --grid 64", "--dry-run"),
    ("paint-mass-bin-missing", "paint --model {model} --density {dens} --out {out} --mass-bins 5", "does not exist"),
    ("paint-max-memory-text", "paint --model {model} --density {dens} --out {out} --max-memory lots", "memory"),
    ("paint-max-memory-tiny", "paint --model {model} --density {dens} --out {out} --max-memory 1MiB", "too small"),
    ("paint-kernels-bogus", "paint --model {model} --density {dens} --out {out} --kernels warp9", "--kernels"),
    ("paint-model-missing", "paint --model {missing} --density {dens} --out {out}", "no such model file"),
    ("paint-model-text", "paint --model {text} --density {dens} --out {out}", "not a halopaint model bundle"),
    ("paint-model-pickled-code", "paint --model {evil_model} --density {dens} --out {out}",
     "not a halopaint model bundle"),
    ("paint-model-is-density", "paint --model {dens} --density {dens} --out {out}", "not a halopaint model bundle"),
    ("paint-no-density-flag", "paint --model {model} --out {out}", "--density is required"),
    ("paint-unknown-flag", "paint --model {model} --density {dens} --out {out} --fast", "unrecognized arguments"),
    ("paint-out-no-dir", "paint --model {model} --density {dens} --out {tmp}/no/dir/x.h5", "does not exist"),
    # ---------------------------------------------------------------- train
    ("train-out-is-data", "train --data {train} --out {train} --steps 1", "would overwrite the input"),
    ("train-out-is-validation", "train --data {train} --validation {train_voxel} --out {train_voxel} --steps 1",
     "would overwrite the input"),
    ("train-out-is-init", "train --data {train} --init {model} --out {model} --steps 1", "would overwrite the input"),
    ("train-halos-nan", "train --data {train_halos_nan} --out {out} --steps 1", "NaN"),
    ("train-halos-negative", "train --data {train_halos_negative} --out {out} --steps 1", "negative"),
    ("train-density-nan", "train --data {train_density_nan} --out {out} --steps 1", "NaN"),
    ("train-no-halos", "train --data {dens} --out {out} --steps 1", "missing required dataset '/halos'"),
    ("train-text-file", "train --data {text} --out {out} --steps 1", "not a readable HDF5"),
    ("train-complete-string", "train --data {complete_str} --out {out} --steps 1", "'complete'"),
    ("train-voxel-mismatch", "train --data {train} --validation {train_voxel} --out {out} --steps 1", "voxel size"),
    ("train-steps-negative", "train --data {train} --out {out} --steps -1", "--steps"),
    ("train-steps-text", "train --data {train} --out {out} --steps many", "invalid int value"),
    ("train-patch-zero", "train --data {train} --out {out} --patch 0 --adversarial-weight 0", "--patch"),
    ("train-patch-huge", "train --data {train} --out {out} --patch 100", "patch"),
    ("train-mass-bin-missing", "train --data {train} --out {out} --mass-bins 9", "does not exist"),
    ("train-init-text", "train --data {train} --validation {train} --init {text} --out {out} --steps 1 --patch 8 "
     "--adversarial-weight 0",
     "not a halopaint model bundle"),
    ("train-out-no-dir", "train --data {train} --out {tmp}/no/dir/m.pt --steps 1", "does not exist"),
    # ---------------------------------------------------------------- spectra
    ("spectra-negative-counts", "spectra {painted_negative} --out {outdir}", "negative"),
    ("spectra-nan-counts", "spectra {painted_nan} --out {outdir}", "NaN"),
    ("spectra-out-is-inputs-dir", "spectra {painted} --out {inputs}", "directory of the input"),
    ("spectra-out-is-file", "spectra {painted} --out {painted_z05}", "not a directory"),
    ("spectra-out-unwritable", "spectra {painted} --out /proc/halopaint-spectra", "cannot write"),
    ("spectra-no-halos", "spectra {dens} --out {outdir}", "missing required dataset"),
    ("spectra-reference-grid", "spectra {painted} --reference {painted_small} --out {outdir}", "grid"),
    ("spectra-incomplete", "spectra {complete_false} --out {outdir}", "incomplete"),
    ("spectra-text-file", "spectra {text} --out {outdir}", "not a readable HDF5"),
    ("spectra-density-nan", "spectra {painted} --density {dens_nan} --out {outdir}", "NaN"),
    ("spectra-edges-decreasing", "spectra {painted_edges} --out {outdir}", "mass_bin_edges"),
    ("spectra-mas-bogus", "spectra {painted} --out {outdir} --mas quadratic", "invalid choice"),
    # ---------------------------------------------------------------- lightcone
    ("lc-out-is-input", "lightcone {painted} --out {painted} --no-figure", "would overwrite the input"),
    ("lc-nside-huge", "lightcone {painted} --out {out} --nside 1048576 --no-figure", "--nside"),
    ("lc-nside-zero", "lightcone {painted} --out {out} --nside 0 --no-figure", "--nside"),
    ("lc-negative-counts", "lightcone {painted_negative} --out {out} --no-figure", "negative"),
    ("lc-nan-counts", "lightcone {painted_nan} --out {out} --no-figure", "NaN"),
    ("lc-omega-m-negative", "lightcone {painted_cosmo_negative} --out {out} --no-figure", "Omega_m"),
    ("lc-no-halos", "lightcone {dens} --out {out} --no-figure", "missing required dataset"),
    ("lc-z-max-negative", "lightcone {painted} --out {out} --z-max -1 --no-figure", "z_max"),
    ("lc-subsample-zero", "lightcone {painted} --out {out} --subsample 0 --no-figure", "--subsample"),
    ("lc-shells-zero", "lightcone {painted} --out {out} --shells 0 --no-figure", "--shells"),
    ("lc-grid-mismatch", "lightcone {painted} {painted_small} --out {out} --no-figure", "differs"),
    ("lc-mass-bin-missing", "lightcone {painted} --out {out} --mass-bins 7 --no-figure", "does not exist"),
    ("lc-truncated", "lightcone {truncated} --out {out} --no-figure", "not a readable HDF5"),
    # ---------------------------------------------------------------- demo (refused before any stage runs)
    ("demo-ranks-64", "demo --ranks 64 --out {outdir}", "--ranks 64"),
    ("demo-ranks-zero", "demo --ranks 0 --out {outdir}", "--ranks 0"),
    ("demo-out-is-file", "demo --ranks 1 --out {painted}", "not a directory"),
    ("demo-out-unwritable", "demo --ranks 1 --out /proc/halopaint-demo", "cannot write"),
    ("demo-grid-4", "demo --ranks 1 --grid 4 --out {outdir}", "--grid"),
    ("demo-lpt-grid-huge", "demo --ranks 1 --lpt-grid 1000000 --out {outdir}", "--lpt-grid"),
    ("demo-model-missing", "demo --ranks 1 --model {missing} --out {outdir}", "no such model file"),
]


@pytest.fixture(scope="session")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad-inputs")
    files = make_inputs(d)
    files["inputs"] = str(d)
    return files


def _digests(directory: str) -> dict[str, str]:
    out = {}
    for path in sorted(glob.glob(os.path.join(directory, "**"), recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out[path] = hashlib.sha256(f.read()).hexdigest()
    return out


def _complete_files(directory: str) -> list[str]:
    found = []
    for path in glob.glob(os.path.join(directory, "**"), recursive=True):
        if os.path.isfile(path):
            try:
                with h5py.File(path, "r") as f:
                    if f.attrs.get("complete") is True or bool(f.attrs.get("complete", False)) is True:
                        found.append(path)
            except OSError:
                pass
    return found


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """`halopaint ARGV` in this process: (exit code, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case_id, argv, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line(case_id, argv, fragment, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    subs = dict(inputs, out=str(tmp_path / "out.h5"), outdir=str(tmp_path / "outdir"), tmp=str(tmp_path))
    args = [a.format(**subs) for a in argv.split()]
    before = _digests(inputs["inputs"])
    code, err = run_cli(args, capsys)
    command = args[0]
    assert code not in (0, None), f"{case_id}: accepted (exit {code}); stderr: {err[-500:]}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if f"halopaint {command}: error:" in line
             or line.startswith("halopaint: error:")]
    assert len(lines) == 1, f"{case_id}: expected one error line, got:\n{err}"
    message = lines[0]
    for path in sorted(subs.values(), key=len, reverse=True):    # the fragment must name the problem, not
        message = message.replace(path, "<path>")                  # match a file name
    assert fragment.lower() in message.lower(), f"{case_id}: {fragment!r} not in {lines[0]!r}"
    assert _digests(inputs["inputs"]) == before, f"{case_id}: an input changed"
    assert not _complete_files(str(tmp_path)), f"{case_id}: an output was marked complete"
    assert not os.path.exists("/tmp/halopaint-pwned")


def test_the_suite_covers_every_command_with_at_least_60_cases():
    commands = {argv.split()[0] for _, argv, _ in CASES}
    assert {"simulate", "train", "paint", "spectra", "lightcone", "demo"} <= commands
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)
