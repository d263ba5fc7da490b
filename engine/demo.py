"""The main job on the embedded default (`halopaint demo`).

1. simulate a held-out box with N-body truth at the model's voxel size, a larger 2LPT-only box, and the
   held-out seed again 2LPT-only (the production-style input, with the 2LPT /velocity);
2. paint both boxes with the shipped model on R MPI ranks (`mpiexec -n R halopaint paint`), fastest kernels;
3. sample the painted held-out box into integer halos and a catalogue (`mpiexec -n R halopaint sample
   --density <2LPT held-out file> --catalogue`);
4. compute the paper's statistics against the truth and the 2LPT bias baseline (Dask), and the real- and
   redshift-space multipoles of the sampled catalogue against the N-body FoF catalogue
   (`halopaint spectra --multipoles`);
5. build a light cone from the painted large box (`mpiexec -n R halopaint lightcone --catalogue --fits`);
6. write figures and a short text summary (T, r_c, s per bin and summed, |Δ| > 3 fraction, the multipole
   ratios, the light cone's halos, shells and files, wall time per stage, peak memory);
7. print where everything is.

The simulate, paint, sample, multipoles and light-cone stages run the real CLI in subprocesses (the same
commands a user types, the MPI ones under mpiexec), so the demo exercises exactly what production runs and
each stage's peak memory is measured on its own; the field statistics call `halopaint.analysis.report.run`,
which is what `halopaint spectra` runs.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from halopaint.config import DemoConfig, SimulateConfig, SpectraConfig
from halopaint.decomposition import plan_slabs
from halopaint.errors import HalopaintError
from halopaint.model import ModelBundle
from halopaint.validation import OutputLock, check_grid, check_output_dir, validate_simulate_config


@dataclass
class StageLog:
    """Wall time [s] and peak RSS [GiB] of each stage, in order."""

    stages: list[tuple[str, float, float]] = field(default_factory=list)

    def add(self, name: str, seconds: float, peak_gib: float) -> None:
        self.stages.append((name, seconds, peak_gib))


def _say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def _halopaint_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "halopaint.cli", *args]


def _mpiexec() -> str:
    """mpiexec next to this Python (the venv's MPICH wheel) or on PATH."""
    local = Path(sys.executable).parent / "mpiexec"
    found = str(local) if local.exists() else shutil.which("mpiexec")
    if not found:
        raise HalopaintError("mpiexec not found: install an MPI (bash jobs/setup.sh installs the mpich wheel) "
                             "or run with --ranks 1")
    return found


def _run_stage(name: str, cmd: list[str], log: StageLog, env: dict | None = None) -> None:
    _say(f"{name}: {' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))}")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)  # output streams straight through: progress stays visible
    # wait4 gives this stage's own rusage: max RSS over the child and its reaped descendants (MPI ranks)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise HalopaintError(f"demo stage '{name}' failed (exit {proc.returncode}); see the messages above")
    log.add(name, dt, usage.ru_maxrss / 1024**2)  # Linux reports KiB
    _say(f"{name}: done in {dt:.1f} s")


def _mpi_cmd(cfg: DemoConfig, *args: str) -> list[str]:
    """`halopaint ARGS` on --ranks MPI ranks (alone for one rank)."""
    if cfg.ranks == 1:
        return _halopaint_cmd(*args)
    return [_mpiexec(), "-n", str(cfg.ranks), *_halopaint_cmd(*args)]


def _paint_cmd(cfg: DemoConfig, density: Path, out: Path) -> list[str]:
    return _mpi_cmd(cfg, "paint", "--model", cfg.model, "--density", str(density), "--out", str(out),
                    "--kernels", cfg.kernels)


def run_demo(cfg: DemoConfig) -> dict:
    """Run the whole main job; returns the summary dict (also written to OUT/summary.json)."""
    bundle = validate_demo(cfg)
    out = Path(cfg.out)
    with OutputLock(out, "halopaint demo"):
        out.mkdir(exist_ok=True)
        return _run_demo(cfg, bundle, out)


def validate_demo(cfg: DemoConfig) -> ModelBundle:
    """Everything the stages would refuse, refused before any stage starts (halopaint.validation): --ranks
    between 1 and this machine's cores, both boxes in the simulator's physical ranges and paintable on
    --ranks slabs, --out a new or writable directory. Returns the loaded model bundle."""
    cores = os.cpu_count() or 1
    if not 1 <= cfg.ranks <= cores:
        raise HalopaintError(f"--ranks {cfg.ranks}: the demo runs its ranks on this machine, which has {cores} "
                             f"cores (use 1 … {cores})")
    check_output_dir(cfg.out)
    bundle = ModelBundle.load(cfg.model)
    voxel = bundle.metadata.voxel_size
    for option, grid in (("--grid", cfg.grid), ("--lpt-grid", cfg.lpt_grid)):
        check_grid(grid, option, minimum=8)
        validate_simulate_config(replace(SimulateConfig(), grid=grid, box_size=grid * voxel,
                                         redshift=bundle.metadata.redshift, cosmology=bundle.metadata.cosmology))
        try:
            plan_slabs(grid, cfg.ranks, bundle.ghost_width)
        except HalopaintError as exc:
            raise HalopaintError(f"{option} {grid} on --ranks {cfg.ranks}: {exc}") from None
    return bundle


