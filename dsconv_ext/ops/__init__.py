"""Registered custom ops (namespace ``dsconv_ext``), each with a fake kernel and autograd."""

from . import cpu_native_op
from .bank_op import bank_conv2d_op
from .depthwise_op import depthwise_conv2d_backward_op, depthwise_conv2d_op
from .dog_op import dog_conv2d_op

__all__ = ["cpu_native_op", "depthwise_conv2d_op", "depthwise_conv2d_backward_op", "dog_conv2d_op", "bank_conv2d_op"]
