"""Triton backend: registration (opcheck), torch.compile, deterministic mode, backend choice,
errors, the auto table, and the GPU benchmark script's --smoke run.

CPU: Triton's interpreter (see triton_setup.py). There the ops stay opaque in compiled graphs
(interpreter kernels cannot be traced), so Inductor on CPU compiles around them; on a GPU the
same tests trace into the kernels.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dsconv_ext
from dsconv_ext import backends
from dsconv_ext.families import dog
from dsconv_ext.families.bank import master8
from dsconv_ext.reference import depthwise_conv2d_reference
from dsconv_ext.triton import selection

from conftest import assert_close_for, make_input
from triton_setup import DEVICE, ON_GPU, interpret_env, load_kernels  # noqa: F401  (autouse fixture)

load_kernels()  # before anything imports the kernel modules
from dsconv_ext.triton import launch  # noqa: E402
ops = torch.ops.dsconv_ext
ROOT = Path(__file__).resolve().parents[1]


def _x(shape=(2, 3, 7, 8), layout="nchw", requires_grad=True, dtype=torch.float32):
    return make_input(shape, layout, dtype).to(DEVICE).requires_grad_(requires_grad)


def _check(op, args, utils=("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")):
    result = torch.library.opcheck(op, args, test_utils=utils)
    assert result and all(v in ("SUCCESS", "SKIPPED") for v in result.values()), result


# --------------------------------------------------------------------------- opcheck


def test_opcheck_depthwise():
    w = torch.randn(3, 1, 3, 5, device=DEVICE, requires_grad=True)
    b = torch.randn(3, device=DEVICE, requires_grad=True)
    _check(ops.triton_depthwise_conv2d, (_x(layout="channels_last"), w, b, [2, 1], [0, 1, 2, 0], [1, 2]))


def test_opcheck_families():
    params = torch.randn(3, dog.NUM_PARAMS, device=DEVICE, requires_grad=True)
    _check(ops.triton_dog_conv2d, (_x(), params, [3, 3], None, [1, 1], [1, 1, 1, 1], [1, 1], "sampled"),
           utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    bank = master8(3).to(DEVICE).requires_grad_(True)
    coeffs = torch.randn(3, 8, device=DEVICE, requires_grad=True)
    offset = torch.randn(3, device=DEVICE, requires_grad=True)
    _check(ops.triton_bank_conv2d, (_x(), bank, coeffs, offset, None, [1, 1], [1, 1, 1, 1], [1, 1]),
           utils=("test_schema", "test_autograd_registration", "test_faketensor"))


def test_opcheck_backward_op():
    x = _x(requires_grad=False)
    w = torch.randn(3, 1, 3, 3, device=DEVICE)
    g = torch.randn(2, 3, 4, 8, device=DEVICE)
    _check(ops.triton_depthwise_conv2d_backward, (g, x, w, [2, 1], [1, 1, 1, 1], [1, 1], True, True, True, True),
           utils=("test_schema", "test_faketensor"))


# --------------------------------------------------------------------------- torch.compile


@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
def test_compile_fullgraph(compiler):
    torch._dynamo.reset()
    x = _x((1, 3, 7, 8), "channels_last")
    w = torch.randn(3, 1, 3, 3, device=DEVICE, requires_grad=True)
    params = dog.make_params(torch.randn(3, 8, dtype=torch.float64), torch.tensor([0.6, 1.0, 1.5], dtype=torch.float64),
                             torch.tensor([0.4, 0.5, 0.7], dtype=torch.float64)).float().to(DEVICE).requires_grad_(True)

    def fn(x, w, params):
        y = dsconv_ext.depthwise_conv2d(x, w, None, 1, 1, backend="triton").relu()
        return dsconv_ext.dog_conv2d(y, params, 3, None, 2, (1, 0, 1, 0), backend="triton") * 2

    results = []
    for runner in (fn, torch.compile(fn, backend=compiler, fullgraph=True)):
        leaves = [t.detach().clone().requires_grad_(True) for t in (x, w, params)]
        y = runner(*leaves)
        g = torch.ones_like(y)
        results.append([y] + list(torch.autograd.grad(y, leaves, g)))
    for a, b in zip(*results):
        assert_close_for(torch.float32, a, b, grad=True)
    assert results[1][0].is_contiguous(memory_format=torch.channels_last)
    explanation = torch._dynamo.explain(fn)(x, w, params)
    assert explanation.graph_break_count == 0
    torch._dynamo.reset()


# --------------------------------------------------------------------------- determinism


def _all_grads(op):
    torch.manual_seed(0)
    x = _x((1, 18, 9, 9), "channels_last")  # 2 channel blocks, 2 pixel chunks in the interpreter
    b = torch.randn(18, device=DEVICE, requires_grad=True)
    if op == "depthwise":
        w = torch.randn(18, 1, 3, 3, device=DEVICE, requires_grad=True)
        y = dsconv_ext.depthwise_conv2d(x, w, b, 1, 1, backend="triton")
        leaves = (x, w, b)
    else:
        coeffs = torch.randn(18, 8, device=DEVICE, requires_grad=True)
        y = dsconv_ext.bank_conv2d(x, master8(3).to(DEVICE), coeffs, b, 1, 1, backend="triton")
        leaves = (x, coeffs, b)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    return [y.detach()] + list(torch.autograd.grad(y, leaves, g))


@pytest.mark.parametrize("op", ["depthwise", "bank"])
def test_deterministic_is_bitwise_repeatable(monkeypatch, op):
    monkeypatch.setenv("DSCONV_EXT_DETERMINISTIC", "1")
    first, second = _all_grads(op), _all_grads(op)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_atomic_and_partial_sums_agree():
    """The atomic grad-filter variant (deterministic=False) and the fixed-order one compute the
    same sums (up to rounding); both use more than one pixel chunk here."""
    x = _x((2, 5, 12, 12), requires_grad=False)
    w = torch.randn(5, 1, 3, 3, device=DEVICE)
    g = torch.randn(2, 5, 12, 12, device=DEVICE)
    assert launch.wgrad_chunks(x, (3, 3), 2 * 12 * 12) > 1
    det = launch.depthwise_backward(g, x, w, [1, 1], [1, 1, 1, 1], [1, 1], False, True, True, True)
    atomic = launch.depthwise_backward(g, x, w, [1, 1], [1, 1, 1, 1], [1, 1], False, True, True, False)
    x64 = x.cpu().double().requires_grad_(True)
    w64 = w.cpu().double().requires_grad_(True)
    gw64, = torch.autograd.grad(depthwise_conv2d_reference(x64, w64, None, 1, 1), (w64,), g.cpu().double())
    for name, (gx, gw, gb) in (("deterministic", det), ("atomic", atomic)):
        assert gx.numel() == 0 and gw.dtype == torch.float32 and gb.dtype == torch.float32
        assert_close_for(torch.float32, gw.cpu(), gw64, grad=True, msg=name)
        assert_close_for(torch.float32, gb.cpu(), g.cpu().double().sum((0, 2, 3)), grad=True, msg=name)


# --------------------------------------------------------------------------- backend choice


def test_triton_backend_is_used_and_listed(monkeypatch):
    calls = []
    original = launch.depthwise_forward
    monkeypatch.setattr(launch, "depthwise_forward", lambda *a: calls.append(1) or original(*a))
    x = _x(requires_grad=False)
    y = dsconv_ext.depthwise_conv2d(x, torch.randn(3, 1, 3, 3, device=DEVICE), None, 1, 1, backend="triton")
    assert calls and y.shape == x.shape
    assert "triton" in dsconv_ext.available_backends()


@pytest.mark.skipif(ON_GPU, reason="CPU rules")
def test_cpu_rules(monkeypatch):
    assert backends.resolve_backend("triton", "cpu") == "triton"  # TRITON_INTERPRET=1 is set here
    assert backends.resolve_backend("auto", "cpu") == "cpu"       # auto never picks the interpreter
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not backends._runs_on("triton", "cpu")


def test_selection_rule(tmp_path, monkeypatch):
    key = ("depthwise", 96, 56, 56, 7, 7, 1, 1, "bfloat16", "channels_last")
    # no table: cuda if built, else triton
    assert selection.choose(["cuda", "triton"], key, entries=[]) == "cuda"
    assert selection.choose(["triton"], key, entries=[]) == "triton"
    entries = [
        {"op": "depthwise", "C": 96, "H": 56, "W": 56, "kernel": [7, 7], "stride": [1, 1], "dtype": "bfloat16",
         "layout": "channels_last", "times_ms": {"torch": 3.0, "cuda": 2.0, "triton": 1.5}},
        {"op": "depthwise", "C": 768, "H": 7, "W": 7, "kernel": [7, 7], "stride": [1, 1], "dtype": "bfloat16",
         "layout": "channels_last", "times_ms": {"torch": 1.0, "cuda": 0.4, "triton": 0.5}},
    ]
    assert selection.choose(["cuda", "triton"], key, entries) == "triton"
    assert selection.choose(["cuda"], key, entries) == "cuda"  # only what is available
    small = ("depthwise", 700, 8, 8, 7, 7, 1, 1, "bfloat16", "channels_last")
    assert selection.choose(["cuda", "triton"], small, entries) == "cuda"  # nearest size
    other = ("depthwise", 96, 56, 56, 3, 3, 1, 1, "bfloat16", "channels_last")
    assert selection.choose(["cuda", "triton"], other, entries) == "cuda"  # no entry for k3: preference
    path = tmp_path / "table.json"
    path.write_text(json.dumps({"gpu": "x", "entries": entries}))
    assert selection.load_table(path) == entries
    assert selection.load_table(tmp_path / "missing.json") is None
    assert selection.gpu_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


# --------------------------------------------------------------------------- errors


def test_errors_are_the_functional_ones():
    x = _x(requires_grad=False)
    with pytest.raises(TypeError, match="weight: expected dtype"):
        dsconv_ext.depthwise_conv2d(x, torch.randn(3, 1, 3, 3, dtype=torch.float64, device=DEVICE), backend="triton")
    with pytest.raises(ValueError, match="weight: expected shape"):
        dsconv_ext.depthwise_conv2d(x, torch.randn(4, 1, 3, 3, device=DEVICE), backend="triton")
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        dsconv_ext.depthwise_conv2d(x, torch.randn(3, 1, 9, 9, device=DEVICE), backend="triton")
    with pytest.raises(ValueError, match="profile"):
        dsconv_ext.dog_conv2d(x, torch.randn(3, 10, device=DEVICE), 3, profile="gauss", backend="triton")
    with pytest.raises(ValueError, match="params: expected finite"):
        dsconv_ext.dog_conv2d(x, torch.full((3, 10), float("nan"), device=DEVICE), 3, backend="triton")


def test_tap_constants_match_the_family():
    from dsconv_ext.triton import taps

    assert taps.SIGMA_MIN == dog.SIGMA_MIN and taps.GAMMA_MIN == dog.GAMMA_MIN
    assert taps.GAMMA_SPAN == pytest.approx(dog.GAMMA_MAX - dog.GAMMA_MIN)


# --------------------------------------------------------------------------- benchmark script


@pytest.mark.skipif(ON_GPU, reason="the smoke run is the CPU interpreter check")
def test_bench_gpu_smoke(tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="1")
    env.pop("DSCONV_EXT_BACKEND", None)
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--smoke", "--out", str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads((tmp_path / "bench-gpu-cpu-interpreter.json").read_text())
    assert data["meta"]["backends"] == ["triton"] and data["meta"]["torch"] == torch.__version__
    assert {r["op"] for r in data["rows"]} == {"depthwise", "dog", "bank"}
    for row in data["rows"]:
        assert row["fwd_bwd_ms"]["triton"] > 0 and row["gbs"]["triton"]["fwd_bwd"] > 0
        assert 0 < row["roofline"]["triton"]["fwd_bwd"]
    md = (tmp_path / "bench-gpu-cpu-interpreter.md").read_text()
    assert "triton f+b GB/s" in md and data["meta"]["commit"] in md
    table = json.loads((tmp_path / "auto-table-cpu-interpreter.json").read_text())
    assert len(table["entries"]) == len(data["rows"])
    assert selection.load_table(tmp_path / "auto-table-cpu-interpreter.json")
