"""TensorFlow "SAME" padding computed from the input size at every call (timm's ``Conv2dSame``).

TF "SAME" pads ``total = max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)`` along each axis,
``total // 2`` before and the rest after, so at stride 2 it is asymmetric and depends on the input
size. The ``*Same`` layers below are the dsconv_ext modules with that rule: they compute
``(top, bottom, left, right)`` from ``x`` and call the functional op with 4-tuple padding (no
padded copy of ``x``). Their parameters and state_dict are those of the base module, so
``DepthwiseConv2dSame`` loads a ``Conv2dSame`` checkpoint unchanged. ``to_conv()`` gives back
timm's ``Conv2dSame`` (or, without timm, the equivalent ``Conv2dSame`` defined here).
"""

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..functional import bank_conv2d, depthwise_conv2d, dog_conv2d
from ..modules import BankConv2d, DepthwiseConv2d, DoGConv2d


def _same_1d(size, kernel: int, stride: int, dilation: int):
    total = torch.sym_max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def tf_same_padding(input_size: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int],
                    dilation: Sequence[int]) -> Tuple[int, int, int, int]:
    """TF "SAME" padding ``(top, bottom, left, right)`` for an input of ``(H, W)``."""
    top, bottom = _same_1d(input_size[0], kernel_size[0], stride[0], dilation[0])
    left, right = _same_1d(input_size[1], kernel_size[1], stride[1], dilation[1])
    return top, bottom, left, right


def conv2d_same_class():
    """timm's ``Conv2dSame`` when timm is installed, else ``Conv2dSame`` below."""
    try:
        from timm.layers import Conv2dSame as TimmConv2dSame
    except ImportError:  # pragma: no cover - timm is a test dependency
        return Conv2dSame
    return TimmConv2dSame


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TF "SAME" padding (the same as timm's ``Conv2dSame``; used by
    ``to_conv`` when timm is not installed)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias,
                         device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = tf_same_padding(x.shape[-2:], self.weight.shape[-2:], self.stride, self.dilation)
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class _TFSame:
    """Mixin for the dsconv_ext modules: padding decided per call by the TF "SAME" rule."""

    tf_same = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.padding = (0, 0)  # as timm's Conv2dSame: the real padding is computed per call

    def same_padding(self, x: torch.Tensor) -> Tuple[int, int, int, int]:
        return tf_same_padding(x.shape[-2:], self.kernel_size, self.stride, self.dilation)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", padding=dynamic TF 'same'"

    @torch.no_grad()
    def to_conv(self) -> nn.Module:
        """timm's ``Conv2dSame`` with this layer's filters (same outputs, for export)."""
        weight = self.weight.detach()
        conv = conv2d_same_class()(
            self.in_channels, self.out_channels, self.kernel_size, self.stride, 0, self.dilation,
            groups=self.groups, bias=self.bias is not None, device=weight.device, dtype=weight.dtype,
        )
        conv.weight.copy_(weight)
        if self.bias is not None:
            conv.bias.copy_(self.bias.detach())
        return conv


class DepthwiseConv2dSame(_TFSame, DepthwiseConv2d):
    """``DepthwiseConv2d`` with TF "SAME" padding; state_dict as timm's depthwise ``Conv2dSame``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv2d(x, self.weight, self.bias, self.stride, self.same_padding(x), self.dilation,
                                backend=self.backend)


class DoGConv2dSame(_TFSame, DoGConv2d):
    """``DoGConv2d`` with TF "SAME" padding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dog_conv2d(x, self.params, self.kernel_size, self.bias, self.stride, self.same_padding(x),
                          self.dilation, profile=self.profile, backend=self.backend)


class BankConv2dSame(_TFSame, BankConv2d):
    """``BankConv2d`` with TF "SAME" padding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bank_conv2d(x, self.bank, self.coefficients, self.bias, self.stride, self.same_padding(x),
                           self.dilation, offset=self.offset, backend=self.backend)


SAME_CLASSES = {DepthwiseConv2d: DepthwiseConv2dSame, DoGConv2d: DoGConv2dSame, BankConv2d: BankConv2dSame}
