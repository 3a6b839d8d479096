"""How long does ``dsconv-ext analyze`` take on a million 7x7 filters, end to end?

Generates N synthetic DoG-like 7x7 filters (the nine DoG-jet classes of
``dsconv_ext.analysis.synthetic`` with jittered scales and coefficients, plus noise) spread over
40 "layers", then runs the whole analysis as the CLI does (normalise, DoG-jet fit, autoencoder
training and encoding, latent intervals and labels, master8 test, figures, report) and prints
the wall time per stage. The target is under 5 minutes for N = 1e6 on a 2-core CPU.

    python benchmarks/analysis_speed.py                 # 1e6 filters, 1 thread (the CLI's default)
    python benchmarks/analysis_speed.py --threads 2 --filters 200000 --out /tmp/bench

Generating the filters is not part of the timed analysis (it stands in for loading a model).
The machine this runs on may be shared: say so when quoting the numbers.
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsconv_ext.analysis import FilterSet, LayerFilters, Settings, analyze, write_analysis  # noqa: E402
from dsconv_ext.analysis.synthetic import PROTOTYPES, planted_filters  # noqa: E402

NUM_LAYERS = 40


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filters", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the CLI)")
    parser.add_argument("--steps", type=int, default=None, help="autoencoder steps (default: the CLI's)")
    parser.add_argument("--out", default=None, help="output directory (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # for the (untimed) generation too; the analysis sets its own

    start = time.perf_counter()
    planted = planted_filters(args.filters, (7, 7), classes=tuple(PROTOTYPES), seed=0)
    per_layer = -(-args.filters // NUM_LAYERS)
    layers = [LayerFilters(f"stage{i // 10}.block{i % 10}.conv_dw", part)
              for i, part in enumerate(planted.filters.split(per_layer))]
    filter_set = FilterSet(source=f"synthetic DoG-jet filters ({args.filters} x 7x7)", layers=layers)
    del planted
    generated = time.perf_counter() - start

    settings = Settings(threads=args.threads)
    if args.steps is not None:
        settings.steps = args.steps
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="analysis_speed_"))
    start = time.perf_counter()
    result = analyze(filter_set, settings=settings)
    report, paths = write_analysis(result, out)
    total = time.perf_counter() - start

    print(f"{args.filters} filters of 7x7, {args.threads} torch thread(s), {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}")
    print(f"(generating the filters: {generated:.1f} s, not counted)")
    for stage, seconds in result.timings.items():
        print(f"  {stage:<32s} {seconds:8.1f} s")
    print(f"  {'total (end to end)':<32s} {total:8.1f} s   target: < 300 s")
    entry = report["by_kernel_size"]["7x7"]
    print(f"classified {100 * entry['classified_share']:.1f} %, {len(entry['clusters'])} clusters, "
          f"DoG fit median cos {entry['dog_fit']['median_cos']:.3f}; report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
