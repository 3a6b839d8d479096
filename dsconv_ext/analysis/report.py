"""``report.json`` and ``report.md`` from an ``AnalysisResult``.

``report.json`` (shares are fractions in [0, 1]; "n" counts analysed filters, i.e. without dead
and constant ones):

* ``source``, ``n_filters`` (every depthwise filter found), ``n_zero_filters`` (dead, left
  out), ``n_constant_filters`` (no spatial structure, left out), ``n_analysed``, ``settings``;
* ``by_kernel_size["7x7"]``:

  * ``n``, ``n_zero``, ``n_constant``, ``layers``, ``method``;
  * ``threshold`` and ``threshold_rule`` ("paper" or "constant-SNR rule", see ``thresholds``);
  * ``classified_share``, and ``share_by_threshold``: the classified share at other thresholds;
  * ``dog_fit``: ``median_cos``, ``share_cos_ge_0.8``, ``mean_cos``, ``median_sigma``;
  * ``clusters``, largest first, their shares adding up to ``classified_share``: ``label``,
    ``share``, ``share_of_classified``, ``n``, ``latent_intervals``, ``centroid_dog_fit_cos``,
    ``sigma``, ``gamma``, ``angle``;
  * ``bank``: ``name``, ``matched_share`` (best ``a*f+b`` cosine >= 1 - threshold),
    ``median_cos``, ``filters`` [{``index``, ``share``}];
  * ``autoencoder`` {``train_filters``, ``steps``, ``final_loss``} or ``kmeans`` {``k``};
* ``by_layer``: one entry per layer in model order: ``layer``, ``kernel_size``, ``n``,
  ``n_zero``, ``classified_share``, ``dog_fit_median_cos``, ``bank_matched_share``,
  ``clusters`` {label: share};
* ``skipped``: tensors that looked like filters but were left out, and why;
* ``timings_s``: wall time per stage (the only part that changes between identical runs).
"""

import json
from pathlib import Path
from typing import Dict, List

import torch

from .pipeline import AnalysisResult, SizeResult
from .thresholds import PAPER_THRESHOLDS, size_key

FIT_COSINE_CUT = 0.8
EXTRA_THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4)


