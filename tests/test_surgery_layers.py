"""convert / revert layer by layer: timm Conv2dSame (dynamic TF "SAME" padding), mixed-kernel
convs, stride, dilation, bias, kh != kw, channel multipliers, 1x1, unsupported subclasses,
shared modules, include / exclude, what is preserved, the report, and the batched fit."""

import json

import pytest
import torch
from torch import nn

from dsconv_ext import BankConv2d, DepthwiseConv2d
from dsconv_ext.families import dog
from dsconv_ext.families.bank import master8
from dsconv_ext.families.fitting import fit_dog
from dsconv_ext.surgery import (BankConv2dSame, ConversionReport, DepthwiseConv2dSame, DoGConv2dSame, convert,
                                revert, tf_same_padding)
from dsconv_ext.surgery.fit import fit_dog_filters, fit_dog_layers, separable_basis

from test_surgery_common import assert_same_output, plant_dog_filters, relative_error, timm

from timm.layers import Conv2dSame, MixedConv2d, StdConv2d  # noqa: E402
from timm.layers.padding import pad_same  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _dw_same(channels, k, stride=1, dilation=1, bias=True):
    return Conv2dSame(channels, channels, k, stride=stride, dilation=dilation, groups=channels, bias=bias)


@pytest.mark.parametrize("size", [(15, 15), (16, 17), (9, 12)])
@pytest.mark.parametrize("k,stride,dilation", [(3, 2, 1), (5, 2, 1), (4, 1, 1), (3, 1, 2), ((3, 5), 2, 1), (2, 2, 1)])
def test_tf_same_padding_matches_timm(size, k, stride, dilation):
    ks = (k, k) if isinstance(k, int) else k
    x = torch.zeros(1, 1, *size)
    padded = pad_same(x, ks, (stride, stride), (dilation, dilation))
    top, bottom, left, right = tf_same_padding(size, ks, (stride, stride), (dilation, dilation))
    assert padded.shape[-2:] == (size[0] + top + bottom, size[1] + left + right)
    marker = torch.zeros(1, 1, *size)
    marker[..., 0, 0] = 1
    located = pad_same(marker, ks, (stride, stride), (dilation, dilation)).nonzero()[0, 2:].tolist()
    assert located == [top, left]


@pytest.mark.parametrize("to", ["depthwise", "dog", "bank"])
@pytest.mark.parametrize("k,stride,dilation", [(3, 2, 1), (5, 2, 1), (4, 1, 1), (3, 1, 2), ((3, 5), 2, 1)])
def test_conv2d_same_is_reproduced(to, k, stride, dilation):
    torch.manual_seed(0)
    model = nn.Sequential(_dw_same(6, k, stride, dilation))
    if to == "dog":
        plant_dog_filters(model)
    report = convert(model, to=to, bank="dog_jet")
    layer = model[0]
    expected_cls = {"depthwise": DepthwiseConv2dSame, "dog": DoGConv2dSame, "bank": BankConv2dSame}[to]
    assert type(layer) is expected_cls and report.layers[0].kind == "conv_same"
    plain = layer.to_conv()
    assert isinstance(plain, Conv2dSame)
    for size in [(15, 15), (16, 17), (9, 12)]:
        x = torch.randn(2, 6, *size)
        with torch.no_grad():
            assert_same_output(layer(x), plain(x), msg=f"{to} {size}")
    if to == "depthwise":
        assert list(model.state_dict()) == ["0.weight", "0.bias"]
    revert(model)
    assert type(model[0]) is Conv2dSame


@pytest.mark.parametrize("padding", ["", "same"])
def test_mixed_conv_members_are_converted(padding):
    torch.manual_seed(0)
    model = nn.Sequential(MixedConv2d(24, 24, kernel_size=[3, 5, 7], stride=2, padding=padding, depthwise=True)).eval()
    x = torch.randn(2, 24, 17, 16)
    with torch.no_grad():
        expected = model(x)
    report = convert(model, to="depthwise")
    assert [row.kind for row in report.layers] == [("conv_same" if padding else "conv") + " (mixed)"] * 3
    assert [row.name for row in report.layers] == ["0.0", "0.1", "0.2"]
    assert isinstance(model[0], MixedConv2d) and len(model[0]) == 3
    with torch.no_grad():
        assert_same_output(model(x), expected)


class Zoo(nn.Module):
    """Every kind of depthwise layer, and some that are not."""

    def __init__(self):
        super().__init__()
        self.dilated = nn.Conv2d(8, 8, (3, 5), padding=(2, 4), dilation=2, groups=8, bias=True)
        self.strided = nn.Conv2d(8, 8, 4, stride=2, padding=1, groups=8, bias=False)
        self.multiplier = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.pointwise_dw = nn.Conv2d(16, 16, 1, groups=16)
        self.reflect = nn.Conv2d(16, 16, 3, padding=1, groups=16, padding_mode="reflect")
        self.standardised = StdConv2d(16, 16, 3, padding=1, groups=16)
        self.dense = nn.Conv2d(16, 16, 3, padding=1)
        self.shared = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.again = self.shared  # one module registered twice

    def forward(self, x):
        x = self.strided(self.dilated(x))
        x = self.pointwise_dw(self.multiplier(x))
        x = self.standardised(self.reflect(x))
        return self.again(self.shared(self.dense(x)))


