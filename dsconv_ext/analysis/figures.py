"""PNG figures of an analysis, per kernel size ``KEY`` (e.g. ``7x7``):

* ``clusters_KEY.png``: one row per cluster (largest first): its centroid, then example members
  (a seeded random sample of the classified ones, closest to the reconstruction first), and a
  last row of unclassified examples;
* ``centroids_KEY.png``: the centroids large, with their DoG-jet fits underneath;
* ``layers_KEY.png``: per layer (model order, top to bottom) the cluster shares as stacked bars,
  unclassified in grey;
* ``latent_KEY.png`` (autoencoder): the latent histogram coloured by cluster, interval edges,
  and the decoder's filters along the latent on top;
* ``dog_fit.png``: the distribution of DoG-jet fit cosines, one line per kernel size.

Every filter is drawn on its own symmetric colour scale (red positive, blue negative, white
zero), since shapes, not magnitudes, are compared. Figures are drawn with matplotlib's Agg
canvas directly (no pyplot), so a user's interactive backend is left alone.
"""

from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from ..families import dog as dog_family
from .pipeline import AnalysisResult, SizeResult
from .thresholds import size_key

MAX_CLUSTER_ROWS = 12
EXAMPLES_PER_ROW = 12
MAX_LAYER_BARS = 60
CURVE_TILES = 16
UNCLASSIFIED_COLOUR = "#c8c8c8"
DPI = 110


def _colours(count: int) -> List:
    from matplotlib import colormaps

    palette = colormaps["tab10"] if count <= 10 else colormaps["tab20"]
    return [palette(i % palette.N) for i in range(count)]


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    figure.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    return path


def _mosaic(tiles: np.ndarray, gap: int = 1) -> np.ndarray:
    """``tiles [R, C, kh, kw]`` (NaN tiles stay blank) -> one image, each tile scaled to
    [-1, 1] by its own largest magnitude, NaN gaps between tiles."""
    rows, cols, kh, kw = tiles.shape
    image = np.full((rows * (kh + gap) - gap, cols * (kw + gap) - gap), np.nan)
    for r in range(rows):
        for c in range(cols):
            tile = tiles[r, c]
            if np.isnan(tile).all():
                continue
            scale = np.nanmax(np.abs(tile)) or 1.0
            image[r * (kh + gap) : r * (kh + gap) + kh, c * (kw + gap) : c * (kw + gap) + kw] = tile / scale
    return image


