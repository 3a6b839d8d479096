"""Backend selection: available_backends(), the DSCONV_EXT_BACKEND override, unknown names, and
the warn-once fallback for backends that cannot run on the tensor's device."""

import warnings

import pytest
import torch

import dsconv_ext
from dsconv_ext import backends
from dsconv_ext.families.bank import master8
from dsconv_ext.ops import backend_kernels, cpu_native_op
from dsconv_ext.reference import bank_conv2d_reference, depthwise_conv2d_reference, dog_conv2d_reference


@pytest.fixture
def record(monkeypatch):
    """Wraps FORWARD / BACKWARD of every backend so a test can see which one ran."""
    calls = []
    for table, kind in ((backend_kernels.FORWARD, "forward"), (backend_kernels.BACKWARD, "backward")):
        for name, fn in list(table.items()):
            def wrapper(*args, _fn=fn, _name=name, _kind=kind, **kwargs):
                calls.append((_kind, _name))
                return _fn(*args, **kwargs)

            monkeypatch.setitem(table, name, wrapper)
    # The functional ops send cpu-backend calls to the ops with C++ autograd instead of the
    # tables: their forward is seen here, their backward by a hook on the output's gradient.
    for name in ("cpu_depthwise_conv2d", "cpu_dog_conv2d", "cpu_bank_conv2d"):
        def native_wrapper(*args, _native=getattr(cpu_native_op, name), **kwargs):
            calls.append(("forward", "cpu"))
            y = _native(*args, **kwargs)
            if y.requires_grad:
                y.register_hook(lambda grad: calls.append(("backward", "cpu")))
            return y

        monkeypatch.setattr(cpu_native_op, name, native_wrapper)
    return calls


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Forget which fallback warnings were already given, so "warn once" is observable."""
    monkeypatch.setattr(backends, "_warned", set())


def _depthwise(backend="auto", requires_grad=False):
    x = torch.randn(2, 3, 7, 6, requires_grad=requires_grad)
    w = torch.randn(3, 1, 3, 3, requires_grad=requires_grad)
    y = dsconv_ext.depthwise_conv2d(x, w, None, 1, 1, backend=backend)
    return x, w, y


def test_available_backends():
    available = dsconv_ext.available_backends()
    assert isinstance(available, list)
    assert "cpu" in available and "reference" in available
    assert set(available) <= {"cuda", "triton", "cpu", "reference"}
    assert len(set(available)) == len(available)
    # fastest first: the native kernels before the pure-PyTorch oracle
    assert available.index("cpu") < available.index("reference")
    if not torch.cuda.is_available():
        assert "cuda" not in available


def test_auto_picks_cpu_on_cpu_tensors(record):
    _depthwise("auto")
    assert record == [("forward", "cpu")]


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_explicit_backend_is_used_forward_and_backward(record, backend):
    x, w, y = _depthwise(backend, requires_grad=True)
    y.sum().backward()
    assert record == [("forward", backend), ("backward", backend)]


@pytest.mark.parametrize("requested", ["auto", "cpu", "reference"])
def test_env_forces_reference(monkeypatch, record, requested):
    monkeypatch.setenv("DSCONV_EXT_BACKEND", "reference")
    x, w, y = _depthwise(requested, requires_grad=True)
    y.sum().backward()
    assert record == [("forward", "reference"), ("backward", "reference")]
    torch.testing.assert_close(y, depthwise_conv2d_reference(x, w, None, 1, 1))


def test_env_forces_cpu_for_family_ops(monkeypatch, record):
    monkeypatch.setenv("DSCONV_EXT_BACKEND", "cpu")
    x = torch.randn(1, 3, 6, 6)
    dsconv_ext.dog_conv2d(x, torch.randn(3, 10), 3, backend="reference")
    dsconv_ext.bank_conv2d(x, master8(3), torch.randn(3, 8), backend="reference")
    assert record == [("forward", "cpu"), ("forward", "cpu")]


def test_env_is_read_on_every_eager_call(monkeypatch, record):
    monkeypatch.setenv("DSCONV_EXT_BACKEND", "reference")
    _depthwise("auto")
    monkeypatch.delenv("DSCONV_EXT_BACKEND")
    _depthwise("auto")
    monkeypatch.setenv("DSCONV_EXT_BACKEND", "auto")
    _depthwise("reference")  # "auto" in the env overrides the request too
    assert record == [("forward", "reference"), ("forward", "cpu"), ("forward", "cpu")]


@pytest.mark.parametrize("value", ["gpu", "fast", "reference2"])
def test_env_unknown_value(monkeypatch, value):
    monkeypatch.setenv("DSCONV_EXT_BACKEND", value)
    with pytest.raises(ValueError, match="DSCONV_EXT_BACKEND"):
        _depthwise()


@pytest.mark.parametrize("backend", ["gpu", "Auto2", "cudnn"])
def test_unknown_backend_argument(backend):
    with pytest.raises(ValueError, match="backend:"):
        _depthwise(backend)


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_unavailable_backend_warns_once_and_falls_back(record, fresh_warnings, backend):
    x = torch.randn(2, 3, 7, 6, requires_grad=True)
    w = torch.randn(3, 1, 3, 3, requires_grad=True)
    with pytest.warns(RuntimeWarning, match=backend):
        y = dsconv_ext.depthwise_conv2d(x, w, None, 1, 1, backend=backend)
    torch.testing.assert_close(y, depthwise_conv2d_reference(x, w, None, 1, 1))
    assert record == [("forward", "cpu")]
    # once: the second call is silent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y2 = dsconv_ext.depthwise_conv2d(x, w, None, 1, 1, backend=backend)
    assert torch.equal(y, y2)
    # and the backward of the fallback is right too
    gx, gw = torch.autograd.grad(y.square().sum(), (x, w))
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    gx64, gw64 = torch.autograd.grad(depthwise_conv2d_reference(x64, w64, None, 1, 1).square().sum(), (x64, w64))
    torch.testing.assert_close(gx.double(), gx64, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gw.double(), gw64, atol=1e-4, rtol=1e-4)


def test_unavailable_backend_in_env_warns_and_falls_back(monkeypatch, fresh_warnings):
    monkeypatch.setenv("DSCONV_EXT_BACKEND", "cuda")
    x = torch.randn(1, 3, 6, 6)
    params, coeffs = torch.randn(3, 10), torch.randn(3, 8)
    with pytest.warns(RuntimeWarning):
        y = dsconv_ext.dog_conv2d(x, params, 3, padding=1)
    torch.testing.assert_close(y, dog_conv2d_reference(x, params, 3, padding=1), atol=1e-5, rtol=1e-5)
    y = dsconv_ext.bank_conv2d(x, master8(3), coeffs, padding=1)
    torch.testing.assert_close(y, bank_conv2d_reference(x, master8(3), coeffs, padding=1), atol=1e-5, rtol=1e-5)


def test_resolve_backend_directly():
    assert backends.resolve_backend("auto", "cpu") == "cpu"
    assert backends.resolve_backend("reference", "cpu") == "reference"
    assert backends.resolve_backend("cpu", "cpu") == "cpu"
    # a device with no native kernels runs on the reference backend
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert backends.resolve_backend("cpu", "meta") == "reference"
    assert backends.resolve_backend("auto", "meta") == "reference"
