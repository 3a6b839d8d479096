"""The cpu backend's C++ filter-bank synthesis and its chain rule (torch.ops.dsconv_ext.
_cpu_bank_filters and _cpu_bank_filters_backward) against the PyTorch reference in
dsconv_ext.families.bank, and their opcheck."""

import pytest
import torch

from dsconv_ext._native import has_native_op
from dsconv_ext.families import bank as bank_family

pytestmark = pytest.mark.skipif(
    not has_native_op("_cpu_bank_filters"), reason="this build has no native bank synthesis"
)

ops = torch.ops.dsconv_ext

# Taps 9 and 49 leave a scalar tail after whole AVX-512 vectors; 64 does not; 1 has no vector.
KERNELS = [(3, 3), (7, 7), (8, 8), (1, 1), (2, 5)]


def inputs(channels, members, kernel_size, dtype=torch.float32, offset=True):
    torch.manual_seed(0)
    bank = torch.randn(members, *kernel_size, dtype=dtype)
    coeffs = torch.randn(channels, members, dtype=dtype)
    return bank, coeffs, torch.randn(channels, dtype=dtype) if offset else None


@pytest.mark.parametrize("kernel_size", KERNELS)
@pytest.mark.parametrize("offset", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_bank_filters_match_reference(kernel_size, offset, dtype):
    bank, coeffs, off = inputs(37, 8, kernel_size, dtype, offset)
    expected = bank_family.bank_filters(bank, coeffs, off).flatten(1)
    actual = ops._cpu_bank_filters(bank, coeffs, off)
    assert actual.shape == expected.shape and actual.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(actual, expected, atol=tol, rtol=tol)


@pytest.mark.parametrize("bank_dtype,coeffs_dtype,expected_dtype", [
    (torch.bfloat16, torch.bfloat16, torch.float32),
    (torch.float16, torch.float32, torch.float32),
    (torch.float32, torch.float64, torch.float64),
])
def test_native_bank_filters_dtype_is_the_reference_promotion(bank_dtype, coeffs_dtype, expected_dtype):
    bank, coeffs, off = inputs(5, 3, (3, 3))
    bank, coeffs = bank.to(bank_dtype), coeffs.to(coeffs_dtype)
    actual = ops._cpu_bank_filters(bank, coeffs, off.to(torch.bfloat16))
    expected = bank_family.bank_filters(bank, coeffs, off.to(torch.bfloat16)).flatten(1)
    assert actual.dtype == expected.dtype == expected_dtype
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel_size", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_bank_vjp_matches_reference(kernel_size, dtype):
    bank, coeffs, _ = inputs(37, 8, kernel_size, dtype)
    grad = torch.randn(37, kernel_size[0] * kernel_size[1], dtype=dtype)
    grad_coeffs, grad_bank = ops._cpu_bank_filters_backward(bank, coeffs, grad)
    want_coeffs, want_bank, _ = bank_family.bank_filters_vjp(bank, coeffs, grad.reshape(37, *kernel_size))
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(grad_coeffs, want_coeffs, atol=tol, rtol=tol)
    torch.testing.assert_close(grad_bank, want_bank, atol=tol, rtol=tol)


def test_native_bank_vjp_is_deterministic_across_thread_counts():
    bank, coeffs, _ = inputs(4096, 8, (7, 7))  # large enough for the channel loop to use threads
    grad = torch.randn(4096, 49)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = ops._cpu_bank_filters_backward(bank, coeffs, grad)
        torch.set_num_threads(max(2, before))
        multi = ops._cpu_bank_filters_backward(bank, coeffs, grad)
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(single, multi))


@pytest.mark.parametrize("name,position", [("coeffs", 1), ("bank", 0), ("offset", 2)])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_native_bank_filters_reject_non_finite(name, position, bad):
    args = list(inputs(37, 8, (7, 7)))
    args[position].view(-1)[-1] = bad  # the last value sits in the scalar tail of the check
    with pytest.raises(ValueError, match=f"{name}: expected finite values"):
        ops._cpu_bank_filters(*args)


ALL_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_static",
             "test_aot_dispatch_dynamic")


@pytest.mark.parametrize("offset", [True, False])
def test_opcheck_native_bank_filters(offset):
    result = torch.library.opcheck(ops._cpu_bank_filters, inputs(6, 4, (3, 5), offset=offset), test_utils=ALL_UTILS)
    assert all(v in ("SUCCESS", "SKIPPED") for v in result.values()), result


def test_opcheck_native_bank_filters_backward():
    bank, coeffs, _ = inputs(6, 4, (3, 5))
    result = torch.library.opcheck(ops._cpu_bank_filters_backward, (bank, coeffs, torch.randn(6, 15)),
                                   test_utils=ALL_UTILS)
    assert all(v in ("SUCCESS", "SKIPPED") for v in result.values()), result
