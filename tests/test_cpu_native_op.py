"""dsconv_ext::_cpu_depthwise_conv2d, the cpu backend's depthwise op with its autograd in C++
(csrc/cpu_autograd.cpp), which the functional API calls for the cpu backend: opcheck of the op and
its backward's fake kernel, the gradients asked for and no others, gradient dtypes and layouts, and
that the functional API really takes it."""

import pytest
import torch

import dsconv_ext
from dsconv_ext.ops import cpu_native_op
from dsconv_ext.reference import depthwise_conv2d_reference

from conftest import assert_close_for, make_input, upcast

ops = torch.ops.dsconv_ext

pytestmark = pytest.mark.skipif(not cpu_native_op.AVAILABLE, reason="dsconv_ext._C not built")

ALL_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_static",
             "test_aot_dispatch_dynamic")


def check(op, args):
    result = torch.library.opcheck(op, args, test_utils=ALL_UTILS)
    assert result and all(v in ("SUCCESS", "SKIPPED") for v in result.values()), result


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("bias,geometry", [
    (True, ([1, 1], [1, 1, 1, 1], [1, 1])),
    (False, ([2, 1], [0, 1, 2, 0], [1, 2])),
], ids=["bias-s1", "nobias-s21-asym-d12"])
def test_opcheck_native_op(layout, bias, geometry):
    x = make_input((2, 3, 7, 8), layout, requires_grad=True)
    w = torch.randn(3, 1, 3, 3, requires_grad=True)
    b = torch.randn(3, requires_grad=True) if bias else None
    check(ops._cpu_depthwise_conv2d, (x, w, b, *geometry))


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_opcheck_native_backward(layout):
    x = make_input((2, 3, 7, 8), layout)
    w = torch.randn(3, 1, 3, 3)
    grad_out = torch.randn_like(ops._cpu_depthwise_conv2d(x, w, None, [1, 1], [1, 1, 1, 1], [1, 1]))
    for needs in ((True, True, True), (False, True, False), (True, False, False)):
        check(ops._cpu_depthwise_backward,
              (grad_out, x, w, [1, 1], [1, 1, 1, 1], [1, 1], *needs, layout == "channels_last"))


def test_functional_cpu_backend_uses_native_autograd():
    x = torch.randn(1, 4, 6, 6, requires_grad=True)
    w = torch.randn(4, 1, 3, 3, requires_grad=True)
    y = dsconv_ext.depthwise_conv2d(x, w, padding=1, backend="cpu")
    assert "DepthwiseConv2dFunction" in type(y.grad_fn).__name__ or "DepthwiseConv2dFunction" in y.grad_fn.name()
    # the generic op on the same backend gives the same values
    y_generic = ops.depthwise_conv2d(x, w, None, [1, 1], [1, 1, 1, 1], [1, 1], "cpu")
    assert torch.equal(y, y_generic)


@pytest.mark.parametrize("wanted", ["x", "weight", "bias", "weight+bias"])
def test_only_the_gradients_asked_for(wanted):
    """torch.autograd.grad for a subset of inputs; inputs that do not require grad get none."""
    x = make_input((2, 5, 9, 7), "channels_last", requires_grad="x" in wanted)
    w = torch.randn(5, 1, 3, 3, requires_grad="weight" in wanted)
    b = torch.randn(5, requires_grad="bias" in wanted)
    y = dsconv_ext.depthwise_conv2d(x, w, b, stride=(2, 1), padding=1, backend="cpu")
    leaves = [t for t, name in ((x, "x"), (w, "weight"), (b, "bias")) if name in wanted]
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, leaves, g)
    x64, w64, b64 = upcast(x), upcast(w), upcast(b)
    y64 = depthwise_conv2d_reference(x64, w64, b64, (2, 1), 1)
    expected = torch.autograd.grad(y64, [t for t, name in ((x64, "x"), (w64, "weight"), (b64, "bias"))
                                         if name in wanted], g.double())
    for got, want in zip(grads, expected):
        assert_close_for(torch.float32, got, want, grad=True, msg=wanted)


def test_bf16_gradients_keep_parameter_dtypes_and_input_layout():
    x = make_input((2, 6, 8, 8), "channels_last", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(6, 1, 5, 5, dtype=torch.bfloat16, requires_grad=True)
    b = torch.randn(6, dtype=torch.bfloat16, requires_grad=True)
    y = dsconv_ext.depthwise_conv2d(x, w, b, padding=2, backend="cpu")
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), torch.randn_like(y))
    assert gx.dtype == gw.dtype == gb.dtype == torch.bfloat16
    assert gx.is_contiguous(memory_format=torch.channels_last)


