"""torch.autograd.gradcheck (fp64) of the three ops on every backend, and the analytic
chain rules of the families (dog_filters_vjp, bank_filters_vjp) against autograd."""

import pytest
import torch
from torch.autograd import gradcheck

import dsconv_ext
from dsconv_ext.families import dog
from dsconv_ext.families.bank import bank_filters, bank_filters_vjp, master8

from conftest import BACKENDS

F64 = torch.float64

GEOMETRIES = [
    # (kernel_size, stride, padding, dilation)
    pytest.param((3, 3), 1, 1, 1, id="3x3-s1-p1"),
    pytest.param((3, 3), 2, (0, 1, 2, 0), 1, id="3x3-s2-asym"),
    pytest.param((2, 3), (2, 1), "valid", (1, 2), id="2x3-s21-d12"),
]


def leaf(*shape, scale=1.0):
    return (scale * torch.randn(*shape, dtype=F64)).requires_grad_(True)


def dog_params(channels):
    coeffs = torch.randn(channels, dog.NUM_COEFFS, dtype=F64)
    sigma = torch.empty(channels, dtype=F64).uniform_(0.6, 1.5)
    gamma = torch.empty(channels, dtype=F64).uniform_(0.3, 0.8)
    return dog.make_params(coeffs, sigma, gamma).requires_grad_(True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
@pytest.mark.parametrize("kernel_size,stride,padding,dilation", GEOMETRIES)
def test_gradcheck_depthwise(backend, channels_last, kernel_size, stride, padding, dilation):
    x = torch.randn(2, 3, 6, 7, dtype=F64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    w, b = leaf(3, 1, *kernel_size), leaf(3)

    def fn(x, w, b):
        return dsconv_ext.depthwise_conv2d(x, w, b, stride, padding, dilation, backend=backend)

    assert gradcheck(fn, (x, w, b), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("profile", dog.PROFILES)
@pytest.mark.parametrize("kernel_size,stride,padding,dilation", GEOMETRIES[:2])
def test_gradcheck_dog(backend, profile, kernel_size, stride, padding, dilation):
    x = leaf(2, 2, 6, 7)
    params, b = dog_params(2), leaf(2)

    def fn(x, params, b):
        return dsconv_ext.dog_conv2d(x, params, kernel_size, b, stride, padding, dilation, profile=profile,
                                     backend=backend)

    assert gradcheck(fn, (x, params, b), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_offset", [False, True], ids=["no_offset", "offset"])
@pytest.mark.parametrize("kernel_size,stride,padding,dilation", GEOMETRIES[:2])
def test_gradcheck_bank(backend, with_offset, kernel_size, stride, padding, dilation):
    x = leaf(2, 3, 6, 7)
    bank = master8(kernel_size, dtype=F64).requires_grad_(True)
    coeffs, b = leaf(3, 8), leaf(3)
    offset = leaf(3, scale=0.1) if with_offset else None

    def fn(x, bank, coeffs, b, offset):
        return dsconv_ext.bank_conv2d(x, bank, coeffs, b, stride, padding, dilation, offset=offset, backend=backend)

    assert gradcheck(fn, (x, bank, coeffs, b, offset), eps=1e-6, atol=1e-7, rtol=1e-5)


# ------------------------------------------------------------------ family chain rules


@pytest.mark.parametrize("profile", dog.PROFILES)
@pytest.mark.parametrize("kernel_size", [(3, 3), (7, 7), (4, 5)])
def test_dog_filters_vjp_matches_autograd(profile, kernel_size):
    params = dog_params(6)
    # include extreme-ish scales and ratios: small sigma (< 1 px), large sigma, gamma near the ends
    with torch.no_grad():
        params[0, dog.RHO] = dog.raw_from_sigma(torch.tensor(0.2, dtype=F64))
        params[1, dog.RHO] = dog.raw_from_sigma(torch.tensor(3.0, dtype=F64))
        params[2, dog.TAU] = -4.0
        params[3, dog.TAU] = 4.0
    grad_filters = torch.randn(6, *kernel_size, dtype=F64)
    filters = dog.dog_filters(params, kernel_size, profile)
    (expected,) = torch.autograd.grad(filters, params, grad_filters)
    actual = dog.dog_filters_vjp(params.detach(), grad_filters, kernel_size, profile)
    assert actual.shape == params.shape
    torch.testing.assert_close(actual, expected, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("profile", dog.PROFILES)
def test_dog_filters_gradcheck(profile):
    params = dog_params(3)
    assert gradcheck(lambda p: dog.dog_filters(p, (5, 3), profile), (params,), eps=1e-6, atol=1e-8)


def test_bank_filters_vjp_matches_autograd():
    bank = master8(5, dtype=F64).requires_grad_(True)
    coeffs, offset = leaf(4, 8), leaf(4)
    grad_filters = torch.randn(4, 5, 5, dtype=F64)
    expected = torch.autograd.grad(bank_filters(bank, coeffs, offset), (coeffs, bank, offset), grad_filters)
    actual = bank_filters_vjp(bank.detach(), coeffs.detach(), grad_filters)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        torch.testing.assert_close(a, e, atol=1e-12, rtol=1e-10)
