"""Synthetic filters with known structure: DoG-jet classes with jittered parameters plus noise.

The ground truth of the analysis tests and of the speed benchmark. Each class is a DoG-jet
prototype (``families.dog`` parameters); every sample draws its scale around the class' scale,
perturbs the coefficients, and adds white noise, so the classes are clusters of the kind trained
depthwise filters form (DESIGN.md section 1).
"""

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch

from ..families import dog

# name -> nonzero coefficients (G, Gx, Gy, Gxx, Gxy, Gyy, surround); first-derivative angles
# follow labels.py: the direction from the negative to the positive lobe, counter-clockwise
# from +x with y pointing up (Gx is positive on the left, Gy positive on the top).
PROTOTYPES: Dict[str, Dict[str, float]] = {
    "on-centre": {"G": 1.0, "surround": -1.0},
    "off-centre": {"G": -1.0, "surround": 1.0},
    "first derivative at 0": {"Gx": -1.0},
    "first derivative at 90": {"Gy": 1.0},
    "first derivative at 180": {"Gx": 1.0},
    "first derivative at 270": {"Gy": -1.0},
    "second derivative at 0": {"Gxx": 1.0},
    "second derivative at 90": {"Gyy": 1.0},
    "cross": {"Gxy": 1.0},
}
DEFAULT_CLASSES = (
    "on-centre",
    "off-centre",
    "first derivative at 0",
    "first derivative at 90",
    "second derivative at 0",
    "cross",
)


@dataclass
class PlantedFilters:
    """Filters drawn from known classes.

    Attributes:
        filters: ``[N, kh, kw]`` float32 (not normalised).
        labels: ``[N]`` int64 class index into ``class_names``.
        params: ``[N, 10]`` float64 DoG-jet parameters of the noise-free filters.
        clean: ``[N, kh, kw]`` float32 noise-free filters.
        class_names: the class of each label index.
    """

    filters: torch.Tensor
    labels: torch.Tensor
    params: torch.Tensor
    clean: torch.Tensor
    class_names: Tuple[str, ...]


def prototype_coefficients(name: str) -> torch.Tensor:
    """``[8]`` float64 coefficients of a named prototype (constant 0)."""
    coeffs = torch.zeros(dog.NUM_COEFFS, dtype=torch.float64)
    for basis_name, value in PROTOTYPES[name].items():
        coeffs[dog.COEFF_NAMES.index(basis_name)] = value
    return coeffs


def planted_filters(
    num_filters: int,
    kernel_size: Sequence[int] = (7, 7),
    classes: Sequence[str] = DEFAULT_CLASSES,
    noise: float = 0.15,
    coefficient_jitter: float = 0.15,
    sigma_range: Optional[Tuple[float, float]] = None,
    gamma_range: Tuple[float, float] = (0.4, 0.6),
    seed: int = 0,
) -> PlantedFilters:
    """Draw ``num_filters`` filters, classes in turn (equal shares).

    Args:
        noise: std of the white noise added to each filter, relative to the filter's RMS tap
            value (0.15 leaves the clean filter at a cosine of about 0.99 with the noisy one).
        coefficient_jitter: std of the Gaussian added to every coefficient (of a unit-size
            prototype), so that classes are clouds, not points.
        sigma_range: uniform range of the centre scale in pixels (default: 0.1 to 0.16 of the
            kernel size, the scale range of trained 3x3-7x7 filters).
        gamma_range: uniform range of the centre/surround ratio.
    """
    kh, kw = kernel_size
    generator = torch.Generator().manual_seed(seed)
    if sigma_range is None:
        size = math.sqrt(kh * kw)
        sigma_range = (0.1 * size, 0.16 * size)
    labels = torch.arange(num_filters) % len(classes)
    base = torch.stack([prototype_coefficients(name) for name in classes])[labels]
    coeffs = base + coefficient_jitter * torch.randn(base.shape, generator=generator, dtype=torch.float64)
    coeffs[:, dog.COEFF_NAMES.index("const")] = 0.0
    uniform = lambda low, high: low + (high - low) * torch.rand(num_filters, generator=generator, dtype=torch.float64)
    sigma = uniform(*sigma_range)
    gamma = uniform(*gamma_range)
    params = dog.make_params(coeffs, sigma, gamma)
    # In chunks: the synthesis holds [n, 8, kh, kw] float64 bases, 3 GB for a million 7x7.
    clean = torch.cat([dog.dog_filters(part, (kh, kw)).to(torch.float32) for part in params.split(65536)])
    rms = clean.flatten(1).square().mean(1).sqrt()[:, None, None]
    noisy = clean + noise * rms * torch.randn(clean.shape, generator=generator, dtype=torch.float32)
    return PlantedFilters(filters=noisy, labels=labels, params=params, clean=clean, class_names=tuple(classes))
