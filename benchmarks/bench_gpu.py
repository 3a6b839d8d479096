"""GPU benchmark: PyTorch's depthwise convolution (F.conv2d(groups=C): cuDNN or ATen, whatever it
picks) against every built GPU backend of dsconv_ext (triton, cuda), forward and forward+backward,
in one run.

    python benchmarks/bench_gpu.py                       # full run on the current GPU
    python benchmarks/bench_gpu.py --peak-gbs 3350 --peak-tflops 67   # override the roofline peaks
    TRITON_INTERPRET=1 python benchmarks/bench_gpu.py --smoke --out /tmp/x   # CPU, tiny shapes (tests)

Times are CUDA-event medians over ``--repeats`` runs after ``--warmup`` runs. For each row it
prints achieved GB/s (the minimal HBM bytes of the op over the time) and the roofline share:
the op's lower-bound time ``max(bytes / peak bandwidth, FMAs / peak FMA rate)`` over the time.
Writes ``benchmarks/results/bench-gpu-<gpu-slug>.{json,md}`` (GPU name, torch / triton / CUDA
versions, git commit) and ``auto-table-<gpu-slug>.json``, the table ``backend="auto"`` reads.
"""

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# Peak HBM bandwidth (GB/s) and dense fp32 FMA rate (TFMA/s = non-tensor-core TFLOPS / 2),
# from NVIDIA's data sheets; matched on the device name (first match wins).
PEAKS = [
    ("H200", 4800.0, 33.5),
    ("H100 PCIe", 2000.0, 25.6),
    ("H100 NVL", 3900.0, 30.0),
    ("H100", 3350.0, 33.5),  # SXM5 80GB HBM3
    ("A100-SXM4-80GB", 2039.0, 9.75),
    ("A100", 1555.0, 9.75),
]

CONVNEXT = [(96, 56), (192, 28), (384, 14), (768, 7)]
MOBILE = [  # (C, H, k, stride): MobileNetV2 / EfficientNet-B0 depthwise layers
    (144, 56, 3, 1), (144, 56, 3, 2), (192, 28, 3, 1), (384, 14, 3, 1), (960, 7, 3, 1),
    (240, 28, 5, 1), (672, 14, 5, 1), (1152, 7, 5, 1),
]
LARGE = [(128, 56, 13), (256, 28, 13), (128, 56, 31), (256, 28, 31)]  # RepLKNet / SLaK-style


def shapes(smoke: bool):
    """(group, N, C, H, k, stride, dtype, layout, op)."""
    if smoke:
        return [
            ("smoke", 1, 3, 7, 3, 1, torch.float32, "nchw", "depthwise"),
            ("smoke", 1, 18, 6, 3, 2, torch.bfloat16, "channels_last", "depthwise"),
            ("smoke", 1, 3, 6, 5, 1, torch.float32, "channels_last", "dog"),
            ("smoke", 1, 3, 6, 3, 1, torch.float32, "nchw", "bank"),
        ]
    rows = []
    for c, h in CONVNEXT:
        rows.append(("convnext_t k7 bf16 CL", 64, c, h, 7, 1, torch.bfloat16, "channels_last", "depthwise"))
        rows.append(("convnext_t k7 fp32 NCHW", 64, c, h, 7, 1, torch.float32, "nchw", "depthwise"))
    for c, h, k, s in MOBILE:
        rows.append(("mobile bf16 CL", 64, c, h, k, s, torch.bfloat16, "channels_last", "depthwise"))
        rows.append(("mobile fp32 NCHW", 64, c, h, k, s, torch.float32, "nchw", "depthwise"))
    for c, h, k in LARGE:
        rows.append(("large-kernel bf16 CL", 64, c, h, k, 1, torch.bfloat16, "channels_last", "depthwise"))
        rows.append(("large-kernel fp32 NCHW", 64, c, h, k, 1, torch.float32, "nchw", "depthwise"))
    for c, h in CONVNEXT[:2]:
        for op in ("dog", "bank"):
            rows.append(("families k7 bf16 CL", 64, c, h, 7, 1, torch.bfloat16, "channels_last", op))
    return rows


def slug(name: str) -> str:
    from dsconv_ext.triton.selection import gpu_slug

    return gpu_slug(name)