def _zoo():
    torch.manual_seed(0)
    return Zoo().eval()


def test_zoo_depthwise_exact_and_skips():
    model = _zoo()
    x = torch.randn(2, 8, 20, 19)
    with torch.no_grad():
        expected = model(x)
    report = convert(model, to="depthwise")
    assert [r.name for r in report.layers] == ["dilated", "strided", "pointwise_dw", "shared"]
    reasons = {s.name: s.reason for s in report.skipped}
    assert set(reasons) == {"multiplier", "reflect", "standardised"}
    assert "channel multiplier 2" in reasons["multiplier"]
    assert "padding_mode='reflect'" in reasons["reflect"]
    assert "StdConv2d" in reasons["standardised"]
    assert isinstance(model.shared, DepthwiseConv2d) and model.again is model.shared
    assert isinstance(model.dense, nn.Conv2d) and type(model.dense) is nn.Conv2d
    assert model.dilated.dilation == (2, 2) and model.dilated.kernel_size == (3, 5)
    with torch.no_grad():
        assert_same_output(model(x), expected)
    revert(model)
    assert type(model.shared) is nn.Conv2d and model.again is model.shared
    with torch.no_grad():
        assert_same_output(model(x), expected)


def test_zoo_dog_and_bank_skip_what_the_family_cannot_take():
    dog_report = convert(_zoo(), to="dog")
    assert "pointwise_dw" in {s.name for s in dog_report.skipped}
    assert "1x1" in next(s.reason for s in dog_report.skipped if s.name == "pointwise_dw")
    bank_report = convert(_zoo(), to="bank")   # master8 needs kh, kw >= 2
    assert "pointwise_dw" in {s.name for s in bank_report.skipped}
    jet_report = convert(_zoo(), to="bank", bank="dog_jet")   # the jet bank exists at 1x1
    assert "pointwise_dw" in {r.name for r in jet_report.layers}


def test_include_exclude():
    report = convert(_zoo(), to="depthwise", include=["dil*", lambda name, module: name == "shared"],
                     exclude="shared")
    assert [r.name for r in report.layers] == ["dilated"]
    assert {s.reason for s in report.skipped if s.name in ("strided", "shared")} == {"excluded by include/exclude"}


def test_preserves_modes_flags_and_rng():
    model = _zoo()
    model.strided.train()
    model.dilated.weight.requires_grad_(False)
    model.dilated.bias.requires_grad_(False)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    convert(model, to="dog")
    assert torch.equal(torch.rand(3), expected_next)        # fitting leaves the caller's RNG alone
    assert model.strided.training and not model.dilated.training
    assert not model.dilated.params.requires_grad and not model.dilated.bias.requires_grad
    assert model.shared.params.requires_grad
    revert(model)
    assert not model.dilated.weight.requires_grad and model.shared.weight.requires_grad
    assert model.strided.training


def test_fit_false_keeps_fresh_initialisation():
    model = _zoo()
    old = model.shared.weight.detach().clone()
    report = convert(model, to="depthwise", fit=False)
    assert all(r.cos_median is None for r in report.layers)
    assert not torch.equal(model.shared.weight.detach(), old)


def test_reconversion_between_families():
    model = _zoo()
    plant_dog_filters(model)
    convert(model, to="dog")
    x = torch.randn(2, 8, 20, 19)
    with torch.no_grad():
        as_dog = model(x)
    again = convert(model, to="dog")
    assert not again.layers and all("already a DoGConv2d" in s.reason for s in again.skipped
                                    if s.name in ("dilated", "strided", "shared"))
    report = convert(model, to="depthwise")      # DoG -> explicit filters: exact
    assert {r.name: r.kind for r in report.layers} == {"dilated": "DoGConv2d", "strided": "DoGConv2d",
                                                       "pointwise_dw": "conv", "shared": "DoGConv2d"}
    with torch.no_grad():
        assert relative_error(model(x), as_dog) < 1e-5


def test_float64_model_and_bias():
    model = _zoo().double()
    x = torch.randn(2, 8, 20, 19, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
    convert(model, to="depthwise")
    assert model.dilated.weight.dtype == torch.float64
    assert torch.equal(model.dilated.bias, _zoo().double().dilated.bias)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)


