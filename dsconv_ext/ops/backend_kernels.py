"""The per-backend kernels behind every op, with one interface:

* ``forward(x, weight, bias, stride, padding, dilation, channels_last) -> y``
* ``backward(grad_out, x, weight, stride, padding, dilation, need_input, need_weight, need_bias,
  deterministic) -> (grad_x, grad_weight, grad_bias)``, grad_weight / grad_bias in the accumulation dtype
  (fp32, or fp64 for fp64 input), each an empty tensor when not needed.

``padding`` is ``[top, bottom, left, right]``. ``weight`` has x's dtype. The family ops build
their filter and call these, so a backend only has to provide the depthwise kernels; a backend
in ``FUSED_FAMILIES`` (``cuda``) also generates the DoG / bank taps inside its kernels, and the
family ops call its ``dog_*`` / ``bank_*`` functions instead. ``deterministic`` forbids atomics
in the reductions (the cpu and reference kernels never use them).
"""

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from .. import cuda_kernels
from .._native import has_native_op
from ..conv_args import is_channels_last
from ..families import dog

Tensor = torch.Tensor


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp64 for fp64, else fp32: the dtype of sums, filter gradients and generated filters."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _split_padding(padding: List[int]):
    top, bottom, left, right = padding
    if top == bottom and left == right:
        return None, [top, left]
    return [left, right, top, bottom], [0, 0]


def reference_forward(x, weight, bias, stride, padding, dilation, channels_last: bool) -> Tensor:
    explicit_pad, conv_pad = _split_padding(padding)
    source = F.pad(x, explicit_pad) if explicit_pad else x
    y = F.conv2d(source, weight, bias, stride, conv_pad, dilation, groups=x.shape[1])
    return y.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def reference_backward(grad_out, x, weight, stride, padding, dilation, need_input, need_weight, need_bias,
                       deterministic: bool = True):
    explicit_pad, conv_pad = _split_padding(padding)
    source = F.pad(x, explicit_pad) if explicit_pad else x
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        grad_out, source, weight, None, stride, conv_pad, dilation, False, [0, 0], x.shape[1],
        [need_input, need_weight, False],
    )
    acc = accumulation_dtype(x.dtype)
    if need_input:
        if explicit_pad:
            top, left = padding[0], padding[2]
            grad_x = grad_x[:, :, top : top + x.shape[2], left : left + x.shape[3]]
        grad_x = grad_x.contiguous(memory_format=torch.channels_last if is_channels_last(x) else torch.contiguous_format)
    else:
        grad_x = x.new_empty(0)
    # Outputs of a custom op may not alias each other: separate empty tensors.
    grad_w = grad_w.to(acc).contiguous() if need_weight else x.new_empty(0, dtype=acc)
    grad_b = grad_out.sum((0, 2, 3), dtype=acc) if need_bias else x.new_empty(0, dtype=acc)
    return grad_x, grad_w, grad_b


def cpu_forward(x, weight, bias, stride, padding, dilation, channels_last: bool) -> Tensor:
    return torch.ops.dsconv_ext._cpu_depthwise_forward(x, weight, bias, stride, padding, dilation, channels_last)


def cpu_backward(grad_out, x, weight, stride, padding, dilation, need_input, need_weight, need_bias, deterministic):
    return torch.ops.dsconv_ext._cpu_depthwise_backward(
        grad_out, x, weight, stride, padding, dilation, need_input, need_weight, need_bias, is_channels_last(x)
    )


def triton_forward(x, weight, bias, stride, padding, dilation, channels_last: bool) -> Tensor:
    from ..triton import launch  # loaded by backends._runs_on before "triton" can be chosen

    return launch.depthwise_forward(x, weight, bias, stride, padding, dilation)


def triton_backward(grad_out, x, weight, stride, padding, dilation, need_input, need_weight, need_bias,
                    deterministic):
    from ..triton import launch

    return launch.depthwise_backward(grad_out, x, weight, stride, padding, dilation, need_input, need_weight,
                                     need_bias, deterministic)


def cuda_forward(x, weight, bias, stride, padding, dilation, channels_last: bool) -> Tensor:
    return cuda_kernels.depthwise_forward(x, weight, bias, stride, padding, dilation)


def cuda_backward(grad_out, x, weight, stride, padding, dilation, need_input, need_weight, need_bias, deterministic):
    return cuda_kernels.depthwise_backward(grad_out, x, weight, stride, padding, dilation, need_input, need_weight,
                                           need_bias, deterministic)


# "triton" here serves direct calls of the generic ops (torch.ops.dsconv_ext.depthwise_conv2d(...,
# "triton")); the functional API routes "triton" to the traceable triton_op ops instead.
FORWARD = {"reference": reference_forward, "cpu": cpu_forward, "triton": triton_forward, "cuda": cuda_forward}
BACKWARD = {"reference": reference_backward, "cpu": cpu_backward, "triton": triton_backward, "cuda": cuda_backward}
# Backends whose kernels build DoG / bank taps themselves (see the module docstring).
FUSED_FAMILIES = {"cuda": cuda_kernels}


def run_forward(backend: str, x, weight, bias: Optional[Tensor], stride, padding, dilation) -> Tensor:
    return FORWARD[backend](x, weight, bias, stride, padding, dilation, is_channels_last(x))


def run_backward(
    backend: str, grad_out, x, weight, stride, padding, dilation, need_input, need_weight, need_bias, deterministic
) -> Tuple[Tensor, Tensor, Tensor]:
    return BACKWARD[backend](grad_out, x, weight, stride, padding, dilation, need_input, need_weight, need_bias,
                             deterministic)


# DoG-jet synthesis and its chain rule: the cpu backend has them in C++ (one call per op call,
# a few microseconds); every other backend uses the PyTorch reference in families/dog.py.
def dog_filters(backend: str, params: Tensor, kernel_size: List[int], profile: str) -> Tensor:
    """``params [C, 10]`` -> filters ``[C, kh, kw]`` in fp32 (fp64 for fp64 params)."""
    if backend == "cpu":
        return torch.ops.dsconv_ext._cpu_dog_filters(params, kernel_size, profile)
    return dog.dog_filters(params.to(accumulation_dtype(params.dtype)), kernel_size, profile)


def dog_filters_vjp(backend: str, params: Tensor, grad_filters: Tensor, kernel_size: List[int], profile: str) -> Tensor:
    """``grad_filters [C, kh, kw]`` -> ``grad_params [C, 10]`` in params' dtype."""
    if backend == "cpu":
        return torch.ops.dsconv_ext._cpu_dog_filters_backward(params, grad_filters, kernel_size, profile)
    wide = params.to(accumulation_dtype(params.dtype))
    return dog.dog_filters_vjp(wide, grad_filters, kernel_size, profile).to(params.dtype)


if has_native_op("_cpu_dog_filters"):
    # Fake kernels, so torch.compile can trace the backward formulas that call these.
    @torch.library.register_fake("dsconv_ext::_cpu_dog_filters")
    def _(params, kernel_size, profile):
        return params.new_empty((params.shape[0], *kernel_size), dtype=accumulation_dtype(params.dtype))

    @torch.library.register_fake("dsconv_ext::_cpu_dog_filters_backward")
    def _(params, grad_filters, kernel_size, profile):
        return torch.empty_like(params)
