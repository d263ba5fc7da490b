/* Hand-vectorised CPU kernels of the fused CPU path (kernels/cpu.py), 8 voxels along x per vector register.
 *
 * Built at first use by kernels/native.py with the system C compiler (-O3 -march=native), with the
 * architecture as macros: NF filters, KA big kernel, KB small kernel (KA, KB odd, KB <= KA), NTAIL and
 * TAIL_WIDTHS the pointwise tail. GCC/Clang vector extensions (AVX2 where -march=native has it).
 *   block1_reduce  block 1 (one input channel) fused with block 2's merged 1×1×1 reductions
 *   mix_xdirect    an FFT block's k³ and kb³ convolutions between 2D FFTs over (z, y): x taps direct
 *   epilogue_tail  the last block's residual add + leaky ReLU fused with the pointwise tail
 * Each needs an output width >= 8 along x: a row whose length is not a multiple of 8 ends with a chunk
 * that overlaps the previous one (same values written twice); the caller falls back to torch below that.
 *
 * block1_reduce: for an input x (nb, D, H, W) float32 with ONE channel, computes block 1 exactly as
 * halopaint.kernels.cpu._FoldedBlock (its reductions folded into the convolutions, the residual folded into the
 * weights): y = leaky(conv_A(x)), leaky(conv_B(x)), leaky(w_c·x + b_c), 3·NF channels on the
 * (D−KA+1, H−KA+1, W−KA+1) output, and writes
 *   y0 (nb, 1, Do, Ho, Wo)  channel 0 of y (block 2's residual),
 *   r  (nb, nr, Do, Ho, Wo) block 2's merged 1×1×1 reductions r = W_red·y + b_red (nr a multiple of NF),
 * so block 1's 3·NF-channel output is never written to memory. Per tap: one unaligned load of 8 input
 * voxels and NF broadcast multiply-adds into accumulators held in registers.
 */
#include <stddef.h>

#if !defined(NF) || !defined(KA) || !defined(KB)
#error "NF, KA and KB must be defined"
#endif

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));    /* unaligned access */
typedef int v8i __attribute__((vector_size(32)));

#define TRIM ((KA - 1) / 2)            /* block output = input − 2·TRIM per axis */
#define MB ((KA - KB) / 2)             /* offset of the small kernel inside the big one */
#define NY (3 * NF)                    /* block 1 output channels */

static inline v8 load8(const float *p) { return *(const v8u *)p; }
static inline void store8(float *p, v8 v) { *(v8u *)p = v; }
static inline v8 splat(float s) { return (v8){s, s, s, s, s, s, s, s}; }

static inline v8 leaky(v8 v, float slope) {
    v8i positive = v > splat(0.0f);                                  /* −1 in lanes where v > 0 */
    return (v8)(((v8i)v & positive) | ((v8i)(v * splat(slope)) & ~positive));
}

/* NF outputs of a k³ convolution over 8 voxels: base = input at the chunk's (z, y, x) corner, w (k³, NF). */
static inline void conv8(const float *base, int H, int W, int k, int offset, const float *w,
                         const float *bias, float slope, v8 *out) {
    v8 acc[NF];
    for (int j = 0; j < NF; j++) acc[j] = splat(bias[j]);
    for (int dz = 0; dz < k; dz++)
        for (int dy = 0; dy < k; dy++) {
            const float *row = base + ((size_t)(dz + offset) * H + dy + offset) * W + offset;
            const float *wt = w + (size_t)(dz * k + dy) * k * NF;
            for (int dx = 0; dx < k; dx++) {
                v8 v = load8(row + dx);
                for (int j = 0; j < NF; j++) acc[j] += splat(wt[dx * NF + j]) * v;
            }
        }
    for (int j = 0; j < NF; j++) out[j] = leaky(acc[j], slope);
}

/* wa (KA³, NF), wb (KB³, NF): tap-major, residual included at the centre; bias_ab (2 NF);
 * wc, bc (NF): branch C = wc·x + bc (residual included); w_red (NY, nr) input-major; b_red (nr). */