def test_bank_options_and_mappings():
    model = _zoo()
    report = convert(model, to="bank", bank={(3, 5): "dog_jet", 4: master8(4), 3: "master8", 1: "dog_jet"},
                     select=True, offset=True)
    assert isinstance(model.dilated, BankConv2d) and model.dilated.bank_name == "dog_jet"
    assert model.strided.bank_name == "custom" and model.shared.bank_name == "master8"
    assert model.shared.select and model.shared.offset is not None
    assert report.options["select"] and report.options["offset"]
    # the same fit as the module's own from_conv
    conv = _zoo().shared
    reference = BankConv2d.from_conv(conv, bank="master8", select=True, offset=True)
    torch.testing.assert_close(model.shared.fit_cosine, reference.fit_cosine, atol=1e-6, rtol=0)


def test_report_table_and_dict():
    report = convert(_zoo(), to="dog")
    assert isinstance(report, ConversionReport)
    text = str(report)
    assert "convert -> dog" in text and "total" in text and "skipped:" in text and "cos median" in text
    data = report.to_dict()
    json.dumps(data)
    assert data["to"] == "dog" and len(data["layers"]) == len(report.layers)
    assert data["totals"]["params_before"] == sum(r["params_before"] for r in data["layers"])
    row = data["layers"][0]
    assert set(row) >= {"name", "kernel_size", "channels", "params_before", "params_after", "cos_median", "cos_min"}


def test_report_counts_model_parameters():
    model = _zoo()
    before = sum(p.numel() for p in model.parameters())
    report = convert(model, to="dog")
    assert report.model_params_before == before
    assert report.model_params_after == sum(p.numel() for p in model.parameters())
    assert report.model_params_after - report.model_params_before == report.params_after - report.params_before


# ---- the batched fit ------------------------------------------------------------------------

@pytest.mark.parametrize("kernel_size", [(7, 7), (1, 9), (4, 3)])
def test_separable_basis_is_the_dog_basis(kernel_size):
    params = dog.make_params(torch.randn(5, 8, dtype=torch.float64), torch.rand(5, dtype=torch.float64) + 0.3,
                             torch.rand(5, dtype=torch.float64) * 0.6 + 0.2)
    py, px = separable_basis(kernel_size, dog.sigma_from_raw(params[:, dog.RHO]),
                             dog.gamma_from_raw(params[:, dog.TAU]), "integrated")
    torch.testing.assert_close(py[:, :, :, None] * px[:, :, None, :], dog.dog_basis(params, kernel_size))


@pytest.mark.parametrize("kernel_size", [(3, 3), (7, 7)])
def test_batched_fit_at_least_as_good_as_fit_dog(kernel_size):
    generator = torch.Generator().manual_seed(0)
    channels = 300
    params = dog.make_params(torch.randn(channels, 8, generator=generator, dtype=torch.float64),
                             torch.exp(torch.empty(channels, dtype=torch.float64).uniform_(-1.5, 1, generator=generator)),
                             torch.empty(channels, dtype=torch.float64).uniform_(0.2, 0.9, generator=generator))
    filters = dog.dog_filters(params, kernel_size)
    filters = filters + 0.02 * filters.flatten(1).norm(dim=1)[:, None, None] * torch.randn(
        filters.shape, generator=generator, dtype=torch.float64) / kernel_size[0]
    _, ours = fit_dog_filters(filters)
    _, reference = fit_dog(filters)
    assert float(ours.median()) >= float(reference.median()) - 1e-6
    assert float(ours.min()) >= float(reference.min()) - 1e-4


def test_fit_layers_split_and_scale():
    a = torch.randn(5, 5, 5)
    b = torch.zeros(3, 5, 5)                    # zero filters are fitted by zero
    c = torch.randn(4, 5, 5) * 1e3              # scale does not matter
    parts = fit_dog_layers([a, b, c])
    assert [p.shape[0] for p in parts] == [5, 3, 4]
    assert torch.all(dog.dog_filters(parts[1], (5, 5)) == 0)
    alone, _ = fit_dog_filters(c)
    torch.testing.assert_close(dog.dog_filters(parts[2], (5, 5)), dog.dog_filters(alone, (5, 5)), rtol=1e-6, atol=1e-6)


def test_convnext_tiny_fits_under_ten_seconds():
    """The issue's budget: every depthwise layer of convnext_tiny (18 layers, 6,624 7x7 filters)."""
    torch.manual_seed(0)
    model = timm.create_model("convnext_tiny", pretrained=False)
    report = convert(model, to="dog")
    assert len(report.layers) == 18 and sum(r.channels for r in report.layers) == 6624
    assert report.seconds < 10.0, f"convert took {report.seconds:.1f} s (fit {report.fit_seconds:.1f} s)"


def test_public_api():
    import dsconv_ext
    from dsconv_ext import surgery

    if not hasattr(dsconv_ext, "convert"):
        pytest.skip("dsconv_ext/__init__.py does not export the surgery API yet (see the surgery patch)")
    for name in ("convert", "revert", "init_dog_", "freeze_depthwise", "transplant_depthwise"):
        assert getattr(dsconv_ext, name) is getattr(surgery, name)


def test_cli_help_lists_convert(capsys):
    from dsconv_ext.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "--help"])
    assert exit_info.value.code == 0
    assert "--checkpoint" in capsys.readouterr().out
