r"""Names for cluster centroids, read off their DoG-jet fit.

The centroid (a zero-mean, unit-norm ``[kh, kw]`` filter) is fitted with the reference
``fit_dog`` (grid search and L-BFGS). Its fit splits into three parts, each with the mean
removed:

* **centre-surround**: ``a_G G + a_S S`` (plus the second-derivative part when that part is
  nearly isotropic: a Laplacian of Gaussian is a centre-surround filter too);
* **first derivative**: ``a_x Gx + a_y Gy``;
* **second derivative**: ``a_xx Gxx + a_xy Gxy + a_yy Gyy`` when it is anisotropic.

The part with at least ``DOMINANT_SHARE`` of the energy names the centroid; otherwise the name
joins the two largest parts ("on-centre + first derivative at 90").

* centre-surround: **on-centre** / **off-centre** by the sign at the centre of the centroid's
  symmetrised version (mean over flips and transposes); **Gaussian** / **negative Gaussian**
  when its radial profile is monotone out to the border, i.e. no surround ring inside the kernel
  (only for kernels of 5 taps and more: a 3-tap profile is always monotone);
* first derivative **at theta**: the direction from the negative to the positive lobe;
* second derivative: with ``H = [[a_xx, a_xy/2], [a_xy/2, a_yy]]`` (the filter is
  ``~ sum H_ij d_i d_j G``), a **cross at theta** when H's eigenvalues have opposite signs and
  similar sizes (a saddle; theta is the direction of its positive arms), else a **second
  derivative at theta** (theta: the direction across the bar, i.e. of the dominant eigenvector;
  "negative second derivative" when the centre line is positive);
* **square**: a centroid that is symmetric under 90-degree rotation but poorly fitted by the
  jet (cos < ``SQUARE_MAX_FIT_COSINE``): box-like or corner-vs-edge patterns (in 3x3 the one
  direction the jet cannot express);
* **not DoG-like** when the fit cosine is below ``MIN_FIT_COSINE``.

Angles are in degrees, counter-clockwise from +x (right) with y pointing up, rounded to
``ANGLE_STEP``; first derivatives use 0..360, second derivatives and crosses 0..180.
"""

import math
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch

from ..families import dog
from ..families.fitting import fit_dog

DOMINANT_SHARE = 0.6
ISOTROPY_LIMIT = 0.5  # |l1 - l2| / (|l1| + |l2|) below this: the second-order part is a Laplacian
CROSS_EIGEN_RATIO = 0.5  # |small| / |large| eigenvalue of a saddle above this: a cross
MIN_FIT_COSINE = 0.7
SQUARE_MAX_FIT_COSINE = 0.8
SQUARE_ROTATION_COSINE = 0.9
RING_RISE = 0.01  # a surround ring: the radial profile rises back by 1% of its range
ANGLE_STEP = 15


@dataclass
class ShapeDescription:
    """What a centroid looks like.

    Attributes:
        label: the name (module docstring).
        fit_cosine: cosine between the centroid and its DoG-jet fit.
        sigma, gamma: the fit's centre scale (px) and centre/surround ratio.
        shares: energy share of "centre-surround", "first derivative", "second derivative".
        angle: the angle in the label, in degrees (None when the label has none).
        params: ``[10]`` float64 DoG-jet parameters of the fit.
    """

    label: str
    fit_cosine: float
    sigma: float
    gamma: float
    shares: Dict[str, float] = field(default_factory=dict)
    angle: Optional[float] = None
    params: Optional[torch.Tensor] = None


def _zero_mean(filter_: torch.Tensor) -> torch.Tensor:
    return filter_ - filter_.mean()


def _rounded_angle(degrees: float, period: int) -> int:
    return int(round(degrees / ANGLE_STEP) * ANGLE_STEP) % period


def _radial_profile(filter_: torch.Tensor) -> torch.Tensor:
    """Mean value at each integer distance (rounded) from the kernel centre, ``[R]``."""
    kh, kw = filter_.shape
    y = dog.tap_offsets(kh, torch.float64, "cpu")[:, None]
    x = dog.tap_offsets(kw, torch.float64, "cpu")[None, :]
    ring = (y * y + x * x).sqrt().round().long()
    sums = torch.zeros(int(ring.max()) + 1, dtype=torch.float64).index_add_(0, ring.flatten(), filter_.flatten())
    counts = torch.bincount(ring.flatten()).to(torch.float64)
    return (sums / counts.clamp_min(1))[counts > 0]


