"""Benchmark and closing figures of the embedded simulator (`halopaint simulate`).

Runs `halopaint simulate` in child processes and reports wall time and peak RSS (os.wait4 rusage of
that child) for N-body runs of P³ particles (default 128³ and 256³ on a 64³ grid, 256 Mpc/h) and
optional `--lpt-only` runs. Because the machine may be shared, each run also records a reference
timing measured just before it in this process (median of 3 scipy 256³ real FFTs) and the load average;
`wall / reference` is the contention-robust figure.

With --figures DIR it draws, from the largest N-body run:
  sim_pk.png           P(k) of /density (2LPT) and /nbody_density (PM N-body) against linear theory
  sim_massfunction.png FoF mass function against Watson et al. (2013) (colossus), ≥ 100 particles marked
and prints the worst ratio to Watson13 over bins of ≥ 100-particle halos.

    python jobs/bench/simulate.py --particles 128 256 --lpt-grids 64 256 --json bench.json --figures runs/figures

Distributed 2LPT (`--mpi-grid G --mpi-ranks 1 2 3`): `simulate --lpt-only --grid G` on each rank count
(R = 1 without mpiexec; OMP threads = --threads // R, so every run uses the same cores), reporting wall
time, each rank's peak RSS (the output's `peak_rss_bytes` attr), the largest per-rank peak over the
serial run's, and the max relative difference of /density and /velocity to the serial run:

    python jobs/bench/simulate.py --particles --lpt-grids --mpi-grid 192 --mpi-ranks 1 2 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def reference_seconds() -> float:
    import scipy.fft
    x = np.random.default_rng(0).standard_normal((256, 256, 256)).astype(np.float32)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        scipy.fft.rfftn(x, workers=2)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run_child(argv: list[str], env: dict) -> dict:
    ref = reference_seconds()
    load = os.getloadavg()[0]
    t = time.perf_counter()
    with open(os.devnull, "w") as devnull:
        proc = subprocess.Popen(argv, env=env, stdout=devnull)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed with exit code {proc.returncode}")
    return dict(command=" ".join(argv), wall_s=round(wall, 1), peak_rss_gib=round(usage.ru_maxrss / 2**20, 2),
                reference_fft_s=round(ref, 3), wall_over_reference=round(wall / ref, 1), load_average=load)


def figures(path: str, outdir: Path) -> dict:
    import h5py
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from colossus.cosmology import cosmology as colossus_cosmology
    from colossus.lss import mass_function as colossus_mf

    from halopaint.config import Cosmology
    from halopaint.sim.cosmology import T_CMB, LinearCosmology
    from halopaint.analysis.spectra import power_spectrum
    from halopaint.sim.massfunction import mass_function

    outdir.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
        rho = f["density"][:].astype(np.float64)
        nbody = f["nbody_density"][:].astype(np.float64)
        mass = f["catalog/mass"][:]
    box, n = float(attrs["box_size"]), rho.shape[0]
    cosmo = Cosmology.from_json(attrs["cosmology"])
    lin = LinearCosmology(cosmo)
    a = 1.0 / (1.0 + float(attrs["redshift"]))

    ps_lpt, ps_nb = power_spectrum(rho - 1.0, box), power_spectrum(nbody - 1.0, box)
    m = min(ps_lpt.k.size, n // 2 - 1)                 # bins 1 … N/2−1 (below the Nyquist shell)
    k, p_lpt, p_nb = ps_lpt.k[:m], ps_lpt.power[:m], ps_nb.power[:m]
    # the CIC window averaged over each shell, so the comparison is with linear theory × window
    ix = np.fft.fftfreq(n, 1.0 / n)
    iz = np.arange(n // 2 + 1)
    w2 = (np.sinc(ix[:, None, None] / n) * np.sinc(ix[None, :, None] / n) * np.sinc(iz[None, None, :] / n)) ** 4
    nmag = np.sqrt(ix[:, None, None] ** 2 + ix[None, :, None] ** 2 + iz[None, None, :] ** 2)
    wt = np.where((iz == 0) | (2 * iz == n), 1.0, 2.0)[None, None, :] * np.ones_like(nmag)
    b = np.floor(nmag).astype(int)
    sel = (b >= 1) & (b < n // 2)
    kf = 2 * np.pi / box
    plin_w = (np.bincount(b[sel], weights=(wt * w2 * lin.power(kf * nmag, a))[sel], minlength=n // 2)
              / np.bincount(b[sel], weights=wt[sel], minlength=n // 2))[1:n // 2]
    plin_w = plin_w[: k.size]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6.5, 7), sharex=True, gridspec_kw=dict(height_ratios=[2, 1]))
    kk = np.logspace(np.log10(k[0]), np.log10(k[-1]), 200)
    ax.loglog(kk, lin.power(kk, a), "k-", lw=1, label="linear (Eisenstein–Hu, σ8=%.2f)" % cosmo.sigma8)
    ax.loglog(k, plin_w, "k:", lw=1, label="linear × CIC window")
    ax.loglog(k, p_lpt, "C0o-", ms=3, label=f"/density: 2LPT, {attrs['density_recipe']}")
    ax.loglog(k, p_nb, "C3s-", ms=3, label=f"/nbody_density: PM {attrs['n_particles_side']}³, "
                                           f"mesh {attrs['pm_mesh']}³, {attrs['pm_steps']} steps")
    ax.set_ylabel("P(k) [(Mpc/h)³]")
    ax.legend(fontsize=7)
    ax.set_title(f"{Path(path).name}: {box:g} Mpc/h, {n}³ grid, z={attrs['redshift']:g}, seed {attrs['seed']}",
                 fontsize=9)
    ax2.semilogx(k, p_lpt / plin_w, "C0o-", ms=3, label="2LPT / (linear × window)")
    ax2.semilogx(k, p_nb / plin_w, "C3s-", ms=3, label="N-body / (linear × window)")
    ax2.axhline(1, color="k", lw=0.8)
    ax2.set_ylim(0.5, 2.0)
    ax2.set_xlabel("k [h/Mpc]")
    ax2.set_ylabel("ratio")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(outdir / "sim_pk.png", dpi=120)
    plt.close(fig)

    mp = float(attrs["particle_mass"])
    edges = mp * np.logspace(1, np.log10(max(2e3, mass.max() / mp * 1.01)), 14)
    centres, dndlnm, counts = mass_function(mass, box, edges)
    colossus_cosmology.setCosmology("halopaint-bench", params=dict(
        flat=True, H0=100 * cosmo.h, Om0=cosmo.Omega_m, Ob0=cosmo.Omega_b, sigma8=cosmo.sigma8, ns=cosmo.n_s,
        Tcmb0=T_CMB, relspecies=False), persistence="")
    watson = colossus_mf.massFunction(centres, float(attrs["redshift"]), mdef="fof", model="watson13",
                                      q_out="dndlnM", ps_args=dict(model="eisenstein98"))
    good = (edges[:-1] >= 100 * mp) & (counts >= 20)
    worst = float(np.max(np.abs(dndlnm[good] / watson[good] - 1))) if good.any() else float("nan")
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6.5, 6.5), sharex=True, gridspec_kw=dict(height_ratios=[2, 1]))
    err = dndlnm / np.sqrt(np.maximum(counts, 1))
    ax.errorbar(centres, dndlnm, err, fmt="C3o", ms=4, label=f"FoF b=0.2 ({counts.sum()} halos ≥ 10 particles)")
    ax.loglog(centres, watson, "k-", label="Watson et al. 2013 FoF (colossus)")
    ax.axvline(100 * mp, color="0.5", ls="--", lw=0.8, label="100 particles")
    for e in attrs["mass_bin_edges"]:
        ax.axvline(e, color="C0", lw=0.5, alpha=0.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel("dn/dlnM [(h/Mpc)³]")
    ax.legend(fontsize=7)
    ax.set_title(f"m_p = {mp:.3g} M☉/h; blue lines: painter's mass bins", fontsize=9)
    ax2.errorbar(centres, dndlnm / watson, err / watson, fmt="C3o", ms=4)
    ax2.axhline(1, color="k", lw=0.8)
    ax2.axhspan(0.75, 1.25, color="0.9")
    ax2.axvline(100 * mp, color="0.5", ls="--", lw=0.8)
    ax2.set_ylim(0.4, 1.6)
    ax2.set_xlabel("M [M☉/h]")
    ax2.set_ylabel("sim / Watson13")
    fig.tight_layout()
    fig.savefig(outdir / "sim_massfunction.png", dpi=120)
    plt.close(fig)
    return dict(file=path, massfunction_worst_ratio_minus_1_ge100=round(worst, 3),
                massfunction_ratio=[round(float(x), 3) for x in dndlnm / watson],
                massfunction_mass=[float(f"{c:.4g}") for c in centres], massfunction_counts=counts.tolist(),
                k=[round(float(x), 4) for x in k], pk_nbody_over_linear_window=[round(float(x), 3) for x in p_nb / plin_w],
                pk_lpt_over_linear_window=[round(float(x), 3) for x in p_lpt / plin_w])


def mpi_runs(grid: int, ranks: list[int], box: float, seed: int, threads: int, work: Path) -> dict:
    """`simulate --lpt-only` on each rank count → times, per-rank peaks, ratios and differences to R = 1."""
    import shutil
    import h5py
    mpiexec = shutil.which("mpiexec")
    runs, ref = [], None
    for r in ranks:
        out = work / f"mpi-g{grid}-r{r}.h5"
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, threads // r)), NUMBA_NUM_THREADS=str(max(1, threads // r)))
        cmd = [sys.executable, "-m", "halopaint.cli", "simulate", "--quiet", "--lpt-only", "--grid", str(grid),
               "--box", str(box), "--seed", str(seed), "--out", str(out)]
        if r > 1:
            cmd = [mpiexec, "-n", str(r)] + cmd
        rec = run_child(cmd, env)
        with h5py.File(out, "r") as f:
            peaks = [int(x) for x in f.attrs["peak_rss_bytes"]]
            fields = {name: f[name][:] for name in ("density", "velocity")}
        rec.update(kind="lpt-mpi", grid=grid, ranks=r, box=box, peak_rss_gib_per_rank=[round(x / 2**30, 3) for x in peaks],
                   max_rank_peak_gib=round(max(peaks) / 2**30, 3), out=str(out))
        if ref is None:
            ref = dict(peak=max(peaks), fields=fields)
        else:
            rec["max_rank_peak_over_serial"] = round(max(peaks) / ref["peak"], 3)
            rec["max_rel_diff_vs_serial"] = {
                name: float(np.abs(fields[name].astype(np.float64) - ref["fields"][name]).max()
                            / np.abs(ref["fields"][name]).max()) for name in fields}
        runs.append(rec)
        print(json.dumps(rec), flush=True)
    return dict(runs=runs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--particles", type=int, nargs="*", default=[128, 256], help="N-body particles per side")
    ap.add_argument("--grid", type=int, default=64)
    ap.add_argument("--box", type=float, default=256.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lpt-grids", type=int, nargs="*", default=[64], help="--lpt-only grid sides (same box/voxel)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mpi-grid", type=int, default=None, help="distributed --lpt-only benchmark at this grid")
    ap.add_argument("--mpi-ranks", type=int, nargs="*", default=[1, 2], help="rank counts (1 = serial reference first)")
    ap.add_argument("--workdir", default="/tmp/halopaint-bench-sim")
    ap.add_argument("--json", default=None)
    ap.add_argument("--figures", default=None, help="directory for sim_pk.png and sim_massfunction.png")
    ap.add_argument("--figures-from", default=None, help="draw figures from this existing file instead")
    args = ap.parse_args(argv)

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), NUMBA_NUM_THREADS=str(args.threads))
    exe = [sys.executable, "-m", "halopaint.cli", "simulate", "--quiet"]
    results = []
    for p in args.particles:
        out = work / f"nbody-g{args.grid}-p{p}.h5"
        r = run_child(exe + ["--grid", str(args.grid), "--box", str(args.box), "--seed", str(args.seed),
                             "--particles-per-side", str(p), "--out", str(out)], env)
        r.update(kind="nbody", particles=p, grid=args.grid, box=args.box, out=str(out))
        results.append(r)
        print(json.dumps(r), flush=True)
    for g in args.lpt_grids:
        out = work / f"lpt-g{g}.h5"
        box = args.box * g / args.grid
        r = run_child(exe + ["--grid", str(g), "--box", str(box), "--seed", str(args.seed), "--lpt-only",
                             "--out", str(out)], env)
        r.update(kind="lpt-only", grid=g, box=box, out=str(out))
        results.append(r)
        print(json.dumps(r), flush=True)
    report = dict(runs=results)
    if args.mpi_grid:
        box = args.box * args.mpi_grid / args.grid
        report["mpi"] = mpi_runs(args.mpi_grid, args.mpi_ranks, box, args.seed, args.threads, work)
    source = args.figures_from or next((r["out"] for r in reversed(results) if r["kind"] == "nbody"), None)
    if args.figures and source:
        report["figures"] = figures(source, Path(args.figures))
        print(json.dumps(report["figures"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
