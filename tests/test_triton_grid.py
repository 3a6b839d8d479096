"""Triton backend against the PyTorch oracle (dsconv_ext.reference): forward and backward of the
three ops over layouts, dtypes, bias, stride, dilation, asymmetric padding and kh != kw.

Without a GPU this runs in Triton's interpreter on CPU (slow: a few seconds per case), so the
grid is pruned to small shapes that still cross every tile boundary of the interpreter configs
(channels > 16, rows > 4, columns > 8). On a GPU the same cases run on CUDA tensors.
"""

import pytest
import torch

import dsconv_ext
from dsconv_ext.families import dog
from dsconv_ext.families.bank import master8
from dsconv_ext.reference import bank_conv2d_reference, depthwise_conv2d_reference, dog_conv2d_reference

from conftest import assert_close_for, assert_memory_format, grads, make_input, upcast
from triton_setup import DEVICE, interpret_env, load_kernels  # noqa: F401  (autouse fixture)

load_kernels()


def _dev(t):
    return None if t is None else t.detach().to(DEVICE).requires_grad_(t.requires_grad)


def _input(shape, layout, dtype):
    x = make_input(shape, layout, dtype)
    if DEVICE != "cpu":  # keep the layout: copy the strided view's storage over
        x = x.to(DEVICE)
    return x.requires_grad_(True)


def _grad_out(y, layout):
    g = torch.randn(y.shape, dtype=y.dtype, device=y.device)
    if layout == "expanded":
        return torch.ones((), dtype=y.dtype, device=y.device).expand(y.shape)
    return g.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else g


def check_depthwise(shape, kernel, stride, padding, dilation, bias, layout, dtype, grad_layout="like"):
    c = shape[1]
    x = _input(shape, layout, dtype)
    w = torch.randn(c, 1, *kernel, dtype=dtype, device=DEVICE, requires_grad=True)
    b = torch.randn(c, dtype=dtype, device=DEVICE, requires_grad=True) if bias else None
    y = dsconv_ext.depthwise_conv2d(x, w, b, stride, padding, dilation, backend="triton")
    x64, w64, b64 = upcast(x.cpu()), upcast(w.cpu()), upcast(None if b is None else b.cpu())
    y64 = depthwise_conv2d_reference(x64, w64, b64, stride, padding, dilation)
    assert y.dtype == dtype and y.device.type == DEVICE
    assert_memory_format(y, layout, "y")
    assert_close_for(dtype, y.cpu(), y64, msg="y")
    if grad_layout == "like":
        grad_layout = "channels_last" if layout in ("channels_last", "noncontiguous_cl") else "nchw"
    g = _grad_out(y, grad_layout)
    gx, gw, gb = grads(y, (x, w, b), g)
    gx64, gw64, gb64 = grads(y64, (x64, w64, b64), g.cpu().double())
    assert gx.dtype == dtype and gw.dtype == dtype
    assert_memory_format(gx, layout, "grad_x")
    assert_close_for(dtype, gx.cpu(), gx64, grad=True, msg="grad_x")
    assert_close_for(dtype, gw.cpu(), gw64, grad=True, msg="grad_weight")
    if bias:
        assert_close_for(dtype, gb.cpu(), gb64, grad=True, msg="grad_bias")


