"""Clusters from the autoencoder's latent (intervals of z), and spherical k-means as the
alternative method.

**Latent intervals.** The encoder puts each cluster of similar filters at its own stretch of the
1-D latent, so the density of the classified filters along the latent has one peak per cluster.
The density is measured along the decoder's curve, in arc length (radians of shape change),
not in z: the encoder can be steep, putting two different shapes a hair apart in z, but the
curve has to travel between them. Cuts go at the density valleys between significant peaks (a
smoothed histogram; a peak counts when it rises by at least ``PEAK_PROMINENCE`` of its height
above the valley to either side). Then intervals whose centroids are nearly the same shape
(cosine >= ``MERGE_COSINE``) form one cluster, adjacent or not: a bumpy density can split one
cluster, and the curve can pass the same kind of filter twice. An interval holding less than
``MIN_CLUSTER_SHARE`` of the classified filters joins the cluster whose centroid it resembles
most. A cluster is therefore a union of latent intervals (usually one). (The pipeline also
joins neighbouring clusters whose centroids get the same name, see ``pipeline``.)

**k-means.** Spherical k-means (cosine assignment, centroids renormalised) on the normalised
filters, k-means++ seeding from a seeded generator, best of a few restarts.

Both return one cluster index per filter; whether a filter is *classified* is decided elsewhere
(reconstruction or centroid dissimilarity below the kernel size's threshold).
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

# Along z (when no decoder curve is given): histogram bins on [0, 1] and smoothing in bins.
HISTOGRAM_BINS = 200
HISTOGRAM_SMOOTHING_BINS = 2.0
# Along the decoder's curve: bin width and Gaussian smoothing in radians of shape change (a
# cluster of filters within cos 0.95 of its centre spans ~0.3 rad, so 0.04 rad keeps clusters
# apart while smoothing the counting noise).
ARC_BIN_RADIANS = 0.01
ARC_SMOOTHING_RADIANS = 0.04
PEAK_PROMINENCE = 0.3
MERGE_COSINE = 0.9
MIN_CLUSTER_SHARE = 0.01


@dataclass
class LatentIntervals:
    """Clusters as unions of intervals of the latent.

    Attributes:
        edges: ``[M + 1]`` float64 interval edges, ``edges[0] = 0``, ``edges[-1] = 1``.
        interval_cluster: ``[M]`` int64, the cluster each interval belongs to (clusters are
            numbered in order of their first interval).
        assignment: ``[N]`` int64, the cluster of every filter (classified or not).
    """

    edges: torch.Tensor
    interval_cluster: torch.Tensor
    assignment: torch.Tensor

    @property
    def num_clusters(self) -> int:
        return int(self.interval_cluster.max()) + 1 if self.interval_cluster.numel() else 0

    def intervals_of(self, cluster: int) -> List[List[float]]:
        """``[[low, high], ...]`` latent intervals of one cluster (touching ones joined)."""
        intervals: List[List[float]] = []
        for i in range(self.interval_cluster.numel()):
            if int(self.interval_cluster[i]) != cluster:
                continue
            low, high = float(self.edges[i]), float(self.edges[i + 1])
            if intervals and intervals[-1][1] == low:
                intervals[-1][1] = high
            else:
                intervals.append([low, high])
        return intervals

    def touching(self, first: int, second: int) -> bool:
        """Whether an interval of one cluster ends where an interval of the other begins."""
        first_intervals, second_intervals = self.intervals_of(first), self.intervals_of(second)
        return any(high == low for _, high in first_intervals for low, _ in second_intervals) or any(
            high == low for _, high in second_intervals for low, _ in first_intervals
        )

    def merged(self, keep: int, drop: int) -> "LatentIntervals":
        """The same intervals with cluster ``drop`` joined to ``keep``, renumbered by first
        appearance along z."""
        interval_cluster = torch.where(self.interval_cluster == drop, torch.full_like(self.interval_cluster, keep),
                                       self.interval_cluster)
        order: dict = {}
        for label in interval_cluster.tolist():
            order.setdefault(label, len(order))
        renumbered = torch.tensor([order[label] for label in interval_cluster.tolist()], dtype=torch.long)
        lookup = torch.full((int(self.interval_cluster.max()) + 1,), -1, dtype=torch.long)
        for old, new in zip(self.interval_cluster.tolist(), renumbered.tolist()):
            lookup[old] = new
        lookup[drop] = order[keep]
        return LatentIntervals(edges=self.edges, interval_cluster=renumbered, assignment=lookup[self.assignment])


def unit_centroids(filters: torch.Tensor, assignment: torch.Tensor, num_clusters: int,
                   members: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean shape of each cluster: ``filters [N, K]`` (normalised), ``assignment [N]`` ->
    ``[M, K]`` zero-mean unit-norm centroids (a zero row for an empty cluster). ``members [N]``
    bool restricts the mean to those filters (e.g. the classified ones)."""
    weights = torch.ones(filters.shape[0], dtype=filters.dtype) if members is None else members.to(filters.dtype)
    sums = torch.zeros(num_clusters, filters.shape[1], dtype=torch.float64)
    sums.index_add_(0, assignment, (filters * weights[:, None]).to(torch.float64))
    sums = sums - sums.mean(1, keepdim=True)
    return (sums / sums.norm(dim=1, keepdim=True).clamp_min(1e-30)).to(torch.float32)


