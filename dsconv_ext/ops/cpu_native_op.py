"""``dsconv_ext::_cpu_depthwise_conv2d``, ``_cpu_dog_conv2d`` and ``_cpu_bank_conv2d``: the cpu
backend's three ops with their autograd formulas in C++ (csrc/cpu_autograd.cpp,
csrc/cpu_family_autograd.cpp), which the functional ops call for the cpu backend.

The generic ops ``dsconv_ext::depthwise_conv2d`` / ``dog_conv2d`` / ``bank_conv2d`` compute the same
things on every backend, but their Python autograd wrappers cost about 130 us per forward+backward
call, as much as the kernels of a small MobileNet layer. This module registers the fake kernels
that ``torch.compile`` and ``opcheck`` need for the C++ ops and the backward they call.
"""

from typing import List, Optional

import torch
from torch import Tensor

from .._native import has_native_op
from ..conv_args import empty_output
from .depthwise_op import empty_backward_outputs

AVAILABLE = all(has_native_op(name) for name in ("_cpu_depthwise_conv2d", "_cpu_dog_conv2d", "_cpu_bank_filters"))


def cpu_depthwise_conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
                         dilation: List[int]) -> Tensor:
    """x ``[N, C, H, W]``, weight ``[C, 1, kh, kw]``, bias ``[C]`` or None -> ``[N, C, H', W']``;
    arguments normalised as for the generic op (padding ``[top, bottom, left, right]``)."""
    return torch.ops.dsconv_ext._cpu_depthwise_conv2d(x, weight, bias, stride, padding, dilation)


def cpu_dog_conv2d(x: Tensor, params: Tensor, kernel_size: List[int], bias: Optional[Tensor], stride: List[int],
                   padding: List[int], dilation: List[int], profile: str) -> Tensor:
    """x ``[N, C, H, W]``, params ``[C, 10]`` (families.dog), bias ``[C]`` or None -> ``[N, C, H', W']``."""
    return torch.ops.dsconv_ext._cpu_dog_conv2d(x, params, kernel_size, bias, stride, padding, dilation, profile)


def cpu_bank_conv2d(x: Tensor, bank: Tensor, coeffs: Tensor, offset: Optional[Tensor], bias: Optional[Tensor],
                    stride: List[int], padding: List[int], dilation: List[int]) -> Tensor:
    """x ``[N, C, H, W]``, bank ``[M, kh, kw]``, coeffs ``[C, M]``, offset and bias ``[C]`` or None
    -> ``[N, C, H', W']``."""
    return torch.ops.dsconv_ext._cpu_bank_conv2d(x, bank, coeffs, offset, bias, stride, padding, dilation)


if AVAILABLE:

    @torch.library.register_fake("dsconv_ext::_cpu_depthwise_conv2d")
    def _(x, weight, bias, stride, padding, dilation):
        return empty_output(x, weight.shape[2:], stride, padding, dilation)

    @torch.library.register_fake("dsconv_ext::_cpu_dog_conv2d")
    def _(x, params, kernel_size, bias, stride, padding, dilation, profile):
        return empty_output(x, kernel_size, stride, padding, dilation)

    @torch.library.register_fake("dsconv_ext::_cpu_bank_conv2d")
    def _(x, bank, coeffs, offset, bias, stride, padding, dilation):
        return empty_output(x, bank.shape[1:], stride, padding, dilation)

    @torch.library.register_fake("dsconv_ext::_cpu_bank_filters")
    def _(bank, coeffs, offset):
        dtype = torch.promote_types(torch.promote_types(bank.dtype, coeffs.dtype), torch.float32)
        return coeffs.new_empty((coeffs.shape[0], bank.shape[1] * bank.shape[2]), dtype=dtype)

    @torch.library.register_fake("dsconv_ext::_cpu_bank_filters_backward")
    def _(bank, coeffs, grad_filters):
        return grad_filters.new_empty(coeffs.shape), grad_filters.new_empty(bank.shape)

    @torch.library.register_fake("dsconv_ext::_cpu_depthwise_backward")
    def _(grad_out, x, weight, stride, padding, dilation, need_input, need_weight, need_bias, channels_last):
        return empty_backward_outputs(x, weight, need_input, need_weight, need_bias)