def peaks_for(name: str, args):
    bw, fma = None, None
    for key, b, f in PEAKS:
        if key.lower() in name.lower():
            bw, fma = b, f
            break
    if args.peak_gbs:
        bw = args.peak_gbs
    if args.peak_tflops:
        fma = args.peak_tflops / 2.0
    return bw, fma


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Timer:
    """CUDA events on a GPU; wall clock (after synchronising nothing) on CPU for --smoke."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn, warmup, repeats):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


def make_case(n, c, h, k, stride, dtype, layout, op, device):
    import dsconv_ext
    from dsconv_ext.families import dog
    from dsconv_ext.families.bank import master8

    x = torch.randn(n, c, h, h, device=device, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    pad = k // 2
    bias = torch.randn(c, device=device, dtype=dtype)
    if op == "depthwise":
        w = torch.randn(c, 1, k, k, device=device, dtype=dtype) * 0.1
        leaves = [x, w, bias]

        def ours(backend):
            return lambda x, w, b: dsconv_ext.depthwise_conv2d(x, w, b, stride, pad, backend=backend)

        def torch_fn(x, w, b):
            return F.conv2d(x, w, b, stride, pad, groups=c)
    elif op == "dog":
        params = dog.make_params(torch.randn(c, 8, dtype=torch.float64), torch.full((c,), 0.8, dtype=torch.float64),
                                 torch.full((c,), 0.5, dtype=torch.float64)).float().to(device)
        leaves = [x, params, bias.float()]

        def ours(backend):
            return lambda x, p, b: dsconv_ext.dog_conv2d(x, p, k, b, stride, pad, backend=backend)

        def torch_fn(x, p, b):  # PyTorch's path for the same layer: build the filter, then conv
            w = dog.dog_filters(p, (k, k)).to(x.dtype).unsqueeze(1)
            return F.conv2d(x, w, b.to(x.dtype), stride, pad, groups=c)
    else:
        bank = master8(k).to(device)
        coeffs = torch.randn(c, 8, device=device)
        leaves = [x, coeffs, bias.float()]

        def ours(backend):
            return lambda x, cf, b: dsconv_ext.bank_conv2d(x, bank, cf, b, stride, pad, backend=backend)

        def torch_fn(x, cf, b):
            w = torch.einsum("cm,mhw->chw", cf, bank).to(x.dtype).unsqueeze(1)
            return F.conv2d(x, w, b.to(x.dtype), stride, pad, groups=c)
    return leaves, ours, torch_fn


def op_cost(n, c, h, k, stride, dtype, layout):
    """Minimal HBM bytes and FMAs of (forward, forward+backward)."""
    esize = torch.finfo(dtype).bits // 8
    pad = k // 2
    oh = (h + 2 * pad - k) // stride + 1
    x_bytes, y_bytes = n * c * h * h * esize, n * c * oh * oh * esize
    fmas = n * c * oh * oh * k * k
    fwd = (x_bytes + y_bytes, fmas)
    # backward: read dy and x, write dx (weights are negligible); FMAs for dx and dw
    bwd = (2 * y_bytes + 2 * x_bytes, 2 * fmas)
    return fwd, (fwd[0] + bwd[0], fwd[1] + bwd[1])


def run(args) -> int:
    smoke = args.smoke
    if smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from dsconv_ext import backends

    device = torch.device("cpu" if smoke else "cuda")
    if not smoke and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device (use --smoke for the CPU interpreter check)", file=sys.stderr)
        return 2
    gpu_name = "cpu-interpreter" if smoke else torch.cuda.get_device_name()
    bw, fma = peaks_for(gpu_name, args)
    if smoke:
        bw, fma = args.peak_gbs or 10.0, (args.peak_tflops or 0.1) / 2
    if bw is None or fma is None:
        print(f"bench_gpu: no peak numbers for {gpu_name!r}; pass --peak-gbs and --peak-tflops", file=sys.stderr)
        return 2
    ours = [b for b in ("triton", "cuda") if backends._runs_on(b, device.type)]
    if args.backends:
        ours = [b for b in ours if b in args.backends.split(",")]
    torch.backends.cudnn.benchmark = True
    timer = Timer(device)
    warmup, repeats = (1, 1) if smoke else (args.warmup, args.repeats)

    rows, table = [], []
    for group, n, c, h, k, stride, dtype, layout, op in shapes(smoke):
        n = args.batch or n
        torch.manual_seed(0)
        leaves, make_ours, torch_fn = make_case(n, c, h, k, stride, dtype, layout, op, device)
        (fwd_bytes, fwd_fma), (fb_bytes, fb_fma) = op_cost(n, c, h, k, stride, dtype, layout)
        impls = {"torch": torch_fn, **{b: make_ours(b) for b in ours}}
        result = {"group": group, "op": op, "N": n, "C": c, "H": h, "W": h, "kernel": [k, k], "stride": [stride, stride],
                  "dtype": str(dtype).replace("torch.", ""), "layout": layout, "fwd_ms": {}, "fwd_bwd_ms": {}}
        for name, fn in impls.items():
            grad_leaves = [t.detach().clone().requires_grad_(True) for t in leaves]
            if layout == "channels_last":
                grad_leaves[0] = leaves[0].detach().clone(memory_format=torch.channels_last).requires_grad_(True)
            y = fn(*grad_leaves)
            gy = torch.randn_like(y)

            def fwd():
                with torch.no_grad():
                    fn(*leaves)

            def fwd_bwd():
                out = fn(*grad_leaves)
                torch.autograd.grad(out, grad_leaves, gy)

            result["fwd_ms"][name] = timer(fwd, warmup, repeats)
            result["fwd_bwd_ms"][name] = timer(fwd_bwd, warmup, repeats)
        for name in ours:
            for phase, (nbytes, nfma) in (("fwd", (fwd_bytes, fwd_fma)), ("fwd_bwd", (fb_bytes, fb_fma))):
                ms = result[f"{phase}_ms"][name]
                bound_ms = max(nbytes / (bw * 1e9), nfma / (fma * 1e12)) * 1e3
                result.setdefault("gbs", {}).setdefault(name, {})[phase] = nbytes / (ms * 1e-3) / 1e9
                result.setdefault("roofline", {}).setdefault(name, {})[phase] = bound_ms / ms
                result.setdefault("speedup", {}).setdefault(name, {})[phase] = result[f"{phase}_ms"]["torch"] / ms
        result["bound"] = "memory" if fb_bytes / (bw * 1e9) >= fb_fma / (fma * 1e12) else "compute"
        rows.append(result)
        table.append({"op": op, "C": c, "H": h, "W": h, "kernel": [k, k], "stride": [stride, stride],
                      "dtype": result["dtype"], "layout": layout, "times_ms": dict(result["fwd_bwd_ms"])})
        print(format_row(result, ours), flush=True)

    meta = {
        "gpu": gpu_name, "peak_gbs": bw, "peak_tfma": fma, "torch": torch.__version__,
        "triton": _version("triton"), "cuda": torch.version.cuda, "commit": git_commit(),
        "python": platform.python_version(), "warmup": warmup, "repeats": repeats, "backends": ours,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"bench-gpu-{slug(gpu_name)}"
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (out / f"{stem}.md").write_text(markdown(meta, rows, ours))
    (out / f"auto-table-{slug(gpu_name)}.json").write_text(json.dumps({"gpu": gpu_name, "entries": table}, indent=1))
    print(f"wrote {out / (stem + '.json')}, {out / (stem + '.md')}, {out / ('auto-table-' + slug(gpu_name) + '.json')}")
    return 0


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except ImportError:
        return "not installed"


def format_row(r, ours) -> str:
    head = f"{r['group']:<24} {r['op']:<9} N{r['N']} C{r['C']} {r['H']}x{r['W']} k{r['kernel'][0]} s{r['stride'][0]}"
    parts = [f"torch {r['fwd_ms']['torch']:.3f}/{r['fwd_bwd_ms']['torch']:.3f} ms"]
    for b in ours:
        parts.append(f"{b} {r['fwd_ms'][b]:.3f}/{r['fwd_bwd_ms'][b]:.3f} ms "
                     f"x{r['speedup'][b]['fwd']:.2f}/x{r['speedup'][b]['fwd_bwd']:.2f} "
                     f"{r['gbs'][b]['fwd_bwd']:.0f} GB/s {100 * r['roofline'][b]['fwd_bwd']:.0f}% roof")
    return head + " | " + " | ".join(parts)


def markdown(meta, rows, ours) -> str:
    lines = [f"# GPU benchmark: {meta['gpu']}", "",
             f"torch {meta['torch']}, triton {meta['triton']}, CUDA {meta['cuda']}, commit {meta['commit']}, "
             f"{meta['date']}. Peaks: {meta['peak_gbs']:.0f} GB/s, {meta['peak_tfma']:.1f} TFMA/s. "
             f"Medians of {meta['repeats']} runs (CUDA events) after {meta['warmup']} warm-up runs. "
             "f+b = forward + backward (input, filter, bias). Speedup = PyTorch time / ours. "
             "Roofline = max(bytes / bandwidth, FMAs / FMA rate) / time.", ""]
    header = ["group", "op", "shape", "torch fwd ms", "torch f+b ms"]
    for b in ours:
        header += [f"{b} fwd ms", f"{b} f+b ms", f"{b} fwd x", f"{b} f+b x", f"{b} f+b GB/s", f"{b} f+b roofline"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["group"], r["op"], f"N{r['N']} C{r['C']} {r['H']}x{r['W']} k{r['kernel'][0]} s{r['stride'][0]} "
                 f"{r['dtype']} {r['layout']}", f"{r['fwd_ms']['torch']:.3f}", f"{r['fwd_bwd_ms']['torch']:.3f}"]
        for b in ours:
            cells += [f"{r['fwd_ms'][b]:.3f}", f"{r['fwd_bwd_ms'][b]:.3f}", f"{r['speedup'][b]['fwd']:.2f}",
                      f"{r['speedup'][b]['fwd_bwd']:.2f}", f"{r['gbs'][b]['fwd_bwd']:.0f}",
                      f"{100 * r['roofline'][b]['fwd_bwd']:.0f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Geometric means per group (f+b speedup):", ""]
    groups = {}
    for r in rows:
        for b in ours:
            groups.setdefault((r["group"], b), []).append(r["speedup"][b]["fwd_bwd"])
    for (g, b), values in groups.items():
        geo = math.exp(sum(math.log(v) for v in values) / len(values))
        lines.append(f"- {g}, {b}: {geo:.2f}x over {len(values)} rows")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU under TRITON_INTERPRET=1")
    parser.add_argument("--out", help="output folder (default benchmarks/results)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batch", type=int, help="override N")
    parser.add_argument("--backends", help="comma list among triton,cuda (default: every built one)")
    parser.add_argument("--peak-gbs", type=float, help="peak HBM bandwidth in GB/s")
    parser.add_argument("--peak-tflops", type=float, help="peak dense fp32 (non-tensor-core) TFLOPS")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
