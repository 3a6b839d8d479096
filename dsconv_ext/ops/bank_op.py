"""``dsconv_ext::bank_conv2d``: depthwise convolution whose filters are generated inside the op
as ``w_c = sum_m coeffs[c, m] bank[m] (+ offset[c])`` (see dsconv_ext.families.bank)."""

from typing import List, Optional

import torch
from torch import Tensor

from ..conv_args import empty_output
from ..families.bank import bank_filters, bank_filters_vjp
from ..backends import deterministic_enabled
from .backend_kernels import FUSED_FAMILIES, run_forward
from .depthwise_op import backward_filter_grads, save_geometry


def bank_weight(bank: Tensor, coeffs: Tensor, offset: Optional[Tensor], dtype: torch.dtype) -> Tensor:
    """``[C, 1, kh, kw]`` filters in ``dtype``."""
    return bank_filters(bank, coeffs, offset).to(dtype).unsqueeze(1)


@torch.library.custom_op("dsconv_ext::bank_conv2d", mutates_args=())
def bank_conv2d_op(
    x: Tensor,
    bank: Tensor,
    coeffs: Tensor,
    offset: Optional[Tensor],
    bias: Optional[Tensor],
    stride: List[int],
    padding: List[int],
    dilation: List[int],
    backend: str,
) -> Tensor:
    """x ``[N, C, H, W]``, bank ``[M, kh, kw]``, coeffs ``[C, M]``, offset ``[C]``, bias ``[C]``
    -> y ``[N, C, H', W']``."""
    if backend in FUSED_FAMILIES:  # taps generated inside the kernels
        return FUSED_FAMILIES[backend].bank_forward(x, bank, coeffs, offset, bias, stride, padding, dilation)
    weight = bank_weight(bank, coeffs, offset, x.dtype)
    bias = bias.to(x.dtype) if bias is not None else None
    return run_forward(backend, x, weight, bias, stride, padding, dilation)


@bank_conv2d_op.register_fake
def _(x, bank, coeffs, offset, bias, stride, padding, dilation, backend):
    return empty_output(x, bank.shape[1:], stride, padding, dilation)


def _setup_context(ctx, inputs, output):
    x, bank, coeffs, offset, bias, stride, padding, dilation, backend = inputs
    ctx.save_for_backward(x, bank, coeffs, offset)
    save_geometry(ctx, stride, padding, dilation, backend)
    ctx.bias_dtype = bias.dtype if bias is not None else None


def _backward(ctx, grad_out):
    x, bank, coeffs, offset = ctx.saved_tensors
    need_x, need_bank, need_coeffs, need_offset, need_b = ctx.needs_input_grad[:5]
    need_filter = need_bank or need_coeffs or need_offset
    if ctx.backend in FUSED_FAMILIES:
        grad_x, grad_bank, grad_coeffs, grad_offset, grad_b = FUSED_FAMILIES[ctx.backend].bank_backward(
            grad_out, x, bank, coeffs, offset, ctx.stride, ctx.padding, ctx.dilation, need_x, need_bank,
            need_coeffs, need_offset and offset is not None, need_b, deterministic_enabled(),
        )
        grad_bank = grad_bank if need_bank else None
        grad_coeffs = grad_coeffs if need_coeffs else None
        grad_offset = grad_offset if need_offset and offset is not None else None
    else:
        weight = bank_weight(bank, coeffs, offset, x.dtype)
        grad_x, grad_w, grad_b = backward_filter_grads(ctx, grad_out, x, weight, need_x, need_filter, need_b)
        grad_bank = grad_coeffs = grad_offset = None
        if need_filter:
            grad_coeffs, grad_bank, grad_offset = bank_filters_vjp(bank, coeffs, grad_w[:, 0])
            grad_coeffs = grad_coeffs.to(coeffs.dtype) if need_coeffs else None
            grad_bank = grad_bank.to(bank.dtype) if need_bank else None
            grad_offset = grad_offset.to(offset.dtype) if need_offset else None
    return (
        grad_x if need_x else None,
        grad_bank,
        grad_coeffs,
        grad_offset,
        grad_b.to(ctx.bias_dtype) if need_b else None,
        None, None, None, None,
    )


bank_conv2d_op.register_autograd(_backward, setup_context=_setup_context)
