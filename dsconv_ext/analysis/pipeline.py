"""``analyze(source)``: extract, normalise, fit, cluster, label and bank-match, per kernel size.

The stages, for the filters of one kernel size (``[N, kh, kw]``, normalised):

1. DoG-jet fit of every filter (``dog_fit.fit_dog_batched``): fit quality = cosine.
2. Clustering: the 1-D-latent cosine autoencoder (default; ``autoencoder``, clusters are
   latent intervals from ``clustering.latent_intervals``, neighbours that read the same joined)
   or spherical k-means. A filter is classified when its dissimilarity to its reconstruction
   (or centroid) is below the kernel size's threshold (``thresholds``).
3. Labels: each cluster's centroid (mean of its classified members) is named by its DoG-jet fit
   (``labels.describe_shape``).
4. Master-key test: the nearest bank filter up to ``a*f+b`` (``bank_match``).

Everything is seeded, and runs on one thread by default (``Settings.threads``): the same input
and settings give the same result. Writing the report and figures is separate (``output``).
"""

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch

from ..families.bank import BANK_NAMES
from . import autoencoder as ae
from .bank_match import BankMatch, match_bank, resolve_bank
from .clustering import LatentIntervals, assign_to_centroids, latent_intervals, spherical_kmeans, unit_centroids
from .dog_fit import DogFit, fit_dog_batched
from .errors import AnalysisInputError
from .extract import extract
from .filterset import FilterSet, KernelSizeGroup, group_by_kernel_size
from .labels import ShapeDescription, describe_shape
from .thresholds import classification_threshold, size_key

METHODS = ("autoencoder", "kmeans")
# Fewer filters than this in a kernel size: fitted and bank-matched, but not clustered.
MIN_FILTERS_TO_CLUSTER = 8
CURVE_POINTS = 4096

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class Settings:
    """How the analysis runs: clustering ``method`` ("autoencoder" or "kmeans"), ``seed``,
    autoencoder ``steps``, ``kmeans_clusters``, the ``bank`` for the master-key test (a name,
    a ``[M, kh, kw]`` tensor, or None to skip it), the DoG ``profile``, and the CPU
    ``threads`` to use (None: leave torch's setting alone).

    One thread is the default: the work is many small batched operations, which on a shared
    machine run several times slower with two threads (a parallel region waits for its slowest
    thread, and a busy core delays it by whole time slices), and on an idle one gain only a
    few seconds per million filters; it also makes results independent of the machine's core
    count. The autoencoder always trains on one thread (``autoencoder``)."""

    method: str = "autoencoder"
    seed: int = 0
    steps: int = ae.DEFAULT_STEPS
    kmeans_clusters: int = 8
    bank: Union[str, torch.Tensor, None] = "master8"
    profile: str = "integrated"
    threads: Optional[int] = 1

    @property
    def bank_name(self) -> Optional[str]:
        if self.bank is None:
            return None
        return self.bank if isinstance(self.bank, str) else "custom"


@dataclass
class Cluster:
    """One cluster of one kernel size.

    Attributes:
        index: cluster id in ``SizeResult.assignment``.
        label: its name (unique within the kernel size).
        description: the centroid's DoG-jet reading (``labels.ShapeDescription``).
        centroid: ``[kh, kw]`` mean shape of the classified members (zero mean, unit norm).
        members: classified filters in it.
        share: ``members / N`` (all analysed filters of this size); the shares of all clusters
            add up to the classified share.
        intervals: its latent intervals ``[[low, high], ...]`` (autoencoder only).
    """

    index: int
    label: str
    description: ShapeDescription
    centroid: torch.Tensor
    members: int
    share: float
    intervals: Optional[List[List[float]]] = None


@dataclass
class SizeResult:
    """Everything computed for one kernel size; per-filter tensors are ``[N]``, aligned with
    ``group.filters``."""

    group: KernelSizeGroup
    threshold: float
    method: str
    dog: DogFit
    dissimilarity: torch.Tensor
    classified: torch.Tensor
    assignment: torch.Tensor
    clusters: List[Cluster]
    bank: Optional[BankMatch] = None
    latent: Optional[torch.Tensor] = None
    intervals: Optional[LatentIntervals] = None
    curve: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
    training: Optional[ae.TrainingSummary] = None

    @property
    def num_filters(self) -> int:
        return int(self.group.filters.shape[0])

    @property
    def classified_share(self) -> float:
        return float(self.classified.float().mean()) if self.num_filters else 0.0


@dataclass
class AnalysisResult:
    """The whole analysis: ``sizes`` maps ``(kh, kw)`` to its ``SizeResult``."""

    source: str
    num_filters: int
    num_zero: int
    num_constant: int
    layer_kernel_sizes: List[Tuple[str, Tuple[int, int]]]
    skipped: List[str]
    settings: Settings
    sizes: Dict[Tuple[int, int], SizeResult]
    timings: Dict[str, float] = field(default_factory=dict)


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


