"""Model surgery: turn the depthwise convolutions of any model into dsconv_ext layers and back.

* ``convert(model, to="depthwise" | "dog" | "bank", ...)``: replace (in place) and fit; returns a
  ``ConversionReport``.
* ``revert(model)``: back to plain ``nn.Conv2d`` (timm ``Conv2dSame`` for TF "SAME" layers).
* ``init_dog_(module, ...)``: centre-surround DoG initialisation of depthwise convs.
* ``freeze_depthwise(model)``, ``transplant_depthwise(src, dst, ...)``: frozen-filter transfer.
* ``find_depthwise(model)``: the depthwise layers a model has, and which ones cannot be converted.

One job per file: ``find`` (locating and swapping layers), ``same_padding`` (TF "SAME" layers),
``fit`` (batched fitting), ``convert``, ``revert``, ``report``, ``init_dog``, ``transfer``.
"""

from .convert import FAMILIES, convert, filter_parameters
from .find import Site, find_depthwise
from .init_dog import centre_surround_filters, dog_sigma, init_dog_
from .report import ConversionReport, LayerRow, SkippedRow
from .revert import revert
from .same_padding import BankConv2dSame, DepthwiseConv2dSame, DoGConv2dSame, tf_same_padding
from .transfer import TransplantReport, freeze_depthwise, transplant_depthwise

__all__ = [
    "convert",
    "revert",
    "init_dog_",
    "freeze_depthwise",
    "transplant_depthwise",
    "find_depthwise",
    "ConversionReport",
    "TransplantReport",
    "LayerRow",
    "SkippedRow",
    "Site",
    "FAMILIES",
    "filter_parameters",
    "centre_surround_filters",
    "dog_sigma",
    "tf_same_padding",
    "DepthwiseConv2dSame",
    "DoGConv2dSame",
    "BankConv2dSame",
]
