"""Writing an analysis to a directory: figures first (the report links them), then
``report.json``, ``report.md``, and per kernel size ``filters_KEY.npz`` with one row per
analysed filter (its provenance and every per-filter result):

==================  =========  =====================================================
array               shape      meaning
==================  =========  =====================================================
layer_names         [L]        layer names (str)
layer               [N] int    index into layer_names
channel             [N] int    channel within the layer
cluster_labels      [M]        cluster names (str), as in report.json
cluster             [N] int    index into cluster_labels; -1: not classified
dissimilarity       [N]        1 - cos(filter, reconstruction or centroid)
latent              [N]        autoencoder latent (NaN with k-means)
dog_params          [N, 10]    DoG-jet fit (``families.dog`` layout)
dog_cos             [N]        cosine between filter and DoG-jet fit
bank_index          [N] int    best bank filter (-1 without a bank)
bank_cos            [N]        cosine of the best ``a * bank + b`` (NaN without a bank)
==================  =========  =====================================================
"""

import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

from .figures import draw_figures
from .pipeline import AnalysisResult, SizeResult
from .report import build_report, write_report
from .thresholds import size_key


def write_analysis(result: AnalysisResult, out_dir, figures: bool = True, progress=None) -> Tuple[Dict, List[Path]]:
    """Write figures (optional) and the reports into ``out_dir``.

    Returns ``(report dict, written paths)``; the figure and report times are added to
    ``result.timings`` (and so to ``report.json``; the per-filter files are written after it).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure_paths: List[Path] = []
    if figures:
        start = time.perf_counter()
        figure_paths = draw_figures(result, out_dir, progress)
        result.timings["figures"] = time.perf_counter() - start
    start = time.perf_counter()
    if progress is not None:
        progress("report", 0, 1)
    report = build_report(result)
    result.timings["report"] = time.perf_counter() - start
    report["timings_s"]["report"] = round(result.timings["report"], 3)
    paths = write_report(report, out_dir, [str(p) for p in figure_paths])
    start = time.perf_counter()
    paths += [write_per_filter(size, out_dir) for size in result.sizes.values()]
    result.timings["per-filter files"] = time.perf_counter() - start
    if progress is not None:
        progress("report", 1, 1)
    return report, figure_paths + paths


def write_per_filter(size: SizeResult, out_dir: Path) -> Path:
    """``filters_KEY.npz``: one row per analysed filter (module docstring)."""
    count = size.num_filters
    cluster = torch.full((count,), -1, dtype=torch.long)
    for position, entry in enumerate(size.clusters):
        cluster[(size.assignment == entry.index) & size.classified] = position
    nan = np.full(count, np.nan, dtype=np.float32)
    path = Path(out_dir) / f"filters_{size_key(size.group.kernel_size)}.npz"
    np.savez(
        path,
        layer_names=np.array(size.group.layer_names, dtype=str),
        layer=size.group.layer.numpy().astype(np.int32),
        channel=size.group.channel.numpy().astype(np.int32),
        cluster_labels=np.array([entry.label for entry in size.clusters], dtype=str),
        cluster=cluster.numpy().astype(np.int32),
        dissimilarity=size.dissimilarity.numpy().astype(np.float32),
        latent=nan if size.latent is None else size.latent.numpy().astype(np.float32),
        dog_params=size.dog.params.numpy().astype(np.float32),
        dog_cos=size.dog.cosine.numpy(),
        bank_index=np.full(count, -1, np.int32) if size.bank is None else size.bank.index.numpy().astype(np.int32),
        bank_cos=nan if size.bank is None else size.bank.cosine.numpy(),
    )
    return path
