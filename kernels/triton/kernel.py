"""TritonKernel: the generator forward as one Triton launch per Inception block + one for the tail.

Weights come from the Generator state_dict (halopaint.kernels.reference names) and are packed once, padded to
powers of two ≥ 16 so every product is a `tl.dot`:
  reductions  (CP, 2·FP)      [a_reduce | b_reduce]ᵀ
  branch A    (K³, FP, FP)    a_conv[o, i, δ] at [δ, i, o]
  branch B    (KB³, FP, FP)   b_conv likewise
  branch C    (CP, FP)        c_reduceᵀ with the residual (+1 on input channel 0) folded in
  tail        (L, P, P)       tail layers then the output layer, transposed, zero-padded
Padded rows/columns are zero, so padded channels stay exactly zero through every layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from halopaint.kernels.reference import GeneratorSpec

PRECISIONS = {"fp32": 0, "tf32": 1, "bf16": 2}
# ‖out − ref‖/‖ref‖ each precision is tested to (fp32 exact products; tf32/bf16 rounded operands)
TOLERANCES = {"fp32": 1e-5, "tf32": 5e-3, "bf16": 5e-2}

# Launch configuration on a GPU, chosen without a GPU from the compiled code (`python -m halopaint.kernels.triton.aot`:
# ptxas resource usage for sm_80 and sm_90, every precision). The first configuration (4 warps, 128-voxel
# halo chunks, 4-warp tail) needed 255 registers and spilled 128–184 B per thread in the fp32 kernel of
# block 2 (sm_90, sm_80) and 568 B in the fp32 tail (sm_90); with 8 warps, 32-voxel halo chunks and an
# 8-warp tail every launch compiles without spills at ≤ 150 registers, 8–16 resident warps per SM in the
# block kernels. Not yet tuned by timing: `jobs/bench/kernels.py --device cuda --triton-configs …`.
GPU_TILE = (4, 4, 8)          # output voxels per program iteration (z, y, x)
GPU_BLOCK_H = 32              # halo voxels per reduction step
GPU_BLOCK_WARPS = 8
GPU_TAIL_BLOCK_V = 128        # voxels per tail program
GPU_TAIL_WARPS = 8
# In the interpreter (CPU tensors, tests): few, large steps — each op is a numpy call.
INTERPRET_TILE = (8, 8, 8)
INTERPRET_BLOCK_H = 512
INTERPRET_TAIL_BLOCK_V = 4096


@dataclass(frozen=True)
class Launch:
    """One kernel launch of a TritonKernel forward: the `_jit` function, its compile-time constants and
    warps. The same objects drive the launches and the ahead-of-time compile check (halopaint.kernels.triton.aot)."""

    name: str             # "block0", "block1", …, "tail"
    kernel: str           # function name in halopaint.kernels.triton._jit
    constexprs: dict
    num_warps: int


def _pad_pow2(n: int, least: int = 16) -> int:
    p = least
    while p < n:
        p *= 2
    return p


def launch_plan(spec: GeneratorSpec, precision: str = "fp32", tile: tuple[int, int, int] | None = None,
                interpret: bool = False, num_warps: int | None = None) -> list[Launch]:
    """The launches of one forward: one block kernel per Inception block, then the tail kernel.

    precision: key of PRECISIONS (in the interpreter bf16 products run in fp32: its bf16 `tl.dot` is wrong);
    tile: output voxels per program iteration (z, y, x), powers of two with ≥ 16 voxels;
    num_warps: of the block kernels (GPU_BLOCK_WARPS by default; ignored by the interpreter).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    tile = tuple(tile) if tile is not None else (INTERPRET_TILE if interpret else GPU_TILE)
    if len(tile) != 3 or any(t < 1 or t & (t - 1) for t in tile) or tile[0] * tile[1] * tile[2] < 16:
        raise ValueError(f"tile sides must be powers of two with ≥ 16 voxels, not {tile}")
    if num_warps is not None and num_warps not in (1, 2, 4, 8, 16, 32):
        raise ValueError(f"num_warps must be a power of two from 1 to 32, not {num_warps}")
    prec = 0 if (interpret and precision == "bf16") else PRECISIONS[precision]
    f = spec.filters
    launches = []
    for i in range(spec.n_blocks):
        c_in = spec.in_channels if i == 0 else spec.block_out_channels
        launches.append(Launch(f"block{i}", "inception_block_kernel", dict(
            CIN=c_in, CP=_pad_pow2(c_in), F=f, FP=_pad_pow2(f), K=spec.big_kernel, KB=spec.small_kernel,
            TZ=tile[0], TY=tile[1], TX=tile[2], BLOCK_H=INTERPRET_BLOCK_H if interpret else GPU_BLOCK_H,
            SLOPE=spec.slope, PRECISION=prec), num_warps or GPU_BLOCK_WARPS))
    widths = [spec.block_out_channels, *spec.tail_widths, 1]
    launches.append(Launch("tail", "pointwise_tail_kernel", dict(
        CIN=spec.block_out_channels, P=_pad_pow2(max(widths)), L=len(widths) - 1,
        BLOCK_V=INTERPRET_TAIL_BLOCK_V if interpret else GPU_TAIL_BLOCK_V, SLOPE=spec.slope, PRECISION=prec),
        GPU_TAIL_WARPS))
    return launches


