"""``dsconv-ext demo`` (``make demo``): a two-minute tour on CPU.

1. Which backends this install has.
2. The quick benchmark: the three ops on a ConvNeXt-T stage-1 depthwise layer (N=8, C=96,
   56x56, k=7, fp32), NCHW and channels_last, forward and forward+backward against
   ``F.conv2d(groups=C)`` in the same run.
3. The modules: parameters per layer, and fitting DoG and master8 layers to DoG-like filters.
"""

import torch

from . import BankConv2d, DepthwiseConv2d, DoGConv2d, available_backends
from .benchmarking import run as run_benchmark
from .families import dog


def _module_tour(channels: int, kernel: int) -> None:
    torch.manual_seed(0)
    layers = {
        "DepthwiseConv2d": DepthwiseConv2d(channels, kernel, padding="same"),
        "DoGConv2d": DoGConv2d(channels, kernel, padding="same"),
        "BankConv2d(master8)": BankConv2d(channels, kernel, padding="same", bank="master8"),
        "BankConv2d(master8, select)": BankConv2d(channels, kernel, padding="same", bank="master8", select=True),
    }
    print(f"\nTrainable parameters of one {channels}-channel {kernel}x{kernel} depthwise layer (bias included):")
    for name, layer in layers.items():
        count = sum(p.numel() for p in layer.parameters() if p.requires_grad)
        print(f"  {name:<30} {count:>6}")

    # Filters that are DoG jets plus 5% noise: the DoG fit recovers them, master8 approximates.
    truth = DoGConv2d(channels, kernel, padding="same")
    noisy = truth.to_conv()
    with torch.no_grad():
        per_filter_std = noisy.weight.flatten(1).std(dim=1)[:, None, None, None]
        noisy.weight.add_(0.05 * per_filter_std * torch.randn_like(noisy.weight))
    fitted_dog = DoGConv2d.from_conv(noisy)
    fitted_bank = BankConv2d.from_conv(noisy, bank="master8", offset=True)
    print("\nFitting layers to DoG-jet filters with 5% noise (cosine between filter and fit):")
    for name, layer in (("DoGConv2d.from_conv", fitted_dog), ("BankConv2d.from_conv", fitted_bank)):
        cos = layer.fit_cosine
        print(f"  {name:<30} median {cos.median():.3f}   min {cos.min():.3f}")
    x = torch.randn(1, channels, 32, 32)
    with torch.no_grad():
        gap = (fitted_dog.to_conv()(x) - fitted_dog(x)).abs().max().item()
    print(f"  to_conv() of the fitted DoG layer matches it to {gap:.1e}")


def run_demo() -> None:
    print(f"dsconv_ext demo | torch {torch.__version__} | {torch.get_num_threads()} CPU threads")
    print(f"available backends: {available_backends()}")
    print("\nThe ops against F.conv2d(groups=C) on a ConvNeXt-T stage-1 layer (`dsconv-ext bench --quick`;")
    print("`dsconv-ext bench` runs every shape and saves the table):")
    run_benchmark(quick=True)
    _module_tour(96, 7)
    print(f"\nDoG-jet parameters per channel: {dog.NUM_PARAMS} ({', '.join(dog.COEFF_NAMES)}, rho, tau)")
