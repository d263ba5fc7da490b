"""Fused CPU inference path for the generator: same weights and results as halopaint.kernels.reference, less work.

What it does differently from the reference (every change is exact algebra, not an approximation):

- **Fold reductions into convolutions where that lowers the work** (a block whose input has fewer
  channels than `filters`, i.e. block 1 with C_in = 1): a 1×1×1 conv followed by a k³ conv is one k³
  conv C_in→F. The 3³ branch is zero-padded to 5³ and stacked with the 5³ branch, and the residual
  (input channel 0, added to every output channel) becomes a unit centre tap, so block 1's three
  spatial parts are ONE conv3d 1→2F. Branch C (1×1×1) + residual is one pointwise map.
- **Merge 1×1×1 convs that read the same input into one matrix product** (block 2: the A, B and C
  reductions 30→3F as one GEMM, the residual folded into C's weights; C is then cropped).
- **Crop instead of computing discarded borders**: branch B and C are only evaluated where the block
  output exists.
- **FFT convolution (overlap-save over sub-tiles)** for the unfolded blocks' k³ F→F convs: the two
  branches' reduced fields (2F channels) are transformed once (sub-tile side N), mixed per frequency
  with cached kernel spectra (block-diagonal: F×F complex for branch A and for branch B, the 3³ kernel
  zero-padded to 5³; the conv biases enter at the zero frequency), transformed back one axis at a time
  keeping only the valid (N−k+1)³ corner. FFTs are `scipy.fft` (pocketfft) with `workers` = torch's
  thread count: measured 2–5× faster than torch.fft (MKL) on the staged inverse and with 2 threads.
  The mixing is a numba-compiled loop nest (`_mix_compiled`: AVX2 FMAs over chunks of frequencies, five
  inputs per accumulator pass), 1.6× faster than torch's complex `addcmul` on the mixing alone.
  ~10× fewer floating-point operations than direct convolution for the 5³ + 3³ 10→10 convs, at far
  lower efficiency than GEMM: net ~1.3–2× faster than oneDNN `conv3d` here. `conv="direct"` uses
  `conv3d` (channels_last_3d) instead.
- **Pointwise tail as one matrix chain** over the last block's output with in-place activations.
- **Hand-vectorised C kernels** (kernels/native.c, compiled at first use by halopaint.kernels.native; used when a C
  compiler works and the architecture has one input channel and ≥ 2 blocks, else the torch code above),
  8 voxels along x per vector register: block 1 fused with block 2's merged reductions (block 1's
  3F-channel output never reaches memory); the FFT blocks' convolutions with 2D FFTs over (z, y) and the x
  taps applied directly in that domain (`_conv_fft_x`: no x transforms, kernel spectra that stay in cache);
  the last block's residual add + activation fused with the pointwise tail. Per 2 × 32³ sub-tiles on one
  thread ×1.85, ×1.24–1.44 and ×2.1 on those parts, ×1.5–1.6 on the whole
  (`python jobs/bench/native_parts.py`).

Tile-friendly: a call paints one tile by looping over sub-tiles of the output (side `subtile`, chosen
per call from a few FFT-friendly sizes); memory is O(sub-tile batch × threads), never O(field). Threads:
torch's intra-op setting T is the caller's choice; on T > 1 the FFT path paints sub-tiles in T parallel
single-threaded pipelines (each output voxel is owned by one sub-tile, so the result is bit-identical).

Accuracy: fp32 throughout; measured ‖out−ref‖/‖ref‖ = 3e-7 … 4e-6 against halopaint.kernels.reference (tests
assert ≤ 1e-5); against a float64 reference the FFT path is as close as the fp32 reference itself.
`fft_dtype=torch.float64` computes the FFT convolutions in double precision.
"""

from __future__ import annotations

import itertools
import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F

from halopaint.kernels.reference import GeneratorSpec

# FFT sizes N tried for the last block's sub-tiles (sub-tile output side = N − (k − 1)), with the
# measured time per N³ voxels of one sub-tile relative to N = 32 (whole fused forward on tiles a multiple
# of N − 4, idle 2-core AMD EPYC, AVX2, one thread: `python jobs/bench/kernels.py --fft-sizes`): within
# ±5 % from 20 to 48; 64 costs 1.74 (its kernel spectra, 210 MB, leave the cache) and is not offered.
# (Measured for the torch/numba 3D FFT path. With the native C kernels the cost per *output* voxel is
# flat within 2 % from N = 32 to 64, so these weights choose as well there.)
FFT_SIZES = {20: 1.03, 24: 1.02, 28: 1.04, 30: 1.04, 32: 1.0, 36: 0.99, 40: 0.97, 45: 1.07, 48: 1.05}
# Frequencies per step of the addcmul mixing (the chunk of spectra and products stays in cache).
MIX_CHUNK = 8192
# Frequencies per step of the compiled mixing: 5 inputs' spectra + products (~25 kB) stay in L1/L2.
NUMBA_MIX_CHUNK = 512
# Kernel spectra kept per block (one per FFT shape in use; ~26 MB each at N = 32 for the paper's net).
MAX_SPECTRA = 2
# Sub-tiles transformed together: more amortises reading the kernel spectra while mixing, fewer keeps
# the working set in cache; 2 measured best (1 and 2 threads) for the 3D FFT path, 1 with the native C
# kernels, whose kernel spectra are small (128³ tile, 2 threads: 0.41–0.44 s vs 0.42–0.46 s, 3 A/B runs).
SUBTILE_BATCH = 2
SUBTILE_BATCH_NATIVE = 1
# The C kernels (kernels/native.c) fill 8-voxel vectors along x: narrower outputs take the torch code.
NATIVE_MIN_WIDTH = 8


