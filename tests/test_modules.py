"""DepthwiseConv2d, DoGConv2d, BankConv2d: agreement with the functional ops, nn.Conv2d
compatibility, from_conv / to_conv, state_dict round trips, layouts, bf16 and training."""

import pytest
import torch
from torch import nn

import dsconv_ext
from dsconv_ext import BankConv2d, DepthwiseConv2d, DoGConv2d
from dsconv_ext.families import dog
from dsconv_ext.families.bank import bank_filters, dog_jet_bank, master8

from conftest import BACKENDS, assert_close_for, make_input

C = 6


def _modules(backend="auto"):
    torch.manual_seed(0)
    return {
        "depthwise": DepthwiseConv2d(C, 3, stride=2, padding=(0, 1, 2, 0), backend=backend),
        "depthwise_same": DepthwiseConv2d(C, (3, 5), padding="same", dilation=2, bias=False, backend=backend),
        "dog": DoGConv2d(C, 5, padding=2, backend=backend),
        "dog_sampled": DoGConv2d(C, (3, 5), stride=(1, 2), padding=(1, 2), profile="sampled", backend=backend),
        "bank": BankConv2d(C, 3, padding=1, offset=True, backend=backend),
        "bank_select": BankConv2d(C, 5, padding="same", select=True, backend=backend),
        "bank_dog_jet": BankConv2d(C, 3, stride=2, padding=1, bank="dog_jet", trainable_bank=True, bias=False,
                                   backend=backend),
    }


MODULE_NAMES = list(_modules())


def _functional(module, x):
    """What the module's forward must equal, by calling the functional op directly."""
    if isinstance(module, DepthwiseConv2d):
        return dsconv_ext.depthwise_conv2d(x, module.weight, module.bias, module.stride, module.padding,
                                           module.dilation, backend="reference")
    if isinstance(module, DoGConv2d):
        return dsconv_ext.dog_conv2d(x, module.params, module.kernel_size, module.bias, module.stride,
                                     module.padding, module.dilation, profile=module.profile, backend="reference")
    return dsconv_ext.bank_conv2d(x, module.bank, module.coefficients, module.bias, module.stride, module.padding,
                                  module.dilation, offset=module.offset, backend="reference")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", MODULE_NAMES)
def test_module_matches_functional(backend, name):
    module = _modules(backend)[name]
    x = torch.randn(2, C, 9, 10)
    y = module(x)
    assert_close_for(torch.float32, y, _functional(module, x))
    # and the weight property is the filter the op uses
    assert module.weight.shape == (C, 1, *module.kernel_size)
    padding = module.padding
    if isinstance(padding, tuple) and len(padding) == 4:
        top, bottom, left, right = padding
        x, padding = nn.functional.pad(x, (left, right, top, bottom)), 0
    expected = nn.functional.conv2d(x, module.weight, module.bias, module.stride, padding, module.dilation, groups=C)
    assert_close_for(torch.float32, y, expected)


def test_module_weight_property_shapes_and_attributes():
    for module in _modules().values():
        assert module.in_channels == module.out_channels == module.groups == C
        assert module.padding_mode == "zeros"
        assert module.weight.shape == (C, 1, *module.kernel_size)
        assert isinstance(module.stride, tuple) and isinstance(module.dilation, tuple)


# ------------------------------------------------------------------ nn.Conv2d compatibility


@pytest.mark.parametrize("bias", [True, False])
def test_depthwise_state_dict_matches_conv2d(bias):
    ours = DepthwiseConv2d(C, (3, 5), stride=2, padding=1, bias=bias)
    theirs = nn.Conv2d(C, C, (3, 5), stride=2, padding=1, groups=C, bias=bias)
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    assert [v.shape for v in ours_sd.values()] == [v.shape for v in theirs_sd.values()]
    x = torch.randn(2, C, 9, 11)
    # nn.Conv2d -> ours
    ours.load_state_dict(theirs_sd)
    assert_close_for(torch.float32, ours(x), theirs(x))
    # ours -> nn.Conv2d
    fresh = DepthwiseConv2d(C, (3, 5), stride=2, padding=1, bias=bias)
    with torch.no_grad():
        fresh.weight.normal_()
    fresh_conv = nn.Conv2d(C, C, (3, 5), stride=2, padding=1, groups=C, bias=bias)
    fresh_conv.load_state_dict(fresh.state_dict())
    assert_close_for(torch.float32, fresh_conv(x), fresh(x))


