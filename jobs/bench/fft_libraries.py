"""Time the fused CPU path's FFT work with other FFT libraries than scipy.fft (pocketfft), in one process.

    python jobs/bench/fft_libraries.py [--sizes 32 36 40 48 64] [--repeats 7]

The work timed is exactly what `halopaint.kernels.cpu._FFTBlock._conv_fft` transforms for one sub-tile batch: a
forward 3D real FFT of (2 sub-tiles, 20 channels, N³) float32, then the inverse one axis at a time keeping
the valid (N−4) corner after each axis, single-threaded. Libraries that are not installed are skipped:
pyFFTW (FFTW, plans made with FFTW_MEASURE before timing), ducc0 (pocketfft's successor) and mkl_fft
(Intel MKL). None is a halopaint dependency (pyFFTW's wheels bundle the GPL FFTW, ducc0 is GPL, MKL is
proprietary); this script reproduces the "measured and rejected" FFT-library line of docs/performance.md.
The libraries are interleaved round-robin per repeat; the median time and the ratio to scipy are printed,
with each result's relative difference from scipy's.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.fft  # noqa: E402

BATCH, CHANNELS, MARGIN = 2, 20, 4


def staged_scipy(n: int):
    o, z = MARGIN, n - MARGIN

    def run(x):
        y = scipy.fft.rfftn(x, axes=(-3, -2, -1), workers=1)
        y = scipy.fft.ifft(y, axis=-3, workers=1, overwrite_x=True)[:, :, o:o + z]
        y = scipy.fft.ifft(y, axis=-2, workers=1, overwrite_x=True)[:, :, :, o:o + z]
        return scipy.fft.irfft(y, n=n, axis=-1, workers=1, overwrite_x=True)[..., o:o + z]
    return run


def staged_fftw(n: int):
    import pyfftw
    o, z, h = MARGIN, n - MARGIN, n // 2 + 1
    plan = dict(threads=1, planner_effort="FFTW_MEASURE")
    fwd = pyfftw.builders.rfftn(pyfftw.empty_aligned((BATCH, CHANNELS, n, n, n), "float32"),
                                axes=(-3, -2, -1), **plan)
    inv0 = pyfftw.builders.ifft(pyfftw.empty_aligned((BATCH, CHANNELS, n, n, h), "complex64"), axis=-3, **plan)
    inv1 = pyfftw.builders.ifft(pyfftw.empty_aligned((BATCH, CHANNELS, z, n, h), "complex64"), axis=-2, **plan)
    inv2 = pyfftw.builders.irfft(pyfftw.empty_aligned((BATCH, CHANNELS, z, z, h), "complex64"), n=n, axis=-1,
                                 **plan)

    def run(x):
        y = inv0(fwd(x))[:, :, o:o + z]
        y = inv1(y)[:, :, :, o:o + z]
        return inv2(y)[..., o:o + z]
    return run


def staged_ducc0(n: int):
    import ducc0
    o, z = MARGIN, n - MARGIN

    def run(x):
        y = ducc0.fft.r2c(x, axes=(-3, -2, -1), nthreads=1)
        y = ducc0.fft.c2c(y, axes=(-3,), forward=False, inorm=2, nthreads=1)[:, :, o:o + z]
        y = ducc0.fft.c2c(np.ascontiguousarray(y), axes=(-2,), forward=False, inorm=2, nthreads=1)[:, :, :, o:o + z]
        return ducc0.fft.c2r(np.ascontiguousarray(y), axes=(-1,), lastsize=n, forward=False, inorm=2,
                             nthreads=1)[..., o:o + z]
    return run


def staged_mkl(n: int):
    from mkl_fft.interfaces import numpy_fft as mf
    o, z = MARGIN, n - MARGIN

    def run(x):
        y = mf.ifft(mf.rfftn(x, axes=(-3, -2, -1)), axis=-3)[:, :, o:o + z]
        y = mf.ifft(y, axis=-2)[:, :, :, o:o + z]
        return mf.irfft(y, n=n, axis=-1)[..., o:o + z]
    return run


LIBRARIES = {"scipy": (None, staged_scipy), "pyfftw": ("pyfftw", staged_fftw),
             "ducc0": ("ducc0", staged_ducc0), "mkl_fft": ("mkl_fft", staged_mkl)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 36, 40, 48, 64], help="FFT sides N")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    present = {k: v for k, (mod, v) in LIBRARIES.items() if mod is None or importlib.util.find_spec(mod)}
    missing = sorted(set(LIBRARIES) - set(present))
    if missing:
        print(f"not installed, skipped: {', '.join(missing)}")
    rng = np.random.default_rng(0)
    for n in args.sizes:
        x = rng.standard_normal((BATCH, CHANNELS, n, n, n)).astype(np.float32)
        runs = {name: make(n) for name, make in present.items()}
        ref = runs["scipy"](x)
        err = {name: float(np.linalg.norm(f(x) - ref) / np.linalg.norm(ref)) for name, f in runs.items()}
        times = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, f in runs.items():
                t0 = time.perf_counter()
                f(x)
                times[name].append(time.perf_counter() - t0)
        base = statistics.median(times["scipy"])
        for name in runs:
            m = statistics.median(times[name])
            print(f"N={n:3d}  {name:8s} {m * 1e3:8.2f} ms  ×{base / m:5.2f} vs scipy  rel. diff {err[name]:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
