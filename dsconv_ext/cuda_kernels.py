"""The CUDA backend (``csrc/cuda``, module ``dsconv_ext._C_cuda``) behind one Python interface,
the same as the Triton backend's (``dsconv_ext.triton``):

* ``depthwise_forward(x, weight, bias, stride, padding, dilation) -> y``
* ``depthwise_backward(grad_out, x, weight, stride, padding, dilation, need_input, need_weight,
  need_bias, deterministic) -> (grad_x, grad_weight [C, 1, kh, kw] fp32, grad_bias [C] fp32)``
* ``dog_forward(x, params, kernel_size, bias, stride, padding, dilation, profile) -> y``
* ``dog_backward(grad_out, x, params, kernel_size, stride, padding, dilation, profile, need_input,
  need_params, need_bias, deterministic) -> (grad_x, grad_params (params' dtype), grad_bias fp32)``
* ``bank_forward(x, bank, coeffs, offset, bias, stride, padding, dilation) -> y``
* ``bank_backward(grad_out, x, bank, coeffs, offset, stride, padding, dilation, need_input,
  need_bank, need_coeffs, need_offset, need_bias, deterministic)
  -> (grad_x, grad_bank, grad_coeffs, grad_offset, grad_bias)`` (parameter grads in their dtypes)

``padding`` is ``[top, bottom, left, right]``; stride and dilation are pairs. The output and
grad_x keep x's memory format (channels_last or contiguous NCHW). A gradient not asked for is
an empty tensor. Gradients of filters and bias are reduced in fp32; ``deterministic`` makes
them bitwise repeatable (a workspace reduced in a fixed order instead of atomics).

The kernels take float32, float16 and bfloat16 (fp32 accumulation); float64 input, which only
gradcheck uses, runs on the reference implementation so that a call never fails for its dtype.
The family ops generate their taps inside the kernels; the chain rule from the filter gradient
into the bank parameters is three small matmuls (``families.bank.bank_filters_vjp``), into the
DoG parameters one small CUDA kernel.
"""

from typing import List, Optional, Tuple

import torch

from ._native import has_native_op
from .conv_args import is_channels_last
from .families.bank import bank_filters, bank_filters_vjp
from .families.dog import dog_filters

Tensor = torch.Tensor

OPS = (
    "_cuda_depthwise_forward",
    "_cuda_depthwise_backward",
    "_cuda_dog_forward",
    "_cuda_dog_backward",
    "_cuda_bank_forward",
    "_cuda_bank_backward",
)


def available() -> bool:
    """Whether ``_C_cuda`` is built and its ops are registered (a GPU may still be absent)."""
    return all(has_native_op(name) for name in OPS)


def _native_dtype(x: Tensor) -> bool:
    return x.dtype in (torch.float32, torch.float16, torch.bfloat16)


def _empty_acc(x: Tensor) -> Tensor:
    return x.new_empty(0, dtype=torch.float32 if x.dtype != torch.float64 else torch.float64)


# ------------------------------------------------------------------------------------------
# fp64 fallback: the reference kernels on the filters built in PyTorch
# ------------------------------------------------------------------------------------------


def _reference_forward(x, weight, bias, stride, padding, dilation):
    from .ops.backend_kernels import reference_forward

    return reference_forward(x, weight, bias, stride, padding, dilation, is_channels_last(x))


def _reference_backward(grad_out, x, weight, stride, padding, dilation, need_input, need_weight, need_bias):
    from .ops.backend_kernels import reference_backward

    return reference_backward(grad_out.to(x.dtype), x, weight, stride, padding, dilation, need_input, need_weight,
                              need_bias)


# ------------------------------------------------------------------------------------------
# depthwise
# ------------------------------------------------------------------------------------------


def depthwise_forward(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
                      dilation: List[int]) -> Tensor:
    if not _native_dtype(x):
        return _reference_forward(x, weight, bias, stride, padding, dilation)
    return torch.ops.dsconv_ext._cuda_depthwise_forward(
        x, weight, bias, list(stride), list(padding), list(dilation), is_channels_last(x)
    )


