"""The public functional ops. They check their arguments (errors name the argument and what
was expected), normalise the convolution geometry, resolve the backend once, and call the
registered custom ops in ``dsconv_ext.ops`` (or, for ``backend="triton"``, the ``triton_op`` ops of
``dsconv_ext.triton.ops``, which ``torch.compile`` traces into).

All three follow ``F.conv2d(x, w, b, stride, padding, dilation, groups=C)``: ``padding`` is an
int, a pair, ``"same"``, ``"valid"`` or ``(top, bottom, left, right)``; the output keeps x's
memory format (NCHW or channels_last).
"""

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from . import ops  # noqa: F401  (registers torch.ops.dsconv_ext.*)
from .backends import resolve_backend
from .conv_args import ConvArgs, Padding, check_companion, check_finite, check_input, pair
from .families import dog
from .ops import cpu_native_op


def _shape_key(op: str, x: Tensor, kernel_size, stride) -> Optional[tuple]:
    """What ``auto`` looks at to choose a GPU backend per shape (plain ints and strings, so
    resolve_backend stays a compile-time constant); None for non-CUDA tensors."""
    if x.device.type != "cuda":
        return None
    from .conv_args import is_channels_last

    layout = "channels_last" if is_channels_last(x) else "nchw"
    return (op, int(x.shape[1]), int(x.shape[2]), int(x.shape[3]), int(kernel_size[0]), int(kernel_size[1]),
            int(stride[0]), int(stride[1]), str(x.dtype).replace("torch.", ""), layout)


def _check_geometry(x: Tensor, kernel_size, stride, padding, dilation) -> ConvArgs:
    args = ConvArgs(kernel_size, stride, padding, dilation)
    args.check_input_size(x.shape[2], x.shape[3])
    return args


def _check_bias(x: Tensor, bias: Optional[Tensor], same_dtype: bool) -> None:
    if bias is not None:
        check_companion(x, bias, "bias", (x.shape[1],), same_dtype=same_dtype)


def _checks_finite_natively(backend: str) -> bool:
    """The cpu backend's C++ DoG and bank synthesis check that their inputs are finite (in the pass
    that reads them, and in compiled graphs too), so the separate Python check would only cost
    its ~10-30 us again."""
    return backend == "cpu" and cpu_native_op.AVAILABLE


def depthwise_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: Union[int, Sequence[int]] = 1,
    padding: Padding = 0,
    dilation: Union[int, Sequence[int]] = 1,
    backend: str = "auto",
) -> Tensor:
    """Depthwise convolution with explicit filters.

    Args:
        x: ``[N, C, H, W]`` (NCHW or channels_last; fp32, fp16, bf16, fp64).
        weight: ``[C, 1, kh, kw]``, same dtype and device as x.
        bias: ``[C]`` or None.
    Returns:
        ``[N, C, H', W']``, equal to ``F.conv2d(x, weight, bias, stride, padding, dilation, groups=C)``.
    """
    check_input(x)
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight: expected a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() != 4:
        raise ValueError(f"weight: expected a 4-D tensor [C, 1, kh, kw], got shape {list(weight.shape)}")
    channels = x.shape[1]
    check_companion(x, weight, "weight", (channels, 1, weight.shape[2], weight.shape[3]), same_dtype=True)
    _check_bias(x, bias, same_dtype=True)
    args = _check_geometry(x, weight.shape[2:], stride, padding, dilation)
    backend = resolve_backend(backend, x.device.type, _shape_key("depthwise", x, args.kernel_size, args.stride))
    if backend == "triton":  # a triton_op: torch.compile traces into its kernels
        return torch.ops.dsconv_ext.triton_depthwise_conv2d(
            x, weight, bias, list(args.stride), args.padding, list(args.dilation))
    if backend == "cpu" and cpu_native_op.AVAILABLE:  # autograd in C++: no Python work per call
        return cpu_native_op.cpu_depthwise_conv2d(x, weight, bias, list(args.stride), args.padding,
                                                  list(args.dilation))
    return torch.ops.dsconv_ext.depthwise_conv2d(
        x, weight, bias, list(args.stride), args.padding, list(args.dilation), backend
    )


