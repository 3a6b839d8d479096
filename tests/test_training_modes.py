"""Every training mode: what it builds (through the surgery API) and a short run on a tiny subset."""

import math

import pytest
import torch
from torch import nn

from dsconv_ext import BankConv2d, DepthwiseConv2d, DoGConv2d
from dsconv_ext.surgery import find_depthwise
from dsconv_ext.training import MODES, ModelError, build_model, train
from dsconv_ext.training.models import set_depthwise_kernel, source_filters

from training_common import read_metrics, tiny_config

SMALL = dict(num_classes=10, in_chans=1, img_size=12, seed=3)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _filters(model):
    return [site.module.weight.detach().clone() for site in find_depthwise(model)]


def _channels(model):
    return sum(site.channels for site in find_depthwise(model))


def test_default_model_geometry():
    model, info = build_model(mode="standard", **SMALL)
    sites = find_depthwise(model)
    assert len(sites) == 17 and info.depthwise_layers == 17
    assert {s.kernel_size for s in sites} == {(5, 5)}
    assert all(isinstance(s.module, DepthwiseConv2d) for s in sites)          # dsconv kernels
    assert info.stem_stride == 1 and model.conv_stem.stride == (1, 1)
    out = model(torch.randn(2, 1, 12, 12))
    assert out.shape == (2, 10)
    torch_model, _ = build_model(mode="standard", depthwise_backend="torch", **SMALL)
    assert all(type(s.module) is nn.Conv2d for s in find_depthwise(torch_model))
    # The dsconv copy is exact: same filters, same outputs.
    torch.testing.assert_close(_filters(model), _filters(torch_model))
    model.eval(), torch_model.eval()
    x = torch.randn(2, 1, 12, 12)
    torch.testing.assert_close(model(x), torch_model(x), rtol=1e-4, atol=1e-5)


def test_modes_share_everything_but_the_depthwise_filters():
    """One seed: the same pointwise / BN / classifier init in every mode (paired comparisons)."""
    built = {mode: build_model(mode=mode, **SMALL)[0] for mode in MODES}
    reference = {k: v for k, v in built["standard"].state_dict().items() if "conv_dw" not in k}
    for mode, model in built.items():
        state = model.state_dict()
        for key, value in reference.items():
            assert torch.equal(state[key], value), f"{mode}: {key} differs from standard"


def test_mode_parameters_and_frozen_flags():
    infos = {mode: build_model(mode=mode, **SMALL) for mode in MODES}
    channels = _channels(infos["standard"][0])
    assert infos["standard"][1].depthwise_trainable_params == channels * 25
    assert infos["dog-init"][1].depthwise_trainable_params == channels * 25
    assert infos["dog"][1].depthwise_params == channels * 10                  # 10 numbers per channel
    assert infos["bank-master8"][1].depthwise_trainable_params == channels * 2   # scale + offset
    assert infos["frozen-random"][1].depthwise_trainable_params == 0
    assert infos["frozen-transplant"][1].depthwise_trainable_params == 0
    assert all(isinstance(s.module, DoGConv2d) for s in find_depthwise(infos["dog"][0]))
    banks = [s.module for s in find_depthwise(infos["bank-master8"][0])]
    assert all(isinstance(b, BankConv2d) and b.select and b.offset is not None for b in banks)
    assert not any(b.bank.requires_grad for b in banks)
    no_offset, info = build_model(mode="bank-master8", bank_offset=False, **SMALL)
    assert info.depthwise_trainable_params == channels
    for mode in ("dog", "bank-master8"):
        assert infos[mode][1].params < infos["standard"][1].params


def test_dog_init_gives_centre_surround_filters():
    model, _ = build_model(mode="dog-init", **SMALL)
    for weight in _filters(model):
        assert float(weight.std()) == pytest.approx(1 / math.sqrt(3 * 25), rel=1e-4)
        torch.testing.assert_close(weight.sum((1, 2, 3)), torch.zeros(weight.shape[0]), atol=1e-5, rtol=0)
        centre = weight[:, 0, 2, 2]
        assert torch.all(centre[0::2] > 0) and torch.all(centre[1::2] < 0)   # on / off alternate


def test_frozen_transplant_copies_the_imagenet_filters():
    filters, description = source_filters(None)
    assert "MobileNetV2" in description and len(filters) == 17
    model, info = build_model(mode="frozen-transplant", **SMALL)
    assert info.notes["transplanted_layers"] == 17 and info.notes["kernel"] == ["pad"]
    for (name, source), weight in zip(filters.items(), _filters(model)):
        c = weight.shape[0]
        assert source.shape[1:] == (3, 3)
        torch.testing.assert_close(weight[:, 0, 1:4, 1:4], source[:c].to(weight))   # centred 3x3, first channels
        assert float(weight[:, 0, 0].abs().max()) == 0.0                          # zero padding to 5x5


def test_unknown_model_and_bad_kernel():
    with pytest.raises(ModelError, match="--model"):
        build_model(name="no_such_model_xyz", **SMALL)
    with pytest.raises(ModelError, match="odd"):
        set_depthwise_kernel(nn.Sequential(nn.Conv2d(4, 4, 3, groups=4)), 4)
    with pytest.raises(ModelError, match="source-weights"):
        build_model(mode="frozen-transplant", source_weights="/no/such/file.pth", **SMALL)


@pytest.mark.parametrize("mode", MODES)
def test_short_run_every_mode(tmp_path, mode):
    before, _ = build_model(mode=mode, num_classes=10, in_chans=1, img_size=12, seed=0)
    metrics = train(tiny_config(tmp_path, mode=mode, max_steps=6))
    assert metrics["status"] == "complete"
    saved = read_metrics(tmp_path)
    assert saved["steps_done"] == 6 and saved["total_steps"] == 6
    assert [e["steps"] for e in saved["epochs"]] == [5, 6]          # the cap ends epoch 2 early
    for entry in saved["epochs"]:
        assert 0.0 <= entry["val_acc"] <= 1.0 and math.isfinite(entry["val_loss"])
        assert entry["val_images"] == 40
        assert entry["trainable_params"] == saved["model"]["trainable_params"]
    assert saved["model"]["mode"] == mode and saved["ranks_agree"] is True
    # Training moved the trainable depthwise filters and left the frozen ones alone.
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    after, _ = build_model(mode=mode, num_classes=10, in_chans=1, img_size=12, seed=0)
    after.load_state_dict(ckpt["model"])
    moved = [not torch.equal(a, b) for a, b in zip(_filters(before), _filters(after))]
    if mode in ("frozen-random", "frozen-transplant"):
        assert not any(moved)
    else:
        assert all(moved)


def test_amp_and_channels_last_run(tmp_path):
    """bf16 autocast on CPU through the DoG op, in channels_last: finite losses, a complete run."""
    metrics = train(tiny_config(tmp_path, mode="dog", max_steps=3, amp=True, channels_last=True))
    assert metrics["status"] == "complete"
    assert all(math.isfinite(e["train_loss"]) and math.isfinite(e["val_loss"]) for e in metrics["epochs"])
