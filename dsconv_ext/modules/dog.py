"""``DoGConv2d``: depthwise convolution whose filters are DoG jets (ten numbers per channel)."""

from typing import Optional

import torch
from torch import nn

from ..families import dog
from ..families.fitting import fit_dog
from ..functional import dog_conv2d
from .base import DepthwiseBase, copy_bias_from, depthwise_conv_spec


class DoGConv2d(DepthwiseBase):
    """Depthwise convolution with DoG-jet filters generated inside the op.

    Parameters: ``params [C, 10]`` (coefficients of G, Gx, Gy, Gxx, Gxy, Gyy, surround, constant,
    then the raw scale rho and the raw centre/surround ratio tau; see dsconv_ext.families.dog),
    ``bias [C]``. ``weight`` is the materialised ``[C, 1, kh, kw]`` filter.

    Shapes: input ``[N, C, H, W]`` -> output ``[N, C, H', W']``.
    """

    def __init__(self, channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, profile: str = "integrated", backend: str = "auto",
                 device=None, dtype=None, generator: Optional[torch.Generator] = None):
        super().__init__(channels, kernel_size, stride, padding, dilation, backend)
        dog.check_profile(profile)
        self.profile = profile
        self.params = nn.Parameter(torch.empty(channels, dog.NUM_PARAMS, device=device, dtype=dtype))
        self._add_bias(bias, device, dtype)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: Optional[torch.Generator] = None) -> None:
        """Random coefficients, scales log-uniform in [0.5, k/3] px, gamma uniform in the
        middle of its range; rescaled so the filters have nn.Conv2d's default std."""
        channels = self.in_channels
        options = {"dtype": torch.float64}
        coeffs = torch.randn(channels, dog.NUM_COEFFS, generator=generator, **options)
        top = max(0.6, max(self.kernel_size) / 3)
        log_sigma = torch.empty(channels, **options).uniform_(0.0, 1.0, generator=generator)
        sigma = torch.exp(torch.log(torch.tensor(0.5)) + log_sigma * (torch.log(torch.tensor(top)) - torch.log(torch.tensor(0.5))))
        gamma = torch.empty(channels, **options).uniform_(0.3, 0.8, generator=generator)
        params = dog.make_params(coeffs, sigma, gamma)
        std = dog.dog_filters(params, self.kernel_size, self.profile).std()
        params[:, : dog.NUM_COEFFS] *= self.default_filter_std() / std.clamp_min(1e-12)
        self.params.copy_(params.to(self.params))
        self.reset_bias()

    @property
    def weight(self) -> torch.Tensor:
        """The materialised filters ``[C, 1, kh, kw]`` in the parameters' dtype (differentiable
        w.r.t. ``params``); generated in fp32 at least, as the op generates them."""
        wide = self.params.to(torch.promote_types(self.params.dtype, torch.float32))
        return dog.dog_filters(wide, self.kernel_size, self.profile).to(self.params.dtype).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dog_conv2d(x, self.params, self.kernel_size, self.bias, *self.conv_args(),
                          profile=self.profile, backend=self.backend)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", profile={self.profile!r}" if self.profile != "integrated" else "")

    @classmethod
    def from_conv(cls, conv: nn.Module, profile: str = "integrated", refine_steps: int = 30,
                  backend: str = "auto") -> "DoGConv2d":
        """Fit the DoG jet to a depthwise conv's filters: a grid search over (sigma, gamma) with
        least-squares coefficients, then a short joint L-BFGS refinement. The fit quality per
        channel (cosine between filter and fit) is kept in ``fit_cosine``."""
        spec = depthwise_conv_spec(conv)
        module = cls(**spec, profile=profile, backend=backend)
        params, cos = fit_dog(conv.weight.detach()[:, 0], profile, refine_steps)
        with torch.no_grad():
            module.params.copy_(params.to(module.params))
        copy_bias_from(module, conv)
        module.fit_cosine = cos.to(torch.float32).cpu()
        return module
