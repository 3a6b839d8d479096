"""The cpu backend's C++ DoG-jet synthesis and chain rule (torch.ops.dsconv_ext._cpu_dog_filters
and _cpu_dog_filters_backward) against the PyTorch reference in dsconv_ext.families.dog."""

import pytest
import torch

from dsconv_ext._native import has_native_op
from dsconv_ext.families import dog

pytestmark = pytest.mark.skipif(
    not has_native_op("_cpu_dog_filters"), reason="this build has no native DoG synthesis"
)

F64 = torch.float64


def params_with_extremes(channels=10):
    """The extremes sit in the first and the last channels: the C++ synthesis runs channels a
    vector of lanes at a time and the remainder one by one, and both must handle them."""
    torch.manual_seed(0)
    params = dog.make_params(torch.randn(channels, 8, dtype=F64),
                             torch.empty(channels, dtype=F64).uniform_(0.3, 3.0),
                             torch.empty(channels, dtype=F64).uniform_(0.2, 0.9))
    for first in (0, channels - 5):
        params[first + 0, dog.RHO] = -30.0  # sigma at its floor (0.1 px)
        params[first + 1, dog.RHO] = 25.0   # softplus past its linear threshold
        params[first + 2, dog.TAU] = -12.0  # gamma at its floor
        params[first + 3, dog.TAU] = 12.0   # gamma at its ceiling
        params[first + 4, :8] = 0.0         # a zero filter
    return params


KERNELS = [(3, 3), (7, 7), (4, 6), (1, 5), (31, 31)]


@pytest.mark.parametrize("profile", dog.PROFILES)
@pytest.mark.parametrize("kernel_size", KERNELS)
@pytest.mark.parametrize("channels", [10, 37])
def test_native_dog_filters_match_reference(profile, kernel_size, channels):
    params = params_with_extremes(channels)
    expected = dog.dog_filters(params, kernel_size, profile)
    actual = torch.ops.dsconv_ext._cpu_dog_filters(params, list(kernel_size), profile)
    assert actual.shape == (channels, *kernel_size) and actual.dtype == F64
    torch.testing.assert_close(actual, expected, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_native_dog_filters_low_precision_params(dtype):
    params = params_with_extremes().to(dtype)
    actual = torch.ops.dsconv_ext._cpu_dog_filters(params, [5, 5], "integrated")
    assert actual.dtype == torch.float32  # generated in the accumulation dtype
    expected = dog.dog_filters(params.double(), (5, 5), "integrated")  # on the same rounded params
    torch.testing.assert_close(actual.double(), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("profile", dog.PROFILES)
@pytest.mark.parametrize("kernel_size", KERNELS)
@pytest.mark.parametrize("channels", [10, 37])
def test_native_dog_vjp_matches_autograd(profile, kernel_size, channels):
    params = params_with_extremes(channels).requires_grad_(True)
    grad_filters = torch.randn(channels, *kernel_size, dtype=F64)
    (expected,) = torch.autograd.grad(dog.dog_filters(params, kernel_size, profile), params, grad_filters)
    actual = torch.ops.dsconv_ext._cpu_dog_filters_backward(params.detach(), grad_filters, list(kernel_size), profile)
    assert actual.shape == params.shape and actual.dtype == F64
    torch.testing.assert_close(actual, expected, atol=1e-10, rtol=1e-8)


def test_native_dog_vjp_dtype_follows_params():
    params = params_with_extremes().float()
    grad = torch.randn(10, 3, 3)
    out = torch.ops.dsconv_ext._cpu_dog_filters_backward(params, grad, [3, 3], "sampled")
    assert out.dtype == torch.float32
    expected = dog.dog_filters_vjp(params.double(), grad.double(), (3, 3), "sampled")
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
