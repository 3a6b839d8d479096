"""Forward kernel (also grad-input at stride 1, as the convolution with the flipped filter).

One program computes a ``[BLOCK_H, BLOCK_W, BLOCK_C]`` tile of ``y[n, c, oh, ow]``. It streams
the ``(BLOCK_H - 1) * SH + (KH - 1) * DH + 1`` input rows the tile needs, loads each row
segment once per filter column ``j`` and adds it, from registers, into every output row of the
tile that uses it (tap ``i = (r - h * SH) / DH`` for output row ``h``): an input row is read
once per tile instead of once per (output row, tap row). Element strides are explicit, so NCHW,
channels_last and strided views share the kernel; the autotuner picks the tile shape per layout.
"""

import triton
import triton.language as tl

from .configs import FWD_CONFIGS, FWD_KEY, prune_fwd
from .taps import family_channel_params, filter_tap


@triton.autotune(configs=FWD_CONFIGS, key=FWD_KEY, prune_configs_by={"early_config_prune": prune_fwd})
@triton.jit
def conv_fwd_kernel(
    x_ptr, y_ptr, bias_ptr,
    w_ptr, s_wc, s_wh, s_ww,
    p_ptr, s_pc, s_pk,
    bank_ptr, s_bm, s_bh, s_bw, coef_ptr, s_cc, s_cm, M, off_ptr, s_off,
    C, H, W, OH, OW,
    s_xn, s_xc, s_xh, s_xw,
    s_yn, s_yc, s_yh, s_yw,
    pad_t, pad_l,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    FAMILY: tl.constexpr, FLIP: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_OFFSET: tl.constexpr,
    INTEGRATED: tl.constexpr, F64: tl.constexpr, IDX64: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """x ``[N, C, H, W]`` -> y ``[N, C, OH, OW]``; ``y = conv(x, w) + bias`` with
    ``ih = oh * SH - pad_t + i * DH``. With ``FLIP`` the taps are read as ``w[KH-1-i, KW-1-j]``
    (grad-input: x := grad_out, pads := (K-1) * D - pad, stride 1). Pads may be negative."""
    ACC: tl.constexpr = tl.float64 if F64 else tl.float32  # fp32 accumulation; fp64 for fp64
    pid = tl.program_id(0)
    tiles_h = (OH + BLOCK_H - 1) // BLOCK_H
    tiles_w = (OW + BLOCK_W - 1) // BLOCK_W
    tw = pid % tiles_w
    rest = pid // tiles_w
    th = rest % tiles_h
    n = rest // tiles_h

    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    hh = tl.arange(0, BLOCK_H)
    oh = th * BLOCK_H + hh
    ow = tw * BLOCK_W + tl.arange(0, BLOCK_W)
    if IDX64:
        c_x = c.to(tl.int64) * s_xc
        c_y = c.to(tl.int64) * s_yc
    else:
        c_x = c * s_xc
        c_y = c * s_yc
    # The batch offset is always 64-bit: N * sample size is what overflows first.
    x_base = x_ptr + n.to(tl.int64) * s_xn
    y_base = y_ptr + n.to(tl.int64) * s_yn

    a0, a1, a2, a3, a4, a5, a6, a7, sigma, surround = family_channel_params(
        p_ptr, s_pc, s_pk, c, c_ok, FAMILY, ACC, BLOCK_C)

    acc = tl.full([BLOCK_H, BLOCK_W, BLOCK_C], 0, ACC)
    # A [1] block rather than a scalar: the interpreter mis-types scalar & block masks.
    ih0 = th * (BLOCK_H * SH) - pad_t + tl.full([1], 0, tl.int32)
    iw0 = ow * SW - pad_l
    ROWS: tl.constexpr = (BLOCK_H - 1) * SH + (KH - 1) * DH + 1
    # Small filters: rows fully unrolled. Large ones (k = 13, 31): a loop over rows with the
    # columns unrolled inside, so code size and compile time stay bounded.
    ROW_UNROLL: tl.constexpr = ROWS if KH * KW <= 81 else 1
    for r in tl.range(0, ROWS, loop_unroll_factor=ROW_UNROLL):
        ih = ih0 + r
        row_ok = (ih >= 0) & (ih < H)
        # Tap row used by each output row of the tile for input row r (masked where none).
        d = r - hh * SH
        ti = d // DH
        tap_ok = (d >= 0) & (d % DH == 0) & (ti < KH)
        if FLIP:
            ti = KH - 1 - ti
        if IDX64:
            row_off = ih.to(tl.int64) * s_xh
        else:
            row_off = ih * s_xh
        for j in tl.static_range(KW):
            iw = iw0 + j * DW
            col_ok = (iw >= 0) & (iw < W)
            if IDX64:
                col_off = iw.to(tl.int64) * s_xw
            else:
                col_off = iw * s_xw
            xv = tl.load(
                x_base + row_off[:, None] + col_off[:, None] + c_x[None, :],
                mask=row_ok[:, None] & col_ok[:, None] & c_ok[None, :], other=0,
            ).to(ACC)  # [BLOCK_W, BLOCK_C]
            if FLIP:
                tj = KW - 1 - j
            else:
                tj = j
            wv = filter_tap(
                ti[:, None], tj, c[None, :], c_ok[None, :], tap_ok[:, None],
                w_ptr, s_wc, s_wh, s_ww, bank_ptr, s_bm, s_bh, s_bw, coef_ptr, s_cc, s_cm, M, off_ptr, s_off,
                a0[None, :], a1[None, :], a2[None, :], a3[None, :], a4[None, :], a5[None, :], a6[None, :],
                a7[None, :], sigma[None, :], surround[None, :],
                KH, KW, FAMILY, HAS_OFFSET, INTEGRATED, ACC,
            )  # [BLOCK_H, BLOCK_C]
            acc += xv[None, :, :] * wv[:, None, :]

    if HAS_BIAS:
        acc += tl.load(bias_ptr + c, mask=c_ok, other=0).to(ACC)[None, None, :]
    if IDX64:
        sp = oh.to(tl.int64)[:, None, None] * s_yh + ow.to(tl.int64)[None, :, None] * s_yw
    else:
        sp = oh[:, None, None] * s_yh + ow[None, :, None] * s_yw
    out_ok = (oh < OH)[:, None, None] & (ow < OW)[None, :, None] & c_ok[None, None, :]
    tl.store(y_base + sp + c_y[None, None, :], acc.to(y_ptr.dtype.element_ty), mask=out_ok)
