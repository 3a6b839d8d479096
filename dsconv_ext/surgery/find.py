"""Finding the depthwise convolutions of any ``nn.Module`` and swapping modules in place.

A depthwise convolution is

* an ``nn.Conv2d`` with ``groups == in_channels > 1`` (``out_channels = m * in_channels``; m > 1
  is a channel multiplier), of type ``nn.Conv2d`` itself or of a subclass that keeps
  ``nn.Conv2d``'s forward (timm's ``Conv2dSame`` / ``Conv2dSameExport`` count too: "SAME" padding
  decided per call); other subclasses (e.g. weight-standardised convs) change the filters at
  every call, so they are found but listed as unsupported;
* a dsconv_ext module (``DepthwiseConv2d``, ``DoGConv2d``, ``BankConv2d`` and their ``*Same``
  variants).

Members of mixed-kernel convs (timm ``MixedConv2d``, a ``ModuleDict`` of convs) are ordinary
children, found like any other. A module registered under several names is found once (under its
first name) and replaced everywhere.
"""

import fnmatch
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch
from torch import nn

from ..modules.base import DepthwiseBase

Selector = Union[None, str, Callable[[str, nn.Module], bool], Iterable[Union[str, Callable[[str, nn.Module], bool]]]]

TIMM_SAME = ("Conv2dSame", "Conv2dSameExport")


@dataclass
class Site:
    """One depthwise layer of a model."""

    name: str
    module: nn.Module
    kind: str                       # "conv", "conv_same", or the dsconv_ext class name
    channels: int                   # input channels
    multiplier: int                 # out_channels // in_channels
    kernel_size: Tuple[int, int]
    stride: Tuple[int, int]
    tf_same: bool                   # padding decided per call by the TF "SAME" rule
    mixed: bool = False             # a member of a mixed-kernel conv
    unsupported: Optional[str] = None   # why no family can take it (None: fine)
    places: List[Tuple[nn.Module, str]] = field(default_factory=list)  # (parent, attribute)

    @property
    def label(self) -> str:
        return self.kind + (" (mixed)" if self.mixed else "")


def _is_timm_same(module: nn.Module) -> bool:
    cls = type(module)
    return cls.__name__ in TIMM_SAME and cls.__module__.startswith("timm.")


def _keeps_conv2d_forward(module: nn.Module) -> bool:
    cls = type(module)
    return cls.forward is nn.Conv2d.forward and cls._conv_forward is nn.Conv2d._conv_forward


def _site_for(name: str, module: nn.Module, parent: nn.Module) -> Optional[Site]:
    mixed = type(parent).__name__ == "MixedConv2d"
    if isinstance(module, DepthwiseBase):
        return Site(name, module, type(module).__name__, module.in_channels, 1, tuple(module.kernel_size),
                    tuple(module.stride), bool(getattr(module, "tf_same", False)), mixed)
    if not isinstance(module, nn.Conv2d):
        return None
    if not (module.groups == module.in_channels and module.groups > 1):
        return None
    if isinstance(module, nn.modules.lazy.LazyModuleMixin) and module.has_uninitialized_params():
        return None
    timm_same = _is_timm_same(module)
    site = Site(name, module, "conv_same" if timm_same else "conv", module.in_channels,
                module.out_channels // module.in_channels, tuple(module.kernel_size), tuple(module.stride),
                timm_same, mixed)
    if not timm_same and not _keeps_conv2d_forward(module):
        site.kind = type(module).__name__
        site.unsupported = (f"{type(module).__module__}.{type(module).__name__} overrides nn.Conv2d's forward "
                            "(its filters are not its weight)")
    elif module.padding_mode != "zeros":
        site.unsupported = f"padding_mode={module.padding_mode!r} (only 'zeros' is supported)"
    elif site.multiplier > 1:
        site.unsupported = (f"channel multiplier {site.multiplier} (out = {site.multiplier} x in): "
                            "the dsconv_ext layers map C channels to C")
    elif not torch.isfinite(module.weight.detach()).all():
        site.unsupported = "non-finite weights"
    return site


def find_depthwise(model: nn.Module) -> List[Site]:
    """Every depthwise layer below ``model`` (not ``model`` itself), in registration order."""
    sites: Dict[int, Site] = {}
    for parent_name, parent in model.named_modules(remove_duplicate=True):
        for attr, child in parent._modules.items():
            if child is None:
                continue
            key = id(child)
            if key in sites:
                sites[key].places.append((parent, attr))
                continue
            name = f"{parent_name}.{attr}" if parent_name else attr
            site = _site_for(name, child, parent)
            if site is not None:
                site.places.append((parent, attr))
                sites[key] = site
    return list(sites.values())


def normalize_selector(selector: Selector, what: str):
    """``include`` / ``exclude`` as None or a tuple of glob patterns and callables."""
    if selector is None:
        return None
    if isinstance(selector, str) or callable(selector):
        return (selector,)
    try:
        items = tuple(selector)
    except TypeError:
        raise TypeError(f"{what}: expected None, a glob pattern, a callable (name, module) -> bool, "
                        f"or a list of those, got {type(selector).__name__}") from None
    for item in items:
        if not (isinstance(item, str) or callable(item)):
            raise TypeError(f"{what}: list items must be glob patterns or callables, got {type(item).__name__}")
    return items


def _matches(selector: tuple, name: str, module: nn.Module) -> bool:
    return any(fnmatch.fnmatchcase(name, s) if isinstance(s, str) else bool(s(name, module)) for s in selector)


def selected(name: str, module: nn.Module, include, exclude) -> bool:
    """``include`` (None: everything) minus ``exclude``, both normalised by ``normalize_selector``:
    patterns are fnmatch globs on the qualified module name (``"stages.3.*"``), callables get
    ``(name, module)``."""
    if include is not None and not _matches(include, name, module):
        return False
    return exclude is None or not _matches(exclude, name, module)


def replace(site: Site, new: nn.Module) -> None:
    """Put ``new`` in every place ``site.module`` was registered."""
    for parent, attr in site.places:
        setattr(parent, attr, new)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_model(model, what: str = "model") -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what}: expected an nn.Module, got {type(model).__name__}")


def no_depthwise_error(model: nn.Module, caller: str) -> ValueError:
    return ValueError(
        f"{caller}: found no depthwise convolutions in {type(model).__name__} (looked for nn.Conv2d with "
        "groups == in_channels > 1, timm Conv2dSame, and dsconv_ext layers below the given module; a "
        "depthwise conv passed on its own cannot be replaced in place: wrap it in nn.Sequential, or use "
        "DoGConv2d.from_conv / BankConv2d.from_conv)"
    )
