"""Bad input to convert / revert / the transfer tools: a clear error, and the model unchanged."""

import pytest
import torch
from torch import nn

from dsconv_ext.families.bank import master8
from dsconv_ext.surgery import convert, freeze_depthwise, init_dog_, revert, transplant_depthwise

from test_surgery_common import make_model


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _snapshot(model: nn.Module):
    return repr(model), {k: v.detach().clone() for k, v in model.state_dict().items()}, \
        {n: p.requires_grad for n, p in model.named_parameters()}


def _assert_unchanged(model: nn.Module, snapshot) -> None:
    text, state, flags = snapshot
    assert repr(model) == text
    now = model.state_dict()
    assert list(now) == list(state)
    for key, value in state.items():
        assert torch.equal(now[key], value), key
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags


def _dense_model():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


@pytest.mark.parametrize("call", [
    lambda m: convert(m, to="dog"),
    lambda m: convert(m, to="depthwise"),
    lambda m: revert(m),
    lambda m: init_dog_(m),
    lambda m: freeze_depthwise(m),
])
def test_no_depthwise_convs(call):
    model = _dense_model()
    snapshot = _snapshot(model)
    with pytest.raises(ValueError, match="found no (depthwise convolutions|dsconv_ext layers)"):
        call(model)
    _assert_unchanged(model, snapshot)


def test_no_depthwise_convs_in_a_real_model():
    torchvision = pytest.importorskip("torchvision")

    model = torchvision.models.resnet18()
    snapshot = _snapshot(model)
    with pytest.raises(ValueError, match="found no depthwise convolutions in ResNet"):
        convert(model, to="dog")
    _assert_unchanged(model, snapshot)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"to": "dogg"}, ValueError, r"to: expected one of \('depthwise', 'dog', 'bank'\), got 'dogg'"),
    ({"to": None}, ValueError, "to: expected one of"),
    ({"to": "bank", "bank": master8(3)}, ValueError, "bank: its kernel size does not match.*7x7.*bank is 3x3"),
    ({"to": "bank", "bank": {3: "master8"}}, ValueError, "no bank given for this kernel size"),
    ({"to": "bank", "bank": "master9"}, ValueError, "bank: expected one of"),
    ({"to": "bank", "bank": torch.zeros(8, 7)}, ValueError, r"\[M, kh, kw\] tensor"),
    ({"to": "bank", "bank": 3}, TypeError, "bank: expected a bank name"),
    ({"to": "dog", "profile": "smooth"}, ValueError, "profile"),
    ({"to": "dog", "levels": -1}, ValueError, "levels"),
    ({"to": "dog", "threads": 0}, ValueError, "threads"),
    ({"to": "dog", "include": 3}, TypeError, "include"),
    ({"to": "dog", "exclude": [1.5]}, TypeError, "exclude"),
    ({"to": "dog", "include": "no.such.layer*"}, ValueError, "include/exclude left none"),
])
def test_bad_arguments_leave_the_model_unchanged(kwargs, error, match):
    model = make_model("convnext_atto")
    snapshot = _snapshot(model)
    with pytest.raises(error, match=match):
        convert(model, **kwargs)
    _assert_unchanged(model, snapshot)


def test_wrong_bank_size_on_a_mixed_kernel_model_lists_the_layers():
    model = make_model("mixnet_s")
    snapshot = _snapshot(model)
    with pytest.raises(ValueError, match=r"blocks\.0\.0\.conv_dw \(3x3\): bank is 7x7.*\(\d+ layers\)"):
        convert(model, to="bank", bank=master8(7))
    _assert_unchanged(model, snapshot)


def test_not_a_module_and_a_bare_conv():
    with pytest.raises(TypeError, match="model: expected an nn.Module"):
        convert(torch.zeros(3), to="dog")
    conv = nn.Conv2d(4, 4, 3, groups=4)
    with pytest.raises(ValueError, match="cannot replace the module itself"):
        convert(conv, to="dog")


def test_revert_of_a_plain_model():
    model = make_model("mobilenetv3_small_050")
    snapshot = _snapshot(model)
    with pytest.raises(ValueError, match="found no dsconv_ext layers"):
        revert(model)
    _assert_unchanged(model, snapshot)


def test_transplant_errors_leave_dst_unchanged():
    src, dst = make_model("convnext_atto"), make_model("mobilenetv3_small_050")
    snapshot = _snapshot(dst)
    with pytest.raises(ValueError, match="channels"):
        transplant_depthwise(src, dst, channels="repeat")
    with pytest.raises(ValueError, match="match"):
        transplant_depthwise(src, dst, match="size")
    with pytest.raises(ValueError, match="no destination layer matched"):
        transplant_depthwise(src, dst, match="name")
    with pytest.raises(ValueError, match=r"src: expected depthwise filters"):
        transplant_depthwise([torch.zeros(4, 2, 3, 3)], dst)
    with pytest.raises(ValueError, match="found no depthwise"):
        transplant_depthwise(_dense_model(), dst)
    _assert_unchanged(dst, snapshot)


def test_init_dog_bad_arguments_leave_the_model_unchanged():
    model = make_model("convnext_atto")
    snapshot = _snapshot(model)
    with pytest.raises(ValueError, match="gamma_range"):
        init_dog_(model, gamma_range=(0.5, 1.2))
    with pytest.raises(ValueError, match="polarity"):
        init_dog_(model, polarity="both")
    with pytest.raises(ValueError, match="radius"):
        init_dog_(model, radius=-1.0)
    _assert_unchanged(model, snapshot)
