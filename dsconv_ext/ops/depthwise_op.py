"""``dsconv_ext::depthwise_conv2d``: the registered op for explicit filters, and
``dsconv_ext::depthwise_conv2d_backward``, the backward every family op reuses.

Arguments are already normalised (see conv_args): stride and dilation pairs, padding
``[top, bottom, left, right]``, and a concrete backend name.
"""

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..backends import deterministic_enabled
from ..conv_args import empty_output, memory_format_of
from .backend_kernels import accumulation_dtype, run_backward, run_forward


@torch.library.custom_op("dsconv_ext::depthwise_conv2d", mutates_args=())
def depthwise_conv2d_op(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: List[int],
    padding: List[int],
    dilation: List[int],
    backend: str,
) -> Tensor:
    """x ``[N, C, H, W]``, weight ``[C, 1, kh, kw]``, bias ``[C]`` -> y ``[N, C, H', W']``."""
    return run_forward(backend, x, weight, bias, stride, padding, dilation)


@depthwise_conv2d_op.register_fake
def _(x, weight, bias, stride, padding, dilation, backend):
    return empty_output(x, weight.shape[2:], stride, padding, dilation)


@torch.library.custom_op("dsconv_ext::depthwise_conv2d_backward", mutates_args=())
def depthwise_conv2d_backward_op(
    grad_out: Tensor,
    x: Tensor,
    weight: Tensor,
    stride: List[int],
    padding: List[int],
    dilation: List[int],
    need_input: bool,
    need_weight: bool,
    need_bias: bool,
    deterministic: bool,
    backend: str,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Returns (grad_x ``[N, C, H, W]`` in x's dtype, grad_weight ``[C, 1, kh, kw]`` and
    grad_bias ``[C]`` in fp32 (fp64 for fp64 input)); an output not asked for is empty.
    ``deterministic`` forbids atomics in the reductions (the CPU and reference kernels never
    use them)."""
    grad_out = grad_out.to(x.dtype)
    return run_backward(backend, grad_out, x, weight, stride, padding, dilation, need_input, need_weight, need_bias,
                        deterministic)


def empty_backward_outputs(x: Tensor, weight: Tensor, need_input: bool, need_weight: bool,
                           need_bias: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """Uninitialised (grad_x, grad_weight, grad_bias) with the backward ops' shapes, dtypes and
    layout, empty where not asked for (the fake kernels of every depthwise backward op)."""
    acc = accumulation_dtype(x.dtype)
    grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format_of(x))
    grad_w = torch.empty(weight.shape, dtype=acc, device=x.device)
    grad_b = torch.empty(weight.shape[0], dtype=acc, device=x.device)
    return (
        grad_x if need_input else x.new_empty(0),
        grad_w if need_weight else x.new_empty(0, dtype=acc),
        grad_b if need_bias else x.new_empty(0, dtype=acc),
    )


@depthwise_conv2d_backward_op.register_fake
def _(grad_out, x, weight, stride, padding, dilation, need_input, need_weight, need_bias, deterministic, backend):
    return empty_backward_outputs(x, weight, need_input, need_weight, need_bias)


def backward_filter_grads(ctx, grad_out, x, weight, need_input, need_weight, need_bias):
    """Calls the backward op with the geometry and backend stored on ``ctx``."""
    return torch.ops.dsconv_ext.depthwise_conv2d_backward(
        grad_out, x, weight, ctx.stride, ctx.padding, ctx.dilation,
        need_input, need_weight, need_bias, deterministic_enabled(), ctx.backend,
    )


def save_geometry(ctx, stride, padding, dilation, backend) -> None:
    ctx.stride, ctx.padding, ctx.dilation, ctx.backend = stride, padding, dilation, backend


def _setup_context(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, backend = inputs
    ctx.save_for_backward(x, weight)
    save_geometry(ctx, stride, padding, dilation, backend)
    ctx.bias_dtype = bias.dtype if bias is not None else None


def _backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    grad_x, grad_w, grad_b = backward_filter_grads(ctx, grad_out, x, weight, need_x, need_w, need_b)
    return (
        grad_x if need_x else None,
        grad_w.to(weight.dtype) if need_w else None,
        grad_b.to(ctx.bias_dtype) if need_b else None,
        None, None, None, None,
    )


depthwise_conv2d_op.register_autograd(_backward, setup_context=_setup_context)
