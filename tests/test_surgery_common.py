"""Shared helpers of the surgery tests (no tests here): the model zoo of the issue, planting
family-representable filters, comparing outputs."""

import copy
import functools

import pytest
import torch
from torch import nn

from dsconv_ext.families import dog
from dsconv_ext.families.bank import master8
from dsconv_ext.surgery import find_depthwise

timm = pytest.importorskip("timm")

TIMM_MODELS = ("convnext_atto", "convnextv2_atto", "mobilenetv3_small_050", "efficientnet_b0", "mixnet_s",
               "tf_efficientnet_b0", "inception_next_atto")
MODELS = TIMM_MODELS + ("torchvision:mobilenet_v2",)
SIZE = 64


@functools.lru_cache(maxsize=None)
def _pristine(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name.startswith("torchvision:"):
        torchvision = pytest.importorskip("torchvision")

        model = torchvision.models.get_model(name.split(":", 1)[1])
    else:
        model = timm.create_model(name, pretrained=False)
    return model.eval()


def make_model(name: str) -> nn.Module:
    """A fresh copy of ``name`` (built once per session, seeded), in eval mode."""
    return copy.deepcopy(_pristine(name))


def make_input(batch: int = 2, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def depthwise_count(model: nn.Module) -> int:
    return len(find_depthwise(model))


@torch.no_grad()
def plant_dog_filters(model: nn.Module, seed: int = 0, noise: float = 0.0) -> None:
    """Give every plain depthwise conv random DoG-jet filters (plus relative ``noise``), with the
    layer's original filter norm per channel."""
    generator = torch.Generator().manual_seed(seed)
    for site in find_depthwise(model):
        weight = site.module.weight
        channels = weight.shape[0]
        coeffs = torch.randn(channels, dog.NUM_COEFFS, generator=generator, dtype=torch.float64)
        sigma = torch.exp(torch.empty(channels, dtype=torch.float64).uniform_(-1.2, 0.8, generator=generator))
        gamma = torch.empty(channels, dtype=torch.float64).uniform_(0.25, 0.85, generator=generator)
        filters = dog.dog_filters(dog.make_params(coeffs, sigma, gamma), site.kernel_size)
        filters = filters + noise * filters.flatten(1).norm(dim=1)[:, None, None] * torch.randn(
            filters.shape, generator=generator, dtype=torch.float64) / filters[0].numel() ** 0.5
        norms = weight.detach().flatten(1).norm(dim=1).to(torch.float64)
        filters = filters / filters.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None] * norms[:, None, None]
        weight.copy_(filters.unsqueeze(1).to(weight))


@torch.no_grad()
def plant_bank_filters(model: nn.Module, seed: int = 0) -> None:
    """Random combinations of the master8 filters in every depthwise conv where master8 exists."""
    generator = torch.Generator().manual_seed(seed)
    for site in find_depthwise(model):
        if min(site.kernel_size) < 2:
            continue
        weight = site.module.weight
        bank = master8(site.kernel_size, torch.float64)
        coeffs = torch.randn(weight.shape[0], bank.shape[0], generator=generator, dtype=torch.float64)
        weight.copy_((torch.einsum("cm,mhw->chw", coeffs, bank) * 0.1).unsqueeze(1).to(weight))


def assert_same_output(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4, msg: str = "") -> None:
    """Close up to float32 rounding, relative to the output's scale."""
    scale = float(expected.detach().abs().max())
    torch.testing.assert_close(actual, expected, atol=rtol * max(scale, 1e-6), rtol=rtol, msg=msg or None)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-30))
