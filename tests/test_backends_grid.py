"""Every backend against the PyTorch oracle (dsconv_ext.reference), forward and backward, over a
grid of geometries, memory layouts, dtypes and bias on/off.

The oracle runs in float64 on the same (already rounded) inputs upcast; tolerances come from
conftest.TOLERANCES. The grid is pruned: the full layout x dtype x bias cross runs on a few
geometries, and the geometry sweep runs on NCHW/channels_last fp32 only.
"""

import itertools

import pytest
import torch

import dsconv_ext
from dsconv_ext.conv_args import ConvArgs
from dsconv_ext.families import dog
from dsconv_ext.families.bank import master8
from dsconv_ext.reference import bank_conv2d_reference, depthwise_conv2d_reference, dog_conv2d_reference

from conftest import BACKENDS, assert_close_for, assert_memory_format, grads, make_input, upcast

# --------------------------------------------------------------------------------------------
# depthwise_conv2d
# --------------------------------------------------------------------------------------------


def check_depthwise(backend, shape, kernel_size, stride, padding, dilation, bias, layout, dtype, backward=True,
                    grad_out_layout="like_y"):
    n, c, h, w = shape
    x = make_input(shape, layout, dtype, requires_grad=backward)
    weight = torch.randn(c, 1, *kernel_size, dtype=dtype).requires_grad_(backward)
    b = torch.randn(c, dtype=dtype).requires_grad_(backward) if bias else None

    y = dsconv_ext.depthwise_conv2d(x, weight, b, stride, padding, dilation, backend=backend)
    x64, w64, b64 = upcast(x), upcast(weight), upcast(b)
    y64 = depthwise_conv2d_reference(x64, w64, b64, stride, padding, dilation)

    assert y.dtype == dtype and y.device == x.device
    assert_close_for(dtype, y, y64, msg="y")
    assert_memory_format(y, layout, "y")
    if not backward:
        return
    if grad_out_layout == "like_y":
        grad_out = torch.randn_like(y)
    elif grad_out_layout == "nchw":
        grad_out = torch.randn(y.shape, dtype=dtype)
    elif grad_out_layout == "channels_last":
        grad_out = torch.randn(y.shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
    elif grad_out_layout == "expanded":  # what y.sum().backward() sends: all strides 0
        grad_out = torch.ones((), dtype=dtype).expand(y.shape)
    else:
        raise ValueError(grad_out_layout)
    gx, gw, gb = grads(y, (x, weight, b), grad_out)
    gx64, gw64, gb64 = grads(y64, (x64, w64, b64), grad_out.to(torch.float64))
    assert gx.shape == x.shape and gx.dtype == dtype
    assert_memory_format(gx, layout, "grad_x")  # grad_x is laid out like x
    assert gw.shape == weight.shape and gw.dtype == dtype
    assert_close_for(dtype, gx, gx64, grad=True, msg="grad_x")
    assert_close_for(dtype, gw, gw64, grad=True, msg="grad_weight")
    if bias:
        assert gb.shape == b.shape and gb.dtype == dtype
        assert_close_for(dtype, gb, gb64, grad=True, msg="grad_bias")


# A few geometries crossed with every layout, dtype and bias setting.
CROSS_GEOMETRIES = [
    # (shape, kernel_size, stride, padding, dilation)
    ((2, 3, 7, 9), (3, 3), 1, 1, 1),
    ((3, 5, 9, 8), (5, 5), 2, (0, 1, 2, 0), 1),
    ((1, 4, 8, 7), (4, 4), (1, 2), 1, 2),
    ((2, 34, 6, 5), (3, 5), 1, "same", 1),  # > 32 channels: crosses the channel block of the CL kernel
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "noncontiguous", "noncontiguous_cl", "permuted"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("geometry", CROSS_GEOMETRIES, ids=lambda g: f"{g[0]}-k{g[1]}-s{g[2]}-p{g[3]}-d{g[4]}")
def test_depthwise_layout_dtype_bias_cross(backend, layout, dtype, bias, geometry):
    shape, kernel_size, stride, padding, dilation = geometry
    check_depthwise(backend, shape, kernel_size, stride, padding, dilation, bias, layout, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=["fp64", "fp16"])
@pytest.mark.parametrize("geometry", CROSS_GEOMETRIES[:2], ids=["3x3", "5x5-s2-asym"])
def test_depthwise_fp64_fp16(backend, layout, dtype, geometry):
    shape, kernel_size, stride, padding, dilation = geometry
    check_depthwise(backend, shape, kernel_size, stride, padding, dilation, True, layout, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "noncontiguous"])
@pytest.mark.parametrize("grad_out_layout", ["nchw", "channels_last", "expanded"])
def test_depthwise_grad_out_in_any_layout(backend, layout, grad_out_layout):
    check_depthwise(backend, (2, 3, 7, 9), (3, 3), 2, (1, 0, 0, 2), 1, True, layout, torch.float32,
                    grad_out_layout=grad_out_layout)


def _valid(shape, kernel_size, stride, padding, dilation):
    try:
        ConvArgs(kernel_size, stride, padding, dilation).check_input_size(shape[2], shape[3])
    except ValueError:
        return False
    return True


def geometry_cases(shapes, kernels, strides, dilations, paddings):
    """pytest params for every valid combination (``same`` only at stride 1)."""
    cases = []
    for shape, kernel, stride, dilation, padding in itertools.product(shapes, kernels, strides, dilations, paddings):
        if padding == "same" and stride != 1:
            continue
        if not _valid(shape, kernel, stride, padding, dilation):
            continue
        cases.append(pytest.param(shape, kernel, stride, padding, dilation,
                                  id=f"{'x'.join(map(str, shape))}-k{kernel[0]}x{kernel[1]}-s{stride}-p{padding}-d{dilation}"))
    return cases


def _sweep():
    return geometry_cases([(1, 3, 7, 9), (3, 2, 5, 5)], [(3, 3), (5, 5), (3, 5), (4, 4), (1, 1)], [1, 2, (1, 2)],
                          [1, 2], [0, 1, "same", (0, 1, 2, 0)])


SWEEP = _sweep()


@pytest.mark.parametrize("backend,layout", [("cpu", "nchw"), ("cpu", "channels_last"), ("reference", "nchw")])
@pytest.mark.parametrize("shape,kernel_size,stride,padding,dilation", SWEEP)
def test_depthwise_geometry_sweep(backend, layout, shape, kernel_size, stride, padding, dilation):
    check_depthwise(backend, shape, kernel_size, stride, padding, dilation, True, layout, torch.float32)


def test_geometry_sweep_is_not_empty():
    # The sweep must cover every kernel, stride and padding kind it lists.
    ids = [p.id for p in SWEEP]
    assert len(SWEEP) > 100
    for token in ["k4x4", "k1x1", "k3x5", "s(1, 2)", "psame", "p(0, 1, 2, 0)", "d2"]:
        assert any(token in i for i in ids), token


PARTIAL = ["x", "weight", "bias", "x+bias", "weight+bias", "x+weight"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("wanted", PARTIAL)
def test_depthwise_partial_grads(backend, layout, wanted):
    """Backward when only some inputs require grad (frozen filters, frozen bias, frozen input)."""
    names = wanted.split("+")
    x = make_input((2, 3, 6, 7), layout, requires_grad="x" in names)
    w = torch.randn(3, 1, 3, 3, requires_grad="weight" in names)
    b = torch.randn(3, requires_grad="bias" in names)
    y = dsconv_ext.depthwise_conv2d(x, w, b, 2, (1, 0, 0, 1), backend=backend)
    x64, w64, b64 = upcast(x), upcast(w), upcast(b)
    y64 = depthwise_conv2d_reference(x64, w64, b64, 2, (1, 0, 0, 1))
    g = torch.randn_like(y)
    got = grads(y, (x, w, b), g)
    expected = grads(y64, (x64, w64, b64), g.double())
    for name, t, gt, g64 in zip(["x", "weight", "bias"], (x, w, b), got, expected):
        if name in names:
            assert gt.shape == t.shape
            assert_close_for(torch.float32, gt, g64, grad=True, msg=name)
        else:
            assert gt is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["dog", "bank"])
def test_family_input_grad_with_frozen_filters(backend, op):
    """Frozen family parameters (e.g. a frozen bank with frozen coefficients): grad only for x."""
    x = torch.randn(2, 3, 6, 7, requires_grad=True)
    x64 = upcast(x)
    if op == "dog":
        params = random_dog_params(3)
        y = dsconv_ext.dog_conv2d(x, params, 3, None, 1, 1, backend=backend)
        y64 = dog_conv2d_reference(x64, params.double(), 3, None, 1, 1)
    else:
        bank, coeffs = master8(3), torch.randn(3, 8)
        y = dsconv_ext.bank_conv2d(x, bank, coeffs, None, 1, 1, backend=backend)
        y64 = bank_conv2d_reference(x64, bank.double(), coeffs.double(), None, 1, 1)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, (x,), g)
    (gx64,) = torch.autograd.grad(y64, (x64,), g.double())
    assert_close_for(torch.float32, gx, gx64, grad=True)