def _smoothed_histogram(positions: torch.Tensor, length: float, bins: int, smoothing_bins: float) -> torch.Tensor:
    """Histogram of ``positions`` in [0, length] with ``bins`` bins, Gaussian-smoothed."""
    counts = torch.histc(positions.to(torch.float64), bins=bins, min=0.0, max=length)
    radius = max(1, int(4 * smoothing_bins))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / smoothing_bins) ** 2)
    kernel = kernel / kernel.sum()
    padded = torch.nn.functional.pad(counts[None, None], (radius, radius), mode="constant")
    return torch.nn.functional.conv1d(padded, kernel[None, None])[0, 0]


def _valley_cuts(density: torch.Tensor) -> List[int]:
    """Bin indices of the valleys between significant peaks of ``density [B]``."""
    from scipy.signal import find_peaks

    values = density.numpy()
    peaks, properties = find_peaks(values, prominence=0)
    prominences = properties["prominences"]
    # Keep peaks whose prominence is a good fraction of their own height (scale-free, so small
    # clusters count as much as big ones), then cut at the lowest point between neighbours.
    keep = [p for p, prom in zip(peaks, prominences) if prom >= PEAK_PROMINENCE * values[p]]
    return [int(left + values[left : right + 1].argmin()) for left, right in zip(keep[:-1], keep[1:])]


