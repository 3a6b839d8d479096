r"""``init_dog_``: centre-surround difference-of-Gaussians initialisation of depthwise convs,
without converting them.

Per channel, with centre/surround ratio ``gamma`` (0 < gamma < 1) and zero-crossing radius ``r``:

    sigma = (r / (2 gamma)) * sqrt((1 - gamma^2) / (-ln gamma))

the radius where two unit-mass Gaussians of widths ``gamma * sigma`` (centre) and ``sigma``
(surround) cross. On the kernel's taps, with unit-mass Gaussian profiles ``Gc`` (width
``gamma * sigma``) and ``Gs`` (width ``sigma``), the filter is

    w = a * Gc - b * Gs

with the amplitudes ``a, b`` solved so that the positive taps of ``Gc - Gs`` sum to +1 and its
negative taps to -1 (the filter sums to 0). That is the on-centre filter; off-centre is ``-w``.
Profiles are the DoG-jet family's (``"integrated"``: each tap integrates the Gaussian over its
pixel, accurate for widths below a pixel; ``"sampled"``: point samples), so ``init_dog_`` of a
``DoGConv2d`` gives exactly the filter it gives a plain conv of the same size.

Defaults: ``gamma`` uniform in ``[0.3, 0.8]`` per channel, ``r = max(0.75, min(kh, kw) / 4)``
pixels, on/off alternating over channels, and every layer's filters rescaled to the standard
deviation of ``nn.Conv2d``'s default initialisation, ``1 / sqrt(3 kh kw)`` (``rescale=False``
keeps the +1 / -1 sums; a float sets the standard deviation). Where the kernel is too small for
a negative surround (e.g. 1x1), the filter is ``Gc - Gs`` scaled so its positive taps sum to 1.
"""

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..families import dog
from ..modules import BankConv2d, DoGConv2d
from ..modules.base import DepthwiseBase
from .find import Selector, check_model, find_depthwise, no_depthwise_error, normalize_selector, selected

POLARITIES = ("alternate", "random", "on", "off")


def dog_sigma(gamma: torch.Tensor, radius: Union[float, torch.Tensor]) -> torch.Tensor:
    """Surround width ``sigma`` whose centre-surround DoG (centre ``gamma * sigma``) crosses zero at ``radius``."""
    return (radius / (2 * gamma)) * torch.sqrt((1 - gamma * gamma) / (-torch.log(gamma)))


def _gaussians(scale: torch.Tensor, kernel_size: Sequence[int], profile: str) -> torch.Tensor:
    """Unit-mass (on the infinite grid) 2-D Gaussians ``[C, kh, kw]`` at ``scale [C]``."""
    kh, kw = kernel_size
    py = dog.profiles(kh, scale, profile)[0][:, 0]
    px = dog.profiles(kw, scale, profile)[0][:, 0]
    return py[:, :, None] * px[:, None, :]


