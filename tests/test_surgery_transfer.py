"""init_dog_ (centre-surround DoG initialisation), freeze_depthwise and transplant_depthwise."""

import math

import pytest
import torch
from torch import nn

from dsconv_ext import BankConv2d, DoGConv2d
from dsconv_ext.surgery import (centre_surround_filters, convert, dog_sigma, find_depthwise, freeze_depthwise,
                                init_dog_, transplant_depthwise)

from test_surgery_common import make_input, make_model


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


# ---- init_dog_ ------------------------------------------------------------------------------

def test_sigma_puts_the_zero_crossing_at_r():
    gamma = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    for r in (0.75, 1.5, 3.0):
        sigma = dog_sigma(gamma, r)
        centre = torch.exp(-r * r / (2 * (gamma * sigma) ** 2)) / (gamma * sigma) ** 2
        surround = torch.exp(-r * r / (2 * sigma ** 2)) / sigma ** 2
        torch.testing.assert_close(centre, surround)


@pytest.mark.parametrize("kernel_size", [3, 5, 7, (3, 5)])
def test_centre_surround_sums(kernel_size):
    filters, shape = centre_surround_filters(16, kernel_size, generator=torch.Generator().manual_seed(0))
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    assert filters.shape == (16, kh, kw)
    positive = filters.clamp_min(0).flatten(1).sum(1)
    negative = filters.clamp_max(0).flatten(1).sum(1)
    torch.testing.assert_close(positive, torch.ones(16, dtype=torch.float64))
    torch.testing.assert_close(negative, -torch.ones(16, dtype=torch.float64))
    centre = filters[:, kh // 2, kw // 2]
    assert torch.all(centre[0::2] > 0) and torch.all(centre[1::2] < 0)     # on / off alternate
    assert torch.all((shape["gamma"] >= 0.3) & (shape["gamma"] <= 0.8))


def test_init_dog_on_a_timm_model_rescales_to_the_default_variance():
    model = make_model("convnext_atto")
    assert init_dog_(model, generator=torch.Generator().manual_seed(0)) is model
    for site in find_depthwise(model):
        weight = site.module.weight.detach()
        assert float(weight.std()) == pytest.approx(1 / math.sqrt(3 * 49), rel=1e-5)
        assert torch.allclose(weight.sum((1, 2, 3)), torch.zeros(weight.shape[0]), atol=1e-5)
    with torch.no_grad():
        assert torch.isfinite(model(make_input())).all()


def test_init_dog_rescale_options_and_polarity():
    conv = nn.Conv2d(8, 8, 5, padding=2, groups=8)
    init_dog_(conv, rescale=False, polarity="off")
    assert torch.all(conv.weight[:, 0, 2, 2] < 0)
    torch.testing.assert_close(conv.weight.detach().clamp_min(0).sum((1, 2, 3)), torch.ones(8))
    init_dog_(conv, rescale=0.5)
    assert float(conv.weight.detach().std()) == pytest.approx(0.5, rel=1e-5)
    a = nn.Conv2d(8, 8, 5, groups=8)
    b = nn.Conv2d(8, 8, 5, groups=8)
    init_dog_(a, polarity="random", generator=torch.Generator().manual_seed(3))
    init_dog_(b, polarity="random", generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.weight, b.weight)


def test_init_dog_gives_dogconv2d_the_same_filter():
    plain = nn.Conv2d(12, 12, 7, padding=3, groups=12)
    layer = DoGConv2d(12, 7, padding=3)
    init_dog_(plain, generator=torch.Generator().manual_seed(5))
    init_dog_(layer, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(layer.weight.detach(), plain.weight.detach(), rtol=1e-5, atol=1e-6)


def test_init_dog_multiplier_and_bank_layers():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, groups=4), BankConv2d(8, 3))
    bank_before = model[1].coeffs.detach().clone()
    init_dog_(model)
    assert model[0].weight.shape[0] == 8 and torch.allclose(model[0].weight.sum((1, 2, 3)), torch.zeros(8), atol=1e-6)
    assert torch.equal(model[1].coeffs, bank_before)


# ---- freeze_depthwise -----------------------------------------------------------------------

