"""``revert(model)``: every dsconv_ext layer back to a plain ``nn.Conv2d`` with the same outputs
(the layers' ``to_conv()``), e.g. for ``torch.onnx.export`` or deployment without dsconv_ext.

Layers with TF "SAME" padding (the ``*Same`` variants) become timm's ``Conv2dSame``; padding
``nn.Conv2d`` cannot express (asymmetric, from a 4-tuple) becomes ``nn.Sequential(nn.ZeroPad2d,
nn.Conv2d)``.
"""

import time

import torch
from torch import nn

from ..families.fitting import cosine
from ..modules.base import DepthwiseBase
from .convert import filter_parameters
from .find import Selector, check_model, count_parameters, find_depthwise, normalize_selector, replace, selected
from .report import ConversionReport, LayerRow, SkippedRow


def _plain_weight(module: nn.Module) -> torch.Tensor:
    conv = module[-1] if isinstance(module, nn.Sequential) else module
    return conv.weight


def revert(model: nn.Module, include: Selector = None, exclude: Selector = None) -> ConversionReport:
    """Replace every dsconv_ext depthwise layer of ``model`` (in place) by a plain conv; returns a
    ``ConversionReport`` with ``to="conv"`` (cosine: old vs new filters, 1 up to rounding).

    Filters that were frozen stay frozen, and each layer keeps its train/eval mode. Raises
    ``ValueError`` when ``model`` holds no dsconv_ext layers (the model is unchanged).
    """
    started = time.perf_counter()
    check_model(model)
    include = normalize_selector(include, "include")
    exclude = normalize_selector(exclude, "exclude")
    if isinstance(model, DepthwiseBase):
        raise ValueError("model: revert replaces the layers *inside* a module; for a single layer call its to_conv()")
    sites = [s for s in find_depthwise(model) if isinstance(s.module, DepthwiseBase)]
    if not sites:
        raise ValueError(f"revert: found no dsconv_ext layers (DepthwiseConv2d, DoGConv2d, BankConv2d) in "
                         f"{type(model).__name__}")
    rows, skipped, swaps = [], [], []
    for site in sites:
        if not selected(site.name, site.module, include, exclude):
            skipped.append(SkippedRow(site.name, site.label, site.kernel_size, site.channels,
                                      "excluded by include/exclude"))
            continue
        old = site.module
        new = old.to_conv()
        frozen = not any(p.requires_grad for p in filter_parameters(old).values())
        weight = _plain_weight(new)
        weight.requires_grad_(not frozen)
        bias = (new[-1] if isinstance(new, nn.Sequential) else new).bias
        if bias is not None:
            bias.requires_grad_(old.bias.requires_grad)
        new.train(old.training)
        with torch.no_grad():
            cos = cosine(weight.detach().to(torch.float64)[:, 0], old.weight.detach().to(torch.float64)[:, 0])
        rows.append(LayerRow(site.name, site.label, type(new).__name__, site.kernel_size, site.stride,
                             site.channels, count_parameters(old), count_parameters(new),
                             float(cos.median()), float(cos.min())))
        swaps.append((site, new))
    before = count_parameters(model)
    for site, new in swaps:
        replace(site, new)
    return ConversionReport("conv", rows, skipped, {}, before, count_parameters(model), 0.0,
                            time.perf_counter() - started)
