"""The three ops against PyTorch's own depthwise path (F.conv2d(groups=C)) in the same run,
forward and forward+backward, on ConvNeXt-T stage shapes, NCHW and channels_last, fp32, CPU.

    python benchmarks/ops_vs_pytorch.py [--batch 8] [--repeats 5]

Prints a table and writes benchmarks/results/ops_vs_pytorch-cpu.{json,md}, stamped with the
CPU model, core count, torch version and git commit.
"""

import argparse
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from dsconv_ext.demo import compare_ops, print_table

CONVNEXT_T_STAGES = ((96, 56), (192, 28), (384, 14), (768, 7))
RESULTS = Path(__file__).resolve().parent / "results"


def machine_stamp() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                         cwd=Path(__file__).parent, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "commit": commit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    stamp = machine_stamp()
    print(" | ".join(f"{k}: {v}" for k, v in stamp.items()))
    rows = []
    for channels, size in CONVNEXT_T_STAGES:
        print(f"\nN={args.batch}, C={channels}, {size}x{size}, k=7, fp32")
        stage_rows = compare_ops(args.batch, channels, size, 7, args.repeats)
        for row in stage_rows:
            row.update(channels=channels, size=size, batch=args.batch, kernel=7, dtype="float32")
        print_table(stage_rows)
        rows += stage_rows
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ops_vs_pytorch-cpu.json").write_text(json.dumps({"machine": stamp, "rows": rows}, indent=1))
    lines = [f"Machine: {stamp['cpu']}, {stamp['cores']} cores, torch {stamp['torch']}, commit {stamp['commit']}",
             "", "| op | layout | C | HxW | torch fwd ms | ours fwd ms | torch f+b ms | ours f+b ms | f+b speedup |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['layout']} | {r['channels']} | {r['size']}x{r['size']} | {r['torch_fwd_ms']:.2f} | "
                     f"{r['ours_fwd_ms']:.2f} | {r['torch_fwd_bwd_ms']:.2f} | {r['ours_fwd_bwd_ms']:.2f} | "
                     f"{r['torch_fwd_bwd_ms'] / r['ours_fwd_bwd_ms']:.2f}x |")
    (RESULTS / "ops_vs_pytorch-cpu.md").write_text("\n".join(lines) + "\n")
    print(f"\nwrote {RESULTS / 'ops_vs_pytorch-cpu.json'} and .md")


if __name__ == "__main__":
    main()
