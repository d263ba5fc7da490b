"""TritonKernel: the generator forward as one Triton launch per Inception block + one for the tail.

Weights come from the Generator state_dict (kernels.reference names) and are packed once, padded to
powers of two ≥ 16 so every product is a `tl.dot`:
  reductions  (CP, 2·FP)      [a_reduce | b_reduce]ᵀ
  branch A    (K³, FP, FP)    a_conv[o, i, δ] at [δ, i, o]
  branch B    (KB³, FP, FP)   b_conv likewise
  branch C    (CP, FP)        c_reduceᵀ with the residual (+1 on input channel 0) folded in
  tail        (L, P, P)       tail layers then the output layer, transposed, zero-padded
Padded rows/columns are zero, so padded channels stay exactly zero through every layer.
"""

from __future__ import annotations

import torch

from kernels.reference import GeneratorSpec

PRECISIONS = {"fp32": 0, "tf32": 1, "bf16": 2}
# ‖out − ref‖/‖ref‖ each precision is tested to (fp32 exact products; tf32/bf16 rounded operands)
TOLERANCES = {"fp32": 1e-5, "tf32": 5e-3, "bf16": 5e-2}


def _pad_pow2(n: int, least: int = 16) -> int:
    p = least
    while p < n:
        p *= 2
    return p


def _interpreting() -> bool:
    from triton import knobs
    return bool(knobs.runtime.interpret)