def _leaky_(y: torch.Tensor, slope: float) -> torch.Tensor:
    return F.leaky_relu_(y, slope)


def _pointwise(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """1×1×1 conv channels-first: w (O, C), b (O,), x (nb, C, V) → (nb, O, V), one GEMM per sub-tile
    (a plain `mm` per item runs ~2× faster here than the broadcast batched matmul)."""
    out = torch.empty(x.shape[0], w.shape[0], x.shape[2], dtype=x.dtype)
    bias = b.view(-1, 1)
    for i in range(x.shape[0]):
        torch.addmm(bias, w, x[i], out=out[i])
    return out


@numba.njit(fastmath=True, nogil=True, cache=True, boundscheck=False)
def _cmac5(ar, ai, a0, b0, x0, a1, b1, x1, a2, b2, x2, a3, b3, x3, a4, b4, x4):
    """(ar + i·ai) += Σ_j (a_j + i·b_j)·x_j over 5 inputs, x_j interleaved complex (re, im, re, …)."""
    for q in range(ar.shape[0]):
        r = ar[q]
        m = ai[q]
        xr = x0[2 * q]; xi = x0[2 * q + 1]; r += a0[q] * xr - b0[q] * xi; m += a0[q] * xi + b0[q] * xr  # noqa: E702
        xr = x1[2 * q]; xi = x1[2 * q + 1]; r += a1[q] * xr - b1[q] * xi; m += a1[q] * xi + b1[q] * xr  # noqa: E702
        xr = x2[2 * q]; xi = x2[2 * q + 1]; r += a2[q] * xr - b2[q] * xi; m += a2[q] * xi + b2[q] * xr  # noqa: E702
        xr = x3[2 * q]; xi = x3[2 * q + 1]; r += a3[q] * xr - b3[q] * xi; m += a3[q] * xi + b3[q] * xr  # noqa: E702
        xr = x4[2 * q]; xi = x4[2 * q + 1]; r += a4[q] * xr - b4[q] * xi; m += a4[q] * xi + b4[q] * xr  # noqa: E702
        ar[q] = r
        ai[q] = m


@numba.njit(fastmath=True, nogil=True, cache=True, boundscheck=False)
def _cmac1(ar, ai, a0, b0, x0):
    for q in range(ar.shape[0]):
        xr = x0[2 * q]
        xi = x0[2 * q + 1]
        ar[q] += a0[q] * xr - b0[q] * xi
        ai[q] += a0[q] * xi + b0[q] * xr


@numba.njit(fastmath=True, nogil=True, cache=True, boundscheck=False)
def _mix_compiled(x, s_re, s_im, y, chunk):
    """Per-frequency complex mixing y[b, r, o] = Σ_i S[r, o, i] · x[b, r, i], r = branch.

    x, y: (nb, R, F, 2·Fq) float32, interleaved complex; s_re, s_im: (R, F, F, Fq) float32 (planar).
    Frequencies in chunks of `chunk`; inputs 5 at a time (fewer accumulator passes); the sub-tiles of the
    batch share each spectrum slice while it is in cache. Numba compiles the inner loops to AVX2 FMAs.
    """
    nb, nbr, f, _ = x.shape
    fq = s_re.shape[3]
    acc = np.empty((nb, 2, chunk), np.float32)
    for c0 in range(0, fq, chunk):
        c1 = min(c0 + chunk, fq)
        n = c1 - c0
        for r in range(nbr):
            for o in range(f):
                acc[:, :, :n] = 0.0
                i = 0
                while i + 5 <= f:
                    for b in range(nb):
                        _cmac5(acc[b, 0, :n], acc[b, 1, :n],
                               s_re[r, o, i, c0:c1], s_im[r, o, i, c0:c1], x[b, r, i, 2 * c0:2 * c1],
                               s_re[r, o, i + 1, c0:c1], s_im[r, o, i + 1, c0:c1], x[b, r, i + 1, 2 * c0:2 * c1],
                               s_re[r, o, i + 2, c0:c1], s_im[r, o, i + 2, c0:c1], x[b, r, i + 2, 2 * c0:2 * c1],
                               s_re[r, o, i + 3, c0:c1], s_im[r, o, i + 3, c0:c1], x[b, r, i + 3, 2 * c0:2 * c1],
                               s_re[r, o, i + 4, c0:c1], s_im[r, o, i + 4, c0:c1], x[b, r, i + 4, 2 * c0:2 * c1])
                    i += 5
                while i < f:
                    for b in range(nb):
                        _cmac1(acc[b, 0, :n], acc[b, 1, :n],
                               s_re[r, o, i, c0:c1], s_im[r, o, i, c0:c1], x[b, r, i, 2 * c0:2 * c1])
                    i += 1
                for b in range(nb):
                    yo = y[b, r, o, 2 * c0:2 * c1]
                    for q in range(n):
                        yo[2 * q] = acc[b, 0, q]
                        yo[2 * q + 1] = acc[b, 1, q]


class _FoldedBlock:
    """A block whose reductions fold into its convolutions (C_in < F): one conv3d C_in→2F + pointwise C.

    Input (nb, C_in, s+2t, …) channels-first → output (nb, 3F, s, …) (after leaky ReLU).
    """

    def __init__(self, p, prefix, spec: GeneratorSpec, c_in: int):
        f, k, kb, t = spec.filters, spec.big_kernel, spec.small_kernel, spec.block_trim
        d = torch.float64  # fold in double, store float32
        w = lambda n: (p[f"{prefix}.{n}.weight"].to(d), p[f"{prefix}.{n}.bias"].to(d))  # noqa: E731
        ar_w, ar_b = w("a_reduce")
        br_w, br_b = w("b_reduce")
        ac_w, ac_b = w("a_conv")
        bc_w, bc_b = w("b_conv")
        cr_w, cr_b = w("c_reduce")
        ar, br = ar_w.flatten(1), br_w.flatten(1)        # (F, C_in)
        # conv(reduce(x)): weight[o, c, k] = Σ_i conv[o, i, k] reduce[i, c]; bias = conv_b + Σ_{i,k} conv[o,i,k] reduce_b[i]
        wa = torch.einsum("oixyz,ic->ocxyz", ac_w, ar)
        ba = ac_b + torch.einsum("oixyz,i->o", ac_w, ar_b)
        wb_small = torch.einsum("oixyz,ic->ocxyz", bc_w, br)
        bb = bc_b + torch.einsum("oixyz,i->o", bc_w, br_b)
        m = (k - kb) // 2
        wb = torch.zeros(f, c_in, k, k, k, dtype=d)
        wb[:, :, m:m + kb, m:m + kb, m:m + kb] = wb_small
        wab = torch.cat([wa, wb], 0)
        wab[:, 0, t, t, t] += 1.0                        # residual: input channel 0 at the centre
        self.w_ab = wab.float().contiguous()
        self.b_ab = torch.cat([ba, bb]).float()
        wc = cr_w.flatten(1).clone()
        wc[:, 0] += 1.0                                  # residual on branch C
        self.w_c = wc.float()                            # (F, C_in)
        self.b_c = cr_b.float()
        self.t, self.slope, self.f = t, spec.slope, f

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        t, f = self.t, self.f
        nb, _, d, h, w = x.shape
        out = torch.empty(nb, 3 * f, d - 2 * t, h - 2 * t, w - 2 * t, dtype=x.dtype)
        out[:, :2 * f] = F.conv3d(x, self.w_ab, self.b_ab)
        xc = x[:, :, t:d - t, t:h - t, t:w - t]
        if self.w_c.shape[1] == 1:
            torch.addcmul(self.b_c.view(1, f, 1, 1, 1), self.w_c.view(1, f, 1, 1, 1), xc, out=out[:, 2 * f:])
        else:
            out[:, 2 * f:] = torch.einsum("oc,bcxyz->boxyz", self.w_c, xc) + self.b_c.view(1, f, 1, 1, 1)
        return _leaky_(out, self.slope)


class _FFTBlock:
    """A block with C_in ≥ F: merged reductions (one GEMM), k³/kb³ convs by FFT or direct, merged C.

    Input (nb, C_in, s+2t, …) → output (nb, 3F, s, …). `conv` is 'fft' or 'direct'.
    """

    def __init__(self, p, prefix, spec: GeneratorSpec, c_in: int, conv: str, fft_dtype: torch.dtype,
                 mixing: str = "auto"):
        f, k, kb, t = spec.filters, spec.big_kernel, spec.small_kernel, spec.block_trim
        g = lambda n: (p[f"{prefix}.{n}.weight"].float(), p[f"{prefix}.{n}.bias"].float())  # noqa: E731
        ar_w, ar_b = g("a_reduce")
        br_w, br_b = g("b_reduce")
        cr_w, cr_b = g("c_reduce")
        wc = cr_w.flatten(1).clone()
        wc[:, 0] += 1.0                                                              # residual on C
        # all three 1×1×1 convs read the block input: one GEMM C_in → 3F (C is cropped afterwards)
        self.w_red = torch.cat([ar_w.flatten(1), br_w.flatten(1), wc], 0).contiguous()
        self.b_red = torch.cat([ar_b, br_b, cr_b])
        self.a_w, self.a_b = g("a_conv")
        self.b_w, self.b_b = g("b_conv")
        m = (k - kb) // 2
        self.k, self.kb, self.m, self.t, self.f = k, kb, m, t, f
        self.slope, self.conv, self.fft_dtype = spec.slope, conv, fft_dtype
        # Branch B's kernel zero-padded to k³ (same output as crop(conv_kb, m)); both flipped for FFT.
        wb = torch.zeros(f, f, k, k, k)
        wb[:, :, m:m + kb, m:m + kb, m:m + kb] = self.b_w
        self._kernels = torch.stack([self.a_w, wb]).flip(-3, -2, -1)                # (2, F, F, k, k, k)
        self._bias = torch.cat([self.a_b, self.b_b])
        self._spectra: dict[tuple[int, int, int], torch.Tensor] = {}
        self._relaid_cache: tuple = (None, None)
        self.mixing = mixing
        self.a_w_cl = self.a_w.contiguous(memory_format=torch.channels_last_3d)
        self.b_w_cl = self.b_w.contiguous(memory_format=torch.channels_last_3d)
        self.native_mix = None           # kernels/native.c's mix_xdirect, set by FusedCPUKernel when built

    def _cached_spectrum(self, key, compute):
        """self._spectra[key], computed by `compute()` on first use; at most MAX_SPECTRA are kept (tiles of
        many shapes: memory stays bounded)."""
        if key not in self._spectra:
            if len(self._spectra) >= MAX_SPECTRA:
                self._spectra.pop(next(iter(self._spectra)))
            self._spectra[key] = compute()
        return self._spectra[key]

    def spectrum(self, shape: tuple[int, int, int]) -> torch.Tensor:
        """Kernel spectra for FFT size `shape`: (2, Nz·Ny·(Nx//2+1), F_out, F_in) complex."""
        def compute():
            spec = torch.fft.rfftn(self._kernels.to(self.fft_dtype), s=shape, dim=(-3, -2, -1))  # (2, Fo, Fi, …)
            return spec.flatten(3).permute(0, 3, 1, 2).contiguous()                         # (2, Fq, Fo, Fi)
        return self._cached_spectrum(shape, compute)

    def mixing_for(self, threads: int) -> str:
        """The mixing a call with `threads` torch threads uses ('auto' resolved)."""
        if self.mixing != "auto":
            return self.mixing
        if threads > 1:
            return "matmul"
        return "compiled" if self.fft_dtype == torch.float32 else "addcmul"

    def prepare(self, shape: tuple[int, int, int], threads: int, out_width: int) -> None:
        """Fill the spectrum caches that `_conv_fft` will read for FFT size `shape` and output width
        `out_width` (before several threads read them)."""
        if self._uses_x(out_width):
            self.spectrum_x(shape[:2])
        else:
            self._relaid(self.mixing_for(threads), shape)

    def _uses_x(self, out_width: int) -> bool:
        """Whether `_conv_fft` runs the x-direct C path (else the 3D FFT path) for this output width."""
        return self.native_mix is not None and self.fft_dtype == torch.float32 and out_width >= NATIVE_MIN_WIDTH

    def _mix(self, xf: torch.Tensor, shape) -> torch.Tensor:
        """Per-frequency F×F complex mixing of both branches: xf (nb, 2, F_in, Fq) → (nb, 2, F_out, Fq).

        'compiled' (default on one thread, float32): the numba loops of `_mix_compiled`, AVX2 FMAs over
        chunks of frequencies, each spectrum slice read once per sub-tile batch (measured 1.6× faster
        than 'addcmul' on the mixing alone);
        'addcmul': F torch multiply-adds per frequency chunk that stays in cache;
        'matmul': one batched matmul + two layout copies — few, large ops, which matters with several
        threads, where every torch op is an OpenMP region that stalls when the cores are oversubscribed.
        """
        mixing = self.mixing_for(torch.get_num_threads())
        nb, _, f, fq = xf.shape
        sp = self._relaid(mixing, shape)
        if mixing == "matmul":
            y = torch.matmul(sp, xf.permute(1, 3, 2, 0))                   # (2, Fq, F_out, nb)
            return y.permute(3, 0, 2, 1).contiguous()
        y = torch.empty(nb, 2, f, fq, dtype=xf.dtype)
        if mixing == "compiled":
            x = xf.contiguous().view(torch.float32).numpy()                 # (nb, 2, F, 2·Fq) interleaved
            _mix_compiled(x, sp[0], sp[1], y.view(torch.float32).numpy(), NUMBA_MIX_CHUNK)
            return y
        for c0 in range(0, fq, MIX_CHUNK):
            yc, xc, sc = y[..., c0:c0 + MIX_CHUNK], xf[..., c0:c0 + MIX_CHUNK], sp[..., c0:c0 + MIX_CHUNK]
            torch.mul(sc[0], xc[:, :, 0:1], out=yc)
            for i in range(1, f):
                yc.addcmul_(sc[i], xc[:, :, i:i + 1])
        return y

    def _relaid(self, mixing: str, shape):
        """The kernel spectra for `shape` in the layout `mixing` reads; one re-laid copy is cached (the last
        shape and mixing asked for), so memory stays at MAX_SPECTRA spectra + 1 copy.

        matmul: (2, Fq, F_out, F_in) complex (the cached spectrum itself); addcmul: (F_in, 2, F_out, Fq)
        complex; compiled: (re, im), each (2, F_out, F_in, Fq) float32 numpy.
        """
        spec = self.spectrum(shape)
        if mixing == "matmul":
            return spec
        if self._relaid_cache[0] != (mixing, shape):
            if mixing == "compiled":
                s = spec.permute(0, 2, 3, 1)                                # (2, F_out, F_in, Fq)
                lay = (s.real.contiguous().numpy(), s.imag.contiguous().numpy())
            else:
                lay = spec.permute(3, 0, 2, 1).contiguous()
            self._relaid_cache = ((mixing, shape), lay)
        return self._relaid_cache[1]

    def spectrum_x(self, zy: tuple[int, int]) -> tuple[np.ndarray, ...]:
        """Kernel spectra over (z, y) only, for `_conv_fft_x`: (A re, A im, B re, B im), each float32
        (Nz·(Ny//2+1), F_in, taps, F_out) with k taps (A) or kb taps (B) along x; B zero-padded to k² in (z, y)."""
        def compute():
            f, k, kb, m = self.f, self.k, self.kb, self.m
            wb = torch.zeros(f, f, k, k, kb, dtype=torch.float64)
            wb[:, :, m:m + kb, m:m + kb] = self.b_w.double()
            parts = []
            for w in (self.a_w.double(), wb):
                spec = torch.fft.rfftn(w.flip(-3, -2), s=zy, dim=(-3, -2))              # (Fo, Fi, Nz, Nyh, taps)
                spec = spec.permute(2, 3, 1, 4, 0).reshape(-1, f, w.shape[-1], f)      # (P, Fi, taps, Fo)
                parts += [spec.real.float().contiguous().numpy(), spec.imag.float().contiguous().numpy()]
            return (*parts, (self._bias.double() * math.prod(zy)).float().numpy())
        return self._cached_spectrum(("x", *zy), compute)

    def _conv_fft_x(self, r: torch.Tensor, out_shape, fft_shape) -> torch.Tensor:
        """As `_conv_fft`, with 2D FFTs over (z, y) and the x taps applied directly in that domain by the C
        kernel `mix_xdirect`: no x transforms and kernel spectra ~9× smaller (4.4 MB at N = 36, which stay in
        cache where the 3D spectra, 39 MB, stream from memory); x needs no padding (out_shape[2] ≥ 8)."""
        nb, f, k = r.shape[0], self.f, self.k
        zy = tuple(fft_shape[:2])
        workers = torch.get_num_threads()
        s = np.ascontiguousarray(scipy.fft.rfftn(r.numpy(), s=zy, axes=(-3, -2), workers=workers))  # complex64
        nz, nyh, w = s.shape[-3:]
        oz, oy, ox = out_shape
        y = np.empty((nb, 2 * f, nz, nyh, ox), np.complex64)
        *spectra, dc = self.spectrum_x(zy)
        work = np.empty(2 * f * w, np.float32)
        self.native_mix(nb, nz * nyh, w, ox, s.ctypes.data, *(a.ctypes.data for a in spectra), dc.ctypes.data,
                        y.ctypes.data, work.ctypes.data)
        o = k - 1
        y = scipy.fft.ifft(y, axis=-3, workers=workers, overwrite_x=True)[:, :, o:o + oz]
        y = scipy.fft.irfft(y, n=zy[1], axis=-2, workers=workers, overwrite_x=True)[:, :, :, o:o + oy]
        return torch.from_numpy(y)

    def _conv_fft(self, r: torch.Tensor, out_shape, fft_shape) -> torch.Tensor:
        """r (nb, 2F, d, h, w) reduced fields → (nb, 2F, *out_shape) valid k³ correlations."""
        if self._uses_x(out_shape[2]):
            return self._conv_fft_x(r, out_shape, fft_shape)
        nb, f, k = r.shape[0], self.f, self.k
        workers = torch.get_num_threads()               # the caller's thread setting, nothing more
        rf = torch.from_numpy(scipy.fft.rfftn(r.to(self.fft_dtype).numpy(), s=fft_shape, axes=(-3, -2, -1),
                                              workers=workers))
        fshape = rf.shape[-3:]
        y = self._mix(rf.view(nb, 2, f, -1), fft_shape).view(nb, 2 * f, *fshape)
        # conv biases: a constant b in space is b·N³ at the zero frequency
        y[:, :, 0, 0, 0] += self._bias.to(y.dtype) * math.prod(fft_shape)
        # Inverse one axis at a time, keeping only the valid corner after each (less work than irfftn).
        o = k - 1
        z, yy, x = out_shape
        y = scipy.fft.ifft(y.numpy(), axis=-3, workers=workers, overwrite_x=True)[:, :, o:o + z]
        y = scipy.fft.ifft(y, axis=-2, workers=workers, overwrite_x=True)[:, :, :, o:o + yy]
        y = scipy.fft.irfft(y, n=fft_shape[-1], axis=-1, workers=workers, overwrite_x=True)[..., o:o + x]
        return torch.from_numpy(y).to(r.dtype)

    def __call__(self, x: torch.Tensor, fft_shape=None) -> torch.Tensor:
        return self.from_reduced(self.reduce(x), x[:, :1], fft_shape)

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The a/b/c reductions: one GEMM over every voxel of the block input, (nb, C_in, …) → (nb, 3F, …)."""
        nb, c_in = x.shape[:2]
        return _pointwise(self.w_red, self.b_red, x.reshape(nb, c_in, -1)).view(nb, 3 * self.f, *x.shape[2:])

    def from_reduced(self, r: torch.Tensor, x0: torch.Tensor, fft_shape=None) -> torch.Tensor:
        """The block from its reductions r (nb, 3F, d, h, w) and input channel 0 x0 (nb, 1, d, h, w)."""
        return self.epilogue(*self.branches(r, x0, fft_shape))

    def epilogue(self, ab: torch.Tensor, res: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The block output from `branches`' parts: leaky(concat(A + res, B + res, C)), (nb, 3F, …)."""
        out = torch.empty(ab.shape[0], 3 * self.f, *ab.shape[2:], dtype=ab.dtype)
        torch.add(ab, res, out=out[:, :2 * self.f])
        out[:, 2 * self.f:] = c
        return _leaky_(out, self.slope)

    def branches(self, r: torch.Tensor, x0: torch.Tensor, fft_shape=None):
        """The block's parts before the residual add and activation, each (nb, ·, d−2t, h−2t, w−2t):
        (branches A and B with their biases (2F channels), the residual (1 channel, a view of x0),
        branch C (F channels, a view of r))."""
        t, f, m = self.t, self.f, self.m
        nb, _, d, h, w = r.shape
        od, oh, ow = d - 2 * t, h - 2 * t, w - 2 * t
        if self.conv == "fft":
            ab = self._conv_fft(r[:, :2 * f], (od, oh, ow), fft_shape or (d, h, w))
        else:
            ab = torch.empty(nb, 2 * f, od, oh, ow, dtype=r.dtype)
            rcl = r[:, :2 * f].contiguous(memory_format=torch.channels_last_3d)
            ab[:, :f] = F.conv3d(rcl[:, :f], self.a_w_cl, self.a_b)
            ab[:, f:] = F.conv3d(rcl[:, f:, m:d - m, m:h - m, m:w - m], self.b_w_cl, self.b_b)
        crop = (slice(None), slice(None), slice(t, d - t), slice(t, h - t), slice(t, w - t))
        return ab, x0[crop], r[:, 2 * f:][crop]


class _NativeBlock1Reduce:
    """Block 1 (one input channel, folded) fused with block 2's merged reductions, in C (kernels/native.c).

    x (nb, 1, d, h, w) → (r, y0): r (nb, 3F, d−2t, …) = block 2's reductions of block 1's output, y0
    (nb, 1, d−2t, …) = block 1's output channel 0; block 1's 3F-channel output never reaches memory. The C
    function computes 8 voxels along x at a time, so the output width d−2t must be ≥ NATIVE_MIN_WIDTH.
    """

    def __init__(self, first: _FoldedBlock, second: _FFTBlock, spec: GeneratorSpec, lib):
        f, k, kb = spec.filters, spec.big_kernel, spec.small_kernel
        m = (k - kb) // 2
        w = first.w_ab[:, 0]                                   # (2F, k, k, k), residual at the centre
        self.w_a = w[:f].reshape(f, -1).t().contiguous()                                  # (k³, F)
        self.w_b = w[f:, m:m + kb, m:m + kb, m:m + kb].reshape(f, -1).t().contiguous()    # (kb³, F)
        self.b_ab = first.b_ab.contiguous()
        self.w_c, self.b_c = first.w_c[:, 0].contiguous(), first.b_c.contiguous()
        self.w_red, self.b_red = second.w_red.t().contiguous(), second.b_red.contiguous()  # (3F in, 3F out)
        self.t, self.slope, self.fn = first.t, float(spec.slope), lib.block1_reduce

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.contiguous()
        nb, _, d, h, w = x.shape
        out = (d - 2 * self.t, h - 2 * self.t, w - 2 * self.t)
        nr = self.w_red.shape[1]
        r = torch.empty(nb, nr, *out)
        y0 = torch.empty(nb, 1, *out)
        self.fn(x.data_ptr(), nb, d, h, w, self.w_a.data_ptr(), self.w_b.data_ptr(), self.b_ab.data_ptr(),
                self.w_c.data_ptr(), self.b_c.data_ptr(), self.slope, self.w_red.data_ptr(), self.b_red.data_ptr(),
                nr, r.data_ptr(), y0.data_ptr())
        return r, y0


class _NativeEpilogueTail:
    """The last block's residual add and leaky ReLU fused with the pointwise tail, in C (kernels/native.c).

    (ab, res, c) as `_FFTBlock.branches` returns them → (nb, 1, sz, sy, sx); the 3F-channel block output is
    never written to memory. Needs sx ≥ NATIVE_MIN_WIDTH.
    """

    def __init__(self, tail: list, out_w: torch.Tensor, out_b: torch.Tensor, spec: GeneratorSpec, lib):
        layers = [*tail, (out_w, out_b)]
        self.w = torch.cat([w.t().contiguous().flatten() for w, _ in layers])     # each (in, out)
        self.b = torch.cat([b.flatten() for _, b in layers]).contiguous()
        self.slope, self.fn = float(spec.slope), lib.epilogue_tail

    def __call__(self, ab: torch.Tensor, res: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        ab, res, c = (v if v.stride(-1) == 1 else v.contiguous() for v in (ab, res, c))
        nb, _, sz, sy, sx = ab.shape
        out = torch.empty(nb, 1, sz, sy, sx)
        self.fn(nb, sz, sy, sx, ab.data_ptr(), *ab.stride()[:4], res.data_ptr(), res.stride(0), *res.stride()[2:4],
                c.data_ptr(), *c.stride()[:4], self.w.data_ptr(), self.b.data_ptr(), self.slope, out.data_ptr())
        return out


class FusedCPUKernel:
    """Fused CPU generator forward. kernel(x): (B, C_in, n+2g, …) float32 → (B, 1, n, n, n) float32.

    params: the Generator state_dict (names as in halopaint.kernels.reference); spec: its GeneratorSpec.
    conv: 'fft' (default) or 'direct' for the unfolded blocks' spatial convolutions.
    subtile: output side of one sub-tile (None: chosen per call among FFT-friendly sizes).
    fft_dtype: torch.float32 (default) or torch.float64 for the FFT convolutions.
    mixing: 'auto' (compiled on one thread, matmul on several), 'compiled', 'addcmul' or 'matmul' (see _FFTBlock._mix).
    native: the C kernels (kernels/native.c, built at first use): None (default) to use them when available
    and the architecture allows it (one input channel, ≥ 2 blocks), True to require them (ValueError if not
    available), False for the torch/numba code alone. `native_status` says which and why.
    Threads: the caller's `torch.get_num_threads()` = T. With the FFT path and T > 1 a call runs T
    single-threaded sub-tile pipelines in a thread pool, setting torch's intra-op threads to 1 for its
    duration (restored on return); the output is bit-identical to T = 1.
    """

    name = "cpu"
    # Peak activation memory per (30 channels × 4 B × input voxel), for halopaint.paint's tile planner: the
    # output tile is the only allocation that grows with the tile; the sub-tile buffers and kernel spectra
    # are bounded and stated by `bounded_bytes`.
    working_set_factor = 0.5

    @staticmethod
    def bounded_bytes(threads: int, spec: GeneratorSpec | None = None) -> int:
        """Memory held whatever the tile size, worst case over FFT_SIZES: the kernel spectra (MAX_SPECTRA
        shapes + one re-laid copy, 2 branches × F² complex64 per frequency) and each thread's sub-tile
        pipeline (measured ≈ 1 kB per FFT voxel of a sub-tile batch: 150 MB at 1 thread, 243 MB at 2,
        N = 36)."""
        spec = spec or GeneratorSpec()
        n = max(FFT_SIZES)
        spectra = (MAX_SPECTRA + 1) * 2 * spec.filters**2 * 8 * n * n * (n // 2 + 1)
        return int(spectra + max(1, threads) * 1024 * SUBTILE_BATCH * n**3)

    def __init__(self, params, spec: GeneratorSpec | None = None, device: torch.device | str = "cpu",
                 conv: str = "fft", subtile: int | None = None, fft_dtype: torch.dtype = torch.float32,
                 mixing: str = "auto", native: bool | None = None):
        spec = spec or GeneratorSpec()
        self.device = torch.device(device)
        if self.device.type != "cpu":
            raise ValueError(f"FusedCPUKernel runs on the CPU, not {self.device}")
        if conv not in ("fft", "direct"):
            raise ValueError(f"conv must be 'fft' or 'direct', not {conv!r}")
        if mixing not in ("auto", "compiled", "addcmul", "matmul"):
            raise ValueError(f"mixing must be 'auto', 'compiled', 'addcmul' or 'matmul', not {mixing!r}")
        if mixing == "compiled" and fft_dtype != torch.float32:
            raise ValueError("mixing='compiled' computes in float32; use 'addcmul' or 'matmul' with float64")
        if subtile is not None and subtile < 1:
            raise ValueError("subtile must be ≥ 1")
        self.spec, self.conv, self.subtile = spec, conv, subtile
        p = {k: v.detach().to("cpu", torch.float32) for k, v in params.items()}
        self.blocks = []
        for i in range(spec.n_blocks):
            c_in = spec.in_channels if i == 0 else spec.block_out_channels
            if c_in < spec.filters:
                self.blocks.append(_FoldedBlock(p, f"blocks.{i}", spec, c_in))
            else:
                self.blocks.append(_FFTBlock(p, f"blocks.{i}", spec, c_in, conv, fft_dtype, mixing))
        nt = len(spec.tail_widths)
        self.tail = [(p[f"tail.{j}.weight"].flatten(1).contiguous(), p[f"tail.{j}.bias"]) for j in range(nt)]
        self.out_w = p["out.weight"].flatten(1).contiguous()
        self.out_b = p["out.bias"]
        self.native_block1, self.native_tail, self.native_status = self._native_kernels(native)

    def _native_kernels(self, wanted: bool | None):
        """(C block 1 + reductions or None, C epilogue + tail or None, a line saying which run and why)."""
        if wanted is False:
            return None, None, "native C kernels off (native=False)"
        spec = self.spec
        if spec.in_channels != 1 or len(self.blocks) < 2 or not isinstance(self.blocks[1], _FFTBlock):
            reason = "they need one input channel and a second block"
        else:
            from halopaint.kernels import native
            arch = (spec.filters, spec.big_kernel, spec.small_kernel, tuple(spec.tail_widths))
            lib = native.library(*arch)
            if lib is not None:
                for block in self.blocks[1:]:
                    block.native_mix = lib.mix_xdirect
                return (_NativeBlock1Reduce(self.blocks[0], self.blocks[1], spec, lib),
                        _NativeEpilogueTail(self.tail, self.out_w, self.out_b, spec, lib),
                        "native C kernels (kernels/native.c)")
            reason = native.unavailable_reason(*arch)
        if wanted:
            raise ValueError(f"the native C kernels are not available: {reason}")
        return None, None, f"native C kernels not used: {reason}"

    # -- sub-tile planning -------------------------------------------------------------------------
    def _last_fft_margin(self) -> int:
        return self.spec.big_kernel - 1

    def _choose_subtile(self, n: tuple[int, int, int]) -> int:
        """Output side of a sub-tile minimising (#sub-tiles × FFT cost), or the fixed `subtile`."""
        if self.subtile is not None:
            return self.subtile
        if self.conv == "direct":
            return 32
        mg = self._last_fft_margin()
        best = None
        for size, weight in FFT_SIZES.items():
            s = size - mg
            if s < 4:
                continue
            count = math.prod(-(-ni // s) for ni in n)
            cost = count * size**3 * weight
            if best is None or cost < best[0]:
                best = (cost, s)
        return best[1]

    @staticmethod
    def _pieces(n: int, s: int) -> list[tuple[int, int]]:
        """Sub-tiles along one axis as (origin, first owned voxel): a regular grid of side s, the last one
        clamped to end at n; it owns only what the previous one did not cover, so every output voxel is
        written by exactly one sub-tile (deterministic whatever the order the sub-tiles run in)."""
        if n <= s:
            return [(0, 0)]
        starts = list(range(0, n - s, s))
        return [(o, o) for o in starts] + [(n - s, starts[-1] + s)]

    def _fft_shape(self, sub: tuple[int, int, int], s: int, block_index: int) -> tuple[int, int, int]:
        """FFT size for a block: input side, padded to the chosen size on axes cut short."""
        spec = self.spec
        remaining = (spec.n_blocks - block_index) * 2 * spec.block_trim      # block input = out + remaining
        return tuple(max(si, s) + remaining for si in sub)

    # -- forward -----------------------------------------------------------------------------------
    def _tail(self, y: torch.Tensor) -> torch.Tensor:
        """Pointwise tail on (nb, 3F, V) channels-first → (nb, 1, V)."""
        for w, b in self.tail:
            y = _leaky_(_pointwise(w, b, y), self.spec.slope)
        return torch.relu_(_pointwise(self.out_w, self.out_b, y))

    def _paint(self, x: torch.Tensor, s: int) -> torch.Tensor:
        """x (nb, C_in, sub+2g, …) → (nb, 1, sub…)."""
        g = self.spec.ghost_width
        sub = tuple(d - 2 * g for d in x.shape[2:])
        # The C kernels run on one thread whatever torch's setting, so results do not depend on the thread count.
        last = len(self.blocks) - 1
        start, y, r = 0, x, None
        if self.native_block1 is not None and x.shape[-1] - 2 * self.native_block1.t >= NATIVE_MIN_WIDTH:
            r, y = self.native_block1(x)             # block 2's reductions, block 1's output channel 0
            start = 1
        for i, block in enumerate(self.blocks[start:], start=start):
            if not isinstance(block, _FFTBlock):
                y = block(y)
                continue
            r = block.reduce(y) if r is None else r
            fft_shape = self._fft_shape(sub, s, i)
            if i == last and self.native_tail is not None and sub[-1] >= NATIVE_MIN_WIDTH:
                return self.native_tail(*block.branches(r, y[:, :1], fft_shape))
            y, r = block.from_reduced(r, y[:, :1], fft_shape), None
        nb = y.shape[0]
        return self._tail(y.reshape(nb, y.shape[1], -1)).view(nb, 1, *sub)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Paint one tile: (B, C_in, n+2g, …) float32 → (B, 1, n, …) float32 on the CPU."""
        spec, g = self.spec, self.spec.ghost_width
        if x.dim() != 5 or x.shape[1] != spec.in_channels:
            raise ValueError(f"expected input (B, {spec.in_channels}, n+{2 * g}, …), got {tuple(x.shape)}")
        n = tuple(d - 2 * g for d in x.shape[2:])
        if min(n) < 1:
            raise ValueError(f"input side {tuple(x.shape[2:])} is too small for ghost width {g}")
        x = x.to("cpu", torch.float32)
        s = self._choose_subtile(n)
        out = torch.empty(x.shape[0], 1, *n, dtype=torch.float32)
        origins = [(b, *o) for b in range(x.shape[0])
                   for o in itertools.product(*(self._pieces(ni, s) for ni in n))]
        sub = tuple(min(ni, s) for ni in n)

        def paint_group(group):
            xs = torch.stack([x[b, :, z:z + sub[0] + 2 * g, y:y + sub[1] + 2 * g, w:w + sub[2] + 2 * g]
                              for b, (z, _), (y, _), (w, _) in group])
            ys = self._paint(xs, s)
            for j, (b, (z, z1), (y, y1), (w, w1)) in enumerate(group):
                out[b, :, z1:z + sub[0], y1:y + sub[1], w1:w + sub[2]] = \
                    ys[j][:, z1 - z:, y1 - y:, w1 - w:]

        batch = SUBTILE_BATCH_NATIVE if self.native_block1 is not None and self.conv == "fft" else SUBTILE_BATCH
        groups = [origins[k:k + batch] for k in range(0, len(origins), batch)]
        threads = torch.get_num_threads()
        if self.conv != "fft" or threads == 1 or len(groups) == 1:
            for group in groups:
                paint_group(group)
            return out
        # FFT path on several threads: one single-threaded sub-tile pipeline per thread (FFTs, mixing and
        # small GEMMs scale far better this way than as many tiny multi-threaded ops); the kernel-spectrum
        # caches are filled first, so the workers only read them.
        for i, block in enumerate(self.blocks):
            if isinstance(block, _FFTBlock):
                out_width = sub[-1] + (len(self.blocks) - 1 - i) * 2 * self.spec.block_trim
                block.prepare(self._fft_shape(sub, s, i), threads=1, out_width=out_width)
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(paint_group, groups))
        finally:
            torch.set_num_threads(threads)
        return out