DEPTHWISE_CASES = [
    # shape, kernel, stride, padding, dilation, bias, layout, dtype
    ((2, 18, 6, 9), (3, 3), 1, 1, 1, True, "channels_last", torch.float32),     # > 1 channel block
    ((2, 3, 7, 9), (3, 5), 1, "same", 1, False, "nchw", torch.float32),         # kh != kw, asymmetric "same"
    ((1, 5, 9, 10), (4, 4), 1, "same", 1, True, "nchw", torch.float32),         # even kernel: asymmetric same
    ((3, 5, 9, 8), (5, 5), 2, (0, 1, 2, 0), 1, True, "nchw", torch.float32),    # stride 2, asymmetric
    ((2, 4, 8, 9), (3, 3), (1, 2), 1, 2, True, "channels_last", torch.float32),  # mixed stride, dilation 2
    ((1, 3, 9, 7), (3, 3), 2, 2, (2, 1), False, "channels_last", torch.float32),
    ((2, 3, 7, 9), (3, 3), 1, 1, 1, True, "noncontiguous", torch.float32),
    ((2, 3, 7, 9), (3, 3), 2, (1, 0, 0, 2), 1, True, "noncontiguous_cl", torch.float32),
    ((2, 3, 7, 9), (3, 3), 1, 1, 1, True, "permuted", torch.float32),
    ((2, 18, 5, 9), (3, 3), 1, 1, 1, True, "channels_last", torch.bfloat16),
    ((2, 3, 7, 9), (5, 3), 2, (2, 1, 1, 1), 1, True, "nchw", torch.bfloat16),
    ((1, 18, 5, 9), (3, 3), 1, 1, 1, True, "channels_last", torch.float16),
    ((1, 2, 5, 6), (1, 1), 1, 0, 1, True, "nchw", torch.float32),               # 1x1 kernel
    ((2, 3, 5, 6), (3, 3), 1, 3, 1, True, "nchw", torch.float32),               # padding > kernel span
]


@pytest.mark.parametrize("shape,kernel,stride,padding,dilation,bias,layout,dtype", DEPTHWISE_CASES,
                         ids=[f"{c[6]}-{str(c[7])[6:]}-k{c[1][0]}x{c[1][1]}-s{c[2]}-p{c[3]}-d{c[4]}" for c in DEPTHWISE_CASES])
def test_depthwise(shape, kernel, stride, padding, dilation, bias, layout, dtype):
    check_depthwise(shape, kernel, stride, padding, dilation, bias, layout, dtype)


@pytest.mark.parametrize("grad_layout", ["channels_last", "expanded"])
def test_depthwise_grad_out_layouts(grad_layout):
    check_depthwise((1, 3, 5, 9), (3, 3), 2, (1, 0, 0, 2), 1, True, "nchw", torch.float32, grad_layout=grad_layout)


def _dog_params(c, dtype=torch.float32):
    coeffs = torch.randn(c, dog.NUM_COEFFS, dtype=torch.float64)
    sigma = torch.linspace(0.4, 1.8, c, dtype=torch.float64)  # below and above one pixel
    gamma = torch.linspace(0.3, 0.8, c, dtype=torch.float64)
    return dog.make_params(coeffs, sigma, gamma).to(dtype)


DOG_CASES = [
    # shape, kernel, stride, padding, dilation, profile, layout, dtype, bias
    ((1, 18, 5, 9), (5, 5), 1, "same", 1, "integrated", "channels_last", torch.float32, True),
    ((2, 3, 7, 9), (3, 5), 2, (1, 0, 2, 1), (2, 1), "sampled", "nchw", torch.float32, False),
    ((1, 3, 5, 9), (3, 3), 1, 1, 1, "integrated", "nchw", torch.bfloat16, True),
]


@pytest.mark.parametrize("shape,kernel,stride,padding,dilation,profile,layout,dtype,bias", DOG_CASES,
                         ids=["cl-fp32-k5-same", "nchw-sampled-s2-d21", "nchw-bf16"])
def test_dog(shape, kernel, stride, padding, dilation, profile, layout, dtype, bias):
    c = shape[1]
    x = _input(shape, layout, dtype)
    params = _dev(_dog_params(c).requires_grad_(True))
    b = _dev(torch.randn(c, requires_grad=True)) if bias else None
    y = dsconv_ext.dog_conv2d(x, params, kernel, b, stride, padding, dilation, profile=profile, backend="triton")
    x64, p64, b64 = upcast(x.cpu()), upcast(params.cpu()), upcast(None if b is None else b.cpu())
    y64 = dog_conv2d_reference(x64, p64, kernel, b64, stride, padding, dilation, profile=profile)
    assert y.dtype == dtype
    assert_memory_format(y, layout, "y")
    assert_close_for(dtype, y.cpu(), y64, msg="y")
    g = torch.randn_like(y)
    got = grads(y, (x, params, b), g)
    want = grads(y64, (x64, p64, b64), g.cpu().double())
    for name, a, e in zip(("grad_x", "grad_params", "grad_bias"), got, want):
        if e is not None:
            assert_close_for(dtype, a.cpu(), e, grad=True, msg=name)
    assert got[1].dtype == params.dtype