def _merge_same_named_neighbours(
    filters: torch.Tensor, classified: torch.Tensor, intervals: LatentIntervals, kernel_size
) -> LatentIntervals:
    """Join clusters that sit next to each other on the latent and read the same (e.g. three
    stretches of "cross at 135" whose centroids differ only in what they blend with at their
    ends): the curve passing one kind of filter is one cluster. Clusters that read the same
    but are apart on the latent stay apart (they usually differ in scale)."""
    descriptions: Dict[bytes, str] = {}

    def name(centroid: torch.Tensor) -> str:
        key = centroid.numpy().tobytes()
        if key not in descriptions:
            descriptions[key] = describe_shape(centroid.reshape(kernel_size)).label
        return descriptions[key]

    while intervals.num_clusters > 1:
        count = intervals.num_clusters
        members = torch.bincount(intervals.assignment[classified], minlength=count)
        centroids = unit_centroids(filters, intervals.assignment, count, classified)
        names = {i: name(centroids[i]) for i in range(count) if int(members[i]) > 0}
        pair = next(
            ((a, b) for a in names for b in names if a < b and names[a] == names[b] and intervals.touching(a, b)),
            None,
        )
        if pair is None:
            break
        intervals = intervals.merged(*pair)
    return intervals


def _label_clusters(
    filters: torch.Tensor, assignment: torch.Tensor, classified: torch.Tensor, count: int, kernel_size,
    intervals: Optional[LatentIntervals] = None,
) -> List[Cluster]:
    """Centroids and names of the clusters that have classified members, by share."""
    total = max(1, filters.shape[0])
    members = torch.bincount(assignment[classified], minlength=count)
    centroids = unit_centroids(filters, assignment, count, classified)
    clusters = []
    for index in members.argsort(descending=True, stable=True).tolist():
        if int(members[index]) == 0:
            continue
        centroid = centroids[index].reshape(kernel_size)
        clusters.append(
            Cluster(
                index=index,
                label="",
                description=describe_shape(centroid),
                centroid=centroid,
                members=int(members[index]),
                share=int(members[index]) / total,
                intervals=intervals.intervals_of(index) if intervals is not None else None,
            )
        )
    # Two clusters can read the same (e.g. on-centre at two scales): tell them apart by scale,
    # and by number if even that repeats.
    repeats: Dict[str, int] = {}
    for cluster in clusters:
        repeats[cluster.description.label] = repeats.get(cluster.description.label, 0) + 1
    used: Dict[str, int] = {}
    for cluster in clusters:
        label = cluster.description.label
        if repeats[label] > 1:
            label = f"{label}, sigma {cluster.description.sigma:.2f}"
        used[label] = used.get(label, 0) + 1
        cluster.label = label if used[label] == 1 else f"{label} ({used[label]})"
    return clusters