def depthwise_backward(grad_out: Tensor, x: Tensor, weight: Tensor, stride: List[int], padding: List[int],
                       dilation: List[int], need_input: bool, need_weight: bool, need_bias: bool,
                       deterministic: bool) -> Tuple[Tensor, Tensor, Tensor]:
    if not _native_dtype(x):
        return _reference_backward(grad_out, x, weight, stride, padding, dilation, need_input, need_weight,
                                   need_bias)
    return torch.ops.dsconv_ext._cuda_depthwise_backward(
        grad_out.to(x.dtype), x, weight, list(stride), list(padding), list(dilation), need_input, need_weight,
        need_bias, is_channels_last(x), deterministic,
    )


# ------------------------------------------------------------------------------------------
# DoG jet
# ------------------------------------------------------------------------------------------


def _dog_weight(params: Tensor, kernel_size, profile: str, dtype: torch.dtype) -> Tensor:
    return dog_filters(params.to(torch.float64), list(kernel_size), profile).to(dtype).unsqueeze(1)


def dog_forward(x: Tensor, params: Tensor, kernel_size: List[int], bias: Optional[Tensor], stride: List[int],
                padding: List[int], dilation: List[int], profile: str = "integrated") -> Tensor:
    bias = bias.to(x.dtype) if bias is not None else None  # as the other backends: bias rounded to x's dtype
    if not _native_dtype(x):
        return _reference_forward(x, _dog_weight(params, kernel_size, profile, x.dtype), bias, stride, padding,
                                  dilation)
    return torch.ops.dsconv_ext._cuda_dog_forward(
        x, params, list(kernel_size), bias, list(stride), list(padding), list(dilation), profile, is_channels_last(x)
    )


def dog_backward(grad_out: Tensor, x: Tensor, params: Tensor, kernel_size: List[int], stride: List[int],
                 padding: List[int], dilation: List[int], profile: str, need_input: bool, need_params: bool,
                 need_bias: bool, deterministic: bool) -> Tuple[Tensor, Tensor, Tensor]:
    if not _native_dtype(x):
        from .families.dog import dog_filters_vjp

        weight = _dog_weight(params, kernel_size, profile, x.dtype)
        grad_x, grad_w, grad_b = _reference_backward(grad_out, x, weight, stride, padding, dilation, need_input,
                                                     need_params, need_bias)
        grad_p = params.new_empty(0)
        if need_params:
            grad_p = dog_filters_vjp(params.to(torch.float64), grad_w[:, 0], list(kernel_size), profile).to(params.dtype)
        return grad_x, grad_p, grad_b
    return torch.ops.dsconv_ext._cuda_dog_backward(
        grad_out.to(x.dtype), x, params, list(kernel_size), list(stride), list(padding), list(dilation), profile,
        need_input, need_params, need_bias, is_channels_last(x), deterministic,
    )


# ------------------------------------------------------------------------------------------
# bank
# ------------------------------------------------------------------------------------------


def bank_forward(x: Tensor, bank: Tensor, coeffs: Tensor, offset: Optional[Tensor], bias: Optional[Tensor],
                 stride: List[int], padding: List[int], dilation: List[int]) -> Tensor:
    bias = bias.to(x.dtype) if bias is not None else None
    if not _native_dtype(x):
        weight = bank_filters(bank, coeffs, offset).to(x.dtype).unsqueeze(1)
        return _reference_forward(x, weight, bias, stride, padding, dilation)
    return torch.ops.dsconv_ext._cuda_bank_forward(
        x, bank, coeffs, offset, bias, list(stride), list(padding), list(dilation), is_channels_last(x)
    )