def test_depthwise_default_init_like_conv2d():
    ours = DepthwiseConv2d(64, 7)
    theirs = nn.Conv2d(64, 64, 7, groups=64)
    bound = 1 / 7  # kaiming_uniform(a=sqrt(5)) bound = 1 / sqrt(fan_in)
    assert ours.weight.abs().max() <= bound + 1e-6 and ours.bias.abs().max() <= bound + 1e-6
    assert abs(ours.weight.std().item() - theirs.weight.std().item()) < 0.02


# ------------------------------------------------------------------ from_conv / to_conv


def _conv(kernel_size=5, padding=2, stride=1, bias=True, channels=C):
    conv = nn.Conv2d(channels, channels, kernel_size, stride=stride, padding=padding, groups=channels, bias=bias)
    return conv


def test_depthwise_from_conv_to_conv_exact():
    conv = _conv(stride=2)
    module = DepthwiseConv2d.from_conv(conv)
    assert torch.equal(module.weight, conv.weight) and torch.equal(module.bias, conv.bias)
    assert module.stride == (2, 2) and module.padding == (2, 2)
    back = module.to_conv()
    assert isinstance(back, nn.Conv2d)
    assert torch.equal(back.weight, conv.weight) and torch.equal(back.bias, conv.bias)
    x = torch.randn(2, C, 11, 10)
    assert_close_for(torch.float32, module(x), conv(x))
    assert torch.equal(back(x), conv(x))


@pytest.mark.parametrize("profile", dog.PROFILES)
def test_dog_from_conv_recovers_dog_filters(profile):
    torch.manual_seed(1)
    params = dog.make_params(torch.randn(C, 8, dtype=torch.float64),
                             torch.linspace(0.6, 1.8, C, dtype=torch.float64),
                             torch.linspace(0.3, 0.8, C, dtype=torch.float64))
    conv = _conv(7, padding=3)
    with torch.no_grad():
        conv.weight.copy_(dog.dog_filters(params, (7, 7), profile).unsqueeze(1))
    module = DoGConv2d.from_conv(conv, profile=profile)
    assert module.fit_cosine.shape == (C,)
    assert module.fit_cosine.min() > 0.999, module.fit_cosine
    assert torch.equal(module.bias, conv.bias)
    x = torch.randn(2, C, 12, 12)
    y_conv = conv(x)
    torch.testing.assert_close(module(x), y_conv, atol=0.03 * y_conv.abs().max().item(), rtol=0)
    back = module.to_conv()
    assert isinstance(back, nn.Conv2d) and back.padding == (3, 3)
    torch.testing.assert_close(back(x), module(x), atol=1e-5, rtol=1e-5)