class TritonKernel:
    """Fused Triton generator forward. kernel(x): (B, C_in, n+2g, …) float32 → (B, 1, n, …) float32.

    precision: 'fp32' (IEEE products, default), 'tf32' or 'bf16' operands (fp32 accumulate); in the
    Triton interpreter (TRITON_INTERPRET=1, CPU tensors) bf16 products are computed in fp32 because the
    interpreter's bf16 `tl.dot` is wrong. tile: output voxels per program (z, y, x), powers of two.
    """

    name = "triton"
    # Peak activation memory per (30 channels × 4 B × input voxel), for engine.paint's tile planner:
    # the channels-last input copy, the two 30-channel block outputs and the tail output.
    working_set_factor = 2.2

    def __init__(self, params, spec: GeneratorSpec | None = None, device: torch.device | str = "cuda",
                 precision: str = "fp32", tile: tuple[int, int, int] | None = None):
        from kernels.triton import _jit  # noqa: F401  (decorated now: honours TRITON_INTERPRET)
        self._jit = _jit
        self.spec = spec = spec or GeneratorSpec()
        self.device = torch.device(device)
        self.interpret = _interpreting()
        if self.device.type != "cuda" and not self.interpret:
            raise ValueError(f"Triton kernels need a CUDA device (or TRITON_INTERPRET=1), not {self.device}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.precision = precision
        self._prec_code = 0 if (self.interpret and precision == "bf16") else PRECISIONS[precision]
        if tile is None:
            tile = (8, 8, 8) if self.interpret else (4, 4, 8)
        if any(t < 1 or t & (t - 1) for t in tile) or tile[0] * tile[1] * tile[2] < 16:
            raise ValueError(f"tile sides must be powers of two with ≥ 16 voxels, not {tile}")
        self.tile = tuple(tile)
        p = {k: v.detach().to(torch.float32).cpu() for k, v in params.items()}
        f, k, kb = spec.filters, spec.big_kernel, spec.small_kernel
        self.fp = _pad_pow2(f)
        self.blocks = []
        for i in range(spec.n_blocks):
            c_in = spec.in_channels if i == 0 else spec.block_out_channels
            self.blocks.append(self._pack_block(p, f"blocks.{i}", c_in, f, k, kb))
        widths = [spec.block_out_channels, *spec.tail_widths, 1]
        self.tail_p = _pad_pow2(max(widths))
        n_layers = len(widths) - 1
        wt = torch.zeros(n_layers, self.tail_p, self.tail_p)
        bt = torch.zeros(n_layers, self.tail_p)
        names = [f"tail.{j}" for j in range(len(spec.tail_widths))] + ["out"]
        for j, name in enumerate(names):
            w = p[f"{name}.weight"].flatten(1)                 # (out, in)
            wt[j, :w.shape[1], :w.shape[0]] = w.t()
            bt[j, :w.shape[0]] = p[f"{name}.bias"]
        self.tail_w = wt.contiguous().to(self.device)
        self.tail_b = bt.contiguous().to(self.device)
        self.n_tail = n_layers
        self._scratch = None

    def _pack_block(self, p, prefix, c_in, f, k, kb):
        fp, cp = self.fp, _pad_pow2(c_in)
        w = lambda n: (p[f"{prefix}.{n}.weight"], p[f"{prefix}.{n}.bias"])  # noqa: E731
        ar_w, ar_b = w("a_reduce")
        br_w, br_b = w("b_reduce")
        cr_w, cr_b = w("c_reduce")
        ac_w, ac_b = w("a_conv")
        bc_w, bc_b = w("b_conv")
        wred = torch.zeros(cp, 2 * fp)
        wred[:c_in, :f] = ar_w.flatten(1).t()
        wred[:c_in, fp:fp + f] = br_w.flatten(1).t()
        bred = torch.zeros(2 * fp)
        bred[:f], bred[fp:fp + f] = ar_b, br_b
        wa = torch.zeros(k**3, fp, fp)
        wa[:, :f, :f] = ac_w.permute(2, 3, 4, 1, 0).reshape(k**3, f, f)   # [δ, i, o]
        wb = torch.zeros(kb**3, fp, fp)
        wb[:, :f, :f] = bc_w.permute(2, 3, 4, 1, 0).reshape(kb**3, f, f)
        wc = torch.zeros(cp, fp)
        wc[:c_in, :f] = cr_w.flatten(1).t()
        wc[0, :f] += 1.0                                                   # residual on branch C
        pad = lambda b: torch.cat([b, torch.zeros(fp - f)])               # noqa: E731
        dev = self.device
        return dict(c_in=c_in, cp=cp, wred=wred.to(dev), bred=bred.to(dev), wa=wa.contiguous().to(dev),
                    ba=pad(ac_b).to(dev), wb=wb.contiguous().to(dev), bb=pad(bc_b).to(dev),
                    wc=wc.to(dev), bc=pad(cr_b).to(dev))

    def _programs(self, n_tiles: int) -> int:
        if self.interpret:
            return min(n_tiles, 4)
        sms = torch.cuda.get_device_properties(self.device).multi_processor_count
        return min(n_tiles, 8 * sms)

    def _block(self, x: torch.Tensor, blk: dict) -> torch.Tensor:
        """x (B, D, H, W, C_in) channels last → (B, D−2t, H−2t, W−2t, 3F)."""
        spec = self.spec
        t, k = spec.block_trim, spec.big_kernel
        bsz, d, h, w, _ = x.shape
        od, oh, ow = d - 2 * t, h - 2 * t, w - 2 * t
        y = torch.empty(bsz, od, oh, ow, 3 * spec.filters, device=x.device, dtype=torch.float32)
        tz, ty, tx = self.tile
        n_tz, n_ty, n_tx = -(-od // tz), -(-oh // ty), -(-ow // tx)
        n_tiles = bsz * n_tz * n_ty * n_tx
        progs = self._programs(n_tiles)
        halo = (tz + k - 1) * (ty + k - 1) * (tx + k - 1)
        need = progs * halo * 2 * self.fp
        if self._scratch is None or self._scratch.numel() < need or self._scratch.device != x.device:
            self._scratch = torch.empty(need, device=x.device, dtype=torch.float32)
        block_h = 512 if self.interpret else 128
        self._jit.inception_block_kernel[(progs,)](
            x, y, self._scratch,
            blk["wred"], blk["bred"], blk["wa"], blk["ba"], blk["wb"], blk["bb"], blk["wc"], blk["bc"],
            d, h, w, n_ty, n_tx, n_tiles, progs,
            CIN=blk["c_in"], CP=blk["cp"], F=spec.filters, FP=self.fp, K=k, KB=spec.small_kernel,
            TZ=tz, TY=ty, TX=tx, BLOCK_H=block_h, SLOPE=spec.slope, PRECISION=self._prec_code,
        )
        return y

    def _tail(self, y: torch.Tensor) -> torch.Tensor:
        """y (B, n, n, n, 3F) → (B, n, n, n)."""
        v = y.numel() // y.shape[-1]
        out = torch.empty(y.shape[:-1], device=y.device, dtype=torch.float32)
        block_v = 4096 if self.interpret else 128
        self._jit.pointwise_tail_kernel[(-(-v // block_v),)](
            y, out, self.tail_w, self.tail_b, v,
            CIN=y.shape[-1], P=self.tail_p, L=self.n_tail, BLOCK_V=block_v,
            SLOPE=self.spec.slope, PRECISION=self._prec_code,
        )
        return out

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Paint one tile: (B, C_in, n+2g, …) float32 → (B, 1, n, …) float32 on self.device."""
        spec, g = self.spec, self.spec.ghost_width
        if x.dim() != 5 or x.shape[1] != spec.in_channels:
            raise ValueError(f"expected input (B, {spec.in_channels}, n+{2 * g}, …), got {tuple(x.shape)}")
        if min(x.shape[2:]) - 2 * g < 1:
            raise ValueError(f"input side {tuple(x.shape[2:])} is too small for ghost width {g}")
        y = x.to(self.device, torch.float32).permute(0, 2, 3, 4, 1).contiguous()
        for blk in self.blocks:
            y = self._block(y, blk)
        return self._tail(y).unsqueeze(1)
