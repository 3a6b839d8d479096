"""Host side of the Triton kernels: the backend interface of dsconv_ext.triton (see the package
docstring). Shapes and layouts are decided here; no host-device synchronisation happens (the
only host work is shape arithmetic and allocation), so the calls queue asynchronously.

Every launch goes through ``torch.library.wrap_triton`` so that, inside a ``triton_op``,
``torch.compile`` / ``make_fx`` capture the kernel as a graph node. Under the CPU interpreter the
kernels cannot be traced (``wrap_triton`` hands back the plain interpreter function), so with
fake tensors the launch is skipped: outputs are only allocated, which is all a fake kernel does.
"""

from typing import List, Optional, Tuple

import torch
import triton
from torch import Tensor
from torch.library import wrap_triton

from . import _mode
from .dgrad import conv_dgrad_kernel
from .forward import conv_fwd_kernel
from .taps import BANK, DOG, EXPLICIT
from .wgrad import conv_wgrad_kernel, reduce_rows_kernel

# Chunks of the grad-filter reduction: at least this many output pixels per chunk ...
_MIN_CHUNK = 64 if _mode.INTERPRETED else 256
# ... at most this many chunks, and partial sums of at most 1/8 of the input's bytes.
_MAX_CHUNKS = 1024
_REDUCE_BLOCK = 256
_INT32_SAFE = 2**30  # per-sample offsets beyond this use 64-bit index math (margin for halos)


def _is_fake(*tensors) -> bool:
    from torch._subclasses.fake_tensor import is_fake

    return any(t is not None and is_fake(t) for t in tensors)


def _skip_launch(*tensors) -> bool:
    # Interpreter functions cannot run on fake tensors and cannot be traced: see module docstring.
    return _mode.INTERPRETED and _is_fake(*tensors)


def _channels_last(x: Tensor) -> bool:
    from ..conv_args import is_channels_last

    return is_channels_last(x)


def _out_like(x: Tensor, shape, dtype=None) -> Tensor:
    fmt = torch.channels_last if _channels_last(x) else torch.contiguous_format
    return torch.empty(shape, dtype=dtype or x.dtype, device=x.device, memory_format=fmt)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _span(t: Tensor) -> int:
    """Largest element offset inside one sample (dims 1..3)."""
    return sum((t.shape[d] - 1) * abs(t.stride(d)) for d in range(1, t.dim()) if t.shape[d] > 0)


def _idx64(*tensors) -> bool:
    return any(_span(t) >= _INT32_SAFE for t in tensors)


