"""Triton kernels: one residual Inception block per launch, and the pointwise tail.

Imported lazily by halopaint.kernels.triton.kernel (so that TRITON_INTERPRET, read when these functions are
decorated, can be set by a process before its first TritonKernel is built).

Layouts (all float32, contiguous, channels last):
  block input  x   (B, D, H, W, C_in)            block output y (B, D−2t, H−2t, W−2t, 3F)
  scratch          (programs, HALO, 2·FP)         per-program halo of the reduced fields (L1/L2 resident)
  weights          padded to powers of two ≥ 16 (CP for C_in, FP for F) so every product is a `tl.dot`

Block kernel, per output tile of TZ×TY×TX voxels (persistent programs loop over tiles):
  1. halo pass: r = x·[Wa_red | Wb_red] + b for the (TZ+K−1)(TY+K−1)(TX+K−1) halo voxels → scratch
  2. barrier; implicit GEMM: acc_a += r_a(p+δ)·Wa[δ] over K³ taps, acc_b += r_b(p+δ+m)·Wb[δ] over KB³
  3. branch C (+ residual folded into its weights) from x at the centre: x(p+t)·Wc + bc
  4. + residual x₀(p+t) on A and B, biases, leaky ReLU, store the 3F channels; barrier (scratch reuse)
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    """fp32 accumulate; PRECISION: 0 = ieee fp32, 1 = tf32 operands, 2 = bf16 operands."""
    if PRECISION == 2:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), out_dtype=tl.float32)
    elif PRECISION == 1:
        return tl.dot(a, b, input_precision="tf32")
    else:
        return tl.dot(a, b, input_precision="ieee")


@triton.jit
def inception_block_kernel(
    x_ptr, y_ptr, scratch_ptr,
    wred_ptr, bred_ptr, wa_ptr, ba_ptr, wb_ptr, bb_ptr, wc_ptr, bc_ptr,
    D, H, W, n_ty, n_tx, n_tiles, n_programs,
    CIN: tl.constexpr, CP: tl.constexpr, F: tl.constexpr, FP: tl.constexpr,
    K: tl.constexpr, KB: tl.constexpr,
    TZ: tl.constexpr, TY: tl.constexpr, TX: tl.constexpr,
    BLOCK_H: tl.constexpr, SLOPE: tl.constexpr, PRECISION: tl.constexpr,
):
    T: tl.constexpr = (K - 1) // 2
    M0: tl.constexpr = (K - KB) // 2
    HZ: tl.constexpr = TZ + K - 1
    HY: tl.constexpr = TY + K - 1
    HX: tl.constexpr = TX + K - 1
    NH: tl.constexpr = HZ * HY * HX
    BM: tl.constexpr = TZ * TY * TX
    C2: tl.constexpr = 2 * FP
    C3: tl.constexpr = 3 * F

    pid = tl.program_id(0)
    OD = D - 2 * T
    OH = H - 2 * T
    OW = W - 2 * T
    n_tz = (OD + TZ - 1) // TZ

    cin = tl.arange(0, CP)
    cf = tl.arange(0, FP)
    c2 = tl.arange(0, C2)
    hh = tl.arange(0, BLOCK_H)
    mm = tl.arange(0, BM)
    mz = mm // (TY * TX)
    my = (mm // TX) % TY
    mx = mm % TX

    # weights reused by every tile: reductions (CP×2FP), branch C (CP×FP), biases
    wred = tl.load(wred_ptr + cin[:, None] * C2 + c2[None, :])
    bred = tl.load(bred_ptr + c2)
    wc = tl.load(wc_ptr + cin[:, None] * FP + cf[None, :])
    bc = tl.load(bc_ptr + cf)
    ba = tl.load(ba_ptr + cf)
    bb = tl.load(bb_ptr + cf)
    scr = scratch_ptr + pid.to(tl.int64) * (NH * C2)
    pa = scr + (((mz * HY + my) * HX + mx) * C2)[:, None] + cf[None, :]   # tap (0,0,0) of each voxel
    pwa = wa_ptr + cf[:, None] * FP + cf[None, :]
    pwb = wb_ptr + cf[:, None] * FP + cf[None, :]

    for tile in range(pid, n_tiles, n_programs):
        tx0 = (tile % n_tx) * TX
        ty0 = ((tile // n_tx) % n_ty) * TY
        tz0 = ((tile // (n_tx * n_ty)) % n_tz) * TZ
        b = tile // (n_tx * n_ty * n_tz)
        xb = x_ptr + b.to(tl.int64) * D * H * W * CIN

        # 1. reduced fields of the halo → scratch
        for h0 in range(0, NH, BLOCK_H):
            h = h0 + hh
            hz = h // (HY * HX)
            hy = (h // HX) % HY
            hx = h % HX
            iz = tz0 + hz
            iy = ty0 + hy
            ix = tx0 + hx
            ok = (h < NH) & (iz < D) & (iy < H) & (ix < W)
            vox = (iz * H + iy) * W + ix
            xin = tl.load(xb + vox.to(tl.int64)[:, None] * CIN + cin[None, :],
                          mask=ok[:, None] & (cin[None, :] < CIN), other=0.0)
            r = _dot(xin, wred, PRECISION) + bred[None, :]
            tl.store(scr + h[:, None] * C2 + c2[None, :], r, mask=(h < NH)[:, None])
        tl.debug_barrier()

        # 2. implicit GEMM over the taps of both spatial convolutions (pointers hoisted out of the loops)
        acc_a = tl.zeros((BM, FP), dtype=tl.float32)
        for tap in range(K * K * K):
            shift = ((tap // (K * K)) * HY + (tap // K) % K) * HX + tap % K
            ra = tl.load(pa + shift * C2)
            wa = tl.load(pwa + tap * (FP * FP))
            acc_a += _dot(ra, wa, PRECISION)
        acc_b = tl.zeros((BM, FP), dtype=tl.float32)
        for tap in range(KB * KB * KB):
            shift = ((tap // (KB * KB) + M0) * HY + (tap // KB) % KB + M0) * HX + tap % KB + M0
            rb = tl.load(pa + (shift * C2 + FP))
            wb = tl.load(pwb + tap * (FP * FP))
            acc_b += _dot(rb, wb, PRECISION)

        # 3. branch C and the residual at the centre of the block input
        oz = tz0 + mz
        oy = ty0 + my
        ox = tx0 + mx
        out_ok = (oz < OD) & (oy < OH) & (ox < OW)
        cvox = ((oz + T) * H + (oy + T)) * W + (ox + T)
        xc = tl.load(xb + cvox.to(tl.int64)[:, None] * CIN + cin[None, :],
                     mask=out_ok[:, None] & (cin[None, :] < CIN), other=0.0)
        res = tl.sum(tl.where(cin[None, :] == 0, xc, 0.0), axis=1)
        acc_c = _dot(xc, wc, PRECISION) + bc[None, :]

        # 4. residual, biases, leaky ReLU, store the 3F output channels
        a = acc_a + ba[None, :] + res[:, None]
        bv = acc_b + bb[None, :] + res[:, None]
        a = tl.where(a > 0, a, a * SLOPE)
        bv = tl.where(bv > 0, bv, bv * SLOPE)
        cv = tl.where(acc_c > 0, acc_c, acc_c * SLOPE)
        ovox = ((b.to(tl.int64) * OD + oz) * OH + oy) * OW + ox
        optr = y_ptr + ovox[:, None] * C3 + cf[None, :]
        omask = out_ok[:, None] & (cf[None, :] < F)
        tl.store(optr, a, mask=omask)
        tl.store(optr + F, bv, mask=omask)
        tl.store(optr + 2 * F, cv, mask=omask)
        tl.debug_barrier()


@triton.jit
def pointwise_tail_kernel(
    y_ptr, out_ptr, w_ptr, b_ptr, V,
    CIN: tl.constexpr, P: tl.constexpr, L: tl.constexpr,
    BLOCK_V: tl.constexpr, SLOPE: tl.constexpr, PRECISION: tl.constexpr,
):
    """y (V, CIN) channels last → out (V,): L padded P×P layers (leaky ReLU), the last with ReLU, column 0."""
    pid = tl.program_id(0)
    v = pid.to(tl.int64) * BLOCK_V + tl.arange(0, BLOCK_V)
    c = tl.arange(0, P)
    ok = v < V
    h = tl.load(y_ptr + v[:, None] * CIN + c[None, :], mask=ok[:, None] & (c[None, :] < CIN), other=0.0)
    for layer in tl.static_range(L):
        w = tl.load(w_ptr + layer * P * P + c[:, None] * P + c[None, :])
        bias = tl.load(b_ptr + layer * P + c)
        h = _dot(h, w, PRECISION) + bias[None, :]
        if layer < L - 1:
            h = tl.where(h > 0, h, h * SLOPE)
        else:
            h = tl.maximum(h, 0.0)
    o = tl.sum(tl.where(c[None, :] == 0, h, 0.0), axis=1)
    tl.store(out_ptr + v, o, mask=ok)
