"""The per-backend kernels behind every op, with one interface:

* ``forward(x, weight, bias, stride, padding, dilation, channels_last) -> y``
* ``backward(grad_out, x, weight, stride, padding, dilation, need_input, need_weight, need_bias)
  -> (grad_x, grad_weight, grad_bias)``, grad_weight / grad_bias in the accumulation dtype
  (fp32, or fp64 for fp64 input), each an empty tensor when not needed.

``padding`` is ``[top, bottom, left, right]``. ``weight`` has x's dtype. The family ops build
their filter and call these, so a backend only has to provide the depthwise kernels (fused
family kernels can replace that per backend later).
"""

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..conv_args import is_channels_last

Tensor = torch.Tensor


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
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


def reference_backward(grad_out, x, weight, stride, padding, dilation, need_input, need_weight, need_bias):
    explicit_pad, conv_pad = _split_padding(padding)
    source = F.pad(x, explicit_pad) if explicit_pad else x
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        grad_out, source, weight, None, stride, conv_pad, dilation, False, [0, 0], x.shape[1],
        [need_input, need_weight, False],
    )
    acc = accumulation_dtype(x.dtype)
    empty = x.new_empty(0, dtype=acc)
    if need_input:
        if explicit_pad:
            top, left = padding[0], padding[2]
            grad_x = grad_x[:, :, top : top + x.shape[2], left : left + x.shape[3]]
        grad_x = grad_x.contiguous(memory_format=torch.channels_last if is_channels_last(x) else torch.contiguous_format)
    else:
        grad_x = x.new_empty(0)
    grad_w = grad_w.to(acc).contiguous() if need_weight else empty
    grad_b = grad_out.sum((0, 2, 3), dtype=acc) if need_bias else empty
    return grad_x, grad_w, grad_b


def cpu_forward(x, weight, bias, stride, padding, dilation, channels_last: bool) -> Tensor:
    return torch.ops.dsconv_ext._cpu_depthwise_forward(x, weight, bias, stride, padding, dilation, channels_last)


def cpu_backward(grad_out, x, weight, stride, padding, dilation, need_input, need_weight, need_bias):
    ops = torch.ops.dsconv_ext
    acc = accumulation_dtype(x.dtype)
    if need_input:
        grad_x = ops._cpu_depthwise_backward_input(
            grad_out, weight, list(x.shape), stride, padding, dilation, is_channels_last(x)
        )
    else:
        grad_x = x.new_empty(0)
    empty = x.new_empty(0, dtype=acc)
    if need_weight:
        kernel_size = [weight.shape[2], weight.shape[3]]
        return (grad_x,) + tuple(
            ops._cpu_depthwise_backward_weight(grad_out, x, kernel_size, stride, padding, dilation, need_bias)
        )
    return grad_x, empty, (grad_out.sum((0, 2, 3), dtype=acc) if need_bias else empty)


FORWARD = {"reference": reference_forward, "cpu": cpu_forward}
BACKWARD = {"reference": reference_backward, "cpu": cpu_backward}


def run_forward(backend: str, x, weight, bias: Optional[Tensor], stride, padding, dilation) -> Tensor:
    return FORWARD[backend](x, weight, bias, stride, padding, dilation, is_channels_last(x))


def run_backward(
    backend: str, grad_out, x, weight, stride, padding, dilation, need_input, need_weight, need_bias
) -> Tuple[Tensor, Tensor, Tensor]:
    return BACKWARD[backend](grad_out, x, weight, stride, padding, dilation, need_input, need_weight, need_bias)