def _run_demo(cfg: DemoConfig, bundle: ModelBundle, out: Path) -> dict:
    voxel = bundle.metadata.voxel_size
    edges = ",".join(f"{e:.6g}" for e in bundle.metadata.mass_bin_edges)
    recipe = bundle.metadata.density_recipe
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // cfg.ranks)))
    log = StageLog()
    t_all = time.perf_counter()

    truth = out / "heldout_nbody.h5"
    big = out / "large_2lpt.h5"
    common = ["--redshift", f"{bundle.metadata.redshift:g}", "--mass-bin-edges", edges,
              "--lpt-particles-per-voxel", str(recipe.particles_per_voxel)]
    _run_stage("simulate held-out N-body box", _halopaint_cmd(
        "simulate", "--grid", str(cfg.grid), "--box", f"{cfg.grid * voxel:g}", "--seed", str(cfg.seed),
        "--out", str(truth), *common), log, env)
    _run_stage("simulate large 2LPT-only box", _halopaint_cmd(
        "simulate", "--lpt-only", "--grid", str(cfg.lpt_grid), "--box", f"{cfg.lpt_grid * voxel:g}",
        "--seed", str(cfg.lpt_seed), "--out", str(big), *common), log, env)

    truth_lpt = out / "heldout_2lpt.h5"
    _run_stage("simulate held-out seed 2LPT-only", _halopaint_cmd(
        "simulate", "--lpt-only", "--grid", str(cfg.grid), "--box", f"{cfg.grid * voxel:g}", "--seed", str(cfg.seed),
        "--out", str(truth_lpt), *common), log, env)

    painted_truth = out / "heldout_painted.h5"
    painted_big = out / "large_painted.h5"
    _run_stage(f"paint held-out box on {cfg.ranks} ranks", _paint_cmd(cfg, truth, painted_truth), log, env)
    _run_stage(f"paint large box on {cfg.ranks} ranks", _paint_cmd(cfg, big, painted_big), log, env)

    sampled = out / "heldout_sampled.h5"
    _run_stage(f"sample held-out box on {cfg.ranks} ranks", _mpi_cmd(
        cfg, "sample", str(painted_truth), "--out", str(sampled), "--seed", str(cfg.sample_seed),
        "--density", str(truth_lpt), "--catalogue", "--force"), log, env)
    multipoles_dir = out / "multipoles_heldout"
    grid_args = ["--multipole-grid", str(cfg.multipole_grid)] if cfg.multipole_grid else []
    _run_stage("multipoles: sampled vs N-body catalogue", _halopaint_cmd(
        "spectra", str(sampled), "--multipoles", "--reference", str(truth), "--out", str(multipoles_dir),
        *grid_args), log, env)
    rsd = json.loads((multipoles_dir / "multipoles.json").read_text())

    cone = out / "lightcone.h5"
    centre = f"{cfg.lpt_grid * voxel / 2:g}"
    _run_stage(f"light cone of the large box on {cfg.ranks} ranks", _mpi_cmd(
        cfg, "lightcone", str(painted_big), "--density", str(big), "--out", str(cone),
        "--z-max", f"{cfg.lightcone_z_max:g}", "--shells", str(cfg.lightcone_shells),
        "--nside", str(cfg.lightcone_nside), "--observer", centre, centre, centre,
        "--catalogue", "--seed", str(cfg.sample_seed), "--fits"), log, env)
    from halopaint.lightcone.summary import lightcone_summary
    lightcone = lightcone_summary(cone)

    from halopaint.analysis.report import run as run_spectra
    spectra_dirs = {"heldout": out / "spectra_heldout", "large": out / "spectra_large"}
    t0 = time.perf_counter()
    _say("statistics of the held-out box against the N-body truth and the 2LPT baseline (Dask)")
    heldout = run_spectra(replace(SpectraConfig(), predicted=str(painted_truth), reference=str(truth),
                                  density=str(truth), out=str(spectra_dirs["heldout"])))
    log.add("statistics: held-out box", time.perf_counter() - t0, _peak_self_gib())
    t0 = time.perf_counter()
    _say("statistics of the large painted 2LPT box")
    large = run_spectra(replace(SpectraConfig(), predicted=str(painted_big), reference=None,
                                density=str(big), out=str(spectra_dirs["large"])))
    log.add("statistics: large box", time.perf_counter() - t0, _peak_self_gib())

    summary = {
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "model": str(bundle.metadata.training.get("name", cfg.model)),
        "voxel_size": voxel,
        "files": {"heldout_truth": str(truth), "large_2lpt": str(big), "heldout_2lpt": str(truth_lpt),
                  "heldout_painted": str(painted_truth), "large_painted": str(painted_big),
                  "heldout_sampled": str(sampled), **{f"spectra_{k}": str(v) for k, v in spectra_dirs.items()},
                  "multipoles_heldout": str(multipoles_dir), "lightcone": str(cone)},
        "heldout": heldout,
        "large": large,
        "multipoles": rsd,
        "lightcone": lightcone,
        "stages": [{"stage": n, "wall_s": round(s, 2), "peak_rss_gib": round(m, 3)} for n, s, m in log.stages],
        "total_wall_s": round(time.perf_counter() - t_all, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    text = format_summary(summary)
    (out / "summary.txt").write_text(text)
    print(text)
    return summary


def _peak_self_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def stats_table(stats: dict) -> list[str]:
    """Rows of T(k), r_c(k), s(k) of the prediction and of the 2LPT baseline, per selection."""
    rows = [f"{'selection':<9s} {'k [h/Mpc]':>10s} {'T':>7s} {'r_c':>7s} {'s [(Mpc/h)^3]':>14s}"
            f" {'T_2LPT':>8s} {'r_c_2LPT':>9s} {'s_2LPT':>10s}"]
    for sel, b in stats.get("bins", {}).items():
        pred, base = b.get("prediction", {}), b.get("lpt_baseline", {})
        for target in ("0.05", "0.1", "0.2"):
            if target not in pred:
                continue
            p, q = pred[target], base.get(target, {})
            fmt = lambda d, key, f: format(d[key], f) if key in d else "—"  # noqa: E731
            rows.append(f"{sel:<9s} {p['k']:10.3f} {p['T']:7.3f} {p['r_c']:7.3f} {p['s']:14.4g}"
                        f" {fmt(q, 'T', '8.3f'):>8s} {fmt(q, 'r_c', '9.3f'):>9s} {fmt(q, 's', '10.4g'):>10s}")
    return rows


def multipoles_lines(rsd: dict) -> list[str]:
    """Per selection, the band means of P0_pred/P0_ref (real, redshift) and (P2/P0)_pred/(P2/P0)_ref."""
    if not rsd.get("selections"):
        return []
    lines = [f"Sampled held-out catalogue vs N-body FoF catalogue, multipoles on a {rsd['grid']}³ mesh, line of "
             f"sight {rsd['los']}, mean over {rsd['k_min']:g} ≤ k ≤ {rsd['k_max']:g} h/Mpc (pred/ref):",
             f"  {'selection':<9s} {'halos pred':>10s} {'halos ref':>10s} {'P0 real':>8s} {'P0 z-sp':>8s}"
             f" {'P2/P0':>8s}"]
    for sel, band in rsd["selections"].items():
        r = band.get("ratios")
        if not r:
            continue
        lines.append(f"  {sel:<9s} {band['pred']['n_objects']:10d} {band['ref']['n_objects']:10d}"
                     f" {r['p0_real_ratio']['mean']:8.3f} {r['p0_redshift_ratio']['mean']:8.3f}"
                     f" {r['p2_over_p0_ratio']['mean']:8.3f}")
    for sel, reason in rsd.get("skipped", {}).items():
        lines.append(f"  {sel}: skipped ({reason})")
    lines.append("")
    return lines


def format_summary(summary: dict) -> str:
    """The short human-readable summary printed at the end and saved as summary.txt."""
    cfg = summary["config"]
    lines = ["halopaint demo — summary", ""]
    held = summary["heldout"]
    lines.append(f"Held-out box (seed {cfg['seed']}, never seen in training): {cfg['grid']}³ voxels of "
                 f"{summary['voxel_size']:g} Mpc/h, painted vs N-body FoF truth; 2LPT = linear-bias baseline")
    lines.extend("  " + row for row in stats_table(held))
    off = {sel: b["frac_off_by_3"] for sel, b in held.get("bins", {}).items() if "frac_off_by_3" in b}
    if off:
        lines.append("  fraction of voxels with |pred − true| > 3: "
                     + ", ".join(f"{sel} {v:.2e}" for sel, v in off.items()))
    lines.append("")
    lines.extend(multipoles_lines(summary.get("multipoles", {})))
    cone = summary.get("lightcone")
    if cone:
        lines.append(f"Light cone of the large painted box (observer at its centre, z ≤ {cone['z_edges'][-1]:g}): "
                     f"{cone['shells']} shells, nside {cone['nside']}, {cone['catalogue_halos']} catalogue halos, "
                     f"{len(cone['files'])} files ({sum(p.endswith('.fits') for p in cone['files'])} FITS)")
        lines.append("")
    lines.append("Wall time and peak memory per stage:")
    for s in summary["stages"]:
        lines.append(f"  {s['stage']:<45s} {s['wall_s']:8.1f} s   peak RSS {s['peak_rss_gib']:.2f} GiB")
    lines.append(f"  {'total':<45s} {summary['total_wall_s']:8.1f} s")
    lines.append("")
    lines.append("Where everything is:")
    for k, v in summary["files"].items():
        lines.append(f"  {k:<24s} {v}")
    for name in ("heldout", "large", "multipoles"):
        for k, v in summary.get(name, {}).get("files", {}).items():
            lines.append(f"  {name + ' ' + k:<24s} {v}")
    return "\n".join(lines) + "\n"
