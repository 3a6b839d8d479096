"""``dsconv-ext demo`` (``make demo``): a two-minute tour on CPU.

1. Which backends this install has.
2. The three ops on a ConvNeXt-T stage-1 depthwise layer (N=8, C=96, 56x56, k=7, fp32), NCHW and
   channels_last: largest difference from the PyTorch oracle, and forward / forward+backward
   time against ``F.conv2d(groups=C)`` in the same run.
3. The modules: parameters per layer, and fitting DoG and master8 layers to DoG-like filters.
"""

import torch
import torch.nn.functional as F

from . import BankConv2d, DepthwiseConv2d, DoGConv2d, available_backends, reference
from .functional import bank_conv2d, depthwise_conv2d, dog_conv2d
from .families import dog
from .families.bank import master8
from .timing import median_ms


def _fwd_bwd(fn, inputs):
    def run():
        out = fn()
        torch.autograd.grad(out, inputs, torch.ones_like(out))

    return run


def compare_ops(batch: int, channels: int, size: int, kernel: int, repeats: int) -> list:
    torch.manual_seed(0)
    rows = []
    for layout in ("nchw", "channels_last"):
        x = torch.randn(batch, channels, size, size)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        weight = (torch.randn(channels, 1, kernel, kernel) * 0.1).requires_grad_(True)
        bias = torch.randn(channels).requires_grad_(True)
        params = DoGConv2d(channels, kernel).params.detach().requires_grad_(True)
        bank = master8(kernel)
        coeffs = (torch.randn(channels, 8) * 0.1).requires_grad_(True)
        pad = kernel // 2
        cases = {
            "depthwise": (
                lambda: depthwise_conv2d(x, weight, bias, padding=pad),
                lambda: reference.depthwise_conv2d_reference(x, weight, bias, padding=pad),
                (x, weight, bias),
            ),
            "dog": (
                lambda: dog_conv2d(x, params, kernel, bias, padding=pad),
                lambda: reference.dog_conv2d_reference(x, params, kernel, bias, padding=pad),
                (x, params, bias),
            ),
            "bank": (
                lambda: bank_conv2d(x, bank, coeffs, bias, padding=pad),
                lambda: reference.bank_conv2d_reference(x, bank, coeffs, bias, padding=pad),
                (x, coeffs, bias),
            ),
        }
        torch_fwd = lambda: F.conv2d(x, weight, bias, 1, pad, 1, channels)
        torch_fwd_ms = median_ms(torch_fwd, repeats)
        torch_bwd_ms = median_ms(_fwd_bwd(torch_fwd, (x, weight, bias)), repeats)
        for name, (ours, oracle, inputs) in cases.items():
            with torch.no_grad():
                error = (ours() - oracle()).abs().max().item()
            rows.append(
                {
                    "op": name,
                    "layout": layout,
                    "max_abs_err": error,
                    "torch_fwd_ms": torch_fwd_ms,
                    "ours_fwd_ms": median_ms(ours, repeats),
                    "torch_fwd_bwd_ms": torch_bwd_ms,
                    "ours_fwd_bwd_ms": median_ms(_fwd_bwd(ours, inputs), repeats),
                }
            )
    return rows


def print_table(rows: list) -> None:
    header = f"{'op':<10} {'layout':<14} {'max|err|':>9} {'torch fwd':>10} {'ours fwd':>9} {'torch f+b':>10} {'ours f+b':>9} {'f+b speedup':>12}"
    print(header)
    print("-" * len(header))
    for r in rows:
        speedup = r["torch_fwd_bwd_ms"] / r["ours_fwd_bwd_ms"]
        print(
            f"{r['op']:<10} {r['layout']:<14} {r['max_abs_err']:>9.1e} {r['torch_fwd_ms']:>8.1f}ms "
            f"{r['ours_fwd_ms']:>7.1f}ms {r['torch_fwd_bwd_ms']:>8.1f}ms {r['ours_fwd_bwd_ms']:>7.1f}ms {speedup:>11.2f}x"
        )


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


def run_demo(quick: bool = False) -> None:
    print(f"dsconv_ext demo | torch {torch.__version__} | {torch.get_num_threads()} CPU threads")
    print(f"available backends: {available_backends()}")
    batch = 2 if quick else 8
    print(f"\nConvNeXt-T stage-1 depthwise layer: N={batch}, C=96, 56x56, k=7, fp32, backend=auto, median of 5 runs")
    print_table(compare_ops(batch, 96, 56, 7, repeats=3 if quick else 5))
    _module_tour(96, 7)
    print(f"\nDoG-jet parameters per channel: {dog.NUM_PARAMS} ({', '.join(dog.COEFF_NAMES)}, rho, tau)")
