"""``DepthwiseConv2d``: a drop-in depthwise ``nn.Conv2d`` running on dsconv_ext's kernels."""

import math

import torch
from torch import nn

from ..functional import depthwise_conv2d
from .base import DepthwiseBase, copy_bias_from, depthwise_conv_spec


class DepthwiseConv2d(DepthwiseBase):
    """Depthwise convolution with explicit filters.

    Same constructor arguments, attributes and state_dict as
    ``nn.Conv2d(channels, channels, kernel_size, stride, padding, dilation, groups=channels,
    bias=bias)``: ``weight [C, 1, kh, kw]``, ``bias [C]``.

    Shapes: input ``[N, C, H, W]`` -> output ``[N, C, H', W']`` (memory format kept).
    """

    def __init__(self, channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, backend: str = "auto", device=None, dtype=None):
        super().__init__(channels, kernel_size, stride, padding, dilation, backend)
        self.weight = nn.Parameter(torch.empty(channels, 1, *self.kernel_size, device=device, dtype=dtype))
        self._add_bias(bias, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.reset_bias()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv2d(x, self.weight, self.bias, *self.conv_args(), backend=self.backend)

    @classmethod
    def from_conv(cls, conv: nn.Module, backend: str = "auto") -> "DepthwiseConv2d":
        """Copy a depthwise ``nn.Conv2d`` exactly."""
        module = cls(**depthwise_conv_spec(conv), backend=backend)
        with torch.no_grad():
            module.weight.copy_(conv.weight.detach())
        copy_bias_from(module, conv)
        return module
