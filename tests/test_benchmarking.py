"""The CPU benchmark (dsconv-ext bench): rows, the in-turn timing, the families-against-depthwise
table and the files it writes, on tiny shapes (speed itself is never asserted)."""

import json

import pytest
import torch

from dsconv_ext import benchmarking
from dsconv_ext.benchmarking import Shape
from dsconv_ext.timing import interleaved_medians_ms

TINY = Shape("tiny", 1, 4, 9, 3)


def test_interleaved_medians_time_each_function_in_turns():
    order = []
    fns = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    faults = {}
    times = interleaved_medians_ms(fns, repeats=3, warmup=1, faults=faults)
    # one warm-up round in order, then three timed rounds, each running both once in some order
    assert order[:2] == ["a", "b"] and len(order) == 8
    assert all(sorted(order[i:i + 2]) == ["a", "b"] for i in range(2, 8, 2))
    assert set(times) == set(faults) == {"a", "b"} and all(t >= 0 for t in times.values())


@pytest.mark.parametrize("op", ["depthwise", "dog", "bank"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_measure_row(op, layout):
    row = benchmarking.measure(TINY, op, layout, torch.float32, repeats=2, peak=1e11, group="g")
    assert row.torch_fwd_ms > 0 and row.ours_fwd_ms > 0 and row.torch_fwd_bwd_ms > 0 and row.ours_fwd_bwd_ms > 0
    assert row.torch_fwd_bwd_page_faults >= 0 and row.ours_fwd_bwd_page_faults >= 0
    assert 0 < row.fwd_peak_share
    if op == "depthwise":
        assert row.depthwise_fwd_ms is None
    else:  # the families are measured against our depthwise op in the same turns
        assert row.depthwise_fwd_ms > 0 and row.depthwise_fwd_bwd_ms > 0


def test_run_writes_stamped_tables(monkeypatch, tmp_path):
    monkeypatch.setattr(benchmarking, "plan", lambda quick: [("tiny", TINY, op, "nchw", torch.float32)
                                                             for op in ("depthwise", "dog", "bank")])
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1")
    rows = benchmarking.run(quick=False, repeats=2, out_dir=str(tmp_path))
    assert [r.op for r in rows] == ["depthwise", "dog", "bank"]
    data = json.loads((tmp_path / "bench-cpu.json").read_text())
    machine = data["machine"]
    assert {"cpu", "cores", "threads", "torch", "commit", "allocator"} <= set(machine)
    assert "trim_threshold" in machine["allocator"]
    md = (tmp_path / "bench-cpu.md").read_text()
    assert "geomean f+b speedup" in md and "DoG / bank time / our depthwise time" in md
    assert "| tiny N1 C4 9x9 k3 | dog | nchw |" in md


def test_steady_heap_reruns_with_the_tunables():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-m", "dsconv_ext.cli", "bench", "--quick", "--repeats", "1",
                          "--steady-heap"], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "allocator: glibc with GLIBC_TUNABLES=glibc.malloc.trim_threshold=" in out.stdout