def curve_arc_length(latent_grid: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
    """Arc length along the decoder's curve of unit shapes.

    Args:
        latent_grid: ``[G]`` increasing latent values.
        decoded: ``[G, K]`` unit-norm decoded filters at those values.
    Returns:
        ``[G]`` float64 cumulative angle (radians) travelled from ``latent_grid[0]``.
    """
    steps = (decoded[1:].to(torch.float64) * decoded[:-1].to(torch.float64)).sum(1).clamp(-1, 1).arccos()
    return torch.cat([steps.new_zeros(1), steps.cumsum(0)])


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation (numpy.interp) for increasing ``xp``."""
    import numpy as np

    return torch.from_numpy(np.interp(x.to(torch.float64).numpy(), xp.numpy(), fp.numpy()))


def _interval_of(latent: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Index of the interval (between ``edges``) holding each latent value."""
    return torch.bucketize(latent, edges[1:-1].to(latent.dtype), right=True)


def latent_intervals(
    latent: torch.Tensor,
    filters: torch.Tensor,
    classified: torch.Tensor,
    curve: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
) -> LatentIntervals:
    """Cut the latent into intervals and group them into clusters.

    The density is measured along the decoder's curve (arc length, in radians of shape
    change) when ``curve`` is given, else along z: the encoder can be steep, putting two
    different shapes a hair apart in z, but between two different shapes the curve has to
    travel, so in arc length they are always apart.

    Args:
        latent: ``[N]`` latent values in (0, 1).
        filters: ``[N, K]`` normalised filters (for the centroid-based grouping).
        classified: ``[N]`` bool, the filters that define the clusters.
        curve: ``(latent_grid [G], decoded [G, K])`` from ``autoencoder.decode_curve``.
    Returns:
        ``LatentIntervals``: the edges, each interval's cluster, every filter's cluster.
    """
    members = classified if classified.any() else torch.ones_like(classified)
    if curve is not None:
        latent_grid, decoded = curve
        latent_grid = latent_grid.to(torch.float64)
        arc = curve_arc_length(latent_grid, decoded)
        length = max(float(arc[-1]), 1e-6)
        positions = _interp(latent[members], latent_grid, arc)
        bins = max(16, int(length / ARC_BIN_RADIANS))
        density = _smoothed_histogram(positions, length, bins, ARC_SMOOTHING_RADIANS / ARC_BIN_RADIANS)
        cut_arcs = torch.tensor([(b + 0.5) * length / bins for b in _valley_cuts(density)], dtype=torch.float64)
        # Back to z: the first grid latent at which the curve has travelled that far.
        cut_latents = latent_grid[torch.searchsorted(arc, cut_arcs).clamp(max=latent_grid.numel() - 1)]
        cuts = sorted(set(cut_latents.tolist()))
    else:
        density = _smoothed_histogram(latent[members], 1.0, HISTOGRAM_BINS, HISTOGRAM_SMOOTHING_BINS)
        cuts = [(b + 0.5) / HISTOGRAM_BINS for b in _valley_cuts(density)]
    edges = torch.tensor([0.0] + [c for c in cuts if 0.0 < c < 1.0] + [1.0], dtype=torch.float64)
    interval = _interval_of(latent, edges)
    interval_cluster = _group_intervals(interval, edges.numel() - 1, filters, members)
    return LatentIntervals(edges=edges, interval_cluster=interval_cluster, assignment=interval_cluster[interval])


def _group_intervals(interval: torch.Tensor, num_intervals: int, filters, members) -> torch.Tensor:
    """Group intervals into clusters: the decoder's curve can pass the same kind of filter more
    than once, so intervals whose centroids have the same shape (cosine >= MERGE_COSINE) form
    one cluster, adjacent or not; an interval with fewer than MIN_CLUSTER_SHARE of the members
    joins the cluster whose centroid it resembles most. Greedy, most similar pair first.
    Returns ``[num_intervals]`` cluster indices, numbered by first appearance along z."""
    total = max(1, int(members.sum()))
    cluster_of = torch.arange(num_intervals)
    while True:
        labels = torch.unique(cluster_of)
        if labels.numel() < 2:
            break
        remap = torch.full((num_intervals,), -1, dtype=torch.long)
        remap[labels] = torch.arange(labels.numel())
        current = remap[cluster_of][interval]
        centroids = unit_centroids(filters, current, labels.numel(), members)
        sizes = torch.bincount(current[members], minlength=labels.numel()).to(torch.float64)
        similarity = centroids @ centroids.t()
        similarity.fill_diagonal_(-3.0)
        tiny = sizes / total < MIN_CLUSTER_SHARE
        allowed = (similarity >= MERGE_COSINE) | tiny[:, None] | tiny[None, :]
        score = torch.where(allowed, similarity, torch.full_like(similarity, -3.0))
        if float(score.max()) <= -3.0:
            break
        first, second = divmod(int(score.argmax()), labels.numel())
        keep, drop = labels[min(first, second)], labels[max(first, second)]
        cluster_of[cluster_of == drop] = keep
    # Number clusters by their first interval along z.
    order = {}
    for label in cluster_of.tolist():
        order.setdefault(label, len(order))
    return torch.tensor([order[label] for label in cluster_of.tolist()], dtype=torch.long)


def _kmeans_once(data: torch.Tensor, num_clusters: int, generator: torch.Generator, iterations: int):
    """One k-means++ seeding and Lloyd run -> ``(centroids [M, K], mean best cosine)``."""
    # k-means++: each next centre drawn with probability ~ (1 - best cosine so far)^2.
    centroids = [data[torch.randint(data.shape[0], (1,), generator=generator)][0]]
    best = data @ centroids[0]
    for _ in range(1, num_clusters):
        weights = (1 - best).clamp_min(0).square()
        if float(weights.sum()) <= 0:
            weights = torch.ones_like(weights)
        pick = torch.multinomial(weights, 1, generator=generator)[0]
        centroids.append(data[pick])
        best = torch.maximum(best, data @ data[pick])
    centres = torch.stack(centroids)
    for _ in range(iterations):
        assignment = (data @ centres.t()).argmax(1)
        updated = unit_centroids(data, assignment, num_clusters)
        empty = torch.bincount(assignment, minlength=num_clusters) == 0
        updated[empty] = centres[empty]  # an emptied centre stays where it was
        converged = torch.allclose(updated, centres, atol=1e-6)
        centres = updated
        if converged:
            break
    return centres, float((data @ centres.t()).max(1).values.mean())


def spherical_kmeans(
    filters: torch.Tensor,
    num_clusters: int,
    seed: int = 0,
    iterations: int = 50,
    restarts: int = 4,
    max_fit_filters: int = 200_000,
) -> torch.Tensor:
    """Spherical k-means on normalised ``filters [N, K]``.

    Centroids are fitted on a seeded subsample of at most ``max_fit_filters`` filters:
    ``restarts`` runs of k-means++ seeding and Lloyd iterations with cosine assignment, the
    run with the highest mean cosine kept (one run can stall in a poor local optimum).
    Returns ``centroids [M, K]`` (unit norm); ``assign_to_centroids`` assigns every filter.
    """
    generator = torch.Generator().manual_seed(seed)
    data = filters.to(torch.float32)
    if data.shape[0] > max_fit_filters:
        data = data[torch.randperm(data.shape[0], generator=generator)[:max_fit_filters]]
    num_clusters = min(num_clusters, data.shape[0])
    best_centres, best_score = None, -2.0
    for _ in range(max(1, restarts)):
        centres, score = _kmeans_once(data, num_clusters, generator, iterations)
        if score > best_score:
            best_centres, best_score = centres, score
    return best_centres


def assign_to_centroids(filters: torch.Tensor, centroids: torch.Tensor, chunk: int = 262144):
    """``filters [N, K]``, ``centroids [M, K]`` (unit) -> ``(assignment [N], cosine [N])``."""
    assignments, cosines = [], []
    for start in range(0, filters.shape[0], chunk):
        sims = filters[start : start + chunk].to(torch.float32) @ centroids.t()
        cos, index = sims.max(1)
        assignments.append(index)
        cosines.append(cos)
    return torch.cat(assignments), torch.cat(cosines)
