"""``dsconv_ext::dog_conv2d``: depthwise convolution whose filters are generated inside the op
from DoG-jet parameters ``params [C, 10]`` (see dsconv_ext.families.dog)."""

from typing import List, Optional

import torch
from torch import Tensor

from ..conv_args import empty_output
from ..backends import deterministic_enabled
from .backend_kernels import FUSED_FAMILIES, dog_filters, dog_filters_vjp, run_forward
from .depthwise_op import backward_filter_grads, save_geometry


def dog_weight(backend: str, params: Tensor, kernel_size: List[int], profile: str, dtype: torch.dtype) -> Tensor:
    """``[C, 1, kh, kw]`` filters in ``dtype`` from ``params [C, 10]``."""
    return dog_filters(backend, params, kernel_size, profile).to(dtype).unsqueeze(1)


@torch.library.custom_op("dsconv_ext::dog_conv2d", mutates_args=())
def dog_conv2d_op(
    x: Tensor,
    params: Tensor,
    kernel_size: List[int],
    bias: Optional[Tensor],
    stride: List[int],
    padding: List[int],
    dilation: List[int],
    profile: str,
    backend: str,
) -> Tensor:
    """x ``[N, C, H, W]``, params ``[C, 10]``, bias ``[C]`` -> y ``[N, C, H', W']``."""
    if backend in FUSED_FAMILIES:  # taps generated inside the kernels
        return FUSED_FAMILIES[backend].dog_forward(x, params, kernel_size, bias, stride, padding, dilation, profile)
    weight = dog_weight(backend, params, kernel_size, profile, x.dtype)
    bias = bias.to(x.dtype) if bias is not None else None
    return run_forward(backend, x, weight, bias, stride, padding, dilation)


@dog_conv2d_op.register_fake
def _(x, params, kernel_size, bias, stride, padding, dilation, profile, backend):
    return empty_output(x, kernel_size, stride, padding, dilation)


def _setup_context(ctx, inputs, output):
    x, params, kernel_size, bias, stride, padding, dilation, profile, backend = inputs
    ctx.save_for_backward(x, params)
    save_geometry(ctx, stride, padding, dilation, backend)
    ctx.kernel_size, ctx.profile = kernel_size, profile
    ctx.bias_dtype = bias.dtype if bias is not None else None


def _backward(ctx, grad_out):
    x, params = ctx.saved_tensors
    need_x, need_p, _, need_b = ctx.needs_input_grad[:4]
    if ctx.backend in FUSED_FAMILIES:
        grad_x, grad_params, grad_b = FUSED_FAMILIES[ctx.backend].dog_backward(
            grad_out, x, params, ctx.kernel_size, ctx.stride, ctx.padding, ctx.dilation, ctx.profile,
            need_x, need_p, need_b, deterministic_enabled(),
        )
    else:
        weight = dog_weight(ctx.backend, params, ctx.kernel_size, ctx.profile, x.dtype)
        grad_x, grad_w, grad_b = backward_filter_grads(ctx, grad_out, x, weight, need_x, need_p, need_b)
        grad_params = dog_filters_vjp(ctx.backend, params, grad_w[:, 0], ctx.kernel_size, ctx.profile) if need_p else None
    return (
        grad_x if need_x else None,
        grad_params if need_p else None,
        None,
        grad_b.to(ctx.bias_dtype) if need_b else None,
        None, None, None, None, None,
    )


dog_conv2d_op.register_autograd(_backward, setup_context=_setup_context)
