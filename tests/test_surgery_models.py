"""convert / revert on the models of the issue: exact for to="depthwise", fit quality for the
DoG jet and the master8 bank (on planted, representable filters), revert equality, a training
step. Inputs are 64x64 to keep it quick."""

import pytest
import torch
from torch import nn

from dsconv_ext import BankConv2d, DepthwiseConv2d, DoGConv2d
from dsconv_ext.modules.base import DepthwiseBase
from dsconv_ext.surgery import convert, find_depthwise, revert

from test_surgery_common import (MODELS, assert_same_output, depthwise_count, make_input, make_model,
                                 plant_bank_filters, plant_dog_filters, relative_error)


@pytest.fixture(autouse=True)
def _one_thread():
    # The development machine has 2 cores shared with other jobs: one thread avoids stalls.
    torch.set_num_threads(1)


def _plain_after_revert(model: nn.Module) -> None:
    for site in find_depthwise(model):
        assert not isinstance(site.module, DepthwiseBase), site.name
        assert type(site.module).__name__ in ("Conv2d", "Conv2dSame"), (site.name, type(site.module))


@pytest.mark.parametrize("name", MODELS)
def test_depthwise_is_exact_and_reverts(name):
    model = make_model(name)
    x = make_input()
    with torch.no_grad():
        expected = model(x)
    keys = list(model.state_dict())
    count = depthwise_count(model)
    assert count > 0

    report = convert(model, to="depthwise")
    assert len(report.layers) == count and not report.skipped
    assert all(isinstance(s.module, DepthwiseConv2d) for s in find_depthwise(model))
    assert report.cos_min == pytest.approx(1.0, abs=1e-6)
    assert report.params_before == report.params_after
    assert list(model.state_dict()) == keys          # same checkpoint layout as the original
    with torch.no_grad():
        assert_same_output(model(x), expected, msg=f"{name} depthwise")

    back = revert(model)
    assert len(back.layers) == count
    _plain_after_revert(model)
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        assert_same_output(model(x), expected, msg=f"{name} reverted")


@pytest.mark.parametrize("name", MODELS)
def test_dog_fit_revert_and_train_step(name):
    model = make_model(name)
    plant_dog_filters(model)
    x = make_input()
    with torch.no_grad():
        expected = model(x)
    count = depthwise_count(model)

    report = convert(model, to="dog")
    assert len(report.layers) == count and not report.skipped
    assert report.cos_min > 0.9995, str(report)     # planted DoG-jet filters: recovered
    for row in report.layers:                        # 10 numbers per channel instead of kh*kw
        assert row.params_after - row.channels * (row.params_before > row.channels * row.kernel_size[0]
                                                  * row.kernel_size[1]) == 10 * row.channels
    with torch.no_grad():
        converted = model(x)
    # random-init networks amplify small filter changes; a wrong conversion gives ~1
    assert relative_error(converted, expected) < 0.2

    # revert gives the same outputs as the converted model
    reverted = make_model(name)
    reverted.load_state_dict(_reverted_state(model))
    with torch.no_grad():
        # the op generates the filters itself: float32 rounding, amplified by the random network
        assert relative_error(reverted(x), converted) < 1e-3

    # a training step moves the DoG parameters
    model.train()
    layers = [s.module for s in find_depthwise(model)]
    assert all(isinstance(layer, DoGConv2d) for layer in layers)
    before = [layer.params.detach().clone() for layer in layers]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    target = torch.randint(0, 10, (x.shape[0],))
    loss = nn.functional.cross_entropy(model(x)[:, :10], target)
    loss.backward()
    for layer in layers:
        assert layer.params.grad is not None and torch.isfinite(layer.params.grad).all()
    optimizer.step()
    assert any(not torch.equal(b, layer.params) for b, layer in zip(before, layers))


def _reverted_state(model: nn.Module) -> dict:
    """The state dict of a reverted copy (revert works in place)."""
    import copy

    clone = copy.deepcopy(model)
    revert(clone)
    return clone.state_dict()


@pytest.mark.parametrize("name", MODELS)
def test_bank_fit_and_revert(name):
    model = make_model(name)
    plant_bank_filters(model)
    x = make_input()
    with torch.no_grad():
        expected = model(x)
    sites = find_depthwise(model)
    bankable = [s for s in sites if min(s.kernel_size) >= 2]

    report = convert(model, to="bank", bank="master8")
    assert len(report.layers) == len(bankable)
    assert len(report.skipped) == len(sites) - len(bankable)
    for row in report.skipped:                        # inception_next's 1x9 / 9x1 bands
        assert "does not exist" in row.reason and min(row.kernel_size) == 1
    assert report.cos_min > 0.9999, str(report)
    with torch.no_grad():
        converted = model(x)
    assert relative_error(converted, expected) < 1e-3

    assert all(isinstance(s.module, BankConv2d) for s in find_depthwise(model) if min(s.kernel_size) >= 2)
    revert(model)
    _plain_after_revert(model)
    with torch.no_grad():
        assert relative_error(model(x), converted) < 1e-3
