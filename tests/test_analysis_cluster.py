"""Clustering with ground truth: planted DoG-jet classes (plus noise) are recovered by the
autoencoder's latent intervals and by k-means, and named after what they are."""

import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from dsconv_ext.analysis import FilterSet, LayerFilters, Settings, analyze
from dsconv_ext.analysis.autoencoder import encode_filters, short_path, train_autoencoder
from dsconv_ext.analysis.clustering import latent_intervals
from dsconv_ext.analysis.labels import describe_shape
from dsconv_ext.analysis.normalize import normalize_filters
from dsconv_ext.analysis.synthetic import PROTOTYPES, planted_filters, prototype_coefficients
from dsconv_ext.analysis.thresholds import classification_threshold, snr_threshold
from dsconv_ext.families import dog
from dsconv_ext.families.bank import master8

# Small but real: 200 filters per class, a short training. ~3 s per run on a shared 2-core CPU.
PLANTED_FILTERS = 1200
TEST_STEPS = 1500


def _planted_set(kernel_size, seed=0):
    planted = planted_filters(PLANTED_FILTERS, kernel_size, coefficient_jitter=0.1, noise=0.15, seed=seed)
    # Two "layers", so the per-layer bookkeeping is exercised too.
    half = PLANTED_FILTERS // 2
    layers = [LayerFilters("block0.dw", planted.filters[:half]), LayerFilters("block1.dw", planted.filters[half:])]
    return planted, FilterSet(source="planted", layers=layers)


def _expected_label(class_name: str) -> str:
    # The synthetic class names are the labels, except that a cross also gets its angle (Gxy:
    # positive arms along the 135-degree diagonal).
    return "cross at 135" if class_name == "cross" else class_name


@pytest.mark.parametrize("kernel_size", [(7, 7), (5, 5)])
def test_autoencoder_recovers_and_names_planted_classes(kernel_size):
    planted, filter_set = _planted_set(kernel_size)
    result = analyze(filter_set, settings=Settings(steps=TEST_STEPS, bank=None))
    size = result.sizes[kernel_size]
    ari = adjusted_rand_score(planted.labels.numpy(), size.assignment.numpy())
    assert ari >= 0.9, ari
    assert size.classified_share >= 0.9
    assert len(size.clusters) == len(planted.class_names)
    labels_by_index = {cluster.index: cluster.label for cluster in size.clusters}
    for class_index, class_name in enumerate(planted.class_names):
        majority = int(torch.mode(size.assignment[planted.labels == class_index]).values)
        assert labels_by_index[majority] == _expected_label(class_name), (class_name, labels_by_index)
    # Every cluster is one or more latent intervals; shares add up to the classified share.
    assert all(cluster.intervals for cluster in size.clusters)
    assert sum(c.share for c in size.clusters) == pytest.approx(size.classified_share, abs=1e-6)


def test_kmeans_recovers_planted_classes():
    planted, filter_set = _planted_set((7, 7), seed=1)
    result = analyze(filter_set, settings=Settings(method="kmeans", kmeans_clusters=6, bank=None))
    size = result.sizes[(7, 7)]
    assert adjusted_rand_score(planted.labels.numpy(), size.assignment.numpy()) >= 0.9
    assert size.latent is None and size.classified_share >= 0.9


def test_training_is_deterministic_and_leaves_thread_setting_alone():
    planted = planted_filters(300, (5, 5), seed=2)
    flat = normalize_filters(planted.filters).flatten(1)
    threads = torch.get_num_threads()
    first, _ = train_autoencoder(flat, seed=3, steps=200)
    second, _ = train_autoencoder(flat, seed=3, steps=200)
    assert torch.get_num_threads() == threads
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    other, _ = train_autoencoder(flat, seed=4, steps=200)
    assert not torch.equal(encode_filters(first, flat)[0], encode_filters(other, flat)[0])


def test_same_shape_on_two_latent_stretches_is_one_cluster():
    """The decoder's curve can pass a shape twice: intervals with the same centroid merge."""
    generator = torch.Generator().manual_seed(0)
    shape_a, shape_b = torch.randn(2, 25, generator=generator)
    filters = torch.cat([shape_a + 0.05 * torch.randn(100, 25, generator=generator),
                         shape_b + 0.05 * torch.randn(100, 25, generator=generator),
                         shape_a + 0.05 * torch.randn(100, 25, generator=generator)])
    filters = normalize_filters(filters.reshape(-1, 5, 5)).flatten(1)
    latent = torch.cat([0.1 + 0.02 * torch.rand(100, generator=generator),
                        0.5 + 0.02 * torch.rand(100, generator=generator),
                        0.85 + 0.02 * torch.rand(100, generator=generator)])
    intervals = latent_intervals(latent, filters, torch.ones(300, dtype=torch.bool))
    assert intervals.num_clusters == 2
    assert intervals.assignment[:100].unique().tolist() == intervals.assignment[200:].unique().tolist()
    assert len(intervals.intervals_of(int(intervals.assignment[0]))) == 2


@pytest.mark.parametrize("name", sorted(PROTOTYPES))
def test_prototypes_are_named_after_what_they_are(name):
    params = dog.make_params(prototype_coefficients(name)[None], torch.tensor([1.0], dtype=torch.float64),
                             torch.tensor([0.5], dtype=torch.float64))
    description = describe_shape(dog.dog_filters(params, (7, 7))[0])
    assert description.label == _expected_label(name)
    assert description.fit_cosine > 0.999


def test_master_key_filters_are_named():
    bank = master8(7)
    assert describe_shape(bank[4]).label == "first derivative at 180"  # central difference in x
    assert describe_shape(bank[5]).label == "first derivative at 90"  # central difference in y
    assert describe_shape(bank[6]).label == "on-centre"  # T - 0.5 Laplacian(T): a surround ring
    assert describe_shape(bank[7]).label == "Gaussian"  # T itself


def test_square_and_not_dog_like():
    y, x = torch.arange(7)[:, None] - 3, torch.arange(7)[None, :] - 3
    diamond = ((y.abs() + x.abs()) == 3).float()  # a square outline on its corner: 4-fold symmetric
    assert describe_shape(diamond).label == "square"
    noise = torch.randn(7, 7, generator=torch.Generator().manual_seed(0))
    description = describe_shape(noise)
    assert description.label == "not DoG-like" and description.fit_cosine < 0.7


def test_thresholds():
    assert classification_threshold((7, 7)) == 0.3 and classification_threshold((5, 5)) == 0.2
    # The constant-SNR rule reproduces both published values and gives 0.07 for 3x3.
    assert snr_threshold((7, 7)) == pytest.approx(0.3, abs=0.0101)
    assert snr_threshold((5, 5)) == pytest.approx(0.2, abs=0.0101)
    assert classification_threshold((3, 3)) == 0.07
    sizes = [(2, 2), (3, 3), (3, 5), (5, 5), (7, 7), (9, 9), (11, 11), (31, 31)]
    values = [classification_threshold(s) for s in sizes]
    assert values == sorted(values) and values[-1] == 0.5


def test_short_path_orders_points_along_a_line():
    points = torch.tensor([0.0, 5.0, 1.0, 4.0, 2.0, 3.0])
    order = short_path((points[:, None] - points[None, :]).abs())
    assert [float(points[i]) for i in order] in ([0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0])
