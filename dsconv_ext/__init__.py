"""dsconv_ext: depthwise convolution for PyTorch, with DoG-parameterised and filter-bank filters.

Public API: the ops ``depthwise_conv2d``, ``dog_conv2d``, ``bank_conv2d``; the modules
``DepthwiseConv2d``, ``DoGConv2d``, ``BankConv2d``; ``available_backends()``; model surgery
(``dsconv_ext.surgery``): ``convert``, ``revert``, ``init_dog_``, ``freeze_depthwise``,
``transplant_depthwise``; filter analysis (``dsconv_ext.analysis``): ``analyze``, ``extract``,
``write_analysis``; CLI ``dsconv-ext analyze``.
"""

from . import _native  # noqa: F401  (loads the compiled kernels, or warns once)
from .backends import available_backends, deterministic_enabled
from .families.bank import dog_jet_bank, master8
from .families.dog import dog_filters
from . import analysis  # noqa: F401
from . import reference  # noqa: F401  (dsconv_ext.reference: the oracle)
from .functional import bank_conv2d, depthwise_conv2d, dog_conv2d
from .modules import BankConv2d, DepthwiseConv2d, DoGConv2d
from .surgery import (ConversionReport, TransplantReport, convert, freeze_depthwise, init_dog_, revert,
                      transplant_depthwise)

__version__ = "0.1.0"

__all__ = [
    "depthwise_conv2d",
    "dog_conv2d",
    "bank_conv2d",
    "DepthwiseConv2d",
    "DoGConv2d",
    "BankConv2d",
    "available_backends",
    "deterministic_enabled",
    "dog_filters",
    "master8",
    "dog_jet_bank",
    "convert",
    "revert",
    "init_dog_",
    "freeze_depthwise",
    "transplant_depthwise",
    "ConversionReport",
    "TransplantReport",
]
