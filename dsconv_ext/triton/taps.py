"""Filter taps generated inside the kernels (``@triton.jit`` helpers, no launches here).

Every conv kernel asks ``filter_tap`` for the weight of tap ``(i, j)`` of channels ``c``; the
``FAMILY`` constexpr decides where it comes from:

* ``EXPLICIT`` (0): a load from the ``[C, 1, kh, kw]`` weight (any strides);
* ``DOG`` (1): the DoG jet of dsconv_ext.families.dog, computed from the channel's parameters
  (``dog_channel_params`` loads them once per program); mirrors ``dog_filters`` term by term;
* ``BANK`` (2): ``sum_m coeffs[c, m] * bank[m, i, j] (+ offset[c])``.

``i`` and ``j`` may be tensors (broadcast against the channel vectors) or constexpr ints;
taps with ``tap_ok`` False are 0. Everything is computed in ``ACC`` (fp32, or fp64 for fp64).
"""

import triton
import triton.language as tl

EXPLICIT = 0
DOG = 1
BANK = 2

# families/dog.py constants (kept in sync by tests/test_triton_taps.py)
SIGMA_MIN = 0.1
GAMMA_MIN = 0.1
GAMMA_SPAN = 0.85  # GAMMA_MAX - GAMMA_MIN
INV_SQRT2 = 0.7071067811865476
INV_SQRT2PI = 0.3989422804014327


@triton.jit
def _profiles(t, s, INTEGRATED: tl.constexpr):
    """1-D scale-normalised Gaussian profiles of order 0, 1, 2 at tap offset ``t``, scale ``s``.

    integrated: p_m = Q_m((t+1/2)/s) - Q_m((t-1/2)/s), Q_0 = Phi, Q_1 = phi, Q_2 = phi';
    sampled:    p_m = phi^(m)(t/s) / s.
    """
    if INTEGRATED:
        up = (t + 0.5) / s
        lo = (t - 0.5) / s
        pdf_up = tl.exp(-0.5 * up * up) * INV_SQRT2PI
        pdf_lo = tl.exp(-0.5 * lo * lo) * INV_SQRT2PI
        # 0.5 (1 + erf(a)) - 0.5 (1 + erf(b)) without the cancelling ones
        p0 = 0.5 * (tl.math.erf(up * INV_SQRT2) - tl.math.erf(lo * INV_SQRT2))
        p1 = pdf_up - pdf_lo
        p2 = lo * pdf_lo - up * pdf_up
    else:
        u = t / s
        pdf = tl.exp(-0.5 * u * u) * INV_SQRT2PI / s
        p0 = pdf
        p1 = -u * pdf
        p2 = (u * u - 1.0) * pdf
    return p0, p1, p2


@triton.jit
def dog_channel_params(p_ptr, s_pc, s_pk, c, c_ok, ACC: tl.constexpr):
    """Loads ``params[c, 0:10]`` and maps (rho, tau) to (sigma, sigma / gamma).

    Returns the eight coefficients, sigma and the surround scale, each shaped like ``c``.
    """
    base = p_ptr + c * s_pc
    a0 = tl.load(base, mask=c_ok, other=0).to(ACC)
    a1 = tl.load(base + s_pk, mask=c_ok, other=0).to(ACC)
    a2 = tl.load(base + 2 * s_pk, mask=c_ok, other=0).to(ACC)
    a3 = tl.load(base + 3 * s_pk, mask=c_ok, other=0).to(ACC)
    a4 = tl.load(base + 4 * s_pk, mask=c_ok, other=0).to(ACC)
    a5 = tl.load(base + 5 * s_pk, mask=c_ok, other=0).to(ACC)
    a6 = tl.load(base + 6 * s_pk, mask=c_ok, other=0).to(ACC)
    a7 = tl.load(base + 7 * s_pk, mask=c_ok, other=0).to(ACC)
    rho = tl.load(base + 8 * s_pk, mask=c_ok, other=0).to(ACC)
    tau = tl.load(base + 9 * s_pk, mask=c_ok, other=0).to(ACC)
    # softplus as torch computes it (linear above 20), in the overflow-free form below
    soft = tl.maximum(rho, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(rho)))
    sigma = SIGMA_MIN + tl.where(rho > 20.0, rho, soft)
    gamma = GAMMA_MIN + GAMMA_SPAN / (1.0 + tl.exp(-tau))
    return a0, a1, a2, a3, a4, a5, a6, a7, sigma, sigma / gamma