def test_freeze_depthwise_plain_and_families():
    model = make_model("mobilenetv3_small_050")
    names = freeze_depthwise(model)
    sites = find_depthwise(model)
    assert len(names) == len(sites) and all(n.endswith(".weight") for n in names)
    assert all(not s.module.weight.requires_grad for s in sites)
    before = [s.module.weight.detach().clone() for s in sites]
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(make_input()).square().mean().backward()
    optimizer.step()
    assert all(torch.equal(b, s.module.weight) for b, s in zip(before, sites))

    convert(model, to="dog")                          # frozen filters stay frozen after convert
    assert all(not s.module.params.requires_grad for s in find_depthwise(model))
    names = freeze_depthwise(model, freeze=False, bias=True)
    assert all(s.module.params.requires_grad for s in find_depthwise(model))


# ---- transplant_depthwise -------------------------------------------------------------------

def test_transplant_same_architecture_by_order_is_a_copy():
    src, dst = make_model("convnext_atto"), make_model("convnext_atto")
    torch.nn.init.normal_(src.stages[0].blocks[0].conv_dw.weight)
    report = transplant_depthwise(src, dst)
    assert len(report.rows) == 12 and {(r.channels, r.kernel) for r in report.rows} == {("same", "same")}
    for a, b in zip(find_depthwise(src), find_depthwise(dst)):
        assert torch.equal(a.module.weight, b.module.weight)
    assert "transplant: 12 layers copied" in str(report)


def test_transplant_across_architectures_crops_and_cycles():
    src, dst = make_model("convnext_atto"), make_model("mobilenetv3_small_050")
    report = transplant_depthwise(src, dst, freeze=True)
    dst_sites, src_sites = find_depthwise(dst), find_depthwise(src)
    assert len(report.rows) == len(dst_sites) == 11
    first = report.rows[0]
    assert first.src == src_sites[0].name and first.kernel == "crop" and first.channels == "cycle"
    source = src_sites[0].module.weight.detach()[:, 0]           # 40 channels of 7x7
    got = dst_sites[0].module.weight.detach()[:, 0]              # 8 channels of 3x3
    assert torch.equal(got, source[torch.arange(got.shape[0]) % 40, 2:5, 2:5])
    # relative depth: the last dst layer takes the last src layer
    assert report.rows[-1].src == src_sites[-1].name
    assert report.frozen and all(not s.module.weight.requires_grad for s in dst_sites)
    report.to_dict()


def test_transplant_pads_samples_and_maps_names():
    src = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4))
    dst = nn.Sequential(nn.Conv2d(6, 6, 5, groups=6), nn.Conv2d(3, 3, 5, groups=3))
    report = transplant_depthwise(src, dst, match={"1": "0"}, channels="sample",
                                  generator=torch.Generator().manual_seed(0))
    assert [r.dst for r in report.rows] == ["1"] and report.skipped[0].name == "0"
    assert report.rows[0].kernel == "pad" and report.rows[0].channels == "sample"
    got = dst[1].weight.detach()[:, 0]
    assert torch.all(got[:, 0] == 0) and torch.all(got[:, :, 4] == 0)
    source = src[0].weight.detach()[:, 0]
    for channel in got[:, 1:4, 1:4]:
        assert any(torch.equal(channel, s) for s in source)
    chosen = [int(next(i for i, s in enumerate(source) if torch.equal(c, s))) for c in got[:, 1:4, 1:4]]
    assert len(set(chosen)) == 3                                  # without replacement when enough


def test_transplant_by_name_and_into_family_layers():
    src, dst = make_model("convnext_atto"), make_model("convnextv2_atto")
    convert(dst, to="dog", fit=False)
    report = transplant_depthwise(src, dst, match="name")
    assert len(report.rows) == 12 and {r.fitted for r in report.rows} == {"dog"}
    assert all(r.cos_median is not None for r in report.rows)
    # the DoG fit of random-init filters is poor, but the best the jet can do
    assert min(r.cos_min for r in report.rows) > 0


def test_transplant_from_tensors():
    dst = make_model("mobilenetv3_small_050")
    filters = [torch.randn(16, 1, 3, 3), torch.randn(32, 5, 5)]
    report = transplant_depthwise(filters, dst)
    assert {r.src for r in report.rows} == {"0", "1"}
