#!/usr/bin/env python
"""Benchmark and cross-check of analysis/ against Pylians (pip install 'halopaint[bench]').

1. Agreement: P, cross P (XPk) and B (Bk) on random fields at 64³ and 128³ — per-bin relative difference
   and identical mode counts (target 1e-5).
2. Speed: P + cross P of two 256³ and 512³ float32 fields, halopaint (Dask threads) vs Pylians XPk in the
   same process, interleaved repeats, medians (target: halopaint ≤ 0.5 × Pylians).
3. Out of core: a 1024³ float32 field written slab by slab to an HDF5 file (4 GiB), its P(k) measured in a
   fresh subprocess through the spilled FFT transpose; peak RSS from getrusage (target ≤ 6 GiB). The
   field is white noise of unit variance, so P(k) must equal V/N³ in every bin (checked). Files removed.

    python jobs/bench/spectra.py [--sizes 256 512] [--repeats 3] [--threads 2] [--big 1024]
                                 [--workdir DIR] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def _quiet(fn, *args, **kw):
    """Call a Pylians routine with its prints silenced."""
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kw)


def random_fields(n: int, seed: int):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, n, n), dtype=np.float32)
    a = np.exp(0.5 * g) - np.float32(np.exp(0.125))
    b = (a + 0.5 * rng.standard_normal((n, n, n), dtype=np.float32)).astype(np.float32)
    return a.astype(np.float32), b


def ours_xpk(a, b, box, threads):
    import dask
    import dask.array as da

    from halopaint.analysis import fft as dfft
    from halopaint.analysis.spectra import spectra
    n = a.shape[0]
    planes = 16                                   # 16 x-planes: slabs stay small (SpectraConfig default)
    with dask.config.set(num_workers=threads):
        fk = [dfft.rfftn(da.from_array(x, chunks=(planes, n, n)), chunk_planes=planes) for x in (a, b)]
        return spectra(fk, box, [(0, 0), (1, 1), (0, 1)], scheduler="threads")


def agreement(threads: int) -> dict:
    import Pk_library as PKL
    from Pk_library import bispectrum_library as BKL

    from halopaint.analysis import bispectrum
    out = {}
    for n in (64, 128):
        a, b = random_fields(n, n)
        box = 4.0 * n                                     # voxel 4 Mpc/h as in the paper
        for mas in ("None", "CIC"):
            import dask
            with dask.config.set(num_workers=threads):
                from halopaint.analysis.spectra import spectra
                from halopaint.analysis import fft as dfft
                import dask.array as da
                fk = [dfft.rfftn(da.from_array(x, chunks=(16, n, n)), chunk_planes=16) for x in (a, b)]
                k, nm, (paa, pbb, pab), _ = spectra(fk, box, [(0, 0), (1, 1), (0, 1)],
                                                    mas=[mas.lower()] * 2, scheduler="threads")
            X = _quiet(PKL.XPk, [a, b], box, axis=0, MAS=[mas, mas], threads=threads)
            out[f"P_{n}_{mas}"] = {
                "modes_identical": bool(np.array_equal(nm, X.Nmodes3D)),
                "max_rel_P": float(np.max(np.abs(paa / X.Pk[:, 0, 0] - 1))),
                "max_rel_P2": float(np.max(np.abs(pbb / X.Pk[:, 0, 1] - 1))),
                "max_rel_XP": float(np.max(np.abs(pab / X.XPk[:, 0, 0] - 1))),
                "max_rel_k": float(np.max(np.abs(k / X.k3D - 1))), "bins": int(k.size)}
        thetas = np.linspace(0.0, np.pi, 6)
        for k1, k2 in ((0.1, 0.2), (0.2, 0.3)):
            ours = bispectrum(a, box, k1, k2, thetas, mas="cic", chunk_planes=16)
            ref = _quiet(BKL.Bk, a, box, k1, k2, thetas, "CIC", threads)
            out[f"B_{n}_{k1}_{k2}"] = {"max_rel_B": float(np.max(np.abs(ours.B / ref.B - 1))),
                                       "max_rel_Q": float(np.max(np.abs(ours.Q / ref.Q - 1)))}
    return out


def speed(sizes, repeats: int, threads: int) -> dict:
    import Pk_library as PKL
    res = {}
    for n in sizes:
        a, b = random_fields(n, 1)
        box = 1000.0
        ours_t, pyl_t = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            k, nm, powers, _ = ours_xpk(a, b, box, threads)
            ours_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            X = _quiet(PKL.XPk, [a, b], box, axis=0, MAS=["None", "None"], threads=threads)
            pyl_t.append(time.perf_counter() - t)
        res[str(n)] = {"halopaint_s": float(np.median(ours_t)), "pylians_s": float(np.median(pyl_t)),
                       "ratio": float(np.median(ours_t) / np.median(pyl_t)),
                       "halopaint_all_s": ours_t, "pylians_all_s": pyl_t,
                       "max_rel_XP": float(np.max(np.abs(powers[2] / X.XPk[:, 0, 0] - 1))),
                       "modes_identical": bool(np.array_equal(nm, X.Nmodes3D))}
        print(f"[bench] {n}³ P+XP: halopaint {res[str(n)]['halopaint_s']:.2f} s, Pylians XPk "
              f"{res[str(n)]['pylians_s']:.2f} s, ratio {res[str(n)]['ratio']:.2f}", file=sys.stderr, flush=True)
        del a, b
    return res


def write_big_field(path: str, n: int, box: float, seed: int, slab: int = 32) -> None:
    """A complete /density file of unit-variance white noise + 1, written slab by slab (float32)."""
    from halopaint.config import Cosmology
    from halopaint.fields import atomic_h5, standard_attrs
    with atomic_h5(path, standard_attrs(box, 0.0, Cosmology(), seed=seed)) as f:
        ds = f.create_dataset("density", shape=(n, n, n), dtype=np.float32, chunks=(slab, n, n))
        for x0 in range(0, n, slab):
            rng = np.random.default_rng([seed, x0])
            ds[x0:x0 + slab] = 1.0 + rng.standard_normal((min(slab, n - x0), n, n), dtype=np.float32)


def big_child(path: str, spill: str, threads: int) -> None:
    """Run in a fresh process: P(k) of the big file, out of core; prints one JSON line."""
    import dask

    from halopaint.analysis import fft as dfft
    from halopaint.analysis.spectra import spectra
    from halopaint.fields import read_info
    info = read_info(path, require=("density",))
    t = time.perf_counter()
    with dask.config.set(num_workers=threads):
        field = dfft.field_from_h5(path, "density", chunk_planes=16)
        fk = dfft.rfftn(field, chunk_planes=16, spill_dir=spill)
        # white noise around mean 1: use the field minus its mean, i.e. the raw field, DC dropped
        k, nm, (p,), _ = spectra([fk], info.box_size, [(0, 0)], scheduler="threads")
    dt = time.perf_counter() - t
    dfft.release_spills()
    expect = info.box_size**3 / info.grid**3            # white noise of unit variance
    pull = (p - expect) / (expect / np.sqrt(nm))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"grid": info.grid, "seconds": dt, "peak_rss_bytes": rss,
                      "peak_rss_gib": rss / 1024**3, "bins": int(k.size),
                      "max_abs_pull": float(np.max(np.abs(pull))), "mean_pull": float(np.mean(pull))}))


def big(n: int, workdir: str, threads: int) -> dict:
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, f"bench-{n}.h5")
    t = time.perf_counter()
    write_big_field(path, n, 4.0 * n, seed=3)
    t_write = time.perf_counter() - t
    print(f"[bench] wrote {path} ({os.path.getsize(path) / 1024**3:.2f} GiB) in {t_write:.1f} s",
          file=sys.stderr, flush=True)
    try:
        r = subprocess.run([sys.executable, __file__, "--child", path, "--workdir", workdir,
                            "--threads", str(threads)], capture_output=True, text=True, cwd=ROOT)
        if r.returncode != 0:
            raise RuntimeError(f"child failed: {r.stderr[-2000:]}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        os.unlink(path)
    res["write_seconds"] = t_write
    print(f"[bench] {n}³ out of core: {res['seconds']:.1f} s, peak RSS {res['peak_rss_gib']:.2f} GiB",
          file=sys.stderr, flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[256, 512])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--big", type=int, default=1024, help="out-of-core grid (0 = skip)")
    ap.add_argument("--workdir", default=tempfile.gettempdir())
    ap.add_argument("--no-agreement", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        big_child(args.child, args.workdir, args.threads)
        return
    report = {"threads": args.threads, "repeats": args.repeats}
    if not args.no_agreement:
        report["agreement"] = agreement(args.threads)
        print("[bench] agreement: " + json.dumps(report["agreement"]), file=sys.stderr, flush=True)
    if args.sizes:
        report["speed"] = speed(args.sizes, args.repeats, args.threads)
    if args.big:
        report["out_of_core"] = big(args.big, args.workdir, args.threads)
    text = json.dumps(report, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
