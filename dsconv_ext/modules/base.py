"""What the three depthwise modules share: ``nn.Conv2d``'s constructor arguments and attribute
names, a ``weight`` (the materialised ``[C, 1, kh, kw]`` filter), ``to_conv`` and the checks
``from_conv`` needs."""

import math
from typing import Tuple

import torch
from torch import nn

from ..conv_args import ConvArgs, pair


class DepthwiseBase(nn.Module):
    """Shared by DepthwiseConv2d, DoGConv2d and BankConv2d. Subclasses define ``weight``."""

    def __init__(self, channels: int, kernel_size, stride=1, padding=0, dilation=1, backend: str = "auto"):
        super().__init__()
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ValueError(f"channels: expected a positive int, got {channels!r}")
        geometry = ConvArgs(kernel_size, stride, padding, dilation)  # validates early
        self.in_channels = self.out_channels = self.groups = channels
        self.kernel_size = geometry.kernel_size
        self.stride = geometry.stride
        self.dilation = geometry.dilation
        if isinstance(padding, str):
            self.padding = padding
        elif isinstance(padding, (tuple, list)) and len(padding) == 4:
            self.padding = tuple(int(p) for p in padding)
        else:
            self.padding = pair(padding, "padding", 0)
        self.padding_mode = "zeros"
        self.backend = backend

    def _add_bias(self, bias: bool, device, dtype) -> None:
        """Registered after the filter parameters, so state_dict order matches nn.Conv2d's."""
        if bias:
            self.bias = nn.Parameter(torch.empty(self.in_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    @property
    def fan_in(self) -> int:
        return self.kernel_size[0] * self.kernel_size[1]

    def default_filter_std(self) -> float:
        """Std of nn.Conv2d's default (kaiming-uniform, a=sqrt(5)) filters: bound / sqrt(3)."""
        return 1.0 / math.sqrt(self.fan_in) / math.sqrt(3.0)

    def reset_bias(self) -> None:
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def conv_args(self) -> Tuple:
        return self.stride, self.padding, self.dilation

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding not in ((0, 0), "valid"):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.bias is None:
            text += ", bias=False"
        if self.backend != "auto":
            text += f", backend={self.backend!r}"
        return text

    @torch.no_grad()
    def to_conv(self) -> nn.Module:
        """A plain ``nn.Conv2d(C, C, k, groups=C)`` with the same output (for export). Padding
        that nn.Conv2d cannot express (asymmetric, at stride > 1) becomes
        ``nn.Sequential(nn.ZeroPad2d, nn.Conv2d)``."""
        weight = self.weight.detach()
        asymmetric = isinstance(self.padding, tuple) and len(self.padding) == 4
        conv = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, self.stride,
            0 if asymmetric else self.padding, self.dilation, groups=self.groups,
            bias=self.bias is not None, device=weight.device, dtype=weight.dtype,
        )
        conv.weight.copy_(weight)
        if self.bias is not None:
            conv.bias.copy_(self.bias.detach())
        if asymmetric:
            top, bottom, left, right = self.padding
            return nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), conv)
        return conv


def depthwise_conv_spec(conv: nn.Module) -> dict:
    """Constructor arguments of a depthwise ``nn.Conv2d`` (or one of our modules), checked."""
    if isinstance(conv, DepthwiseBase):
        weight = conv.weight.detach()
    elif isinstance(conv, nn.Conv2d):
        weight = conv.weight.detach()
        if not (conv.groups == conv.in_channels == conv.out_channels):
            raise ValueError(
                "conv: expected a depthwise nn.Conv2d (groups == in_channels == out_channels), got "
                f"groups={conv.groups}, in_channels={conv.in_channels}, out_channels={conv.out_channels}"
            )
        if conv.padding_mode != "zeros":
            raise ValueError(f"conv: only padding_mode='zeros' is supported, got {conv.padding_mode!r}")
    else:
        raise TypeError(f"conv: expected a depthwise nn.Conv2d, got {type(conv).__name__}")
    return {
        "channels": conv.in_channels,
        "kernel_size": tuple(weight.shape[2:]),
        "stride": conv.stride,
        "padding": conv.padding,
        "dilation": conv.dilation,
        "bias": conv.bias is not None,
        "device": weight.device,
        "dtype": weight.dtype,
    }


def copy_bias_from(module: DepthwiseBase, conv: nn.Module) -> None:
    if conv.bias is not None:
        with torch.no_grad():
            module.bias.copy_(conv.bias.detach())