# --------------------------------------------------------------------------------------------
# Empty batch
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_empty_batch(backend, layout):
    x = torch.randn(0, 3, 7, 9)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    w = torch.randn(3, 1, 3, 3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    y = dsconv_ext.depthwise_conv2d(x, w, b, 2, 1, backend=backend)
    assert y.shape == (0, 3, 4, 5)
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))

    params = torch.randn(3, dog.NUM_PARAMS, requires_grad=True)
    y = dsconv_ext.dog_conv2d(x, params, 5, None, 1, "same", backend=backend)
    assert y.shape == (0, 3, 7, 9)
    y.sum().backward()
    assert torch.equal(params.grad, torch.zeros_like(params))

    coeffs = torch.randn(3, 8, requires_grad=True)
    y = dsconv_ext.bank_conv2d(x, master8(3), coeffs, None, 1, 0, backend=backend)
    assert y.shape == (0, 3, 5, 7)
    y.sum().backward()
    assert torch.equal(coeffs.grad, torch.zeros_like(coeffs))


# --------------------------------------------------------------------------------------------
# dog_conv2d
# --------------------------------------------------------------------------------------------


def random_dog_params(channels, dtype=torch.float32):
    coeffs = torch.randn(channels, dog.NUM_COEFFS, dtype=torch.float64)
    sigma = torch.empty(channels, dtype=torch.float64).uniform_(0.5, 2.0)
    gamma = torch.empty(channels, dtype=torch.float64).uniform_(0.3, 0.8)
    return dog.make_params(coeffs, sigma, gamma).to(dtype)