BANK_CASES = [
    # shape, stride, padding, dilation, offset, trainable bank, layout, dtype
    ((1, 18, 5, 9), 1, 1, 1, True, False, "channels_last", torch.float32),
    ((2, 3, 7, 9), 2, (0, 1, 2, 0), (1, 2), False, True, "nchw", torch.float32),
    ((1, 3, 5, 9), 1, 1, 1, True, True, "nchw", torch.float16),
]


@pytest.mark.parametrize("shape,stride,padding,dilation,offset,trainable,layout,dtype", BANK_CASES,
                         ids=["cl-offset", "nchw-s2-trainable", "nchw-fp16"])
def test_bank(shape, stride, padding, dilation, offset, trainable, layout, dtype):
    c = shape[1]
    x = _input(shape, layout, dtype)
    bank = _dev(master8(3).requires_grad_(trainable))
    coeffs = _dev(torch.randn(c, 8, requires_grad=True))
    off = _dev(torch.randn(c, requires_grad=True)) if offset else None
    b = _dev(torch.randn(c, requires_grad=True))
    y = dsconv_ext.bank_conv2d(x, bank, coeffs, b, stride, padding, dilation, offset=off, backend="triton")
    cpu64 = [upcast(None if t is None else t.cpu()) for t in (x, bank, coeffs, off, b)]
    x64, bank64, c64, o64, b64 = cpu64
    y64 = bank_conv2d_reference(x64, bank64, c64, b64, stride, padding, dilation, offset=o64)
    assert_memory_format(y, layout, "y")
    assert_close_for(dtype, y.cpu(), y64, msg="y")
    g = torch.randn_like(y)
    got = grads(y, (x, bank, coeffs, off, b), g)
    want = grads(y64, (x64, bank64, c64, o64, b64), g.cpu().double())
    for name, a, e in zip(("grad_x", "grad_bank", "grad_coeffs", "grad_offset", "grad_bias"), got, want):
        if e is None:
            assert a is None, name
        else:
            assert_close_for(dtype, a.cpu(), e, grad=True, msg=name)


@pytest.mark.parametrize("wanted", ["x", "weight", "bias"])
def test_partial_grads(wanted):
    x = _input((2, 3, 6, 7), "nchw", torch.float32).requires_grad_(wanted == "x")
    w = torch.randn(3, 1, 3, 3, device=DEVICE, requires_grad=wanted == "weight")
    b = torch.randn(3, device=DEVICE, requires_grad=wanted == "bias")
    y = dsconv_ext.depthwise_conv2d(x, w, b, 2, (1, 0, 0, 1), backend="triton")
    x64, w64, b64 = upcast(x.cpu()), upcast(w.cpu()), upcast(b.cpu())
    g = torch.randn_like(y)
    got = grads(y, (x, w, b), g)
    want = grads(depthwise_conv2d_reference(x64, w64, b64, 2, (1, 0, 0, 1)), (x64, w64, b64), g.cpu().double())
    for name, a, e in zip(("x", "weight", "bias"), got, want):
        if name == wanted:
            assert_close_for(torch.float32, a.cpu(), e, grad=True, msg=name)
        else:
            assert a is None


def test_fp64_gradcheck():
    """The kernels accumulate fp64 inputs in fp64, so gradcheck's finite differences apply."""
    # fast_mode: a few random directional derivatives instead of the full Jacobian (the
    # interpreter runs each forward in seconds).
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, device=DEVICE, requires_grad=True)
    w = torch.randn(2, 1, 3, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, device=DEVICE, requires_grad=True)
    fn = lambda x, w, b: dsconv_ext.depthwise_conv2d(x, w, b, (2, 1), (1, 0, 1, 1), (1, 2), backend="triton")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b), eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)
    params = _dog_params(2, torch.float64).to(DEVICE).requires_grad_(True)
    fn = lambda x, p: dsconv_ext.dog_conv2d(x, p, 3, None, 1, 1, backend="triton")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, params), eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)
