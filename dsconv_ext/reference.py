"""The PyTorch oracle for every op: build the filter with differentiable PyTorch, pad, call
``F.conv2d``. Autograd differentiates it, so its gradients are the reference for the ops'
hand-written backward passes. Tests compare every backend against these functions."""

from typing import Optional

import torch
import torch.nn.functional as F

from .conv_args import ConvArgs, Padding
from .families.bank import bank_filters
from .families.dog import dog_filters


def depthwise_conv2d_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
    stride=1, padding: Padding = 0, dilation=1,
) -> torch.Tensor:
    """x ``[N, C, H, W]``, weight ``[C, 1, kh, kw]``, bias ``[C]`` -> ``[N, C, H', W']``."""
    args = ConvArgs(weight.shape[2:], stride, padding, dilation)
    args.check_input_size(x.shape[2], x.shape[3])
    top, bottom, left, right = args.padding
    return F.conv2d(F.pad(x, [left, right, top, bottom]), weight, bias, args.stride, 0, args.dilation, x.shape[1])


def dog_conv2d_reference(
    x: torch.Tensor, params: torch.Tensor, kernel_size, bias: Optional[torch.Tensor] = None,
    stride=1, padding: Padding = 0, dilation=1, profile: str = "integrated",
) -> torch.Tensor:
    """x ``[N, C, H, W]``, params ``[C, 10]`` -> ``[N, C, H', W']``."""
    args = ConvArgs(kernel_size, stride, padding, dilation)
    weight = dog_filters(params.to(torch.promote_types(params.dtype, torch.float32)), args.kernel_size, profile)
    bias = bias.to(x.dtype) if bias is not None else None
    return depthwise_conv2d_reference(x, weight.to(x.dtype).unsqueeze(1), bias, stride, padding, dilation)


def bank_conv2d_reference(
    x: torch.Tensor, bank: torch.Tensor, coeffs: torch.Tensor, bias: Optional[torch.Tensor] = None,
    stride=1, padding: Padding = 0, dilation=1, offset: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """x ``[N, C, H, W]``, bank ``[M, kh, kw]``, coeffs ``[C, M]`` -> ``[N, C, H', W']``."""
    weight = bank_filters(bank, coeffs, offset).to(x.dtype).unsqueeze(1)
    bias = bias.to(x.dtype) if bias is not None else None
    return depthwise_conv2d_reference(x, weight, bias, stride, padding, dilation)
