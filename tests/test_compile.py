"""torch.compile(fullgraph=True) of the functional ops and of the modules, forward and backward,
equal to eager; the backend choice (argument or DSCONV_EXT_BACKEND) does not graph-break.

Compiler backends: "aot_eager" everywhere, and the default inductor for the functional ops and
one module. Inductor works on this CPU (a C++ compiler is present): a cold first compile takes
~2-15 s, so it is not run for the whole module grid to keep the suite short.
"""

import warnings

import pytest
import torch

import dsconv_ext
from dsconv_ext.families import dog
from dsconv_ext.families.bank import master8
from dsconv_ext.ops import backend_kernels

from conftest import assert_close_for, make_input


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def eager_and_compiled(fn, inputs, compiler):
    """Runs ``fn`` eagerly and compiled (fullgraph) on copies of ``inputs``; returns
    (eager outputs + grads, compiled outputs + grads)."""
    results = []
    for runner in (fn, torch.compile(fn, backend=compiler, fullgraph=True)):
        # clone() keeps the memory format (channels_last stays channels_last)
        leaves = [t.detach().clone().requires_grad_(t.requires_grad) if t is not None else None for t in inputs]
        y = runner(*leaves)
        torch.manual_seed(1)
        g = torch.randn_like(y)
        wanted = [l for l in leaves if l is not None and l.requires_grad]
        results.append((y, torch.autograd.grad(y, wanted, g)))
    return results


def assert_same(eager, compiled):
    (y_e, g_e), (y_c, g_c) = eager, compiled
    assert y_c.shape == y_e.shape and y_c.stride() == y_e.stride()
    assert_close_for(torch.float32, y_c, y_e, msg="output")
    for a, b in zip(g_c, g_e):
        assert_close_for(torch.float32, a, b, grad=True, msg="grad")


# inductor only with the native backend: the reference backend's graphs are the same to inductor
# (an opaque custom op), and each cold inductor compile costs seconds.
COMPILE_CASES = [("aot_eager", "cpu"), ("aot_eager", "reference"), ("inductor", "cpu")]


@pytest.mark.parametrize("compiler,backend", COMPILE_CASES)
def test_compile_depthwise(compiler, backend):
    x = make_input((2, 3, 9, 8), "channels_last", requires_grad=True)
    w = torch.randn(3, 1, 3, 5, requires_grad=True)
    b = torch.randn(3, requires_grad=True)

    def fn(x, w, b):
        return dsconv_ext.depthwise_conv2d(x, w, b, 2, (0, 1, 2, 0), 1, backend=backend).relu() * 2

    eager, compiled = eager_and_compiled(fn, (x, w, b), compiler)
    assert compiled[0].is_contiguous(memory_format=torch.channels_last)
    assert_same(eager, compiled)


@pytest.mark.parametrize("compiler,backend", COMPILE_CASES)
def test_compile_dog(compiler, backend):
    x = make_input((2, 3, 9, 8), "nchw", requires_grad=True)
    params = dog.make_params(torch.randn(3, 8, dtype=torch.float64), torch.tensor([0.6, 1.0, 1.5], dtype=torch.float64),
                             torch.tensor([0.4, 0.5, 0.7], dtype=torch.float64)).float().requires_grad_(True)
    b = torch.randn(3, requires_grad=True)

    def fn(x, params, b):
        return dsconv_ext.dog_conv2d(x, params, 5, b, 1, "same", 1, profile="integrated", backend=backend) + 1

    assert_same(*eager_and_compiled(fn, (x, params, b), compiler))


@pytest.mark.parametrize("compiler,backend", COMPILE_CASES)
def test_compile_bank(compiler, backend):
    x = make_input((2, 3, 9, 8), "nchw", requires_grad=True)
    bank = master8(3).requires_grad_(True)
    coeffs = torch.randn(3, 8, requires_grad=True)
    offset = torch.randn(3, requires_grad=True)

    def fn(x, bank, coeffs, offset):
        return dsconv_ext.bank_conv2d(x, bank, coeffs, None, 1, 1, 2, offset=offset, backend=backend).tanh()

    assert_same(*eager_and_compiled(fn, (x, bank, coeffs, offset), compiler))