def _out_size(h, w, kernel_size, stride, padding, dilation):
    (kh, kw), (top, bottom, left, right) = kernel_size, padding
    oh = (h + top + bottom - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + left + right - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return oh, ow


class _Family:
    """The filter source of one call, as the kernels' family arguments (dummies for the rest)."""

    def __init__(self, x: Tensor, family: int, weight=None, params=None, bank=None, coeffs=None, offset=None,
                 profile: str = "integrated"):
        self.family = family
        self.integrated = profile == "integrated"
        self.has_offset = offset is not None
        w = weight if weight is not None else x
        p = params if params is not None else x
        b = bank if bank is not None else x
        cf = coeffs if coeffs is not None else x
        off = offset if offset is not None else x
        self.args = (
            w, *((w.stride(0), w.stride(2), w.stride(3)) if weight is not None else (0, 0, 0)),
            p, *((p.stride(0), p.stride(1)) if params is not None else (0, 0)),
            b, *((b.stride(0), b.stride(1), b.stride(2)) if bank is not None else (0, 0, 0)),
            cf, *((cf.stride(0), cf.stride(1)) if coeffs is not None else (0, 0)),
            b.shape[0] if bank is not None else 0,
            off, off.stride(0) if offset is not None else 0,
        )


def _forward(x: Tensor, family: _Family, kernel_size, bias, stride, padding, dilation) -> Tensor:
    n, c, h, w = x.shape
    kh, kw = kernel_size
    oh, ow = _out_size(h, w, kernel_size, stride, padding, dilation)
    y = _out_like(x, (n, c, oh, ow))
    if y.numel() == 0 or _skip_launch(x):
        return y

    def grid(meta):
        return (n * triton.cdiv(oh, meta["BLOCK_H"]) * triton.cdiv(ow, meta["BLOCK_W"]), triton.cdiv(c, meta["BLOCK_C"]))

    wrap_triton(conv_fwd_kernel)[grid](
        x, y, bias if bias is not None else x,
        *family.args,
        c, h, w, oh, ow,
        *x.stride(), *y.stride(),
        padding[0], padding[2],
        KH=kh, KW=kw, SH=stride[0], SW=stride[1], DH=dilation[0], DW=dilation[1],
        FAMILY=family.family, FLIP=False, HAS_BIAS=bias is not None, HAS_OFFSET=family.has_offset,
        INTEGRATED=family.integrated, F64=x.dtype == torch.float64, IDX64=_idx64(x, y),
    )
    return y


def _grad_input(grad_out: Tensor, x: Tensor, family: _Family, kernel_size, stride, padding, dilation) -> Tensor:
    n, c, h, w = x.shape
    kh, kw = kernel_size
    oh, ow = grad_out.shape[2], grad_out.shape[3]
    dx = _out_like(x, x.shape)
    if dx.numel() == 0 or _skip_launch(grad_out, x):
        return dx
    if grad_out.numel() == 0:
        return dx.zero_()
    f64 = x.dtype == torch.float64
    idx64 = _idx64(grad_out, dx)
    if stride[0] == 1 and stride[1] == 1:
        # dx = conv(dy, flipped w) at stride 1 with pads (K - 1) * D - pad: the forward kernel,
        # with its input-row reuse. dy's extent plays the input's part, dx's the output's.
        def grid(meta):
            return (n * triton.cdiv(h, meta["BLOCK_H"]) * triton.cdiv(w, meta["BLOCK_W"]), triton.cdiv(c, meta["BLOCK_C"]))

        wrap_triton(conv_fwd_kernel)[grid](
            grad_out, dx, grad_out,
            *family.args,
            c, oh, ow, h, w,
            *grad_out.stride(), *dx.stride(),
            (kh - 1) * dilation[0] - padding[0], (kw - 1) * dilation[1] - padding[2],
            KH=kh, KW=kw, SH=1, SW=1, DH=dilation[0], DW=dilation[1],
            FAMILY=family.family, FLIP=True, HAS_BIAS=False, HAS_OFFSET=family.has_offset,
            INTEGRATED=family.integrated, F64=f64, IDX64=idx64,
        )
        return dx

    def grid(meta):
        return (n * triton.cdiv(h, meta["BLOCK_H"]) * triton.cdiv(w, meta["BLOCK_W"]), triton.cdiv(c, meta["BLOCK_C"]))

    wrap_triton(conv_dgrad_kernel)[grid](
        grad_out, dx,
        *family.args,
        c, h, w, oh, ow,
        *grad_out.stride(), *dx.stride(),
        padding[0], padding[2],
        KH=kh, KW=kw, SH=stride[0], SW=stride[1], DH=dilation[0], DW=dilation[1],
        FAMILY=family.family, HAS_OFFSET=family.has_offset, INTEGRATED=family.integrated, F64=f64, IDX64=idx64,
    )
    return dx


def wgrad_chunks(x: Tensor, kernel_size, p: int) -> int:
    """Number of pixel chunks of the grad-filter reduction: a function of the shape only (so
    the deterministic summation order is too)."""
    kk = kernel_size[0] * kernel_size[1]
    byte_cap = (x.numel() * x.element_size() // 8) // max(1, x.shape[1] * kk * 4)
    return max(1, min(triton.cdiv(p, _MIN_CHUNK), _MAX_CHUNKS, max(1, byte_cap)))


def _reduce(partial: Tensor, out: Tensor) -> None:
    s, length = partial.shape
    wrap_triton(reduce_rows_kernel)[(triton.cdiv(length, _REDUCE_BLOCK),)](partial, out, s, length, BLOCK=_REDUCE_BLOCK)


def _grad_filter_bias(grad_out: Tensor, x: Tensor, kernel_size, stride, padding, dilation, need_weight: bool,
                      need_bias: bool, deterministic: bool) -> Tuple[Tensor, Tensor]:
    n, c, h, w = x.shape
    kh, kw = kernel_size
    kk = kh * kw
    oh, ow = grad_out.shape[2], grad_out.shape[3]
    acc = _acc_dtype(x.dtype)
    p = n * oh * ow
    chunks = wgrad_chunks(x, kernel_size, p) if p > 0 else 1
    chunk = triton.cdiv(max(p, 1), chunks)
    chunks = triton.cdiv(max(p, 1), chunk)
    atomic = not deterministic and chunks > 1
    gw = torch.zeros((c, 1, kh, kw), dtype=acc, device=x.device) if need_weight else x.new_empty(0, dtype=acc)
    gb = torch.zeros((c,), dtype=acc, device=x.device) if need_bias else x.new_empty(0, dtype=acc)
    if p == 0 or _skip_launch(grad_out, x):
        return gw, gb
    if atomic or chunks == 1:
        w_target, b_target, s_gws, s_gbs = gw, gb, 0, 0
    else:
        w_target = torch.empty((chunks, c * kk), dtype=acc, device=x.device) if need_weight else gw
        b_target = torch.empty((chunks, c), dtype=acc, device=x.device) if need_bias else gb
        s_gws, s_gbs = c * kk, c

    def grid(meta):
        taps = triton.cdiv(kk, meta["BLOCK_T"]) if need_weight else 1
        return (chunks, triton.cdiv(c, meta["BLOCK_C"]), taps)

    wrap_triton(conv_wgrad_kernel)[grid](
        x, grad_out, w_target if need_weight else x, b_target if need_bias else x,
        c, h, w, oh, ow, p, chunk,
        *x.stride(), *grad_out.stride(),
        s_gws, s_gbs,
        padding[0], padding[2],
        KH=kh, KW=kw, SH=stride[0], SW=stride[1], DH=dilation[0], DW=dilation[1],
        NEED_W=need_weight, NEED_B=need_bias, ATOMIC=atomic, F64=x.dtype == torch.float64,
        IDX64=_idx64(x, grad_out),
    )
    if not atomic and chunks > 1:
        if need_weight:
            _reduce(w_target, gw.view(c * kk))
        if need_bias:
            _reduce(b_target, gb)
    return gw, gb


def _backward(grad_out, x, family: _Family, kernel_size, stride, padding, dilation, need_input, need_weight,
              need_bias, deterministic):
    acc = _acc_dtype(x.dtype)
    grad_out = grad_out.to(x.dtype)
    gx = _grad_input(grad_out, x, family, kernel_size, stride, padding, dilation) if need_input else x.new_empty(0)
    if need_weight or need_bias:
        gw, gb = _grad_filter_bias(grad_out, x, kernel_size, stride, padding, dilation, need_weight, need_bias,
                                   deterministic)
    else:
        gw, gb = x.new_empty(0, dtype=acc), x.new_empty(0, dtype=acc)
    return gx, gw, gb


# ------------------------------------------------------------------------------ the interface


def depthwise_forward(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
                      dilation: List[int]) -> Tensor:
    """x ``[N, C, H, W]``, weight ``[C, 1, kh, kw]``, bias ``[C]`` -> y ``[N, C, OH, OW]`` (x's layout)."""
    return _forward(x, _Family(x, EXPLICIT, weight=weight), weight.shape[2:], bias, stride, padding, dilation)


def depthwise_backward(grad_out: Tensor, x: Tensor, weight: Tensor, stride: List[int], padding: List[int],
                       dilation: List[int], need_input: bool, need_weight: bool, need_bias: bool,
                       deterministic: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """-> (grad_x like x, grad_weight ``[C, 1, kh, kw]`` fp32, grad_bias ``[C]`` fp32); fp64 sums
    for fp64 input; an output not asked for is empty."""
    return _backward(grad_out, x, _Family(x, EXPLICIT, weight=weight), weight.shape[2:], stride, padding, dilation,
                     need_input, need_weight, need_bias, deterministic)


def dog_forward(x: Tensor, params: Tensor, kernel_size: List[int], bias: Optional[Tensor], stride: List[int],
                padding: List[int], dilation: List[int], profile: str) -> Tensor:
    """x ``[N, C, H, W]``, params ``[C, 10]`` (taps generated in the kernel) -> y."""
    return _forward(x, _Family(x, DOG, params=params, profile=profile), kernel_size, bias, stride, padding, dilation)


def dog_backward(grad_out: Tensor, x: Tensor, params: Tensor, kernel_size: List[int], stride: List[int],
                 padding: List[int], dilation: List[int], profile: str, need_input: bool, need_filter: bool,
                 need_bias: bool, deterministic: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """-> (grad_x, grad_filter ``[C, 1, kh, kw]`` fp32, grad_bias ``[C]`` fp32). The chain rule into
    ``params`` (``families.dog.dog_filters_vjp``) is the caller's."""
    return _backward(grad_out, x, _Family(x, DOG, params=params, profile=profile), kernel_size, stride, padding,
                     dilation, need_input, need_filter, need_bias, deterministic)


def bank_forward(x: Tensor, bank: Tensor, coeffs: Tensor, offset: Optional[Tensor], bias: Optional[Tensor],
                 stride: List[int], padding: List[int], dilation: List[int]) -> Tensor:
    """x ``[N, C, H, W]``, bank ``[M, kh, kw]``, coeffs ``[C, M]``, offset ``[C]`` -> y."""
    family = _Family(x, BANK, bank=bank, coeffs=coeffs, offset=offset)
    return _forward(x, family, bank.shape[1:], bias, stride, padding, dilation)


def bank_backward(grad_out: Tensor, x: Tensor, bank: Tensor, coeffs: Tensor, offset: Optional[Tensor],
                  stride: List[int], padding: List[int], dilation: List[int], need_input: bool, need_filter: bool,
                  need_bias: bool, deterministic: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """-> (grad_x, grad_filter ``[C, 1, kh, kw]`` fp32, grad_bias ``[C]`` fp32). The chain rule into
    bank / coeffs / offset (``families.bank.bank_filters_vjp``) is the caller's."""
    family = _Family(x, BANK, bank=bank, coeffs=coeffs, offset=offset)
    return _backward(grad_out, x, family, bank.shape[1:], stride, padding, dilation, need_input, need_filter,
                     need_bias, deterministic)