void block1_reduce(const float *x, int nb, int D, int H, int W,
                   const float *wa, const float *wb, const float *bias_ab, const float *wc, const float *bc,
                   float slope, const float *w_red, const float *b_red, int nr, float *r, float *y0) {
    const int Do = D - 2 * TRIM, Ho = H - 2 * TRIM, Wo = W - 2 * TRIM;
    const size_t plane = (size_t)Do * Ho * Wo;
    for (int b = 0; b < nb; b++)
        for (int z = 0; z < Do; z++)
            for (int y = 0; y < Ho; y++)
                for (int x0 = 0; x0 < Wo; x0 += 8) {
                    const int xs = x0 + 8 <= Wo ? x0 : Wo - 8;
                    const float *base = x + ((size_t)(b * D + z) * H + y) * W + xs;
                    const size_t at = ((size_t)z * Ho + y) * Wo + xs;
                    v8 out[NY];
                    conv8(base, H, W, KA, 0, wa, bias_ab, slope, out);
                    conv8(base, H, W, KB, MB, wb, bias_ab + NF, slope, out + NF);
                    const v8 centre = load8(base + ((size_t)TRIM * H + TRIM) * W + TRIM);
                    for (int j = 0; j < NF; j++)
                        out[2 * NF + j] = leaky(splat(wc[j]) * centre + splat(bc[j]), slope);
                    store8(y0 + (size_t)b * plane + at, out[0]);
                    for (int o0 = 0; o0 < nr; o0 += NF) {
                        v8 acc[NF];
                        for (int j = 0; j < NF; j++) acc[j] = splat(b_red[o0 + j]);
                        for (int c = 0; c < NY; c++)
                            for (int j = 0; j < NF; j++) acc[j] += splat(w_red[(size_t)c * nr + o0 + j]) * out[c];
                        for (int j = 0; j < NF; j++) store8(r + ((size_t)b * nr + o0 + j) * plane + at, acc[j]);
                    }
                }
}

/* ---- the last block's epilogue fused with the pointwise tail ------------------------------------------
 * Macros: NF, and TAIL_WIDTHS (comma-separated hidden widths of the tail, e.g. 10,10,10,10) with NTAIL
 * their count. For every output voxel: h = leaky(ab + res) (2 NF channels), leaky(rc) (NF channels), then
 * the tail 3 NF → TAIL_WIDTHS… → 1 with leaky ReLU after each hidden layer and ReLU at the end.
 * ab (nb, 2 NF, sz, sy, sx), res (nb, 1, …) and rc (nb, NF, …) are strided views (strides in elements,
 * unit stride along x); out (nb, sz, sy, sx) contiguous. Needs sx >= 8 (the same overlapping last chunk).
 * tail_w: the layers' weights one after the other, each input-major (in, out); tail_b: their biases. */
#if defined(NTAIL) && defined(TAIL_WIDTHS)
static const int tail_widths[NTAIL + 2] = {NY, TAIL_WIDTHS, 1};

#define MAXW 64
static inline __attribute__((always_inline)) void layer(const v8 *in, int n_in, int n_out, const float *w, const float *b, v8 *out) {
    for (int o0 = 0; o0 < n_out; o0 += 16) {              /* up to 16 accumulators in registers */
        const int n = n_out - o0 < 16 ? n_out - o0 : 16;
        v8 acc[16];
        for (int j = 0; j < n; j++) acc[j] = splat(b[o0 + j]);
        for (int c = 0; c < n_in; c++)
            for (int j = 0; j < n; j++) acc[j] += splat(w[(size_t)c * n_out + o0 + j]) * in[c];
        for (int j = 0; j < n; j++) out[o0 + j] = acc[j];
    }
}

void epilogue_tail(int nb, int sz, int sy, int sx,
                   const float *ab, long ab_b, long ab_c, long ab_z, long ab_y,
                   const float *res, long res_b, long res_z, long res_y,
                   const float *rc, long rc_b, long rc_c, long rc_z, long rc_y,
                   const float *tail_w, const float *tail_b, float slope, float *out) {
    for (int b = 0; b < nb; b++)
        for (int z = 0; z < sz; z++)
            for (int y = 0; y < sy; y++)
                for (int x0 = 0; x0 < sx; x0 += 8) {
                    const int xs = x0 + 8 <= sx ? x0 : sx - 8;
                    v8 h[MAXW], g[MAXW];
                    const v8 r0 = load8(res + b * res_b + z * res_z + y * res_y + xs);
                    const float *pa = ab + b * ab_b + z * ab_z + y * ab_y + xs;
                    for (int j = 0; j < 2 * NF; j++) h[j] = leaky(load8(pa + j * ab_c) + r0, slope);
                    const float *pc = rc + b * rc_b + z * rc_z + y * rc_y + xs;
                    for (int j = 0; j < NF; j++) h[2 * NF + j] = leaky(load8(pc + j * rc_c), slope);
                    const float *w = tail_w, *bias = tail_b;
                    v8 *in = h, *next = g;
#pragma GCC unroll 16
                    for (int l = 0; l <= NTAIL; l++) {      /* unrolled: every layer's widths are constants */
                        const int n_in = tail_widths[l], n_out = tail_widths[l + 1];
                        layer(in, n_in, n_out, w, bias, next);
                        w += (size_t)n_in * n_out;
                        bias += n_out;
                        if (l < NTAIL)
                            for (int j = 0; j < n_out; j++) next[j] = leaky(next[j], slope);
                        v8 *t = in; in = next; next = t;
                    }
                    const v8 v = in[0];
                    store8(out + (((size_t)b * sz + z) * sy + y) * sx + xs, (v8)((v8i)v & (v8i)(v > splat(0.0f))));
                }
}
#endif

