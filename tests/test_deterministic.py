"""Deterministic mode: bitwise repeatable gradients, and (for the native CPU kernels) gradients
independent of the thread count."""

import pytest
import torch

import dsconv_ext
from dsconv_ext.families import dog
from dsconv_ext.families.bank import master8

from conftest import BACKENDS, make_input

C = 40  # more than one 32-channel block of the channels_last weight-gradient kernel


def _inputs(op, layout):
    torch.manual_seed(0)
    x = make_input((3, C, 17, 15), layout, requires_grad=True)
    b = torch.randn(C, requires_grad=True)
    if op == "depthwise":
        return x, (torch.randn(C, 1, 5, 5, requires_grad=True), b)
    if op == "dog":
        params = dog.make_params(torch.randn(C, 8, dtype=torch.float64), torch.full((C,), 0.9, dtype=torch.float64),
                                 torch.full((C,), 0.5, dtype=torch.float64)).float()
        return x, (params.requires_grad_(True), b)
    return x, (master8(5).requires_grad_(True), torch.randn(C, 8, requires_grad=True),
               torch.randn(C, requires_grad=True), b)


def _run(op, backend, x, params):
    if op == "depthwise":
        w, b = params
        return dsconv_ext.depthwise_conv2d(x, w, b, 2, (1, 2, 2, 1), 1, backend=backend)
    if op == "dog":
        p, b = params
        return dsconv_ext.dog_conv2d(x, p, 5, b, 1, "same", 1, backend=backend)
    bank, coeffs, offset, b = params
    return dsconv_ext.bank_conv2d(x, bank, coeffs, b, 1, 2, 1, offset=offset, backend=backend)


def _grads(op, backend, layout):
    x, params = _inputs(op, layout)
    y = _run(op, backend, x, params)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(7)).contiguous(
        memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
    return [y.detach()] + list(torch.autograd.grad(y, (x,) + params, g))


def _assert_bitwise_equal(first, second):
    assert len(first) == len(second)
    for i, (a, b) in enumerate(zip(first, second)):
        assert a.shape == b.shape
        assert torch.equal(a, b), f"tensor {i} differs: max |diff| {float((a - b).abs().max())}"


OPS = ["depthwise", "dog", "bank"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("op", OPS)
def test_deterministic_mode_repeatable(backend, layout, op):
    torch.use_deterministic_algorithms(True)
    assert dsconv_ext.deterministic_enabled()
    _assert_bitwise_equal(_grads(op, backend, layout), _grads(op, backend, layout))


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("op", OPS)
def test_env_deterministic_repeatable(monkeypatch, layout, op):
    monkeypatch.setenv("DSCONV_EXT_DETERMINISTIC", "1")
    _assert_bitwise_equal(_grads(op, "cpu", layout), _grads(op, "cpu", layout))


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("op", OPS)
def test_cpu_grads_independent_of_thread_count(layout, op):
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    one = _grads(op, "cpu", layout)
    torch.set_num_threads(2)
    two = _grads(op, "cpu", layout)
    _assert_bitwise_equal(one, two)


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("on", True), ("0", False), ("", False)])
def test_deterministic_enabled_from_env(monkeypatch, value, expected):
    torch.use_deterministic_algorithms(False)
    monkeypatch.setenv("DSCONV_EXT_DETERMINISTIC", value)
    assert dsconv_ext.deterministic_enabled() is expected


def test_deterministic_enabled_follows_torch_flag():
    torch.use_deterministic_algorithms(False)
    assert dsconv_ext.deterministic_enabled() is False
    torch.use_deterministic_algorithms(True)
    assert dsconv_ext.deterministic_enabled() is True