@triton.jit
def family_channel_params(p_ptr, s_pc, s_pk, c, c_ok, FAMILY: tl.constexpr, ACC: tl.constexpr,
                          BLOCK_C: tl.constexpr):
    """``dog_channel_params`` for the DoG family; zeros (unused by ``filter_tap``) for the
    others, so every kernel takes the same ten values whatever the family."""
    if FAMILY == 1:
        a0, a1, a2, a3, a4, a5, a6, a7, sigma, surround = dog_channel_params(p_ptr, s_pc, s_pk, c, c_ok, ACC)
    else:
        a0 = tl.full([BLOCK_C], 0, ACC)
        a1 = a0
        a2 = a0
        a3 = a0
        a4 = a0
        a5 = a0
        a6 = a0
        a7 = a0
        sigma = a0
        surround = a0
    return a0, a1, a2, a3, a4, a5, a6, a7, sigma, surround


@triton.jit
def _dog_tap(ty, tx, a0, a1, a2, a3, a4, a5, a6, a7, sigma, surround, INTEGRATED: tl.constexpr):
    y0, y1, y2 = _profiles(ty, sigma, INTEGRATED)
    x0, x1, x2 = _profiles(tx, sigma, INTEGRATED)
    sy0, sy1, sy2 = _profiles(ty, surround, INTEGRATED)
    sx0, sx1, sx2 = _profiles(tx, surround, INTEGRATED)
    # G, Gx, Gy, Gxx, Gxy, Gyy (orders y/x: 00, 01, 10, 02, 11, 20), surround, constant
    return (a0 * y0 * x0 + a1 * y0 * x1 + a2 * y1 * x0 + a3 * y0 * x2 + a4 * y1 * x1 + a5 * y2 * x0
            + a6 * sy0 * sx0 + a7)


@triton.jit
def filter_tap(
    i, j, c, c_ok, tap_ok,
    w_ptr, s_wc, s_wh, s_ww,            # EXPLICIT: weight [C, 1, kh, kw]
    bank_ptr, s_bm, s_bh, s_bw,         # BANK: bank [M, kh, kw]
    coef_ptr, s_cc, s_cm, M,            # BANK: coeffs [C, M]
    off_ptr, s_off,                     # BANK: offset [C]
    a0, a1, a2, a3, a4, a5, a6, a7, sigma, surround,  # DOG: from dog_channel_params
    KH: tl.constexpr, KW: tl.constexpr,
    FAMILY: tl.constexpr, HAS_OFFSET: tl.constexpr, INTEGRATED: tl.constexpr, ACC: tl.constexpr,
):
    """Tap ``(i, j)`` of the filters of channels ``c`` (broadcast shapes), 0 where not ``tap_ok``."""
    ok = tap_ok & c_ok
    if FAMILY == 0:
        w = tl.load(w_ptr + c * s_wc + i * s_wh + j * s_ww, mask=ok, other=0).to(ACC)
    elif FAMILY == 1:
        ty = i - (KH - 1) * 0.5
        tx = j - (KW - 1) * 0.5
        w = _dog_tap(ty, tx, a0, a1, a2, a3, a4, a5, a6, a7, sigma, surround, INTEGRATED)
        w = tl.where(ok, w, 0.0)
    else:
        w = a0 * 0.0 + (i + j) * 0.0  # zeros in the broadcast shape of (c, i, j), in ACC
        for m in range(0, M):
            coef = tl.load(coef_ptr + c * s_cc + m * s_cm, mask=c_ok, other=0).to(ACC)
            # "+ 0 * c": a block pointer even when i and j are constexprs (the dgrad kernel)
            tap = tl.load(bank_ptr + m * s_bm + i * s_bh + j * s_bw + 0 * c, mask=tap_ok, other=0).to(ACC)
            w += coef * tap
        if HAS_OFFSET:
            w += tl.load(off_ptr + c * s_off, mask=c_ok, other=0).to(ACC)
        w = tl.where(ok, w, 0.0)
    return w
