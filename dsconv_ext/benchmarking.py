"""The benchmark: dsconv_ext's ops against PyTorch's own depthwise path, ``F.conv2d(groups=C)``,
in the same run, forward and forward+backward, on the shapes users run.

Entry points: ``python benchmarks/bench.py``, ``dsconv-ext bench``; ``make demo`` runs ``--quick``.
Prints a table and writes ``DIR/bench-<device>.json`` and ``.md`` stamped with the machine,
core count, torch version and git commit. Each row also gives the kernel's share of the
machine's measured fused-multiply-add peak (``_cpu_fma_throughput``): a depthwise pass costs
``N * C * H' * W' * kh * kw`` FMAs, forward+backward three passes (forward, grad-input,
grad-filter).
"""

import json
import math
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional

import torch
import torch.nn.functional as F

from .families.bank import master8
from .functional import bank_conv2d, depthwise_conv2d, dog_conv2d
from .modules import DoGConv2d
from .timing import interleaved_medians_ms


@dataclass(frozen=True)
class Shape:
    model: str
    batch: int
    channels: int
    size: int
    kernel: int
    stride: int = 1

    def label(self) -> str:
        s = f"{self.model} N{self.batch} C{self.channels} {self.size}x{self.size} k{self.kernel}"
        return s + (f" s{self.stride}" if self.stride != 1 else "")

    def fmas(self) -> int:
        out = (self.size + 2 * (self.kernel // 2) - self.kernel) // self.stride + 1
        return self.batch * self.channels * out * out * self.kernel * self.kernel


CONVNEXT_T = [Shape("convnext_t", 8, c, s, 7) for c, s in ((96, 56), (192, 28), (384, 14), (768, 7))]
MOBILE = [
    Shape("mobilenet_v2", 8, 144, 56, 3),
    Shape("mobilenet_v2", 8, 144, 56, 3, 2),
    Shape("mobilenet_v2", 8, 192, 28, 3),
    Shape("mobilenet_v2", 8, 576, 14, 3),
    Shape("mobilenet_v2", 8, 960, 7, 3),
    Shape("efficientnet_b0", 8, 144, 56, 5, 2),
    Shape("efficientnet_b0", 8, 240, 28, 5),
    Shape("efficientnet_b0", 8, 672, 14, 5),
    Shape("efficientnet_b0", 8, 1152, 7, 5),
]


@dataclass
class Row:
    group: str
    shape: str
    op: str
    layout: str
    dtype: str
    torch_fwd_ms: float
    ours_fwd_ms: float
    torch_fwd_bwd_ms: float
    ours_fwd_bwd_ms: float
    fwd_peak_share: float
    fwd_bwd_peak_share: float
    # minor page faults per forward+backward call: memory the heap handed back to the kernel and
    # faulted in again, the main source of run-to-run noise on small machines
    torch_fwd_bwd_page_faults: float = 0.0
    ours_fwd_bwd_page_faults: float = 0.0
    # DoG / bank rows: our explicit-filter depthwise op on the same input, timed in the same turns,
    # so the families' own cost is measured against it rather than across rows
    depthwise_fwd_ms: Optional[float] = None
    depthwise_fwd_bwd_ms: Optional[float] = None

    @property
    def fwd_speedup(self) -> float:
        return self.torch_fwd_ms / self.ours_fwd_ms

    @property
    def fwd_bwd_speedup(self) -> float:
        return self.torch_fwd_bwd_ms / self.ours_fwd_bwd_ms


def fma_peak_per_second() -> Optional[float]:
    """The machine's fp32 FMA throughput over all intra-op threads (best of three)."""
    if not hasattr(torch.ops.dsconv_ext, "_cpu_fma_throughput"):
        return None
    return max(torch.ops.dsconv_ext._cpu_fma_throughput(20_000_000) for _ in range(3))


def _fwd_bwd(fn, inputs):
    def run():
        out = fn()
        torch.autograd.grad(out, inputs, torch.ones_like(out))

    return run


def measure(shape: Shape, op: str, layout: str, dtype: torch.dtype, repeats: int, peak: Optional[float],
            group: str) -> Row:
    torch.manual_seed(0)
    x = torch.randn(shape.batch, shape.channels, shape.size, shape.size, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    c, k, pad = shape.channels, shape.kernel, shape.kernel // 2
    weight = (torch.randn(c, 1, k, k) * 0.1).to(dtype).requires_grad_(True)
    bias = torch.randn(c, dtype=dtype).requires_grad_(True)
    conv = dict(stride=shape.stride, padding=pad)
    if op == "depthwise":
        ours, inputs = (lambda: depthwise_conv2d(x, weight, bias, **conv)), (x, weight, bias)
    elif op == "dog":
        params = DoGConv2d(c, k).params.detach().requires_grad_(True)
        ours, inputs = (lambda: dog_conv2d(x, params, k, bias, **conv)), (x, params, bias)
    elif op == "bank":
        bank, coeffs = master8(k), (torch.randn(c, 8) * 0.1).requires_grad_(True)
        ours, inputs = (lambda: bank_conv2d(x, bank, coeffs, bias, **conv)), (x, coeffs, bias)
    else:
        raise ValueError(op)
    reference = lambda: F.conv2d(x, weight, bias, shape.stride, pad, 1, c)
    runs = {
        "torch_fwd_ms": reference,
        "ours_fwd_ms": ours,
        "torch_fwd_bwd_ms": _fwd_bwd(reference, (x, weight, bias)),
        "ours_fwd_bwd_ms": _fwd_bwd(ours, inputs),
    }
    if op != "depthwise":
        depthwise = lambda: depthwise_conv2d(x, weight, bias, **conv)
        runs.update(depthwise_fwd_ms=depthwise, depthwise_fwd_bwd_ms=_fwd_bwd(depthwise, (x, weight, bias)))
    faults = {}
    times = interleaved_medians_ms(runs, repeats, warmup=2, faults=faults)
    share = lambda passes, ms: passes * shape.fmas() / (ms * 1e-3) / peak if peak else float("nan")
    return Row(group, shape.label(), op, layout, str(dtype).replace("torch.", ""), **times,
               fwd_peak_share=share(1, times["ours_fwd_ms"]), fwd_bwd_peak_share=share(3, times["ours_fwd_bwd_ms"]),
               torch_fwd_bwd_page_faults=faults["torch_fwd_bwd_ms"], ours_fwd_bwd_page_faults=faults["ours_fwd_bwd_ms"])


def plan(quick: bool):
    """(group, shape, op, layout, dtype) of every row."""
    layouts = ("nchw", "channels_last")
    if quick:
        return [("convnext_t", CONVNEXT_T[0], op, layout, torch.float32)
                for op in ("depthwise", "dog", "bank") for layout in layouts]
    rows = [("convnext_t fp32", s, "depthwise", l, torch.float32) for s in CONVNEXT_T for l in layouts]
    rows += [("mobile fp32", s, "depthwise", l, torch.float32) for s in MOBILE for l in layouts]
    rows += [("convnext_t bf16", s, "depthwise", l, torch.bfloat16) for s in CONVNEXT_T for l in layouts]
    rows += [("families fp32", s, op, l, torch.float32) for s in CONVNEXT_T[:2] for op in ("dog", "bank")
             for l in layouts]
    return rows


def geomean(values: List[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def allocator_note() -> str:
    """How this process's heap was set up: the benchmark's numbers depend on it (see README)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "").strip()
    return f"glibc with GLIBC_TUNABLES={tunables}" if tunables else "glibc defaults"


def machine_stamp(peak: Optional[float]) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
        info = {key.strip(): value.strip() for key, value in info.items()}
        cpu = info.get("model name", cpu)
        # Virtual machines often show a bare "AMD EPYC": family and model tell the generation.
        if "cpu family" in info:
            cpu += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    except OSError:
        pass
    try:
        commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                         stderr=subprocess.DEVNULL, cwd=Path(__file__).parent).strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"device": "cpu", "cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "commit": commit, "allocator": allocator_note(),
            "fma_peak_gflops": round(peak / 1e9, 1) if peak else None}


def format_table(rows: List[Row]) -> List[str]:
    lines = ["| shape | op | layout | dtype | torch fwd ms | ours fwd ms | fwd speedup | torch f+b ms | "
             "ours f+b ms | f+b speedup | fwd % peak | f+b % peak |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.shape} | {r.op} | {r.layout} | {r.dtype} | {r.torch_fwd_ms:.2f} | {r.ours_fwd_ms:.2f} | "
                     f"{r.fwd_speedup:.2f}x | {r.torch_fwd_bwd_ms:.2f} | {r.ours_fwd_bwd_ms:.2f} | "
                     f"{r.fwd_bwd_speedup:.2f}x | {100 * r.fwd_peak_share:.0f} | {100 * r.fwd_bwd_peak_share:.0f} |")
    return lines


def summary(rows: List[Row]) -> List[str]:
    lines = ["| group | rows | geomean fwd speedup | geomean f+b speedup |", "|---|---|---|---|"]
    for group in dict.fromkeys(r.group for r in rows):
        members = [r for r in rows if r.group == group]
        lines.append(f"| {group} | {len(members)} | {geomean([r.fwd_speedup for r in members]):.2f}x | "
                     f"{geomean([r.fwd_bwd_speedup for r in members]):.2f}x |")
    families = [r for r in rows if r.depthwise_fwd_ms]
    if families:
        lines.append(f"| DoG / bank time / our depthwise time | {len(families)} | "
                     f"{geomean([r.ours_fwd_ms / r.depthwise_fwd_ms for r in families]):.2f} | "
                     f"{geomean([r.ours_fwd_bwd_ms / r.depthwise_fwd_bwd_ms for r in families]):.2f} |")
    return lines


def family_table(rows: List[Row]) -> List[str]:
    """DoG and bank rows against our depthwise op on the same input, measured in the same turns."""
    lines = ["| shape | op | layout | depthwise fwd ms | family fwd ms | ratio | depthwise f+b ms | family f+b ms | "
             "ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.depthwise_fwd_ms:
            lines.append(f"| {r.shape} | {r.op} | {r.layout} | {r.depthwise_fwd_ms:.2f} | {r.ours_fwd_ms:.2f} | "
                         f"{r.ours_fwd_ms / r.depthwise_fwd_ms:.2f} | {r.depthwise_fwd_bwd_ms:.2f} | "
                         f"{r.ours_fwd_bwd_ms:.2f} | {r.ours_fwd_bwd_ms / r.depthwise_fwd_bwd_ms:.2f} |")
    return lines


def run(quick: bool = False, repeats: int = 5, out_dir: Optional[str] = "benchmarks/results") -> List[Row]:
    peak = fma_peak_per_second()
    stamp = machine_stamp(peak)
    print(" | ".join(f"{k}: {v}" for k, v in stamp.items()))
    rows = []
    for group, shape, op, layout, dtype in plan(quick):
        row = measure(shape, op, layout, dtype, 3 if quick else repeats, peak, group)
        rows.append(row)
        print(f"{row.shape:<38} {row.op:<9} {row.layout:<13} {row.dtype:<8} fwd {row.torch_fwd_ms:7.2f} -> "
              f"{row.ours_fwd_ms:6.2f} ms ({row.fwd_speedup:5.2f}x)   f+b {row.torch_fwd_bwd_ms:7.2f} -> "
              f"{row.ours_fwd_bwd_ms:6.2f} ms ({row.fwd_bwd_speedup:5.2f}x)   peak {100 * row.fwd_peak_share:3.0f}% / "
              f"{100 * row.fwd_bwd_peak_share:3.0f}%", flush=True)
    print()
    print("\n".join(summary(rows)))
    if any(r.depthwise_fwd_ms for r in rows):
        print()
        print("\n".join(family_table(rows)))
    if out_dir and not quick:
        directory = Path(out_dir)
        directory.mkdir(parents=True, exist_ok=True)
        payload = {"machine": stamp, "rows": [asdict(r) for r in rows]}
        (directory / "bench-cpu.json").write_text(json.dumps(payload, indent=1))
        header = [f"Measured on {stamp['cpu']} ({stamp['cores']} cores, {stamp['threads']} threads, "
                  f"fp32 FMA peak {stamp['fma_peak_gflops']} GFMA/s), torch {stamp['torch']}, commit "
                  f"{stamp['commit']}, with `dsconv-ext bench`, allocator: {stamp['allocator']}. Times are "
                  f"medians of {repeats} runs, PyTorch's and ours timed in turns.", ""]
        families = family_table(rows)
        body = header + summary(rows) + [""] + format_table(rows)
        if len(families) > 2:
            body += ["", "DoG and bank filters against our explicit-filter depthwise op (same input, same turns):", ""]
            body += families
        (directory / "bench-cpu.md").write_text("\n".join(body) + "\n")
        print(f"\nwrote {directory / 'bench-cpu.json'} and {directory / 'bench-cpu.md'}")
    return rows
