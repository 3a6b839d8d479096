"""``dsconv-ext bench``: the ops against PyTorch's own depthwise convolution."""

import os
import sys

NAME = "bench"
HELP = "benchmark the ops against F.conv2d(groups=C): forward and forward+backward, table + JSON/Markdown"

# glibc never returns freed heap memory to the kernel and serves every size from the heap: no
# page faults on reused buffers. Without it, a forward+backward of a 56x56 layer (three 10-15 MB
# tensors) can fault in 10,000-25,000 pages per call, PyTorch's and ours alike, and rows vary 2-5x
# with the heap's history. Recorded in the results' machine stamp.
STEADY_HEAP_TUNABLES = "glibc.malloc.trim_threshold=4294967296:glibc.malloc.mmap_threshold=4294967296"


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="one shape, no files written")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    parser.add_argument("--out", default="benchmarks/results", help="directory for bench-cpu.json / .md")
    parser.add_argument("--steady-heap", action="store_true",
                        help=f"rerun in a process with GLIBC_TUNABLES={STEADY_HEAP_TUNABLES} (no heap trimming)")


def run(args) -> int:
    if args.steady_heap and not os.environ.get("GLIBC_TUNABLES"):
        # glibc reads its tunables at start-up only: a fresh interpreter with them set.
        argv = [a for a in sys.argv[1:] if a != "--steady-heap"]
        if "bench" not in argv:  # called as benchmarks/bench.py
            argv = ["bench", *argv]
        env = dict(os.environ, GLIBC_TUNABLES=STEADY_HEAP_TUNABLES)
        os.execve(sys.executable, [sys.executable, "-m", "dsconv_ext.cli", *argv], env)
    from ..benchmarking import run as run_benchmark

    run_benchmark(quick=args.quick, repeats=args.repeats, out_dir=args.out)
    return 0