def _bank_conv_for(coeffs, offset=None, kernel_size=5):
    conv = _conv(kernel_size, padding=kernel_size // 2, channels=coeffs.shape[0])
    with torch.no_grad():
        conv.weight.copy_(bank_filters(master8(kernel_size), coeffs, offset).unsqueeze(1))
    return conv


@pytest.mark.parametrize("with_offset", [False, True], ids=["no_offset", "offset"])
def test_bank_from_conv_full(with_offset):
    coeffs = torch.randn(C, 8)
    offset = torch.randn(C) if with_offset else None
    conv = _bank_conv_for(coeffs, offset)
    module = BankConv2d.from_conv(conv, offset=with_offset)
    assert module.fit_cosine.min() > 0.99999
    torch.testing.assert_close(module.coeffs.detach(), coeffs, atol=1e-4, rtol=1e-4)
    if with_offset:
        torch.testing.assert_close(module.offset.detach(), offset, atol=1e-4, rtol=1e-4)
    x = torch.randn(2, C, 9, 9)
    torch.testing.assert_close(module(x), conv(x), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(module.to_conv()(x), conv(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("with_offset", [False, True], ids=["no_offset", "offset"])
def test_bank_from_conv_select(with_offset):
    # each channel is one master8 filter times a scale (plus a constant with offset)
    assignment = torch.tensor([0, 3, 5, 7, 7, 2])
    scale = torch.tensor([1.5, -0.7, 2.0, 0.3, -1.1, 0.9])
    coeffs = nn.functional.one_hot(assignment, 8).float() * scale[:, None]
    offset = torch.linspace(-0.2, 0.2, C) if with_offset else None
    conv = _bank_conv_for(coeffs, offset)
    module = BankConv2d.from_conv(conv, select=True, offset=with_offset)
    assert module.fit_cosine.min() > 0.99999
    assert torch.equal(module.assignment, assignment)
    torch.testing.assert_close(module.scale.detach(), scale, atol=1e-4, rtol=1e-4)
    x = torch.randn(2, C, 9, 9)
    torch.testing.assert_close(module(x), conv(x), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(module.to_conv()(x), conv(x), atol=1e-4, rtol=1e-4)


def test_bank_from_conv_select_without_offset_cannot_fit_a_constant():
    coeffs = nn.functional.one_hot(torch.arange(C), 8).float()
    conv = _bank_conv_for(coeffs, torch.full((C,), 0.5))
    module = BankConv2d.from_conv(conv, select=True, offset=False)
    assert module.fit_cosine.max() < 0.999  # the constant is outside the span (master8 is zero-mean)


@pytest.mark.parametrize("name", ["depthwise", "dog_sampled", "bank"])
def test_to_conv_asymmetric_padding(name):
    torch.manual_seed(0)
    cls = {"depthwise": DepthwiseConv2d, "dog_sampled": DoGConv2d, "bank": BankConv2d}[name]
    module = cls(C, 3, stride=2, padding=(0, 1, 2, 0))
    exported = module.to_conv()
    assert isinstance(exported, nn.Sequential)
    assert isinstance(exported[0], nn.ZeroPad2d) and isinstance(exported[1], nn.Conv2d)
    x = torch.randn(2, C, 9, 10)
    torch.testing.assert_close(exported(x), module(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("padding,kernel_size,dilation", [("same", 3, 1), ("valid", 3, 1), (1, 3, 1),
                                                      ("same", 4, 1), ("same", (4, 3), 2)])
def test_to_conv_other_paddings(padding, kernel_size, dilation):
    module = DoGConv2d(C, kernel_size, padding=padding, dilation=dilation)
    exported = module.to_conv()
    assert isinstance(exported, nn.Conv2d)
    x = torch.randn(1, C, 8, 8)
    torch.testing.assert_close(exported(x), module(x), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ state_dict


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_state_dict_save_load(tmp_path, name):
    module = _modules()[name]
    with torch.no_grad():  # move away from the init, so loading must really copy
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    path = tmp_path / f"{name}.pt"
    torch.save(module.state_dict(), path)
    torch.manual_seed(123)
    fresh = type(module)(**_ctor_args(module))
    x = torch.randn(2, C, 9, 10)
    assert not torch.equal(fresh(x), module(x))
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(fresh(x), module(x))


def _ctor_args(module):
    args = dict(channels=module.in_channels, kernel_size=module.kernel_size, stride=module.stride,
                padding=module.padding, dilation=module.dilation, bias=module.bias is not None,
                backend=module.backend)
    if isinstance(module, DoGConv2d):
        args["profile"] = module.profile
    if isinstance(module, BankConv2d):
        args.update(bank=module.bank_name if module.bank_name != "custom" else module.bank.detach(),
                    select=module.select, offset=module.offset is not None,
                    trainable_bank=isinstance(module.bank, nn.Parameter))
    return args


def test_bank_state_dict_contents():
    frozen = BankConv2d(C, 3, select=True, offset=True)
    sd = frozen.state_dict()
    assert set(sd) == {"bank", "assignment", "scale", "offset", "bias"}
    assert sd["bank"].shape == (8, 3, 3) and sd["assignment"].dtype == torch.long
    assert [n for n, _ in frozen.named_parameters()] == ["scale", "offset", "bias"]  # the bank is a buffer
    trainable = BankConv2d(C, 3, bank="dog_jet", trainable_bank=True, bias=False)
    assert [n for n, _ in trainable.named_parameters()] == ["bank", "coeffs"]
    assert trainable.bank.shape == (18, 3, 3)


def test_dog_state_dict_contents():
    sd = DoGConv2d(C, 5).state_dict()
    assert list(sd) == ["params", "bias"]
    assert sd["params"].shape == (C, dog.NUM_PARAMS)


# ------------------------------------------------------------------ layouts, dtypes, training


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_module_channels_last(name):
    module = _modules()[name]
    x = make_input((2, C, 9, 10), "channels_last")
    y = module(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_close_for(torch.float32, y, module(x.contiguous()))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", MODULE_NAMES)
def test_module_bf16(backend, name):
    module = _modules(backend)[name]
    x = torch.randn(2, C, 9, 10)
    module_bf16 = _modules(backend)[name].to(torch.bfloat16)
    for p in module_bf16.parameters():
        assert p.dtype == torch.bfloat16
    x_bf16 = x.to(torch.bfloat16).requires_grad_(True)
    y = module_bf16(x_bf16)
    assert y.dtype == torch.bfloat16
    # the fp32 module on the same, rounded parameters and input
    reference = _modules(backend)[name]
    reference.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in module_bf16.state_dict().items()})
    expected = reference(x_bf16.detach().float())
    assert_close_for(torch.bfloat16, y, expected)
    y.float().square().sum().backward()
    assert x_bf16.grad is not None and torch.isfinite(x_bf16.grad.float()).all()
    for p in module_bf16.parameters():
        assert p.grad is not None and p.grad.dtype == torch.bfloat16 and torch.isfinite(p.grad.float()).all()
    del module


@pytest.mark.parametrize("name", ["dog", "bank", "bank_select", "bank_dog_jet"])
def test_weight_is_differentiable(name):
    module = _modules()[name]
    target = torch.randn(C, 1, *module.kernel_size)
    (module.weight * target).sum().backward()
    grads = {n: p.grad for n, p in module.named_parameters() if n != "bias"}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values()), grads


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_training_step_changes_parameters(name):
    module = _modules()[name]
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    x = torch.randn(4, C, 9, 10)
    target = torch.randn_like(module(x))
    loss_before = nn.functional.mse_loss(module(x), target)
    optimizer.zero_grad()
    loss_before.backward()
    optimizer.step()
    for n, p in module.named_parameters():
        assert not torch.equal(p.detach(), before[n]), f"{n} did not change"
    assert nn.functional.mse_loss(module(x), target) < loss_before


def test_select_assignment_is_not_trained():
    module = BankConv2d(C, 3, select=True)
    assignment = module.assignment.clone()
    module(torch.randn(1, C, 5, 5)).sum().backward()
    assert module.scale.grad is not None
    assert torch.equal(module.assignment, assignment)
    assert "assignment" not in dict(module.named_parameters())


def test_dog_jet_bank_module_uses_named_bank():
    module = BankConv2d(C, 5, bank="dog_jet")
    assert torch.equal(module.bank, dog_jet_bank(5))
    custom = torch.randn(4, 5, 5)
    module = BankConv2d(C, 5, bank=custom)
    assert torch.equal(module.bank, custom) and module.coeffs.shape == (C, 4)