def check_dog(backend, shape, kernel_size, stride, padding, dilation, bias, layout, dtype, profile):
    c = shape[1]
    x = make_input(shape, layout, dtype, requires_grad=True)
    params = random_dog_params(c).requires_grad_(True)  # fp32 params, any x dtype
    b = torch.randn(c, requires_grad=True) if bias else None
    y = dsconv_ext.dog_conv2d(x, params, kernel_size, b, stride, padding, dilation, profile=profile, backend=backend)
    x64, p64, b64 = upcast(x), upcast(params), upcast(b)
    y64 = dog_conv2d_reference(x64, p64, kernel_size, b64, stride, padding, dilation, profile)
    assert y.dtype == dtype
    assert_close_for(dtype, y, y64, msg="y")
    assert_memory_format(y, layout, "y")

    grad_out = torch.randn_like(y)
    gx, gp, gb = grads(y, (x, params, b), grad_out)
    gx64, gp64, gb64 = grads(y64, (x64, p64, b64), grad_out.double())
    assert gx.shape == x.shape and gp.dtype == params.dtype
    assert_close_for(dtype, gx, gx64, grad=True, msg="grad_x")
    assert_close_for(dtype, gp, gp64, grad=True, msg="grad_params")
    if bias:
        assert gb.dtype == b.dtype
        assert_close_for(dtype, gb, gb64, grad=True, msg="grad_bias")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "noncontiguous_cl"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_dog_layout_dtype(backend, layout, dtype):
    check_dog(backend, (2, 3, 9, 8), (5, 5), 1, "same", 1, True, layout, dtype, "integrated")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("profile", ["integrated", "sampled"])
@pytest.mark.parametrize(
    "kernel_size,stride,padding,dilation,bias",
    [((3, 3), (1, 2), (0, 1, 2, 0), 1, False), ((3, 5), 1, 1, 2, True), ((4, 4), 2, 1, 1, True)],
    ids=["3x3-s12-asym", "3x5-d2", "4x4-s2"],
)
def test_dog_geometry(backend, profile, kernel_size, stride, padding, dilation, bias):
    check_dog(backend, (3, 2, 7, 9), kernel_size, stride, padding, dilation, bias, "nchw", torch.float32, profile)


# --------------------------------------------------------------------------------------------
# bank_conv2d
# --------------------------------------------------------------------------------------------


