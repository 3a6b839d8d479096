"""``BankConv2d``: depthwise convolution whose filters are combinations of a filter bank."""

from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from ..families.bank import bank_filters, get_bank
from ..families.fitting import fit_bank
from ..functional import bank_conv2d
from .base import DepthwiseBase, copy_bias_from, depthwise_conv_spec


class BankConv2d(DepthwiseBase):
    """Depthwise convolution with ``w_c = sum_m coeffs[c, m] bank[m] (+ offset[c])``.

    Args:
        bank: ``"master8"``, ``"dog_jet"`` or a tensor ``[M, kh, kw]``. Stored as a buffer (in the
            state_dict, frozen) or, with ``trainable_bank=True``, as a parameter.
        select: one bank filter per channel with a learned scale (the "master key" setting):
            buffer ``assignment [C]`` (long) and parameter ``scale [C]``. Otherwise a learned
            ``coeffs [C, M]``.
        offset: a learned per-channel constant ``offset [C]`` added to every tap.

    ``weight`` is the materialised ``[C, 1, kh, kw]`` filter.
    Shapes: input ``[N, C, H, W]`` -> output ``[N, C, H', W']``.
    """

    def __init__(self, channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, bank: Union[str, torch.Tensor] = "master8", select: bool = False,
                 offset: bool = False, trainable_bank: bool = False, backend: str = "auto",
                 device=None, dtype=None):
        super().__init__(channels, kernel_size, stride, padding, dilation, backend)
        factory = {"device": device, "dtype": dtype}
        filters = get_bank(bank, self.kernel_size).detach().to(**{k: v for k, v in factory.items() if v is not None})
        self.bank_name = bank if isinstance(bank, str) else "custom"
        if trainable_bank:
            self.bank = nn.Parameter(filters.clone())
        else:
            self.register_buffer("bank", filters.clone())
        self.num_filters = filters.shape[0]
        self.select = select
        if select:
            self.register_buffer("assignment", torch.zeros(channels, dtype=torch.long, device=device))
            self.scale = nn.Parameter(torch.empty(channels, **factory))
        else:
            self.coeffs = nn.Parameter(torch.empty(channels, self.num_filters, **factory))
        if offset:
            self.offset = nn.Parameter(torch.zeros(channels, **factory))
        else:
            self.register_parameter("offset", None)
        self._add_bias(bias, device, dtype)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random coefficients (or a cyclic assignment with random-sign scales), rescaled so the
        filters have nn.Conv2d's default std."""
        if self.select:
            self.assignment.copy_(torch.arange(self.in_channels) % self.num_filters)
            self.scale.copy_(torch.where(torch.rand(self.in_channels) < 0.5, -1.0, 1.0))
        else:
            nn.init.normal_(self.coeffs)
        if self.offset is not None:
            self.offset.zero_()
        std = bank_filters(self.bank, self.coefficients).std().clamp_min(1e-12)
        target = self.default_filter_std()
        (self.scale if self.select else self.coeffs).mul_(target / std)
        self.reset_bias()

    @property
    def coefficients(self) -> torch.Tensor:
        """``[C, M]``: ``coeffs``, or the one-hot assignment times ``scale``."""
        if self.select:
            return F.one_hot(self.assignment, self.num_filters).to(self.scale.dtype) * self.scale[:, None]
        return self.coeffs

    @property
    def weight(self) -> torch.Tensor:
        """The materialised filters ``[C, 1, kh, kw]``."""
        return bank_filters(self.bank, self.coefficients, self.offset).to(self.bank.dtype).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bank_conv2d(x, self.bank, self.coefficients, self.bias, *self.conv_args(),
                           offset=self.offset, backend=self.backend)

    def extra_repr(self) -> str:
        text = super().extra_repr() + f", bank={self.bank_name!r} ({self.num_filters} filters)"
        if self.select:
            text += ", select=True"
        if self.offset is not None:
            text += ", offset=True"
        return text

    @torch.no_grad()
    def load_fitted(self, coeffs: torch.Tensor, offsets=None) -> None:
        """Set the filters from fitted coefficients ``[C, M]`` (one-hot times scale when
        ``select``) and offsets ``[C]`` (used when the layer has an offset)."""
        if self.select:
            self.assignment.copy_(coeffs.abs().argmax(1))
            self.scale.copy_(coeffs.sum(1).to(self.scale))
        else:
            self.coeffs.copy_(coeffs.to(self.coeffs))
        if self.offset is not None:
            self.offset.copy_(offsets.to(self.offset))

    @classmethod
    def from_conv(cls, conv: nn.Module, bank: Union[str, torch.Tensor] = "master8", select: bool = False,
                  offset: bool = False, trainable_bank: bool = False, backend: str = "auto") -> "BankConv2d":
        """Fit bank coefficients to a depthwise conv's filters by least squares (``select``: the
        best single bank filter per channel, up to scale and, with ``offset``, a constant). The
        fit quality per channel (cosine between filter and fit) is kept in ``fit_cosine``."""
        spec = depthwise_conv_spec(conv)
        module = cls(**spec, bank=bank, select=select, offset=offset, trainable_bank=trainable_bank, backend=backend)
        coeffs, offsets, cos = fit_bank(conv.weight.detach()[:, 0], module.bank, offset=offset, select=select)
        module.load_fitted(coeffs, offsets)
        copy_bias_from(module, conv)
        module.fit_cosine = cos.to(torch.float32).cpu()
        return module
