"""``dsconv-ext bench``: the ops against PyTorch's own depthwise convolution."""

NAME = "bench"
HELP = "benchmark the ops against F.conv2d(groups=C): forward and forward+backward, table + JSON/Markdown"


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="one shape, no files written")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    parser.add_argument("--out", default="benchmarks/results", help="directory for bench-cpu.json / .md")


def run(args) -> int:
    from ..benchmarking import run as run_benchmark

    run_benchmark(quick=args.quick, repeats=args.repeats, out_dir=args.out)
    return 0