def dog_conv2d(
    x: Tensor,
    params: Tensor,
    kernel_size: Union[int, Sequence[int]],
    bias: Optional[Tensor] = None,
    stride: Union[int, Sequence[int]] = 1,
    padding: Padding = 0,
    dilation: Union[int, Sequence[int]] = 1,
    profile: str = "integrated",
    backend: str = "auto",
) -> Tensor:
    """Depthwise convolution with DoG-jet filters generated inside the op.

    Args:
        x: ``[N, C, H, W]``.
        params: ``[C, 10]`` (layout in dsconv_ext.families.dog), any float dtype on x's device;
            filters are generated in fp32 (fp64 for fp64 params) and cast to x's dtype.
        kernel_size: int or (kh, kw).
        bias: ``[C]`` or None (cast to x's dtype).
        profile: ``"integrated"`` (pixel-integrated Gaussians) or ``"sampled"``.
    Returns:
        ``[N, C, H', W']``.
    """
    check_input(x)
    check_companion(x, params, "params", (x.shape[1], dog.NUM_PARAMS), same_dtype=False)
    dog.check_profile(profile)
    _check_bias(x, bias, same_dtype=False)
    args = _check_geometry(x, pair(kernel_size, "kernel_size", 1), stride, padding, dilation)
    backend = resolve_backend(backend, x.device.type, _shape_key("dog", x, args.kernel_size, args.stride))
    if not _checks_finite_natively(backend):
        check_finite(params, "params")
    if backend == "triton":
        return torch.ops.dsconv_ext.triton_dog_conv2d(
            x, params, list(args.kernel_size), bias, list(args.stride), args.padding, list(args.dilation), profile)
    if backend == "cpu" and cpu_native_op.AVAILABLE:
        return cpu_native_op.cpu_dog_conv2d(x, params, list(args.kernel_size), bias, list(args.stride), args.padding,
                                            list(args.dilation), profile)
    return torch.ops.dsconv_ext.dog_conv2d(
        x, params, list(args.kernel_size), bias, list(args.stride), args.padding, list(args.dilation),
        profile, backend,
    )


def bank_conv2d(
    x: Tensor,
    bank: Tensor,
    coeffs: Tensor,
    bias: Optional[Tensor] = None,
    stride: Union[int, Sequence[int]] = 1,
    padding: Padding = 0,
    dilation: Union[int, Sequence[int]] = 1,
    offset: Optional[Tensor] = None,
    backend: str = "auto",
) -> Tensor:
    """Depthwise convolution with filters ``w_c = sum_m coeffs[c, m] bank[m] (+ offset[c])``
    generated inside the op.

    Args:
        x: ``[N, C, H, W]``.
        bank: ``[M, kh, kw]`` (a buffer, or trainable: its gradient is computed when it
            requires grad).
        coeffs: ``[C, M]``.
        bias, offset: ``[C]`` or None.
    Returns:
        ``[N, C, H', W']``.
    """
    check_input(x)
    if not isinstance(bank, Tensor):
        raise TypeError(f"bank: expected a torch.Tensor [M, kh, kw], got {type(bank).__name__}")
    if bank.dim() != 3:
        raise ValueError(f"bank: expected a 3-D tensor [M, kh, kw], got shape {list(bank.shape)}")
    check_companion(x, bank, "bank", tuple(bank.shape), same_dtype=False)
    check_companion(x, coeffs, "coeffs", (x.shape[1], bank.shape[0]), same_dtype=False)
    if offset is not None:
        check_companion(x, offset, "offset", (x.shape[1],), same_dtype=False)
    _check_bias(x, bias, same_dtype=False)
    args = _check_geometry(x, bank.shape[1:], stride, padding, dilation)
    backend = resolve_backend(backend, x.device.type, _shape_key("bank", x, args.kernel_size, args.stride))
    if not _checks_finite_natively(backend):
        check_finite(coeffs, "coeffs")
        check_finite(bank, "bank")
        if offset is not None:
            check_finite(offset, "offset")
    if backend == "triton":
        return torch.ops.dsconv_ext.triton_bank_conv2d(
            x, bank, coeffs, offset, bias, list(args.stride), args.padding, list(args.dilation))
    if backend == "cpu" and cpu_native_op.AVAILABLE:
        return cpu_native_op.cpu_bank_conv2d(x, bank, coeffs, offset, bias, list(args.stride), args.padding,
                                             list(args.dilation))
    return torch.ops.dsconv_ext.bank_conv2d(
        x, bank, coeffs, offset, bias, list(args.stride), args.padding, list(args.dilation), backend,
    )
