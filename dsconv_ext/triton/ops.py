"""The Triton ops, registered with ``torch.library.triton_op`` (namespace ``dsconv_ext``):

* ``triton_depthwise_conv2d(x, weight, bias, stride, padding, dilation)``
* ``triton_dog_conv2d(x, params, kernel_size, bias, stride, padding, dilation, profile)``
* ``triton_bank_conv2d(x, bank, coeffs, offset, bias, stride, padding, dilation)``
* and their backward ops ``triton_*_backward`` (used by the autograd formulas).

``triton_op`` makes the body visible to ``torch.compile``: on a GPU, AOTAutograd decomposes the op
into its ``wrap_triton`` kernel launches, and Inductor schedules (and may autotune) them like its
own kernels. The body is also the fake (meta) kernel. The chain rule from the filter gradient
into DoG parameters and bank coefficients is the PyTorch code of ``dsconv_ext.families`` (a few
``[C, kh, kw]``-sized ops), so it is traced and compiled along.

Under the CPU interpreter kernels cannot be traced, so there the ops are kept opaque in
compiled graphs (no decomposition; eager launches at run time): see ``_keep_opaque``.
"""

from typing import List, Optional, Tuple

import torch
from torch import Tensor
from torch.library import triton_op

from ..backends import deterministic_enabled
from ..families import bank as bank_family
from ..families import dog as dog_family
from . import _mode, launch


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ------------------------------------------------------------------------------ depthwise


@triton_op("dsconv_ext::triton_depthwise_conv2d", mutates_args=())
def triton_depthwise_conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int],
                            padding: List[int], dilation: List[int]) -> Tensor:
    """x ``[N, C, H, W]``, weight ``[C, 1, kh, kw]``, bias ``[C]`` -> y ``[N, C, OH, OW]``."""
    return launch.depthwise_forward(x, weight, bias, stride, padding, dilation)