def _modules():
    torch.manual_seed(0)
    return {
        "depthwise": dsconv_ext.DepthwiseConv2d(4, 3, stride=2, padding=(0, 1, 1, 0)),
        "dog": dsconv_ext.DoGConv2d(4, 5, padding="same"),
        "dog_sampled": dsconv_ext.DoGConv2d(4, 3, padding=1, profile="sampled", bias=False),
        "bank": dsconv_ext.BankConv2d(4, 3, padding=1, offset=True),
        "bank_select": dsconv_ext.BankConv2d(4, 5, padding=2, select=True),
        "bank_trainable": dsconv_ext.BankConv2d(4, 3, padding=1, bank="dog_jet", trainable_bank=True),
    }


MODULE_CASES = [("aot_eager", name) for name in _modules()] + [("inductor", "depthwise")]


@pytest.mark.parametrize("compiler,name", MODULE_CASES)
def test_compile_module(compiler, name):
    module = _modules()[name]
    x = make_input((2, 4, 8, 9), "channels_last", requires_grad=True)
    compiled = torch.compile(module, backend=compiler, fullgraph=True)
    g = torch.randn_like(module(x))
    results = []
    for runner in (module, compiled):
        module.zero_grad()
        xx = x.detach().clone().requires_grad_(True)
        y = runner(xx)
        y.backward(g)
        results.append((y.detach(), [xx.grad] + [p.grad.clone() for p in module.parameters()]))
    (y_e, g_e), (y_c, g_c) = results
    assert_close_for(torch.float32, y_c, y_e, msg="output")
    assert y_c.is_contiguous(memory_format=torch.channels_last)
    assert len(g_c) == len(g_e) >= 2
    for a, b in zip(g_c, g_e):
        assert_close_for(torch.float32, a, b, grad=True, msg="grad")


# ------------------------------------------------------------------ backend resolution


def _recording(monkeypatch, backend):
    calls = []
    original = backend_kernels.FORWARD[backend]

    def wrapper(*args, **kwargs):
        calls.append(backend)
        return original(*args, **kwargs)

    monkeypatch.setitem(backend_kernels.FORWARD, backend, wrapper)
    return calls


def test_env_backend_is_honoured_without_graph_break(monkeypatch):
    monkeypatch.setenv("DSCONV_EXT_BACKEND", "reference")
    ref_calls, cpu_calls = _recording(monkeypatch, "reference"), _recording(monkeypatch, "cpu")
    x, w = torch.randn(1, 2, 6, 6), torch.randn(2, 1, 3, 3)

    def fn(x, w):
        return dsconv_ext.depthwise_conv2d(x, w, None, 1, 1) * 3  # backend="auto", overridden by the env

    y = torch.compile(fn, backend="aot_eager", fullgraph=True)(x, w)
    assert ref_calls and not cpu_calls
    torch.testing.assert_close(y, fn(x, w))
    explanation = torch._dynamo.explain(fn)(x, w)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


@pytest.mark.parametrize("backend", ["reference", "cpu", "auto", "triton"])
def test_backend_argument_does_not_graph_break(backend):
    x, params = torch.randn(1, 2, 6, 6), torch.randn(2, 10)
    bank, coeffs = master8(3), torch.randn(2, 8)

    def fn(x):
        a = dsconv_ext.dog_conv2d(x, params, 3, None, 1, 1, backend=backend)
        return dsconv_ext.bank_conv2d(a, bank, coeffs, None, 1, 1, backend=backend)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "triton" falls back to "cpu" with a warning
        explanation = torch._dynamo.explain(fn)(x)
        assert explanation.graph_break_count == 0 and explanation.graph_count == 1
        torch._dynamo.reset()
        y = torch.compile(fn, backend="aot_eager", fullgraph=True)(x)
        torch.testing.assert_close(y, fn(x))