def centre_surround_amplitudes(centre: torch.Tensor, surround: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``a, b [C]`` with ``a * centre - b * surround`` summing to +1 over the positive taps of
    ``centre - surround`` and to -1 over its negative taps."""
    shape = (centre - surround).flatten(1)
    c, s = centre.flatten(1), surround.flatten(1)
    pos, neg = (shape > 0).to(c.dtype), (shape < 0).to(c.dtype)
    system = torch.stack([torch.stack([(c * pos).sum(1), -(s * pos).sum(1)], -1),
                          torch.stack([(c * neg).sum(1), -(s * neg).sum(1)], -1)], -2)  # [C, 2, 2]
    rhs = torch.tensor([1.0, -1.0], dtype=c.dtype).expand(c.shape[0], 2)
    det = system[:, 0, 0] * system[:, 1, 1] - system[:, 0, 1] * system[:, 1, 0]
    solvable = (neg.sum(1) > 0) & (pos.sum(1) > 0) & (det.abs() > 1e-12)
    safe = torch.where(solvable[:, None, None], system, torch.eye(2, dtype=c.dtype).expand_as(system))
    ab = torch.linalg.solve(safe, rhs)
    # Degenerate (no negative taps): Gc - Gs with its positive taps summing to 1.
    fallback = 1.0 / ((shape * pos).sum(1)).clamp_min(1e-30)
    a = torch.where(solvable, ab[:, 0], fallback)
    b = torch.where(solvable, ab[:, 1], fallback)
    return a, b


def centre_surround_filters(
    channels: int,
    kernel_size: Union[int, Sequence[int]],
    gamma_range: Tuple[float, float] = (0.3, 0.8),
    radius: Optional[float] = None,
    polarity: str = "alternate",
    profile: str = "integrated",
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, dict]:
    """Centre-surround DoG filters ``[C, kh, kw]`` (float64, not rescaled) and their per-channel
    parameters ``{"gamma", "sigma", "a", "b", "sign"}`` (the filter is ``sign * (a Gc - b Gs)``)."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    dog.check_profile(profile)
    low, high = gamma_range
    if not (0 < low <= high < 1):
        raise ValueError(f"gamma_range: expected 0 < low <= high < 1, got {gamma_range!r}")
    if polarity not in POLARITIES:
        raise ValueError(f"polarity: expected one of {POLARITIES}, got {polarity!r}")
    r = max(0.75, min(kh, kw) / 4) if radius is None else float(radius)
    if not r > 0:
        raise ValueError(f"radius: expected a positive number of pixels, got {radius!r}")
    options = {"dtype": torch.float64}
    gamma = low + (high - low) * torch.rand(channels, generator=generator, **options)
    sigma = dog_sigma(gamma, r)
    centre = _gaussians(gamma * sigma, (kh, kw), profile)
    surround = _gaussians(sigma, (kh, kw), profile)
    a, b = centre_surround_amplitudes(centre, surround)
    if polarity == "alternate":
        sign = 1.0 - 2.0 * (torch.arange(channels) % 2).to(torch.float64)
    elif polarity == "random":
        sign = torch.where(torch.rand(channels, generator=generator, **options) < 0.5, -1.0, 1.0)
    else:
        sign = torch.full((channels,), 1.0 if polarity == "on" else -1.0, **options)
    filters = sign[:, None, None] * (a[:, None, None] * centre - b[:, None, None] * surround)
    return filters, {"gamma": gamma, "sigma": sigma, "a": a, "b": b, "sign": sign}


def _target_std(rescale, kernel_size) -> Optional[float]:
    if rescale is True:
        return 1.0 / math.sqrt(3.0 * kernel_size[0] * kernel_size[1])
    if rescale is False or rescale is None:
        return None
    return float(rescale)


@torch.no_grad()
def init_dog_(
    module: nn.Module,
    gamma_range: Tuple[float, float] = (0.3, 0.8),
    radius: Optional[float] = None,
    polarity: str = "alternate",
    rescale: Union[bool, float] = True,
    profile: str = "integrated",
    include: Selector = None,
    exclude: Selector = None,
    generator: Optional[torch.Generator] = None,
) -> nn.Module:
    """Centre-surround DoG initialisation, in place, of every depthwise conv in ``module`` (or of
    ``module`` itself when it is one): plain ``nn.Conv2d`` (timm ``Conv2dSame`` included),
    ``DepthwiseConv2d`` and ``DoGConv2d`` (whose parameters are set to the same filter). Layers
    with a channel multiplier get one filter per output channel. ``BankConv2d`` layers and
    unsupported conv subclasses are left alone. Returns ``module``.

    Args: see the module docstring (``gamma_range``, ``radius`` in pixels, ``polarity`` one of
    ``"alternate"``, ``"random"``, ``"on"``, ``"off"``, ``rescale``, ``profile``); ``include`` /
    ``exclude`` as in ``convert``; ``generator`` for the random gammas (and polarities).
    """
    check_model(module, "module")
    include = normalize_selector(include, "include")
    exclude = normalize_selector(exclude, "exclude")
    holder = nn.ModuleDict({"layer": module}) if isinstance(module, (nn.Conv2d, DepthwiseBase)) else module
    sites = [s for s in find_depthwise(holder)
             if not s.unsupported or s.unsupported.startswith("channel multiplier")]
    if isinstance(holder, nn.ModuleDict) and holder is not module:
        for site in sites:
            site.name = ""
    sites = [s for s in sites if not isinstance(s.module, BankConv2d) and selected(s.name, s.module, include, exclude)]
    if not sites:
        raise no_depthwise_error(module, "init_dog_")
    if any(isinstance(s.module, DoGConv2d) for s in sites):
        low, high = gamma_range
        if not (dog.GAMMA_MIN < low and high < dog.GAMMA_MAX):
            raise ValueError(f"gamma_range: DoGConv2d keeps gamma in ({dog.GAMMA_MIN}, {dog.GAMMA_MAX}), "
                             f"got {gamma_range!r}")
    for site in sites:
        layer = site.module
        channels = site.channels * site.multiplier
        kernel_size = site.kernel_size
        layer_profile = layer.profile if isinstance(layer, DoGConv2d) else profile
        filters, shape = centre_surround_filters(channels, kernel_size, gamma_range, radius, polarity, layer_profile,
                                                 generator)
        std = _target_std(rescale, kernel_size)
        factor = std / float(filters.std().clamp_min(1e-30)) if std is not None else 1.0
        if isinstance(layer, DoGConv2d):
            gamma = shape["gamma"]
            coeffs = torch.zeros(channels, dog.NUM_COEFFS, dtype=torch.float64)
            coeffs[:, 0] = shape["sign"] * shape["a"] * factor
            coeffs[:, 6] = -shape["sign"] * shape["b"] * factor
            params = dog.make_params(coeffs, gamma * shape["sigma"], gamma)
            layer.params.copy_(params.to(layer.params))
        else:
            layer.weight.copy_((filters * factor).to(layer.weight).unsqueeze(1))
    return module
