"""Grad-input kernel for stride > 1, as an output gather (no scatter, no atomics).

``dx[n, c, ih, iw] = sum_{i, j} dy[n, c, oh, ow] * w[c, i, j]`` over the taps with
``oh = (ih + pad_t - i * DH) / SH`` and ``ow = (iw + pad_l - j * DW) / SW`` integral and in
range. One program owns a ``[BLOCK_H, BLOCK_W, BLOCK_C]`` tile of dx and writes it once, so the
result is deterministic. (Stride 1 goes through the forward kernel with the flipped filter,
which reuses rows from registers.)
"""

import triton
import triton.language as tl

from .configs import DGRAD_KEY, FWD_CONFIGS, prune_dgrad
from .taps import family_channel_params, filter_tap


@triton.autotune(configs=FWD_CONFIGS, key=DGRAD_KEY, prune_configs_by={"early_config_prune": prune_dgrad})
@triton.jit
def conv_dgrad_kernel(
    dy_ptr, dx_ptr,
    w_ptr, s_wc, s_wh, s_ww,
    p_ptr, s_pc, s_pk,
    bank_ptr, s_bm, s_bh, s_bw, coef_ptr, s_cc, s_cm, M, off_ptr, s_off,
    C, H, W, OH, OW,
    s_dyn, s_dyc, s_dyh, s_dyw,
    s_dxn, s_dxc, s_dxh, s_dxw,
    pad_t, pad_l,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    FAMILY: tl.constexpr, HAS_OFFSET: tl.constexpr, INTEGRATED: tl.constexpr, F64: tl.constexpr,
    IDX64: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """dy ``[N, C, OH, OW]`` -> dx ``[N, C, H, W]``."""
    ACC: tl.constexpr = tl.float64 if F64 else tl.float32  # fp32 accumulation; fp64 for fp64
    pid = tl.program_id(0)
    tiles_h = (H + BLOCK_H - 1) // BLOCK_H
    tiles_w = (W + BLOCK_W - 1) // BLOCK_W
    tw = pid % tiles_w
    rest = pid // tiles_w
    th = rest % tiles_h
    n = rest // tiles_h

    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    ih = th * BLOCK_H + tl.arange(0, BLOCK_H)
    iw = tw * BLOCK_W + tl.arange(0, BLOCK_W)
    if IDX64:
        c_dy = c.to(tl.int64) * s_dyc
        c_dx = c.to(tl.int64) * s_dxc
    else:
        c_dy = c * s_dyc
        c_dx = c * s_dxc
    dy_base = dy_ptr + n.to(tl.int64) * s_dyn
    dx_base = dx_ptr + n.to(tl.int64) * s_dxn

    a0, a1, a2, a3, a4, a5, a6, a7, sigma, surround = family_channel_params(
        p_ptr, s_pc, s_pk, c, c_ok, FAMILY, ACC, BLOCK_C)

    acc = tl.full([BLOCK_H, BLOCK_W, BLOCK_C], 0, ACC)
    ROW_UNROLL: tl.constexpr = KH if KH * KW <= 81 else 1  # bounded code size for large kernels
    for i in tl.range(0, KH, loop_unroll_factor=ROW_UNROLL):
        oh_num = ih + pad_t - i * DH
        oh = oh_num // SH
        # oh_num >= 0 first: for negative numerators // and % round either way, masked anyway.
        row_ok = (oh_num >= 0) & (oh_num % SH == 0) & (oh < OH)
        if IDX64:
            row_off = oh.to(tl.int64) * s_dyh
        else:
            row_off = oh * s_dyh
        for j in tl.static_range(KW):
            ow_num = iw + pad_l - j * DW
            ow = ow_num // SW
            col_ok = (ow_num >= 0) & (ow_num % SW == 0) & (ow < OW)
            if IDX64:
                col_off = ow.to(tl.int64) * s_dyw
            else:
                col_off = ow * s_dyw
            g = tl.load(
                dy_base + row_off[:, None, None] + col_off[None, :, None] + c_dy[None, None, :],
                mask=row_ok[:, None, None] & col_ok[None, :, None] & c_ok[None, None, :], other=0,
            ).to(ACC)
            wv = filter_tap(
                i, j, c, c_ok, c_ok,
                w_ptr, s_wc, s_wh, s_ww, bank_ptr, s_bm, s_bh, s_bw, coef_ptr, s_cc, s_cm, M, off_ptr, s_off,
                a0, a1, a2, a3, a4, a5, a6, a7, sigma, surround,
                KH, KW, FAMILY, HAS_OFFSET, INTEGRATED, ACC,
            )  # [BLOCK_C]
            acc += g * wv[None, None, :]

    if IDX64:
        sp = ih.to(tl.int64)[:, None, None] * s_dxh + iw.to(tl.int64)[None, :, None] * s_dxw
    else:
        sp = ih[:, None, None] * s_dxh + iw[None, :, None] * s_dxw
    ok = (ih < H)[:, None, None] & (iw < W)[None, :, None] & c_ok[None, None, :]
    tl.store(dx_base + sp + c_dx[None, None, :], acc.to(dx_ptr.dtype.element_ty), mask=ok)