def test_grad_out_of_another_layout_and_dtype():
    """The incoming gradient may be an expanded scalar (from sum()) or fp64 from a later op."""
    x = torch.randn(2, 3, 6, 5, requires_grad=True)
    w = torch.randn(3, 1, 3, 3, requires_grad=True)
    run = lambda: dsconv_ext.depthwise_conv2d(x, w, padding=1, backend="cpu")
    (gx_sum,) = torch.autograd.grad(run().sum(), (x,))
    y = run()
    (gx_ones,) = torch.autograd.grad(y, (x,), torch.ones_like(y))
    torch.testing.assert_close(gx_sum, gx_ones)  # another kernel path: same values up to rounding
    (gx_wide,) = torch.autograd.grad(run().double().sum(), (x,))
    torch.testing.assert_close(gx_wide, gx_ones)


def test_gradcheck_native_op_fp64():
    x = make_input((1, 2, 6, 5), "channels_last", dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 1, 3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, b: ops._cpu_depthwise_conv2d(x, w, b, [2, 1], [1, 0, 0, 1], [1, 2])
    assert torch.autograd.gradcheck(fn, (x, w, b))


# ---- DoG-jet and bank ops (csrc/cpu_family_autograd.cpp) ----------------------------------------

from dsconv_ext.families import dog  # noqa: E402
from dsconv_ext.families.bank import master8  # noqa: E402


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("profile,bias,geometry", [
    ("integrated", True, ([1, 1], [1, 2, 2, 1], [1, 1])),
    ("sampled", False, ([2, 1], [0, 1, 2, 0], [1, 2])),
], ids=["integrated-bias-s1", "sampled-nobias-s21"])
def test_opcheck_native_dog(layout, profile, bias, geometry):
    x = make_input((2, 3, 7, 8), layout, requires_grad=True)
    params = torch.randn(3, dog.NUM_PARAMS, requires_grad=True)
    b = torch.randn(3, requires_grad=True) if bias else None
    check(ops._cpu_dog_conv2d, (x, params, [3, 4], b, *geometry, profile))


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("offset,bias", [(True, False), (False, True), (True, True)])
def test_opcheck_native_bank(layout, offset, bias):
    x = make_input((2, 3, 7, 8), layout, requires_grad=True)
    bank = master8(3).requires_grad_(True)
    coeffs = torch.randn(3, 8, requires_grad=True)
    off = torch.randn(3, requires_grad=True) if offset else None
    b = torch.randn(3, requires_grad=True) if bias else None
    check(ops._cpu_bank_conv2d, (x, bank, coeffs, off, b, [1, 1], [1, 1, 1, 1], [1, 1]))


def _family_call(op, x, params, bias, bank=None, offset=None):
    if op == "dog":
        return dsconv_ext.dog_conv2d(x, params, (3, 5), bias, stride=(2, 1), padding=(1, 2), backend="cpu")
    return dsconv_ext.bank_conv2d(x, bank, params, bias, stride=(2, 1), padding=(1, 2), offset=offset, backend="cpu")


@pytest.mark.parametrize("op", ["dog", "bank"])
def test_family_ops_match_the_generic_ops(op):
    """The C++-autograd ops against the Python custom ops on the same backend: values and every gradient."""
    torch.manual_seed(0)
    x = make_input((2, 4, 9, 8), "channels_last", requires_grad=True)
    bias = torch.randn(4, requires_grad=True)
    bank = master8((3, 5)).requires_grad_(True)
    offset = torch.randn(4, requires_grad=True)
    params = (torch.randn(4, dog.NUM_PARAMS) if op == "dog" else torch.randn(4, 8)).requires_grad_(True)
    y = _family_call(op, x, params, bias, bank, offset)
    assert "Conv2dFunction" in y.grad_fn.name()
    if op == "dog":
        y_generic = ops.dog_conv2d(x, params, [3, 5], bias, [2, 1], [1, 1, 2, 2], [1, 1], "integrated", "cpu")
        leaves = (x, params, bias)
    else:
        y_generic = ops.bank_conv2d(x, bank, params, offset, bias, [2, 1], [1, 1, 2, 2], [1, 1], "cpu")
        leaves = (x, bank, params, offset, bias)
    torch.testing.assert_close(y, y_generic)
    g = torch.randn_like(y)
    for got, want in zip(torch.autograd.grad(y, leaves, g), torch.autograd.grad(y_generic, leaves, g)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("wanted", ["x", "params", "bias", "bank", "offset"])
def test_family_ops_only_the_gradients_asked_for(wanted):
    x = make_input((1, 3, 7, 7), "nchw", requires_grad=wanted == "x")
    bias = torch.randn(3, requires_grad=wanted == "bias")
    bank = master8((3, 5)).requires_grad_(wanted == "bank")
    offset = torch.randn(3, requires_grad=wanted == "offset")
    coeffs = torch.randn(3, 8, requires_grad=wanted == "params")
    params = torch.randn(3, dog.NUM_PARAMS, requires_grad=wanted == "params")
    leaf = {"x": x, "params": coeffs, "bias": bias, "bank": bank, "offset": offset}[wanted]
    y = _family_call("bank", x, coeffs, bias, bank, offset)
    (grad,) = torch.autograd.grad(y.sum(), (leaf,))
    assert grad.shape == leaf.shape
    if wanted in ("x", "params", "bias"):
        leaf = {"x": x, "params": params, "bias": bias}[wanted]
        (grad,) = torch.autograd.grad(_family_call("dog", x, params, bias).sum(), (leaf,))
        assert grad.shape == leaf.shape


def test_family_ops_gradcheck_fp64():
    x = make_input((1, 2, 6, 5), "channels_last", dtype=torch.float64, requires_grad=True)
    params = torch.randn(2, dog.NUM_PARAMS, dtype=torch.float64, requires_grad=True)
    coeffs = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)
    bank = master8(3).double().requires_grad_(True)
    offset = torch.randn(2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    geometry = ([2, 1], [1, 0, 0, 1], [1, 2])
    assert torch.autograd.gradcheck(lambda x, p, b: ops._cpu_dog_conv2d(x, p, [3, 3], b, *geometry, "sampled"),
                                    (x, params, bias))
    assert torch.autograd.gradcheck(lambda x, k, c, o, b: ops._cpu_bank_conv2d(x, k, c, o, b, *geometry),
                                    (x, bank, coeffs, offset, bias))


def test_family_ops_bf16_gradient_dtypes():
    x = make_input((2, 4, 8, 8), "channels_last", dtype=torch.bfloat16, requires_grad=True)
    params = torch.randn(4, dog.NUM_PARAMS, requires_grad=True)  # fp32 parameters, bf16 activations
    bias = torch.randn(4, requires_grad=True)
    y = dsconv_ext.dog_conv2d(x, params, 5, bias, padding=2, backend="cpu")
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    gx, gp, gb = torch.autograd.grad(y, (x, params, bias), torch.randn_like(y))
    assert gx.dtype == torch.bfloat16 and gp.dtype == torch.float32 and gb.dtype == torch.float32


# The backward kernels have no derivative of their own: a second backward through the gradients
# must raise (as with @once_differentiable), never return the missing terms as zeros.
@pytest.mark.parametrize("op", ["depthwise", "dog", "bank"])
def test_double_backward_raises_instead_of_dropping_terms(op):
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    params = torch.randn(2, dog.NUM_PARAMS, dtype=torch.float64, requires_grad=True)
    coeffs = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)
    offset = torch.randn(2, dtype=torch.float64, requires_grad=True)
    if op == "depthwise":
        y, leaf = dsconv_ext.depthwise_conv2d(x, w, padding=1, backend="cpu"), w
    elif op == "dog":
        y, leaf = dsconv_ext.dog_conv2d(x, params, 3, padding=1, backend="cpu"), params
    else:
        y, leaf = dsconv_ext.bank_conv2d(x, master8(3).double(), coeffs, padding=1, offset=offset, backend="cpu"), offset
    (gx,) = torch.autograd.grad(y.square().sum(), (x,), create_graph=True)
    assert gx.requires_grad
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(gx.square().sum() + y.sum(), (leaf,))


def test_create_graph_without_a_second_backward_still_works():
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    w = torch.randn(2, 1, 3, 3, requires_grad=True)
    y = dsconv_ext.depthwise_conv2d(x, w, padding=1, backend="cpu")
    gx, gw = torch.autograd.grad(y.sum(), (x, w), create_graph=True)
    y_ref = dsconv_ext.depthwise_conv2d(x, w, padding=1, backend="reference")
    gx_ref, gw_ref = torch.autograd.grad(y_ref.sum(), (x, w))
    torch.testing.assert_close(gx.detach(), gx_ref)
    torch.testing.assert_close(gw.detach(), gw_ref)