def _centre_value(filter_: torch.Tensor) -> float:
    """Value at the kernel centre (mean of the central 2x2 / 1x2 taps for even sizes)."""
    kh, kw = filter_.shape
    rows = slice((kh - 1) // 2, kh // 2 + 1)
    cols = slice((kw - 1) // 2, kw // 2 + 1)
    return float(filter_[rows, cols].mean())


def _symmetrised(filter_: torch.Tensor) -> torch.Tensor:
    """Mean over the kernel's symmetries (flips, and transposes for square kernels): keeps the
    centre-surround part of a filter and cancels odd and most anisotropic parts."""
    versions = [filter_, filter_.flip(0), filter_.flip(1), filter_.flip(0, 1)]
    if filter_.shape[0] == filter_.shape[1]:
        versions += [v.t() for v in versions]
    return torch.stack(versions).mean(0)


def _centre_surround_name(centroid: torch.Tensor) -> str:
    """on-/off-centre, or (negative) Gaussian when no surround ring shows inside the kernel."""
    symmetric = _symmetrised(centroid)
    on = _centre_value(symmetric) > 0
    oriented = symmetric if on else -symmetric
    if min(symmetric.shape) >= 5:
        profile = _radial_profile(oriented)
        span = float(profile.max() - profile.min())
        lowest = int(profile.argmin())
        rises_again = float(profile[lowest:].max() - profile[lowest]) > RING_RISE * span
        if not rises_again:
            return "Gaussian" if on else "negative Gaussian"
    return "on-centre" if on else "off-centre"


def _second_derivative_name(a_xx: float, a_xy: float, a_yy: float):
    """Name and angle of an anisotropic second-derivative part (module docstring)."""
    hessian = torch.tensor([[a_xx, a_xy / 2], [a_xy / 2, a_yy]], dtype=torch.float64)
    values, vectors = torch.linalg.eigh(hessian)  # ascending
    large = int(values.abs().argmax())
    small = 1 - large

    def angle_of(vector):  # image coordinates (x right, y down) -> y up
        return math.degrees(math.atan2(-float(vector[1]), float(vector[0]))) % 180

    if values[0] * values[1] < 0 and abs(values[small]) > CROSS_EIGEN_RATIO * abs(values[large]):
        positive = int(values.argmax())
        angle = _rounded_angle(angle_of(vectors[:, positive]), 180)
        return f"cross at {angle}", float(angle)
    angle = _rounded_angle(angle_of(vectors[:, large]), 180)
    prefix = "second derivative" if values[large] > 0 else "negative second derivative"
    return f"{prefix} at {angle}", float(angle)


def describe_shape(filter_: torch.Tensor) -> ShapeDescription:
    """Name one filter ``[kh, kw]`` (any scale; it is normalised here) by its DoG-jet fit."""
    target = _zero_mean(filter_.detach().to(torch.float64))
    target = target / target.norm().clamp_min(1e-30)
    kernel_size = tuple(target.shape)
    params, cos = fit_dog(target[None])
    params = params[0]
    fit_cosine = float(cos[0])
    basis = dog.dog_basis(params[None], kernel_size)[0]  # [8, kh, kw]
    a = params[: dog.NUM_COEFFS]
    zero_order = _zero_mean(a[0] * basis[0] + a[6] * basis[6])
    first = a[1] * basis[1] + a[2] * basis[2]
    second = _zero_mean(a[3] * basis[3] + a[4] * basis[4] + a[5] * basis[5])
    a_xx, a_xy, a_yy = float(a[3]), float(a[4]), float(a[5])
    eigen = torch.linalg.eigvalsh(torch.tensor([[a_xx, a_xy / 2], [a_xy / 2, a_yy]], dtype=torch.float64))
    anisotropy = float((eigen[1] - eigen[0]).abs() / eigen.abs().sum().clamp_min(1e-30))
    if anisotropy < ISOTROPY_LIMIT:
        centre_surround, second_part = zero_order + second, torch.zeros_like(second)
    else:
        centre_surround, second_part = zero_order, second
    energies = {
        "centre-surround": float(centre_surround.square().sum()),
        "first derivative": float(first.square().sum()),
        "second derivative": float(second_part.square().sum()),
    }
    total = sum(energies.values()) or 1.0
    shares = {name: value / total for name, value in energies.items()}

    names, angles = {}, {}
    names["centre-surround"] = _centre_surround_name(target)
    first_angle = _rounded_angle(math.degrees(math.atan2(float(a[2]), -float(a[1]))), 360)
    names["first derivative"], angles["first derivative"] = f"first derivative at {first_angle}", float(first_angle)
    names["second derivative"], angles["second derivative"] = _second_derivative_name(a_xx, a_xy, a_yy)

    ranked = sorted(shares, key=shares.get, reverse=True)
    rotation_cos = float((target * torch.rot90(target, 1, (0, 1))).sum()) if target.shape[0] == target.shape[1] else 0.0
    angle = None
    if rotation_cos >= SQUARE_ROTATION_COSINE and fit_cosine < SQUARE_MAX_FIT_COSINE:
        label = "square"
    elif fit_cosine < MIN_FIT_COSINE:
        label = "not DoG-like"
    elif shares[ranked[0]] >= DOMINANT_SHARE:
        label, angle = names[ranked[0]], angles.get(ranked[0])
    else:
        label = f"{names[ranked[0]]} + {names[ranked[1]]}"
    return ShapeDescription(
        label=label,
        fit_cosine=fit_cosine,
        sigma=float(dog.sigma_from_raw(params[dog.RHO])),
        gamma=float(dog.gamma_from_raw(params[dog.TAU])),
        shares=shares,
        angle=angle,
        params=params,
    )