@triton_op("dsconv_ext::triton_depthwise_conv2d_backward", mutates_args=())
def triton_depthwise_conv2d_backward(grad_out: Tensor, x: Tensor, weight: Tensor, stride: List[int],
                                     padding: List[int], dilation: List[int], need_input: bool, need_weight: bool,
                                     need_bias: bool, deterministic: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """-> (grad_x, grad_weight ``[C, 1, kh, kw]`` fp32, grad_bias ``[C]`` fp32); empty when not needed."""
    return launch.depthwise_backward(grad_out, x, weight, stride, padding, dilation, need_input, need_weight,
                                     need_bias, deterministic)


def _depthwise_setup(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation = inputs
    ctx.save_for_backward(x, weight)
    ctx.geometry = (stride, padding, dilation)
    ctx.bias_dtype = bias.dtype if bias is not None else None


def _depthwise_backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    gx, gw, gb = torch.ops.dsconv_ext.triton_depthwise_conv2d_backward(
        grad_out, x, weight, *ctx.geometry, need_x, need_w, need_b, deterministic_enabled())
    return (gx if need_x else None, gw.to(weight.dtype) if need_w else None,
            gb.to(ctx.bias_dtype) if need_b else None, None, None, None)


triton_depthwise_conv2d.register_autograd(_depthwise_backward, setup_context=_depthwise_setup)


# ------------------------------------------------------------------------------ DoG jet


@triton_op("dsconv_ext::triton_dog_conv2d", mutates_args=())
def triton_dog_conv2d(x: Tensor, params: Tensor, kernel_size: List[int], bias: Optional[Tensor], stride: List[int],
                      padding: List[int], dilation: List[int], profile: str) -> Tensor:
    """x ``[N, C, H, W]``, params ``[C, 10]`` -> y; taps generated in the kernel."""
    return launch.dog_forward(x, params, kernel_size, bias, stride, padding, dilation, profile)


@triton_op("dsconv_ext::triton_dog_conv2d_backward", mutates_args=())
def triton_dog_conv2d_backward(grad_out: Tensor, x: Tensor, params: Tensor, kernel_size: List[int],
                               stride: List[int], padding: List[int], dilation: List[int], profile: str,
                               need_input: bool, need_filter: bool, need_bias: bool,
                               deterministic: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """-> (grad_x, grad_filter ``[C, 1, kh, kw]`` fp32, grad_bias ``[C]`` fp32)."""
    return launch.dog_backward(grad_out, x, params, kernel_size, stride, padding, dilation, profile, need_input,
                               need_filter, need_bias, deterministic)


def _dog_setup(ctx, inputs, output):
    x, params, kernel_size, bias, stride, padding, dilation, profile = inputs
    ctx.save_for_backward(x, params)
    ctx.kernel_size, ctx.profile = kernel_size, profile
    ctx.geometry = (stride, padding, dilation)
    ctx.bias_dtype = bias.dtype if bias is not None else None


def _dog_backward(ctx, grad_out):
    x, params = ctx.saved_tensors
    need_x, need_p, _, need_b = ctx.needs_input_grad[:4]
    gx, gf, gb = torch.ops.dsconv_ext.triton_dog_conv2d_backward(
        grad_out, x, params, ctx.kernel_size, *ctx.geometry, ctx.profile, need_x, need_p, need_b,
        deterministic_enabled())
    grad_params = None
    if need_p:
        wide = params.to(_acc(params.dtype))
        grad_params = dog_family.dog_filters_vjp(wide, gf[:, 0], ctx.kernel_size, ctx.profile).to(params.dtype)
    return (gx if need_x else None, grad_params, None, gb.to(ctx.bias_dtype) if need_b else None,
            None, None, None, None)


triton_dog_conv2d.register_autograd(_dog_backward, setup_context=_dog_setup)


# ------------------------------------------------------------------------------ bank


@triton_op("dsconv_ext::triton_bank_conv2d", mutates_args=())
def triton_bank_conv2d(x: Tensor, bank: Tensor, coeffs: Tensor, offset: Optional[Tensor], bias: Optional[Tensor],
                       stride: List[int], padding: List[int], dilation: List[int]) -> Tensor:
    """x ``[N, C, H, W]``, bank ``[M, kh, kw]``, coeffs ``[C, M]``, offset ``[C]`` -> y."""
    return launch.bank_forward(x, bank, coeffs, offset, bias, stride, padding, dilation)


@triton_op("dsconv_ext::triton_bank_conv2d_backward", mutates_args=())
def triton_bank_conv2d_backward(grad_out: Tensor, x: Tensor, bank: Tensor, coeffs: Tensor, offset: Optional[Tensor],
                                stride: List[int], padding: List[int], dilation: List[int], need_input: bool,
                                need_filter: bool, need_bias: bool,
                                deterministic: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """-> (grad_x, grad_filter ``[C, 1, kh, kw]`` fp32, grad_bias ``[C]`` fp32)."""
    return launch.bank_backward(grad_out, x, bank, coeffs, offset, stride, padding, dilation, need_input,
                                need_filter, need_bias, deterministic)


def _bank_setup(ctx, inputs, output):
    x, bank, coeffs, offset, bias, stride, padding, dilation = inputs
    ctx.save_for_backward(x, bank, coeffs, offset)
    ctx.geometry = (stride, padding, dilation)
    ctx.bias_dtype = bias.dtype if bias is not None else None


def _bank_backward(ctx, grad_out):
    x, bank, coeffs, offset = ctx.saved_tensors
    need_x, need_bank, need_coeffs, need_offset, need_b = ctx.needs_input_grad[:5]
    need_filter = need_bank or need_coeffs or need_offset
    gx, gf, gb = torch.ops.dsconv_ext.triton_bank_conv2d_backward(
        grad_out, x, bank, coeffs, offset, *ctx.geometry, need_x, need_filter, need_b, deterministic_enabled())
    grad_bank = grad_coeffs = grad_offset = None
    if need_filter:
        grad_coeffs, grad_bank, grad_offset = bank_family.bank_filters_vjp(bank, coeffs, gf[:, 0])
        grad_coeffs = grad_coeffs.to(coeffs.dtype) if need_coeffs else None
        grad_bank = grad_bank.to(bank.dtype) if need_bank else None
        grad_offset = grad_offset.to(offset.dtype) if need_offset else None
    return (gx if need_x else None, grad_bank, grad_coeffs, grad_offset,
            gb.to(ctx.bias_dtype) if need_b else None, None, None, None)


triton_bank_conv2d.register_autograd(_bank_backward, setup_context=_bank_setup)


OPS = (triton_depthwise_conv2d, triton_depthwise_conv2d_backward, triton_dog_conv2d, triton_dog_conv2d_backward,
       triton_bank_conv2d, triton_bank_conv2d_backward)


def _keep_opaque(mode, op, types, args, kwargs):
    # What triton_op itself does under torch.export: no decomposition, the op stays one node.
    return mode.__torch_dispatch__(op, types, args, kwargs)


if _mode.INTERPRETED:
    from torch._subclasses.functional_tensor import FunctionalTensorMode

    for _op in OPS:
        _op.register_torch_dispatch(FunctionalTensorMode, _keep_opaque)