def bank_backward(grad_out: Tensor, x: Tensor, bank: Tensor, coeffs: Tensor, offset: Optional[Tensor],
                  stride: List[int], padding: List[int], dilation: List[int], need_input: bool, need_bank: bool,
                  need_coeffs: bool, need_offset: bool, need_bias: bool,
                  deterministic: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    need_filters = need_bank or need_coeffs or need_offset
    if not _native_dtype(x):
        weight = bank_filters(bank, coeffs, offset).to(x.dtype).unsqueeze(1)
        grad_x, grad_w, grad_b = _reference_backward(grad_out, x, weight, stride, padding, dilation, need_input,
                                                     need_filters, need_bias)
        grad_filters = grad_w[:, 0] if need_filters else None
    else:
        grad_x, grad_filters, grad_b = torch.ops.dsconv_ext._cuda_bank_backward(
            grad_out.to(x.dtype), x, bank, coeffs, offset, list(stride), list(padding), list(dilation), need_input,
            need_filters, need_bias, is_channels_last(x), deterministic,
        )
    grad_bank, grad_coeffs, grad_offset = bank.new_empty(0), coeffs.new_empty(0), coeffs.new_empty(0)
    if need_filters:
        grad_c, grad_bk, grad_o = bank_filters_vjp(bank, coeffs, grad_filters)
        if need_bank:
            grad_bank = grad_bk.to(bank.dtype)
        if need_coeffs:
            grad_coeffs = grad_c.to(coeffs.dtype)
        if need_offset and offset is not None:
            grad_offset = grad_o.to(offset.dtype)
    return grad_x, grad_bank, grad_coeffs, grad_offset, grad_b


# ------------------------------------------------------------------------------------------
# Fake kernels, so torch.compile can trace graphs that call the _cuda_* ops directly
# ------------------------------------------------------------------------------------------


def _fake_output(x, kernel_size, stride, padding, dilation, channels_last):
    (kh, kw), (top, bottom, left, right) = kernel_size, padding
    out_h = (x.shape[2] + top + bottom - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (x.shape[3] + left + right - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty((x.shape[0], x.shape[1], out_h, out_w), dtype=x.dtype, device=x.device, memory_format=fmt)


def _fake_grad_x(x, need_input, channels_last):
    if not need_input:
        return x.new_empty(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt)


if available():

    @torch.library.register_fake("dsconv_ext::_cuda_depthwise_forward")
    def _(x, weight, bias, stride, padding, dilation, channels_last):
        return _fake_output(x, weight.shape[2:], stride, padding, dilation, channels_last)

    @torch.library.register_fake("dsconv_ext::_cuda_depthwise_backward")
    def _(grad_out, x, weight, stride, padding, dilation, need_input, need_weight, need_bias, channels_last,
          deterministic):
        f32 = dict(dtype=torch.float32, device=x.device)
        return (
            _fake_grad_x(x, need_input, channels_last),
            torch.empty(weight.shape, **f32) if need_weight else torch.empty(0, **f32),
            torch.empty(weight.shape[0], **f32) if need_bias else torch.empty(0, **f32),
        )

    @torch.library.register_fake("dsconv_ext::_cuda_dog_forward")
    def _(x, params, kernel_size, bias, stride, padding, dilation, profile, channels_last):
        return _fake_output(x, kernel_size, stride, padding, dilation, channels_last)

    @torch.library.register_fake("dsconv_ext::_cuda_dog_backward")
    def _(grad_out, x, params, kernel_size, stride, padding, dilation, profile, need_input, need_params, need_bias,
          channels_last, deterministic):
        f32 = dict(dtype=torch.float32, device=x.device)
        return (
            _fake_grad_x(x, need_input, channels_last),
            torch.empty_like(params, memory_format=torch.contiguous_format) if need_params else params.new_empty(0),
            torch.empty(x.shape[1], **f32) if need_bias else torch.empty(0, **f32),
        )

    @torch.library.register_fake("dsconv_ext::_cuda_bank_forward")
    def _(x, bank, coeffs, offset, bias, stride, padding, dilation, channels_last):
        return _fake_output(x, bank.shape[1:], stride, padding, dilation, channels_last)

    @torch.library.register_fake("dsconv_ext::_cuda_bank_backward")
    def _(grad_out, x, bank, coeffs, offset, stride, padding, dilation, need_input, need_filters, need_bias,
          channels_last, deterministic):
        f32 = dict(dtype=torch.float32, device=x.device)
        return (
            _fake_grad_x(x, need_input, channels_last),
            torch.empty((x.shape[1], *bank.shape[1:]), **f32) if need_filters else torch.empty(0, **f32),
            torch.empty(x.shape[1], **f32) if need_bias else torch.empty(0, **f32),
        )
