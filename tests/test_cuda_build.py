"""The CUDA extension on any machine: dsconv_ext._C_cuda imports where it was built (CI builds it
with DSCONV_EXT_FORCE_CUDA=1, so there it must), registers the _cuda_* ops with their schemas
and fake kernels, rejects CPU tensors with a clear message, and leaves the CPU backend alone."""

import importlib
import os

import pytest
import torch

import dsconv_ext
from dsconv_ext import _native, cuda_kernels

SCHEMAS = {
    "_cuda_depthwise_forward": "(Tensor x, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, "
    "int[2] dilation, bool channels_last) -> Tensor",
    "_cuda_depthwise_backward": "(Tensor grad_out, Tensor x, Tensor weight, int[2] stride, int[4] padding, "
    "int[2] dilation, bool need_input, bool need_weight, bool need_bias, bool channels_last, bool deterministic) "
    "-> (Tensor, Tensor, Tensor)",
    "_cuda_dog_forward": "(Tensor x, Tensor params, int[2] kernel_size, Tensor? bias, int[2] stride, int[4] padding, "
    "int[2] dilation, str profile, bool channels_last) -> Tensor",
    "_cuda_dog_backward": "(Tensor grad_out, Tensor x, Tensor params, int[2] kernel_size, int[2] stride, "
    "int[4] padding, int[2] dilation, str profile, bool need_input, bool need_params, bool need_bias, "
    "bool channels_last, bool deterministic) -> (Tensor, Tensor, Tensor)",
    "_cuda_bank_forward": "(Tensor x, Tensor bank, Tensor coeffs, Tensor? offset, Tensor? bias, int[2] stride, "
    "int[4] padding, int[2] dilation, bool channels_last) -> Tensor",
    "_cuda_bank_backward": "(Tensor grad_out, Tensor x, Tensor bank, Tensor coeffs, Tensor? offset, int[2] stride, "
    "int[4] padding, int[2] dilation, bool need_input, bool need_filters, bool need_bias, bool channels_last, "
    "bool deterministic) -> (Tensor, Tensor, Tensor)",
}


def _built() -> bool:
    return importlib.util.find_spec("dsconv_ext._C_cuda") is not None


def _require_built():
    forced = os.environ.get("DSCONV_EXT_FORCE_CUDA", "").strip().lower() in ("1", "true", "yes", "on")
    if not _built():
        if forced:
            pytest.fail("DSCONV_EXT_FORCE_CUDA=1 but dsconv_ext._C_cuda was not built")
        pytest.skip("dsconv_ext._C_cuda not built (no CUDA toolkit at build time)")


def test_cuda_module_imports_and_registers_ops():
    _require_built()
    assert _native.CUDA_IMPORT_ERROR is None, _native.CUDA_IMPORT_ERROR
    importlib.import_module("dsconv_ext._C_cuda")
    assert cuda_kernels.available()


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_cuda_op_schemas(name):
    _require_built()
    schema = str(getattr(torch.ops.dsconv_ext, name).default._schema)
    assert schema == f"dsconv_ext::{name}{SCHEMAS[name]}"


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_cuda_ops_have_fake_kernels(name):
    _require_built()
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"dsconv_ext::{name}", "Meta") or \
        torch.library.get_kernel(f"dsconv_ext::{name}", "Meta") is not None


def _cpu_calls():
    x = torch.randn(1, 2, 5, 5)
    g = torch.randn(1, 2, 5, 5)
    w = torch.randn(2, 1, 3, 3)
    params = torch.randn(2, 10)
    bank, coeffs = torch.randn(4, 3, 3), torch.randn(2, 4)
    geo = ([1, 1], [1, 1, 1, 1], [1, 1])
    ops = torch.ops.dsconv_ext
    return {
        "_cuda_depthwise_forward": lambda: ops._cuda_depthwise_forward(x, w, None, *geo, False),
        "_cuda_depthwise_backward": lambda: ops._cuda_depthwise_backward(g, x, w, *geo, True, True, True, False, True),
        "_cuda_dog_forward": lambda: ops._cuda_dog_forward(x, params, [3, 3], None, *geo, "integrated", False),
        "_cuda_dog_backward": lambda: ops._cuda_dog_backward(g, x, params, [3, 3], *geo, "integrated", True, True,
                                                             True, False, False),
        "_cuda_bank_forward": lambda: ops._cuda_bank_forward(x, bank, coeffs, None, None, *geo, False),
        "_cuda_bank_backward": lambda: ops._cuda_bank_backward(g, x, bank, coeffs, None, *geo, True, True, True,
                                                               False, False),
    }


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_cuda_ops_reject_cpu_tensors_clearly(name):
    _require_built()
    with pytest.raises(RuntimeError, match="x must be a CUDA tensor"):
        _cpu_calls()[name]()


def test_cpu_backend_unaffected():
    assert "cpu" in dsconv_ext.available_backends()
    x, w = torch.randn(2, 4, 9, 9), torch.randn(4, 1, 3, 3)
    y = dsconv_ext.depthwise_conv2d(x, w, padding=1, backend="cpu")
    ref = torch.nn.functional.conv2d(x, w, padding=1, groups=4)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    # CPU tensors never resolve to the cuda backend.
    assert dsconv_ext.backends.resolve_backend("auto", "cpu") == "cpu"


def test_cuda_backend_availability_follows_device():
    _require_built()
    assert dsconv_ext.backends._runs_on("cuda", "cuda")
    assert not dsconv_ext.backends._runs_on("cuda", "cpu")
    assert ("cuda" in dsconv_ext.available_backends()) == torch.cuda.is_available()
