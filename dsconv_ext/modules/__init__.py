"""Drop-in depthwise layers: explicit, DoG-jet and filter-bank filters."""

from .bank import BankConv2d
from .depthwise import DepthwiseConv2d
from .dog import DoGConv2d

__all__ = ["DepthwiseConv2d", "DoGConv2d", "BankConv2d"]