def _interpreting() -> bool:
    from triton import knobs
    return bool(knobs.runtime.interpret)


class TritonKernel:
    """Fused Triton generator forward. kernel(x): (B, C_in, n+2g, …) float32 → (B, 1, n, …) float32.

    precision: 'fp32' (IEEE products, default), 'tf32' or 'bf16' operands (fp32 accumulate); in the
    Triton interpreter (TRITON_INTERPRET=1, CPU tensors) bf16 products are computed in fp32 because the
    interpreter's bf16 `tl.dot` is wrong. tile: output voxels per program iteration (z, y, x), powers of
    two; num_warps: of the block kernels. Defaults and their reasons: GPU_* above, `launch_plan`.
    """

    name = "triton"
    # Peak activation memory per (30 channels × 4 B × input voxel), for halopaint.paint's tile planner:
    # the channels-last input copy, the two 30-channel block outputs and the tail output.
    working_set_factor = 2.2

    def __init__(self, params, spec: GeneratorSpec | None = None, device: torch.device | str = "cuda",
                 precision: str = "fp32", tile: tuple[int, int, int] | None = None, num_warps: int | None = None):
        from halopaint.kernels.triton import _jit  # noqa: F401  (decorated now: honours TRITON_INTERPRET)
        self._jit = _jit
        self.spec = spec = spec or GeneratorSpec()
        self.device = torch.device(device)
        self.interpret = _interpreting()
        if self.device.type != "cuda" and not self.interpret:
            raise ValueError(f"Triton kernels need a CUDA device (or TRITON_INTERPRET=1), not {self.device}")
        self.precision = precision
        self.plan = launch_plan(spec, precision, tile, self.interpret, num_warps)
        c = self.plan[0].constexprs
        self.tile = (c["TZ"], c["TY"], c["TX"])
        p = {k: v.detach().to(torch.float32).cpu() for k, v in params.items()}
        # weights are padded to the channel counts the launches are compiled for
        self.blocks = [self._pack_block(p, f"blocks.{i}", launch.constexprs)
                       for i, launch in enumerate(self.plan[:-1])]
        tail = self.plan[-1].constexprs
        wt = torch.zeros(tail["L"], tail["P"], tail["P"])
        bt = torch.zeros(tail["L"], tail["P"])
        names = [f"tail.{j}" for j in range(len(spec.tail_widths))] + ["out"]
        for j, name in enumerate(names):
            w = p[f"{name}.weight"].flatten(1)                 # (out, in)
            wt[j, :w.shape[1], :w.shape[0]] = w.t()
            bt[j, :w.shape[0]] = p[f"{name}.bias"]
        self.tail_w = wt.contiguous().to(self.device)
        self.tail_b = bt.contiguous().to(self.device)
        self._scratch = None

    def _pack_block(self, p, prefix, c: dict) -> dict:
        """Block weights from state_dict `p`, padded to the launch's constexprs `c` (CIN→CP, F→FP)."""
        c_in, cp, f, fp, k, kb = c["CIN"], c["CP"], c["F"], c["FP"], c["K"], c["KB"]
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
        return dict(wred=wred.to(dev), bred=bred.to(dev), wa=wa.contiguous().to(dev),
                    ba=pad(ac_b).to(dev), wb=wb.contiguous().to(dev), bb=pad(bc_b).to(dev),
                    wc=wc.to(dev), bc=pad(cr_b).to(dev))

    def _programs(self, n_tiles: int) -> int:
        if self.interpret:
            return min(n_tiles, 4)
        sms = torch.cuda.get_device_properties(self.device).multi_processor_count
        return min(n_tiles, 8 * sms)

    def _block(self, x: torch.Tensor, blk: dict, launch: Launch) -> torch.Tensor:
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
        need = progs * halo * 2 * launch.constexprs["FP"]
        if self._scratch is None or self._scratch.numel() < need or self._scratch.device != x.device:
            self._scratch = torch.empty(need, device=x.device, dtype=torch.float32)
        getattr(self._jit, launch.kernel)[(progs,)](
            x, y, self._scratch,
            blk["wred"], blk["bred"], blk["wa"], blk["ba"], blk["wb"], blk["bb"], blk["wc"], blk["bc"],
            d, h, w, n_ty, n_tx, n_tiles, progs, **launch.constexprs, num_warps=launch.num_warps,
        )
        return y

    def _tail(self, y: torch.Tensor, launch: Launch) -> torch.Tensor:
        """y (B, n, n, n, 3F) → (B, n, n, n)."""
        v = y.numel() // y.shape[-1]
        out = torch.empty(y.shape[:-1], device=y.device, dtype=torch.float32)
        getattr(self._jit, launch.kernel)[(-(-v // launch.constexprs["BLOCK_V"]),)](
            y, out, self.tail_w, self.tail_b, v, **launch.constexprs, num_warps=launch.num_warps,
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
        for blk, launch in zip(self.blocks, self.plan):
            y = self._block(y, blk, launch)
        return self._tail(y, self.plan[-1]).unsqueeze(1)