def analyze_group(group: KernelSizeGroup, settings: Settings, progress: Progress = _no_progress,
                  timings: Optional[Dict[str, float]] = None) -> SizeResult:
    """Fit, cluster, label and bank-match the filters of one kernel size."""
    timings = {} if timings is None else timings
    key = size_key(group.kernel_size)
    filters = group.filters
    count = filters.shape[0]
    flat = filters.reshape(count, -1)
    threshold = classification_threshold(group.kernel_size)

    start = time.perf_counter()
    progress(f"DoG fit {key}", 0, count)
    dog = fit_dog_batched(filters, settings.profile, progress=lambda done: progress(f"DoG fit {key}", done, count))
    timings[f"fit {key}"] = time.perf_counter() - start

    start = time.perf_counter()
    latent = intervals = curve = training = None
    if count < MIN_FILTERS_TO_CLUSTER:
        method = "none"
        dissimilarity = torch.ones(count)
        assignment = torch.zeros(count, dtype=torch.long)
        num_clusters = 1
    elif settings.method == "autoencoder":
        method = "autoencoder"
        stage = f"autoencoder {key}"
        progress(stage, 0, settings.steps)
        model, training = ae.train_autoencoder(
            flat, seed=settings.seed, steps=settings.steps, progress=lambda done: progress(stage, done, settings.steps)
        )
        timings[f"autoencoder training {key}"] = training.seconds
        latent, dissimilarity = ae.encode_filters(model, flat)
        curve = ae.decode_curve(model, CURVE_POINTS)
        intervals = latent_intervals(latent, flat, dissimilarity < threshold, curve)
        intervals = _merge_same_named_neighbours(flat, dissimilarity < threshold, intervals, group.kernel_size)
        assignment, num_clusters = intervals.assignment, intervals.num_clusters
    elif settings.method == "kmeans":
        method = "kmeans"
        progress(f"k-means {key}", 0, 1)
        centres = spherical_kmeans(flat, settings.kmeans_clusters, seed=settings.seed)
        assignment, cos = assign_to_centroids(flat, centres)
        dissimilarity = 1 - cos
        num_clusters = centres.shape[0]
        progress(f"k-means {key}", 1, 1)
    else:
        raise ValueError(f"method: expected one of {METHODS}, got {settings.method!r}")
    classified = dissimilarity < threshold
    timings[f"cluster {key}"] = time.perf_counter() - start

    start = time.perf_counter()
    clusters = (
        _label_clusters(flat, assignment, classified, num_clusters, group.kernel_size, intervals)
        if method != "none" else []
    )
    timings[f"label {key}"] = time.perf_counter() - start

    bank = None
    # A named bank is generated at every kernel size; a custom tensor only meets its own.
    custom_bank_fits = (
        not isinstance(settings.bank, torch.Tensor) or tuple(settings.bank.shape[1:]) == tuple(group.kernel_size)
    )
    if settings.bank is not None and custom_bank_fits:
        start = time.perf_counter()
        bank = match_bank(filters, resolve_bank(settings.bank, group.kernel_size), settings.bank_name)
        timings[f"bank {key}"] = time.perf_counter() - start
    return SizeResult(
        group=group, threshold=threshold, method=method, dog=dog, dissimilarity=dissimilarity,
        classified=classified, assignment=assignment, clusters=clusters, bank=bank, latent=latent,
        intervals=intervals, curve=curve, training=training,
    )


def _check_bank(bank) -> None:
    """Fail before the work on a bank that cannot be used."""
    if bank is None:
        return
    if isinstance(bank, str):
        if bank not in BANK_NAMES:
            expected = ", ".join(BANK_NAMES)
            raise AnalysisInputError(f"unknown bank {bank!r} (expected one of {expected} or a [M, kh, kw] file)")
        return
    if not isinstance(bank, torch.Tensor) or bank.dim() != 3 or not bank.is_floating_point() or min(bank.shape[1:]) < 2:
        shape = list(bank.shape) if isinstance(bank, torch.Tensor) else type(bank).__name__
        raise AnalysisInputError(f"bank: expected a floating-point [M, kh, kw] tensor, got {shape}")
    if not torch.isfinite(bank).all():
        raise AnalysisInputError("bank: contains NaN or inf")


def analyze(
    source=None,
    *,
    checkpoint=None,
    trust_pickle: bool = False,
    settings: Optional[Settings] = None,
    progress: Optional[Progress] = None,
) -> AnalysisResult:
    """Analyse every depthwise filter of ``source``.

    Args:
        source: anything ``extract`` takes (None: the default MobileNetV2), or a ``FilterSet``.
        checkpoint, trust_pickle: passed to ``extract``.
        settings: ``Settings`` (default: autoencoder, seed 0, master8 bank).
        progress: optional ``progress(stage, done, total)``.
    Returns:
        ``AnalysisResult``. Bad input raises ``AnalysisInputError``.
    """
    settings = settings or Settings()
    if settings.method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {settings.method!r}")
    with _threads(settings.threads):
        return _analyze(source, checkpoint, trust_pickle, settings, progress or _no_progress)


@contextlib.contextmanager
def _threads(count: Optional[int]):
    """Run with ``count`` torch threads (None: unchanged), then restore the caller's setting."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _analyze(source, checkpoint, trust_pickle: bool, settings: Settings, progress: Progress) -> AnalysisResult:
    timings: Dict[str, float] = {}
    start = time.perf_counter()
    progress("extract", 0, 1)
    filter_set = source if isinstance(source, FilterSet) else extract(source, checkpoint, trust_pickle)
    filter_set.check_usable()
    groups = group_by_kernel_size(filter_set)
    progress("extract", 1, 1)
    timings["extract"] = time.perf_counter() - start
    _check_bank(settings.bank)
    sizes = {}
    for kernel_size, group in groups.items():
        if group.filters.shape[0]:
            sizes[kernel_size] = analyze_group(group, settings, progress, timings)
    return AnalysisResult(
        source=filter_set.source,
        num_filters=filter_set.num_filters,
        num_zero=sum(group.num_zero for group in groups.values()),
        num_constant=sum(group.num_constant for group in groups.values()),
        layer_kernel_sizes=[(layer.name, layer.kernel_size) for layer in filter_set.layers],
        skipped=list(filter_set.skipped),
        settings=settings,
        sizes=sizes,
        timings=timings,
    )
