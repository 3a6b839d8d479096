"""The PyTorch oracle itself against F.conv2d(groups=C) (and F.pad + F.conv2d for 4-tuple padding)."""

import pytest
import torch
import torch.nn.functional as F

from dsconv_ext.families.bank import bank_filters, master8
from dsconv_ext.families.dog import dog_filters
from dsconv_ext.reference import bank_conv2d_reference, depthwise_conv2d_reference, dog_conv2d_reference

CASES = [
    # (kernel_size, stride, padding, dilation)
    ((3, 3), 1, 0, 1),
    ((3, 3), 1, 1, 1),
    ((3, 3), 2, 1, 1),
    ((3, 3), (1, 2), (1, 0), 1),
    ((3, 3), 1, "same", 1),
    ((3, 3), 1, "valid", 1),
    ((3, 3), 2, "valid", 2),
    ((5, 5), 1, "same", 2),
    ((3, 5), 1, (1, 2), 1),
    ((3, 5), 1, "same", (2, 1)),
    ((5, 3), 2, (2, 1), (1, 2)),
    ((4, 4), 1, "same", 1),  # even kernel: asymmetric 'same'
    ((4, 4), 2, 1, 1),
    ((2, 4), 1, "same", 2),
    ((1, 1), 1, 0, 1),
    ((1, 1), 2, 0, 1),
]


@pytest.mark.parametrize("kernel_size,stride,padding,dilation", CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_depthwise_reference_matches_conv2d(kernel_size, stride, padding, dilation, bias):
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    w = torch.randn(3, 1, *kernel_size, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64) if bias else None
    expected = F.conv2d(x, w, b, stride, padding, dilation, groups=3)
    actual = depthwise_conv2d_reference(x, w, b, stride, padding, dilation)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize(
    "padding,stride,dilation,kernel_size",
    [
        ((0, 1, 2, 0), 1, 1, (3, 3)),
        ((2, 0, 0, 1), 2, 1, (3, 3)),
        ((1, 2, 3, 0), (2, 1), (1, 2), (3, 5)),
        ((0, 1, 0, 1), 1, 1, (4, 4)),
        ((3, 3, 0, 0), 1, 2, (5, 3)),
    ],
)
def test_depthwise_reference_asymmetric_padding(padding, stride, dilation, kernel_size):
    x = torch.randn(2, 4, 8, 7, dtype=torch.float64)
    w = torch.randn(4, 1, *kernel_size, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    top, bottom, left, right = padding
    expected = F.conv2d(F.pad(x, (left, right, top, bottom)), w, b, stride, 0, dilation, groups=4)
    actual = depthwise_conv2d_reference(x, w, b, stride, padding, dilation)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=1e-12, rtol=1e-12)


def test_same_padding_for_even_kernel_puts_extra_pixel_bottom_right():
    # A delta input: the 'same' output of a 4x4 kernel shows where the odd pixel of padding went.
    x = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    x[0, 0, 2, 3] = 1.0
    w = torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4)
    y = depthwise_conv2d_reference(x, w, None, 1, "same", 1)
    torch.testing.assert_close(y, F.conv2d(x, w, None, 1, "same", 1, groups=1))
    # explicit (top=1, bottom=2, left=1, right=2) is the same thing
    torch.testing.assert_close(y, depthwise_conv2d_reference(x, w, None, 1, (1, 2, 1, 2), 1))
    assert not torch.equal(y, depthwise_conv2d_reference(x, w, None, 1, (2, 1, 2, 1), 1))


@pytest.mark.parametrize("profile", ["integrated", "sampled"])
def test_dog_reference_is_depthwise_of_dog_filters(profile):
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    params = torch.randn(3, 10, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)
    w = dog_filters(params, (5, 3), profile).unsqueeze(1)
    expected = F.conv2d(F.pad(x, (1, 0, 2, 1)), w, b, 2, 0, 1, groups=3)
    actual = dog_conv2d_reference(x, params, (5, 3), b, 2, (2, 1, 1, 0), 1, profile)
    torch.testing.assert_close(actual, expected, atol=1e-12, rtol=1e-12)


def test_bank_reference_is_depthwise_of_bank_filters():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    bank = master8(5, dtype=torch.float64)
    coeffs = torch.randn(3, 8, dtype=torch.float64)
    offset = torch.randn(3, dtype=torch.float64)
    w = (torch.einsum("cm,mhw->chw", coeffs, bank) + offset[:, None, None]).unsqueeze(1)
    torch.testing.assert_close(bank_filters(bank, coeffs, offset).unsqueeze(1), w, atol=1e-12, rtol=0)
    expected = F.conv2d(x, w, None, 1, "same", 2, groups=3)
    actual = bank_conv2d_reference(x, bank, coeffs, None, 1, "same", 2, offset=offset)
    torch.testing.assert_close(actual, expected, atol=1e-12, rtol=1e-12)


def test_reference_is_differentiable():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    params = torch.randn(2, 10, dtype=torch.float64, requires_grad=True)
    dog_conv2d_reference(x, params, 3, padding=1).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert params.grad is not None and torch.isfinite(params.grad).all() and params.grad.abs().sum() > 0
