"""Grad-filter / grad-bias kernel and the fixed-order reduction of its partial sums.

``gw[c, i, j] = sum_{n, oh, ow} dy[n, c, oh, ow] * x[n, c, oh*SH - pad_t + i*DH, ow*SW - pad_l + j*DW]``
and ``gb[c] = sum dy[n, c, :, :]``.

The ``P = N * OH * OW`` output pixels are cut into ``S`` chunks of ``CHUNK`` pixels, chosen on
the host from the shape only. Program ``(s, channel block, tap block)`` walks its chunk in
``BLOCK_P`` steps: it loads the dy tile ``[BLOCK_P, BLOCK_C]`` once and the x tiles of
``BLOCK_T`` taps as one ``[BLOCK_T, BLOCK_P, BLOCK_C]`` gather, and keeps the per-tap sums in
fp32 registers. Then either

* deterministic: it writes its partial sums to row ``s`` of a ``[S, C * KH * KW]`` buffer and
  ``reduce_rows_kernel`` adds the rows in the order s = 0, 1, ... (bitwise repeatable), or
* ``ATOMIC``: it adds them into the zeroed output with ``tl.atomic_add`` (no second pass and no
  partial buffer; the order of the additions, and so the rounding, varies from run to run).
"""

import triton
import triton.language as tl

from .configs import WGRAD_CONFIGS, WGRAD_KEY, prune_wgrad
from .primitives import add


@triton.autotune(configs=WGRAD_CONFIGS, key=WGRAD_KEY, prune_configs_by={"early_config_prune": prune_wgrad},
                 reset_to_zero=["gw_ptr", "gb_ptr"])
@triton.jit
def conv_wgrad_kernel(
    x_ptr, dy_ptr, gw_ptr, gb_ptr,
    C, H, W, OH, OW, P, CHUNK,
    s_xn, s_xc, s_xh, s_xw,
    s_dyn, s_dyc, s_dyh, s_dyw,
    s_gws, s_gbs,
    pad_t, pad_l,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    NEED_W: tl.constexpr, NEED_B: tl.constexpr, ATOMIC: tl.constexpr, F64: tl.constexpr, IDX64: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """x ``[N, C, H, W]``, dy ``[N, C, OH, OW]`` -> gw ``[S or 1, C, KH*KW]``, gb ``[S or 1, C]``
    (row stride ``s_gws`` / ``s_gbs``; 0 with ATOMIC)."""
    ACC: tl.constexpr = tl.float64 if F64 else tl.float32  # fp32 accumulation; fp64 for fp64
    s = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    tb = tl.program_id(2)
    c_ok = c < C
    t = tb * BLOCK_T + tl.arange(0, BLOCK_T)
    KK: tl.constexpr = KH * KW
    t_ok = t < KK
    ti = t // KW
    tj = t % KW
    if IDX64:
        c_x = c.to(tl.int64) * s_xc
        c_dy = c.to(tl.int64) * s_dyc
    else:
        c_x = c * s_xc
        c_dy = c * s_dyc

    acc_w = tl.full([BLOCK_T, BLOCK_C], 0, ACC)
    acc_b = tl.full([BLOCK_C], 0, ACC)
    p_start = s * CHUNK
    p_end = tl.minimum(p_start + CHUNK, P)
    ohw = OH * OW
    for p0 in range(p_start, p_end, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        p_ok = p < p_end
        n = p // ohw
        rem = p - n * ohw
        oh = rem // OW
        ow = rem - oh * OW
        n64 = n.to(tl.int64)
        if IDX64:
            dy_sp = oh.to(tl.int64) * s_dyh + ow.to(tl.int64) * s_dyw
        else:
            dy_sp = oh * s_dyh + ow * s_dyw
        g = tl.load(
            dy_ptr + (n64 * s_dyn + dy_sp)[:, None] + c_dy[None, :],
            mask=p_ok[:, None] & c_ok[None, :], other=0,
        ).to(ACC)  # [BLOCK_P, BLOCK_C]
        if NEED_B:
            acc_b += tl.reduce(g, 0, add)
        if NEED_W:
            ih = oh[None, :] * SH - pad_t + (ti * DH)[:, None]  # [BLOCK_T, BLOCK_P]
            iw = ow[None, :] * SW - pad_l + (tj * DW)[:, None]
            ok = t_ok[:, None] & p_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            if IDX64:
                x_sp = ih.to(tl.int64) * s_xh + iw.to(tl.int64) * s_xw
            else:
                x_sp = ih * s_xh + iw * s_xw
            xv = tl.load(
                x_ptr + (n64 * s_xn)[None, :, None] + x_sp[:, :, None] + c_x[None, None, :],
                mask=ok[:, :, None] & c_ok[None, None, :], other=0,
            ).to(ACC)  # [BLOCK_T, BLOCK_P, BLOCK_C]
            acc_w += tl.reduce(xv * g[None, :, :], 1, add)

    if NEED_W:
        w_off = s.to(tl.int64) * s_gws + (c * KK)[None, :] + t[:, None]
        w_ok = t_ok[:, None] & c_ok[None, :]
        if ATOMIC:
            tl.atomic_add(gw_ptr + w_off, acc_w, mask=w_ok)
        else:
            tl.store(gw_ptr + w_off, acc_w, mask=w_ok)
    if NEED_B:
        # Only the first tap block reports the bias sums (every tap block computed the same).
        b_ok = c_ok & ((tb + tl.full([BLOCK_C], 0, tl.int32)) == 0)  # block, not scalar (interpreter)
        b_off = s.to(tl.int64) * s_gbs + c
        if ATOMIC:
            tl.atomic_add(gb_ptr + b_off, acc_b, mask=b_ok)
        else:
            tl.store(gb_ptr + b_off, acc_b, mask=b_ok)


@triton.jit
def reduce_rows_kernel(src_ptr, dst_ptr, S, L, BLOCK: tl.constexpr):
    """dst ``[L]`` = sum over s of src ``[S, L]``, added in the order s = 0, 1, ... ."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < L
    acc = tl.full([BLOCK], 0, dst_ptr.dtype.element_ty)
    ptrs = src_ptr + offs
    for _ in range(0, S):
        acc += tl.load(ptrs, mask=ok, other=0)
        ptrs += L  # pointer arithmetic is 64-bit: no s * L overflow
    tl.store(dst_ptr + offs, acc, mask=ok)