/* ---- block 2's branch convolutions in the (k_z, k_y, x) domain -----------------------------------------
 * After 2D FFTs over z and y, the k³ (branch A) and kb³ (branch B) convolutions along x are direct:
 *   y[b, r, o, p, x] = Σ_i Σ_d K_r[p, i, d, o] · s[b, r, i, p, x + off_r + d],   p = (k_z, k_y)
 * with complex K and s (off_A = 0, off_B = MB); the conv biases (dc_bias, already × Nz·Ny) enter at p = 0.
 * s (nb, 2, NF, npix, 2·nx_in) and y (nb, 2, NF, npix, 2·nx_out) are interleaved complex; K planar,
 * (npix, NF in, taps, NF out) for A (KA taps) and B (KB taps). 8 outputs along x per vector, OB output
 * channels per pass; nx_out >= 8 (same overlapping last chunk as above). work: 2·NF·nx_in floats. */
#define OB (NF % 5 == 0 ? 5 : NF % 4 == 0 ? 4 : NF % 3 == 0 ? 3 : NF % 2 == 0 ? 2 : 1)

static inline void mix_branch(const float *sr, const float *si, int nx_in, int nx_out, int taps, int offset,
                              const float *kre, const float *kim, float dc[NF], float *y, size_t y_c) {
    for (int x0 = 0; x0 < nx_out; x0 += 8) {
        const int xs = x0 + 8 <= nx_out ? x0 : nx_out - 8;
        for (int o0 = 0; o0 < NF; o0 += OB) {
            v8 ar[OB], ai[OB];
            for (int j = 0; j < OB; j++) ar[j] = ai[j] = splat(0.0f);
            for (int i = 0; i < NF; i++)
                for (int d = 0; d < taps; d++) {
                    const v8 xr = load8(sr + (size_t)i * nx_in + xs + offset + d);
                    const v8 xi = load8(si + (size_t)i * nx_in + xs + offset + d);
                    const float *wr = kre + ((size_t)i * taps + d) * NF + o0, *wi = kim + ((size_t)i * taps + d) * NF + o0;
                    for (int j = 0; j < OB; j++) {
                        const v8 cr = splat(wr[j]), ci = splat(wi[j]);
                        ar[j] += cr * xr - ci * xi;
                        ai[j] += cr * xi + ci * xr;
                    }
                }
            for (int j = 0; j < OB; j++) {
                float re[8], im[8];
                store8(re, ar[j] + splat(dc[o0 + j]));
                store8(im, ai[j]);
                float *row = y + (size_t)(o0 + j) * y_c + 2 * (size_t)xs;
                for (int l = 0; l < 8; l++) {
                    row[2 * l] = re[l];
                    row[2 * l + 1] = im[l];
                }
            }
        }
    }
}

void mix_xdirect(int nb, int npix, int nx_in, int nx_out, const float *s,
                 const float *ka_re, const float *ka_im, const float *kb_re, const float *kb_im,
                 const float *dc_bias, float *y, float *work) {
    const size_t s_c = (size_t)npix * 2 * nx_in, y_c = (size_t)npix * 2 * nx_out;   /* channel strides */
    float *sr = work, *si = work + (size_t)NF * nx_in;
    for (int p = 0; p < npix; p++)
        for (int b = 0; b < nb; b++)
            for (int r = 0; r < 2; r++) {
                const float *src = s + (size_t)(b * 2 + r) * NF * s_c + (size_t)p * 2 * nx_in;
                for (int i = 0; i < NF; i++)                  /* de-interleave this (b, r, p)'s rows */
                    for (int q = 0; q < nx_in; q++) {
                        sr[(size_t)i * nx_in + q] = src[i * s_c + 2 * q];
                        si[(size_t)i * nx_in + q] = src[i * s_c + 2 * q + 1];
                    }
                float dc[NF];
                for (int o = 0; o < NF; o++) dc[o] = p == 0 ? dc_bias[r * NF + o] : 0.0f;
                float *dst = y + (size_t)(b * 2 + r) * NF * y_c + (size_t)p * 2 * nx_out;
                if (r == 0)
                    mix_branch(sr, si, nx_in, nx_out, KA, 0, ka_re + (size_t)p * NF * KA * NF,
                               ka_im + (size_t)p * NF * KA * NF, dc, dst, y_c);
                else
                    mix_branch(sr, si, nx_in, nx_out, KB, MB, kb_re + (size_t)p * NF * KB * NF,
                               kb_im + (size_t)p * NF * KB * NF, dc, dst, y_c);
            }
}
