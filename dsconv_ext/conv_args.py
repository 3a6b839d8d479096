"""Argument handling shared by every op and module: normalising stride / padding / dilation,
checking user input with messages that name the argument, and the output's shape and layout.

Padding is normalised to four numbers ``(top, bottom, left, right)``. ``"same"`` follows
PyTorch: total padding ``dilation * (k - 1)``, the odd pixel going to the bottom / right; like
PyTorch it is only defined for stride 1.
"""

from typing import List, Sequence, Tuple, Union

import torch

IntOrPair = Union[int, Sequence[int]]
Padding = Union[int, str, Sequence[int]]


def pair(value: IntOrPair, name: str, minimum: int) -> Tuple[int, int]:
    """``value`` as a pair of ints ``>= minimum``; ``name`` is used in the error message."""
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected an int or a pair of ints, got a bool")
    if isinstance(value, int):
        result = (value, value)
    elif isinstance(value, (tuple, list, torch.Size)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        result = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name}: expected an int or a pair of ints, got {value!r}")
    if min(result) < minimum:
        raise ValueError(f"{name}: expected values >= {minimum}, got {value!r}")
    return result


def normalize_padding(
    padding: Padding, kernel_size: Tuple[int, int], stride: Tuple[int, int], dilation: Tuple[int, int]
) -> List[int]:
    """``padding`` (int, pair, 4-tuple ``(top, bottom, left, right)``, ``"same"``, ``"valid"``)
    as ``[top, bottom, left, right]``."""
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0, 0, 0]
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(
                    f"padding: 'same' is only defined for stride 1 (as in F.conv2d), got stride={stride}; "
                    "pass explicit (top, bottom, left, right) padding for strided 'same' padding"
                )
            total_h = dilation[0] * (kernel_size[0] - 1)
            total_w = dilation[1] * (kernel_size[1] - 1)
            return [total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2]
        raise ValueError(f"padding: expected an int, a pair, 'same' or 'valid', got {padding!r}")
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        if not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in padding):
            raise ValueError(f"padding: expected four non-negative ints (top, bottom, left, right), got {padding!r}")
        return [int(p) for p in padding]
    ph, pw = pair(padding, "padding", 0)
    return [ph, ph, pw, pw]


class ConvArgs:
    """Normalised geometry of one depthwise convolution (plain ints, safe to bake into graphs)."""

    __slots__ = ("kernel_size", "stride", "padding", "dilation")

    def __init__(self, kernel_size: IntOrPair, stride: IntOrPair = 1, padding: Padding = 0, dilation: IntOrPair = 1):
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.dilation = pair(dilation, "dilation", 1)
        self.padding = normalize_padding(padding, self.kernel_size, self.stride, self.dilation)

    def check_input_size(self, height: int, width: int) -> None:
        top, bottom, left, right = self.padding
        span_h = self.dilation[0] * (self.kernel_size[0] - 1) + 1
        span_w = self.dilation[1] * (self.kernel_size[1] - 1) + 1
        if height + top + bottom < span_h or width + left + right < span_w:
            raise ValueError(
                f"x: input of size {height}x{width} with padding {self.padding} is smaller than the "
                f"dilated kernel {span_h}x{span_w}"
            )


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is laid out channels-last: the output and gradients then keep that layout.

    Decided by strides, so non-contiguous views (slices of a channels_last tensor) count too.
    """
    if x.dim() != 4:
        return False
    if x.is_contiguous():
        return False
    if x.is_contiguous(memory_format=torch.channels_last):
        return True
    return x.stride(1) < x.stride(3) and x.stride(1) < x.stride(2)


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if is_channels_last(x) else torch.contiguous_format


def empty_output(x: torch.Tensor, kernel_size, stride, padding, dilation) -> torch.Tensor:
    """An uninitialised output with the op's shape and layout (used by the fake kernels).
    Plain arithmetic, so symbolic sizes (dynamic shapes under torch.compile) work too."""
    (kh, kw), (top, bottom, left, right) = kernel_size, padding
    out_h = (x.shape[2] + top + bottom - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (x.shape[3] + left + right - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return torch.empty(
        (x.shape[0], x.shape[1], out_h, out_w), dtype=x.dtype, device=x.device, memory_format=memory_format_of(x)
    )


def check_input(x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x: expected a 4-D tensor [N, C, H, W], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x: expected a floating-point dtype (float32, float16, bfloat16, float64), got {x.dtype}")


def check_companion(x: torch.Tensor, tensor, name: str, shape: Tuple[int, ...], same_dtype: bool) -> None:
    """Checks a weight / bias / family tensor against ``x``: type, device, dtype, exact shape."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(tensor).__name__}")
    if tensor.device != x.device:
        raise ValueError(f"{name}: expected a tensor on {x.device} like x, got one on {tensor.device}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point dtype, got {tensor.dtype}")
    if same_dtype and tensor.dtype != x.dtype:
        raise TypeError(f"{name}: expected dtype {x.dtype} like x, got {tensor.dtype}")
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {list(shape)}, got {list(tensor.shape)}")


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Family parameters must be finite. Skipped while compiling (it needs the values)."""
    if torch.compiler.is_compiling():
        return
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name}: expected finite values, got NaN or Inf")