def check_bank(backend, shape, kernel_size, stride, padding, dilation, bias, layout, dtype, with_offset,
               trainable_bank):
    c = shape[1]
    x = make_input(shape, layout, dtype, requires_grad=True)
    bank = master8(kernel_size).requires_grad_(trainable_bank)
    coeffs = torch.randn(c, 8, requires_grad=True)
    offset = (0.1 * torch.randn(c)).requires_grad_(True) if with_offset else None
    b = torch.randn(c, requires_grad=True) if bias else None
    y = dsconv_ext.bank_conv2d(x, bank, coeffs, b, stride, padding, dilation, offset=offset, backend=backend)
    inputs = (x, bank, coeffs, offset, b)
    x64, bank64, c64, o64, b64 = [upcast(t) for t in inputs]
    y64 = bank_conv2d_reference(x64, bank64, c64, b64, stride, padding, dilation, offset=o64)
    assert y.dtype == dtype
    assert_close_for(dtype, y, y64, msg="y")
    assert_memory_format(y, layout, "y")

    grad_out = torch.randn_like(y)
    got = grads(y, inputs, grad_out)
    expected = grads(y64, (x64, bank64, c64, o64, b64), grad_out.double())
    for name, t, g, g64 in zip(["grad_x", "grad_bank", "grad_coeffs", "grad_offset", "grad_bias"], inputs, got, expected):
        if t is None or not t.requires_grad:
            assert g is None
            continue
        assert g.shape == t.shape and g.dtype == t.dtype, name
        assert_close_for(dtype, g, g64, grad=True, msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "noncontiguous"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_bank_layout_dtype(backend, layout, dtype):
    check_bank(backend, (2, 3, 8, 9), (3, 3), 1, 1, 1, True, layout, dtype, with_offset=True, trainable_bank=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_offset", [False, True], ids=["no_offset", "offset"])
@pytest.mark.parametrize("trainable_bank", [False, True], ids=["frozen_bank", "trainable_bank"])
@pytest.mark.parametrize(
    "kernel_size,stride,padding,dilation,bias",
    [((5, 5), 2, (2, 1, 0, 2), 1, False), ((3, 5), 1, "same", 2, True)],
    ids=["5x5-s2-asym", "3x5-same-d2"],
)
def test_bank_geometry(backend, with_offset, trainable_bank, kernel_size, stride, padding, dilation, bias):
    check_bank(backend, (3, 2, 9, 7), kernel_size, stride, padding, dilation, bias, "nchw", torch.float32,
               with_offset, trainable_bank)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("x_dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32"])
def test_family_mixed_dtypes(backend, x_dtype):
    """Family parameters and bias may have another dtype than x: the output has x's dtype and
    every gradient its own tensor's dtype."""
    x = torch.randn(2, 3, 8, 9, dtype=x_dtype, requires_grad=True)
    params = random_dog_params(3, torch.float64).requires_grad_(True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    y = dsconv_ext.dog_conv2d(x, params, 3, bias, 1, 1, backend=backend)
    assert y.dtype == x_dtype
    grad_out = torch.randn_like(y)
    gx, gp, gb = grads(y, (x, params, bias), grad_out)
    assert (gx.dtype, gp.dtype, gb.dtype) == (x_dtype, torch.float64, torch.float64)
    x64, p64, b64 = upcast(x), upcast(params), upcast(bias)
    expected = grads(dog_conv2d_reference(x64, p64, 3, b64, 1, 1), (x64, p64, b64), grad_out.double())
    for name, got, want in zip(["grad_x", "grad_params", "grad_bias"], (gx, gp, gb), expected):
        assert_close_for(x_dtype, got, want, grad=True, msg=name)

    bank = master8(3, dtype=torch.float64)
    coeffs = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    offset = torch.randn(3, dtype=torch.float32, requires_grad=True)
    y = dsconv_ext.bank_conv2d(x, bank, coeffs, None, 1, 1, offset=offset, backend=backend)
    assert y.dtype == x_dtype
    gc, go = torch.autograd.grad(y, (coeffs, offset), grad_out)
    assert gc.dtype == torch.float64 and go.dtype == torch.float32
    c64, o64 = upcast(coeffs), upcast(offset)
    expected = torch.autograd.grad(bank_conv2d_reference(x64.detach(), bank, c64, None, 1, 1, offset=o64),
                                   (c64, o64), grad_out.double())
    assert_close_for(x_dtype, gc, expected[0], grad=True, msg="grad_coeffs")
    assert_close_for(x_dtype, go, expected[1], grad=True, msg="grad_offset")