def _round(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


def _per_layer_medians(values: torch.Tensor, layer: torch.Tensor, num_layers: int) -> List[float]:
    """Median of ``values [N]`` within each layer (NaN for an empty layer), one sort."""
    order = torch.argsort(layer, stable=True)
    counts = torch.bincount(layer, minlength=num_layers).tolist()
    medians, start = [], 0
    sorted_values = values[order]
    for count in counts:
        medians.append(float(sorted_values[start : start + count].median()) if count else float("nan"))
        start += count
    return medians


def _size_entry(size: SizeResult) -> Dict:
    group = size.group
    n = size.num_filters
    cos = size.dog.cosine
    entry = {
        "n": n,
        "n_zero": group.num_zero,
        "n_constant": group.num_constant,
        "layers": len(group.layer_names),
        "threshold": size.threshold,
        "threshold_rule": "paper" if tuple(group.kernel_size) in PAPER_THRESHOLDS else "constant-SNR rule",
        "classified_share": _round(size.classified_share),
        "share_by_threshold": {
            f"{t:g}": _round((size.dissimilarity < t).float().mean()) for t in EXTRA_THRESHOLDS
        } if size.method != "none" else {},
        "dog_fit": {
            "median_cos": _round(cos.median()),
            f"share_cos_ge_{FIT_COSINE_CUT}": _round((cos >= FIT_COSINE_CUT).float().mean()),
            "mean_cos": _round(cos.mean()),
            "median_sigma": _round(size.dog.sigma.median()),
        },
        "method": size.method,
        "clusters": [
            {
                "label": cluster.label,
                "share": _round(cluster.share),
                "share_of_classified": _round(cluster.members / max(1, int(size.classified.sum()))),
                "n": cluster.members,
                "latent_intervals": (
                    [[_round(lo), _round(hi)] for lo, hi in cluster.intervals] if cluster.intervals else None
                ),
                "centroid_dog_fit_cos": _round(cluster.description.fit_cosine),
                "sigma": _round(cluster.description.sigma, 3),
                "gamma": _round(cluster.description.gamma, 3),
                "angle": cluster.description.angle,
            }
            for cluster in size.clusters
        ],
    }
    if size.bank is not None:
        matched = size.bank.cosine >= 1 - size.threshold
        per_filter = torch.bincount(size.bank.index[matched], minlength=size.bank.bank.shape[0]) / max(1, n)
        entry["bank"] = {
            "name": size.bank.name,
            "matched_share": _round(matched.float().mean()),
            "median_cos": _round(size.bank.cosine.median()),
            "filters": [{"index": i, "share": _round(s)} for i, s in enumerate(per_filter.tolist())],
        }
    if size.training is not None:
        entry["autoencoder"] = {
            "train_filters": size.training.train_filters,
            "steps": size.training.steps,
            "final_loss": _round(size.training.final_loss),
        }
    if size.method == "kmeans":
        entry["kmeans"] = {"k": int(size.assignment.max()) + 1 if n else 0}
    return entry


def _layer_entries(size: SizeResult) -> Dict[str, Dict]:
    group = size.group
    num_layers = len(group.layer_names)
    layer = group.layer
    analysed = torch.bincount(layer, minlength=num_layers).to(torch.float64)
    denominator = analysed.clamp_min(1)
    classified = torch.bincount(layer[size.classified], minlength=num_layers) / denominator
    medians = _per_layer_medians(size.dog.cosine, layer, num_layers)
    bank_share = None
    if size.bank is not None:
        bank_share = torch.bincount(layer[size.bank.cosine >= 1 - size.threshold], minlength=num_layers) / denominator
    # Cluster shares per layer: one bincount over (layer, cluster) pairs of classified filters.
    position = {cluster.index: p for p, cluster in enumerate(size.clusters)}
    cluster_table = torch.zeros(num_layers, max(1, len(size.clusters)), dtype=torch.float64)
    if size.clusters:
        lookup = torch.full((int(size.assignment.max()) + 1,), -1, dtype=torch.long)
        for index, p in position.items():
            lookup[index] = p
        cluster_pos = lookup[size.assignment]
        keep = size.classified & (cluster_pos >= 0)
        pairs = layer[keep] * len(size.clusters) + cluster_pos[keep]
        cluster_table = torch.bincount(pairs, minlength=num_layers * len(size.clusters)).reshape(
            num_layers, len(size.clusters)
        ) / denominator[:, None]
    entries = {}
    for i, name in enumerate(group.layer_names):
        entries[name] = {
            "layer": name,
            "kernel_size": size_key(group.kernel_size),
            "n": int(analysed[i]),
            "n_zero": int(group.zero_per_layer[i]),
            "classified_share": _round(classified[i]),
            "dog_fit_median_cos": None if analysed[i] == 0 else _round(medians[i]),
            "bank_matched_share": None if bank_share is None else _round(bank_share[i]),
            "clusters": {cluster.label: _round(cluster_table[i, p]) for p, cluster in enumerate(size.clusters)},
        }
    return entries


def build_report(result: AnalysisResult) -> Dict:
    """The ``report.json`` content (module docstring)."""
    settings = result.settings
    layer_entries: Dict[str, Dict] = {}
    for size in result.sizes.values():
        layer_entries.update(_layer_entries(size))
    by_layer = []
    for name, kernel_size in result.layer_kernel_sizes:
        entry = layer_entries.get(name)
        if entry is None:  # a layer whose filters were all dead or constant
            entry = {"layer": name, "kernel_size": size_key(kernel_size), "n": 0, "n_zero": None,
                     "classified_share": 0.0, "dog_fit_median_cos": None, "bank_matched_share": None, "clusters": {}}
        by_layer.append(entry)
    return {
        "source": result.source,
        "n_filters": result.num_filters,
        "n_zero_filters": result.num_zero,
        "n_constant_filters": result.num_constant,
        "n_analysed": sum(size.num_filters for size in result.sizes.values()),
        "settings": {
            "method": settings.method,
            "seed": settings.seed,
            "autoencoder_steps": settings.steps,
            "kmeans_clusters": settings.kmeans_clusters,
            "bank": settings.bank_name,
            "dog_profile": settings.profile,
        },
        "by_kernel_size": {size_key(ks): _size_entry(size) for ks, size in result.sizes.items()},
        "by_layer": by_layer,
        "skipped": result.skipped,
        "timings_s": {stage: round(seconds, 3) for stage, seconds in result.timings.items()},
    }


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def render_markdown(report: Dict, figures: List[str]) -> str:
    """``report.md``: the numbers a person reads first, then the figures, then the layers."""
    lines = [f"# Depthwise filter analysis: {report['source']}", ""]
    lines.append(
        f"{report['n_filters']} depthwise filters; {report['n_zero_filters']} dead (all zero) and "
        f"{report['n_constant_filters']} constant left out; {report['n_analysed']} analysed "
        f"(normalised to zero mean and unit L2 norm). Clustering: {report['settings']['method']}, "
        f"seed {report['settings']['seed']}."
    )
    lines += ["", "## By kernel size", ""]
    lines.append(
        "| kernel | filters | threshold | classified | DoG fit median cos | DoG fit cos >= 0.8 | bank matched |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for key, entry in report["by_kernel_size"].items():
        bank = entry.get("bank")
        bank_text = f"{_percent(bank['matched_share'])} ({bank['name']})" if bank else "-"
        lines.append(
            f"| {key} | {entry['n']} | {entry['threshold']:g} ({entry['threshold_rule']}) | "
            f"{_percent(entry['classified_share'])} | {entry['dog_fit']['median_cos']:.3f} | "
            f"{_percent(entry['dog_fit']['share_cos_ge_0.8'])} | {bank_text} |"
        )
    lines += ["", "A filter is *classified* when the cosine dissimilarity between it and its reconstruction",
              "(autoencoder) or centroid (k-means) is below the threshold. *bank matched*: the best bank",
              "filter up to a*f+b reaches the same cosine (the master-key test)."]
    for key, entry in report["by_kernel_size"].items():
        lines += ["", f"### {key} clusters", ""]
        if not entry["clusters"]:
            lines.append("Too few filters to cluster.")
            continue
        lines.append("| cluster | share of all | share of classified | centroid DoG fit cos | sigma (px) | latent |")
        lines.append("|---|---|---|---|---|---|")
        for cluster in entry["clusters"]:
            latent = ", ".join(f"{lo:.2f}-{hi:.2f}" for lo, hi in cluster["latent_intervals"] or []) or "-"
            lines.append(
                f"| {cluster['label']} | {_percent(cluster['share'])} | {_percent(cluster['share_of_classified'])} | "
                f"{cluster['centroid_dog_fit_cos']:.3f} | {cluster['sigma']:.2f} | {latent} |"
            )
        shares = ", ".join(f"{t}: {_percent(s)}" for t, s in entry["share_by_threshold"].items())
        lines += ["", f"Classified share at other thresholds: {shares}."]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{Path(f).stem}]({Path(f).name})" for f in figures]
    lines += [
        "", "## By layer", "",
        "| layer | kernel | filters | dead | classified | DoG fit median cos | bank matched | largest cluster |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in report["by_layer"]:
        clusters = entry["clusters"]
        top = max(clusters, key=clusters.get) if clusters else None
        top_text = f"{top} ({_percent(clusters[top])})" if top else "-"
        fit = "-" if entry["dog_fit_median_cos"] is None else f"{entry['dog_fit_median_cos']:.3f}"
        dead = "-" if entry["n_zero"] is None else entry["n_zero"]
        lines.append(
            f"| {entry['layer']} | {entry['kernel_size']} | {entry['n']} | {dead} | "
            f"{_percent(entry['classified_share'])} | {fit} | {_percent(entry['bank_matched_share'])} | {top_text} |"
        )
    if report["skipped"]:
        lines += ["", "## Skipped", ""] + [f"- {note}" for note in report["skipped"]]
    lines.append("")
    return "\n".join(lines)


def write_report(report: Dict, out_dir: Path, figures: List[str]) -> List[Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(render_markdown(report, figures))
    return [json_path, md_path]
