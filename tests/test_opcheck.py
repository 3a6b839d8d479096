"""torch.library.opcheck on the four registered ops: schema, fake (meta) kernel, autograd
registration and AOT dispatch, on both backends, NCHW and channels_last."""

import pytest
import torch

import dsconv_ext  # noqa: F401  (registers torch.ops.dsconv_ext.*)
from dsconv_ext.families import dog
from dsconv_ext.families.bank import master8

from conftest import BACKENDS

ops = torch.ops.dsconv_ext

# stride list[2], padding list[4] (top, bottom, left, right), dilation list[2]
GEOMETRIES = [
    pytest.param([1, 1], [1, 1, 1, 1], [1, 1], id="s1-p1"),
    pytest.param([2, 1], [0, 1, 2, 0], [1, 2], id="s21-asym-d12"),
]


def x_in(layout, requires_grad=True, dtype=torch.float32):
    x = torch.randn(2, 3, 7, 8, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(requires_grad)


# Everything opcheck can test except dynamic shapes, which test_opcheck_dynamic_shapes covers
# once per op (so that one problem there does not fail the whole grid).
STATIC_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_static")
ALL_UTILS = STATIC_UTILS + ("test_aot_dispatch_dynamic",)


def check(op, args, test_utils=STATIC_UTILS):
    result = torch.library.opcheck(op, args, test_utils=test_utils)
    # opcheck returns {test_name: "SUCCESS" | "SKIPPED" | ...}; it raises on failure.
    assert result and all(v in ("SUCCESS", "SKIPPED") for v in result.values()), result


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("bias,geometry", [(True, GEOMETRIES[0]), (False, GEOMETRIES[1])], ids=["bias-s1", "nobias-s21"])
def test_opcheck_depthwise(backend, layout, bias, geometry):
    stride, padding, dilation = geometry.values
    x = x_in(layout)
    w = torch.randn(3, 1, 3, 3, requires_grad=True)
    b = torch.randn(3, requires_grad=True) if bias else None
    check(ops.depthwise_conv2d, (x, w, b, stride, padding, dilation, backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("profile,geometry", [("integrated", GEOMETRIES[0]), ("sampled", GEOMETRIES[1])],
                         ids=["integrated-s1", "sampled-s21"])
def test_opcheck_dog(backend, layout, profile, geometry):
    stride, padding, dilation = geometry.values
    x = x_in(layout)
    params = torch.randn(3, dog.NUM_PARAMS, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    check(ops.dog_conv2d, (x, params, [3, 5], b, stride, padding, dilation, profile, backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("with_offset,geometry", [(False, GEOMETRIES[0]), (True, GEOMETRIES[1])],
                         ids=["no_offset-s1", "offset-s21"])
def test_opcheck_bank(backend, layout, with_offset, geometry):
    stride, padding, dilation = geometry.values
    x = x_in(layout)
    bank = master8(3).requires_grad_(True)
    coeffs = torch.randn(3, 8, requires_grad=True)
    offset = torch.randn(3, requires_grad=True) if with_offset else None
    b = torch.randn(3, requires_grad=True)
    check(ops.bank_conv2d, (x, bank, coeffs, offset, b, stride, padding, dilation, backend))


NEEDS = [
    pytest.param(True, True, True, id="all"),
    pytest.param(True, False, False, id="input_only"),
    pytest.param(False, True, False, id="weight_only"),
    pytest.param(False, True, True, id="weight_bias"),
    pytest.param(False, False, True, id="bias_only"),
]


def backward_args(backend, layout, stride, padding, dilation, need_input, need_weight, need_bias, dtype):
    # The backward op has no autograd formula of its own (it runs inside backward), so its
    # inputs do not require grad.
    x = x_in(layout, requires_grad=False, dtype=dtype)
    w = torch.randn(3, 1, 3, 3, dtype=dtype)
    y = ops.depthwise_conv2d(x, w, None, stride, padding, dilation, backend)
    grad_out = torch.randn_like(y)
    return (grad_out, x, w, stride, padding, dilation, need_input, need_weight, need_bias, False, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("need_input,need_weight,need_bias", NEEDS)
def test_opcheck_depthwise_backward_needs(backend, layout, need_input, need_weight, need_bias):
    check(ops.depthwise_conv2d_backward,
          backward_args(backend, layout, [2, 1], [0, 1, 2, 0], [1, 2], need_input, need_weight, need_bias,
                        torch.float32))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype,geometry", [(torch.float32, GEOMETRIES[1]), (torch.bfloat16, GEOMETRIES[0])],
                         ids=["fp32-s21", "bf16-s1"])
def test_opcheck_depthwise_backward_geometry_dtype(backend, layout, dtype, geometry):
    stride, padding, dilation = geometry.values
    check(ops.depthwise_conv2d_backward,
          backward_args(backend, layout, stride, padding, dilation, True, True, True, dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op_name", ["depthwise_conv2d", "dog_conv2d", "bank_conv2d", "depthwise_conv2d_backward"])
def test_opcheck_dynamic_shapes(backend, op_name):
    """The full default opcheck, including test_aot_dispatch_dynamic (symbolic sizes in the
    fake kernels, as under torch.compile(dynamic=True))."""
    x = x_in("nchw")
    b = torch.randn(3, requires_grad=True)
    geometry = ([2, 1], [0, 1, 2, 0], [1, 1])
    if op_name == "depthwise_conv2d":
        args = (x, torch.randn(3, 1, 3, 5, requires_grad=True), b, *geometry, backend)
    elif op_name == "dog_conv2d":
        args = (x, torch.randn(3, dog.NUM_PARAMS, requires_grad=True), [3, 5], b, *geometry, "integrated", backend)
    elif op_name == "bank_conv2d":
        args = (x, master8((3, 5)), torch.randn(3, 8, requires_grad=True), None, b, *geometry, backend)
    else:
        args = backward_args(backend, "nchw", *geometry, True, True, True, torch.float32)
    check(getattr(ops, op_name), args, test_utils=ALL_UTILS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_op_outputs(backend):
    """Shapes, dtypes and layout of the backward op's outputs; empty when not asked for."""
    x = x_in("channels_last", requires_grad=False, dtype=torch.bfloat16)
    w = torch.randn(3, 1, 3, 3, dtype=torch.bfloat16)
    grad_out = torch.randn(2, 3, 7, 8, dtype=torch.bfloat16)
    gx, gw, gb = ops.depthwise_conv2d_backward(grad_out, x, w, [1, 1], [1, 1, 1, 1], [1, 1], True, True, True,
                                               False, backend)
    assert gx.shape == x.shape and gx.dtype == torch.bfloat16
    assert gx.is_contiguous(memory_format=torch.channels_last)
    assert gw.shape == w.shape and gw.dtype == torch.float32  # filter grads in the accumulation dtype
    assert gb.shape == (3,) and gb.dtype == torch.float32
    torch.testing.assert_close(gb, grad_out.float().sum((0, 2, 3)), atol=1e-3, rtol=1e-3)
    gx, gw, gb = ops.depthwise_conv2d_backward(grad_out, x, w, [1, 1], [1, 1, 1, 1], [1, 1], False, True, False,
                                               False, backend)
    assert gx.numel() == 0 and gb.numel() == 0 and gw.shape == w.shape