def _show(axes, image: np.ndarray) -> None:
    from matplotlib import colormaps

    cmap = colormaps["RdBu_r"].with_extremes(bad="white")
    axes.imshow(image, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_visible(False)


def _examples(size: SizeResult, members: torch.Tensor, count: int, seed: int) -> np.ndarray:
    """Up to ``count`` filters ``[count, kh, kw]`` (NaN-padded) of the given member indices:
    a seeded random sample, best reconstructed first."""
    kh, kw = size.group.kernel_size
    out = np.full((count, kh, kw), np.nan)
    if members.numel() == 0:
        return out
    generator = torch.Generator().manual_seed(seed)
    picked = members[torch.randperm(members.numel(), generator=generator)[:count]]
    picked = picked[size.dissimilarity[picked].argsort()]
    out[: picked.numel()] = size.group.filters[picked].numpy()
    return out


def draw_cluster_grid(size: SizeResult, path: Path, seed: int = 0) -> Path:
    key = size_key(size.group.kernel_size)
    kh, kw = size.group.kernel_size
    clusters = size.clusters[:MAX_CLUSTER_ROWS]
    rows = len(clusters) + 1
    tiles = np.full((rows, EXAMPLES_PER_ROW + 2, kh, kw), np.nan)
    labels = []
    for r, cluster in enumerate(clusters):
        tiles[r, 0] = cluster.centroid.numpy()
        members = ((size.assignment == cluster.index) & size.classified).nonzero()[:, 0]
        tiles[r, 2:] = _examples(size, members, EXAMPLES_PER_ROW, seed + r)
        labels.append(f"{cluster.label}\n{100 * cluster.share:.1f} %")
    unclassified = (~size.classified).nonzero()[:, 0]
    tiles[-1, 2:] = _examples(size, unclassified, EXAMPLES_PER_ROW, seed + rows)
    labels.append(f"unclassified\n{100 * (1 - size.classified_share):.1f} %")

    tile_inches = 0.42 if max(kh, kw) <= 7 else 0.6
    figure = _new_figure(2.4 + (EXAMPLES_PER_ROW + 2) * tile_inches, 0.9 + rows * tile_inches * 1.08)
    axes = figure.add_axes([0.2, 0.02, 0.78, 0.86])
    _show(axes, _mosaic(tiles))
    step = kh + 1
    for r, text in enumerate(labels):
        axes.text(-1.0, r * step + (kh - 1) / 2, text, ha="right", va="center", fontsize=8)
    axes.text((kw - 1) / 2, -1.2, "centroid", ha="center", va="bottom", fontsize=7)
    axes.text(2 * (kw + 1) + (EXAMPLES_PER_ROW * (kw + 1)) / 2, -1.2, "members (random sample, best fitting first)",
              ha="center", va="bottom", fontsize=7)
    figure.suptitle(f"{key} filters by cluster ({100 * size.classified_share:.1f} % classified, "
                    f"threshold {size.threshold:g})", fontsize=10)
    return _save(figure, path)


def draw_centroids(size: SizeResult, path: Path) -> Path:
    key = size_key(size.group.kernel_size)
    kh, kw = size.group.kernel_size
    clusters = size.clusters[:MAX_CLUSTER_ROWS]
    count = max(1, len(clusters))
    tiles = np.full((2, count, kh, kw), np.nan)
    for c, cluster in enumerate(clusters):
        tiles[0, c] = cluster.centroid.numpy()
        params = cluster.description.params
        if params is not None:
            tiles[1, c] = dog_family.dog_filters(params[None], (kh, kw))[0].numpy()
    figure = _new_figure(0.6 + 1.45 * count, 3.9)
    axes = figure.add_axes([0.08, 0.02, 0.9, 0.72])
    _show(axes, _mosaic(tiles))
    for c, cluster in enumerate(clusters):
        x = c * (kw + 1) + (kw - 1) / 2
        axes.text(x, -1.0, f"{cluster.label.replace(' + ', ' +' + chr(10))}\n{100 * cluster.share:.1f} %",
                  ha="center", va="bottom", fontsize=7.5)
        fit = cluster.description
        axes.text(x, 2 * kh + 1.6, f"fit cos {fit.fit_cosine:.2f}, sigma {fit.sigma:.2f}",
                  ha="center", va="top", fontsize=6.5)
    axes.text(-1.0, (kh - 1) / 2, "centroid", ha="right", va="center", fontsize=8, rotation=90)
    axes.text(-1.0, kh + 1 + (kh - 1) / 2, "DoG-jet fit", ha="right", va="center", fontsize=8, rotation=90)
    figure.suptitle(f"{key} cluster centroids (share of all {key} filters)", fontsize=10, y=0.93)
    return _save(figure, path)


def _binned_layers(names: List[str], table: np.ndarray, weights: np.ndarray):
    """At most MAX_LAYER_BARS bars: consecutive layers pooled (weighted by filter count)."""
    if len(names) <= MAX_LAYER_BARS:
        return names, table
    edges = np.linspace(0, len(names), MAX_LAYER_BARS + 1).round().astype(int)
    pooled_names, pooled = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        w = weights[lo:hi]
        pooled.append((table[lo:hi] * w[:, None]).sum(0) / max(1.0, w.sum()))
        pooled_names.append(f"{names[lo]} .. {names[hi - 1]}" if hi - lo > 1 else names[lo])
    return pooled_names, np.array(pooled)


def draw_layer_shares(size: SizeResult, path: Path) -> Path:
    key = size_key(size.group.kernel_size)
    names = size.group.layer_names
    num_layers = len(names)
    layer = size.group.layer
    analysed = torch.bincount(layer, minlength=num_layers).to(torch.float64)
    table = np.zeros((num_layers, len(size.clusters) + 1))
    for p, cluster in enumerate(size.clusters):
        in_cluster = (size.assignment == cluster.index) & size.classified
        table[:, p] = (torch.bincount(layer[in_cluster], minlength=num_layers) / analysed.clamp_min(1)).numpy()
    table[:, -1] = np.where(analysed.numpy() > 0, 1 - table[:, :-1].sum(1), 0)
    names, table = _binned_layers(names, table, analysed.numpy())
    colours = _colours(len(size.clusters)) + [UNCLASSIFIED_COLOUR]
    legend = [c.label for c in size.clusters] + ["unclassified"]
    figure = _new_figure(9.0, 1.2 + 0.22 * len(names))
    axes = figure.add_axes([0.3, 0.08, 0.45, 0.84])
    left = np.zeros(len(names))
    rows = np.arange(len(names))
    for p in range(table.shape[1]):
        axes.barh(rows, table[:, p], left=left, color=colours[p], height=0.85, label=legend[p], edgecolor="none")
        left += table[:, p]
    axes.set_yticks(rows)
    axes.set_yticklabels(names, fontsize=7)
    axes.set_ylim(len(names) - 0.5, -0.5)  # first layer on top, no empty margin
    axes.set_xlim(0, 1)
    axes.set_xlabel(f"share of the layer's {key} filters")
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    axes.set_title(f"{key} cluster shares per layer (input at the top)", fontsize=10)
    return _save(figure, path)


def draw_latent(size: SizeResult, path: Path) -> Optional[Path]:
    if size.latent is None or size.curve is None:
        return None
    key = size_key(size.group.kernel_size)
    kh, kw = size.group.kernel_size
    latent = size.latent.numpy()
    bins = np.linspace(0, 1, 121)
    colours = _colours(len(size.clusters))
    width, height = 10.0, 4.6
    figure = _new_figure(width, height)
    axes = figure.add_axes([0.06, 0.12, 0.9, 0.56])
    # Decoder tiles sit at their z, in an axes sharing the histogram's x range; its height
    # makes the tiles square.
    tile_width = 0.85 / CURVE_TILES
    curve_axes = figure.add_axes([0.06, 0.71, 0.9, 0.9 * width * tile_width / height], sharex=axes)
    stacks, stack_colours, stack_labels = [], [], []
    for p, cluster in enumerate(size.clusters):
        stacks.append(latent[((size.assignment == cluster.index) & size.classified).numpy()])
        stack_colours.append(colours[p])
        stack_labels.append(cluster.label)
    stacks.append(latent[(~size.classified).numpy()])
    stack_colours.append(UNCLASSIFIED_COLOUR)
    stack_labels.append("unclassified")
    axes.hist(stacks, bins=bins, stacked=True, color=stack_colours, label=stack_labels)
    if size.intervals is not None:  # boundaries between clusters (not between a cluster's own intervals)
        owner = size.intervals.interval_cluster.tolist()
        for i, edge in enumerate(size.intervals.edges[1:-1].tolist()):
            if owner[i] != owner[i + 1]:
                axes.axvline(edge, color="black", linewidth=0.6, linestyle=":")
    axes.set_xlim(0, 1)
    axes.set_xlabel("autoencoder latent z")
    axes.set_ylabel("filters")
    axes.legend(fontsize=7, ncol=2, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    # The decoder's filters at evenly spaced z, above the histogram.
    grid, decoded = size.curve
    from matplotlib import colormaps

    cmap = colormaps["RdBu_r"]
    for z in (np.arange(CURVE_TILES) + 0.5) / CURVE_TILES:
        tile = decoded[int(round(z * (grid.numel() - 1)))].reshape(kh, kw).numpy()
        tile = tile / (np.abs(tile).max() or 1.0)
        curve_axes.imshow(tile, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest", aspect="auto",
                          extent=(z - tile_width / 2, z + tile_width / 2, 0, 1))
    curve_axes.set_ylim(0, 1)
    curve_axes.set_yticks([])
    curve_axes.tick_params(labelbottom=False, bottom=False)
    for spine in curve_axes.spines.values():
        spine.set_visible(False)
    axes.set_xlim(0, 1)
    curve_axes.set_title(f"{key}: decoder output along the latent (z = 0 ... 1), and where the filters sit",
                         fontsize=10)
    return _save(figure, path)


def draw_fit_quality(result: AnalysisResult, path: Path) -> Path:
    figure = _new_figure(6.0, 3.4)
    axes = figure.add_axes([0.12, 0.16, 0.84, 0.74])
    bins = np.linspace(0, 1, 101)
    for kernel_size, size in result.sizes.items():
        counts, _ = np.histogram(size.dog.cosine.clamp(0, 1).numpy(), bins=bins)
        share = counts / max(1, counts.sum())
        axes.step(bins[1:], share, where="pre",
                  label=f"{size_key(kernel_size)} (median {float(size.dog.cosine.median()):.3f})")
    axes.axvline(0.8, color="black", linewidth=0.7, linestyle=":")
    axes.set_xlabel("cosine between filter and its DoG-jet fit")
    axes.set_ylabel("share of filters")
    axes.set_title("How DoG-like are the filters?", fontsize=10)
    axes.legend(fontsize=8, frameon=False, loc="upper left")
    return _save(figure, path)


def draw_figures(result: AnalysisResult, out_dir: Path, progress=None) -> List[Path]:
    """Every figure (module docstring) into ``out_dir``; returns the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: List[Path] = []
    total = 1 + 4 * len(result.sizes)
    for kernel_size, size in result.sizes.items():
        key = size_key(kernel_size)
        if size.clusters:
            paths.append(draw_cluster_grid(size, out_dir / f"clusters_{key}.png", seed=result.settings.seed))
            paths.append(draw_centroids(size, out_dir / f"centroids_{key}.png"))
            paths.append(draw_layer_shares(size, out_dir / f"layers_{key}.png"))
            latent_path = draw_latent(size, out_dir / f"latent_{key}.png")
            if latent_path is not None:
                paths.append(latent_path)
        if progress is not None:
            progress("figures", len(paths), total)
    paths.append(draw_fit_quality(result, out_dir / "dog_fit.png"))
    if progress is not None:
        progress("figures", total, total)
    return paths
