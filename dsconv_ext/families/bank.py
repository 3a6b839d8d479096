r"""Filter banks: ``w_c = sum_m coeffs[c, m] * bank[m] (+ offset[c])``.

``bank [M, kh, kw]`` is usually a frozen buffer; ``coeffs [C, M]`` are learned. One-hot
coefficients with a learned per-channel scale give the "master key" setting.

Named banks (``get_bank``):

* ``"master8"``: the eight master-key filters, generated from their published analytic model.
  With the discrete analogue of the Gaussian ``T1(n; s) = exp(-s^2) I_n(s^2)`` (I_n: modified
  Bessel function of the first kind; normalised to sum 1 on the grid) and
  ``T(x, y) = T1(x; sx) T1(y; sy)``, each filter is an operator applied to T, then its mean
  removed and divided by its L2 norm:

  ====  ====================================  ============
  name  operator                              (sx, sy)
  ====  ====================================  ============
  F1    forward difference in y, T(y+1)-T(y)  0.644, 0.583
  F2    backward difference in x, T(x)-T(x-1) 0.586, 0.644
  F3    backward difference in y              0.690, 0.674
  F4    forward difference in x               0.756, 0.460
  F5    central difference in x, (T(x+1)-T(x-1))/2  1.107, 0.945
  F6    central difference in y               0.900, 0.889
  F7    T - 0.5 * five-point Laplacian of T   0.675, 0.675
  F8    T                                     0.609, 0.601
  ====  ====================================  ============

  Generated for any kernel size (the published filters are 7x7); differences are taken on a
  grid one tap larger on each side and then cropped, so no border artefacts.
* ``"dog_jet"``: the six DoG-jet functions (dsconv_ext.families.dog) at scales 0.5, 1, 2 px,
  each of unit L2 norm (18 filters).
"""

import math
from typing import Optional, Sequence, Tuple, Union

import torch

from . import dog

MASTER8_SPEC = (
    # (operator, sigma_x, sigma_y)
    ("forward_y", 0.644, 0.583),
    ("backward_x", 0.586, 0.644),
    ("backward_y", 0.690, 0.674),
    ("forward_x", 0.756, 0.460),
    ("central_x", 1.107, 0.945),
    ("central_y", 0.900, 0.889),
    ("laplacian", 0.675, 0.675),
    ("identity", 0.609, 0.601),
)
BANK_NAMES = ("master8", "dog_jet")


def bessel_i(order: torch.Tensor, x: float, terms: int = 60) -> torch.Tensor:
    """Modified Bessel function of the first kind ``I_n(x)`` for integer orders ``n >= 0``
    (float64), by its power series ``sum_m (x/2)^(2m+n) / (m! (m+n)!)``."""
    n = order.to(torch.float64)[:, None]
    m = torch.arange(terms, dtype=torch.float64)[None, :]
    if x == 0:
        return (order == 0).to(torch.float64)
    log_terms = (2 * m + n) * math.log(x / 2) - torch.lgamma(m + 1) - torch.lgamma(m + n + 1)
    return torch.exp(log_terms).sum(1)


def discrete_gaussian(size: int, sigma: float) -> torch.Tensor:
    """``T1(n; sigma) = exp(-sigma^2) I_|n|(sigma^2)`` at taps centred on the kernel, summing to 1."""
    offsets = dog.tap_offsets(size, torch.float64, "cpu")
    if size % 2 == 0:
        raise ValueError("discrete_gaussian: needs an odd number of taps")
    values = math.exp(-sigma * sigma) * bessel_i(offsets.abs().round().long(), sigma * sigma)
    return values / values.sum()


def _master_filter(operator: str, sigma_x: float, sigma_y: float, kernel_size: Sequence[int]) -> torch.Tensor:
    kh, kw = kernel_size
    # Odd grid covering the kernel plus one tap each side; even kernels take the centred crop.
    gh, gw = kh + 2 + (kh + 1) % 2, kw + 2 + (kw + 1) % 2
    t = discrete_gaussian(gh, sigma_y)[:, None] * discrete_gaussian(gw, sigma_x)[None, :]
    shift = lambda dy, dx: torch.roll(t, shifts=(-dy, -dx), dims=(0, 1))  # value at (y+dy, x+dx)
    if operator == "forward_y":
        f = shift(1, 0) - t
    elif operator == "backward_y":
        f = t - shift(-1, 0)
    elif operator == "forward_x":
        f = shift(0, 1) - t
    elif operator == "backward_x":
        f = t - shift(0, -1)
    elif operator == "central_x":
        f = (shift(0, 1) - shift(0, -1)) / 2
    elif operator == "central_y":
        f = (shift(1, 0) - shift(-1, 0)) / 2
    elif operator == "laplacian":
        f = t - 0.5 * (shift(1, 0) + shift(-1, 0) + shift(0, 1) + shift(0, -1) - 4 * t)
    elif operator == "identity":
        f = t
    else:
        raise ValueError(operator)
    top, left = (gh - kh) // 2, (gw - kw) // 2
    f = f[top : top + kh, left : left + kw]
    f = f - f.mean()
    return f / f.norm()


def master8(kernel_size: Union[int, Sequence[int]] = 7, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The eight master-key filters ``[8, kh, kw]`` (zero mean, unit L2 norm)."""
    ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    if min(ks) < 2:
        raise ValueError(f"kernel_size: master8 needs kernels of at least 2x2, got {ks}")
    return torch.stack([_master_filter(op, sx, sy, ks) for op, sx, sy in MASTER8_SPEC]).to(dtype)


def dog_jet_bank(
    kernel_size: Union[int, Sequence[int]] = 7,
    scales: Sequence[float] = (0.5, 1.0, 2.0),
    profile: str = "integrated",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The six DoG-jet functions at each of ``scales``, unit L2 norm: ``[6 * len(scales), kh, kw]``."""
    ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    sigma = torch.tensor(scales, dtype=torch.float64)
    params = torch.zeros(len(scales), dog.NUM_PARAMS, dtype=torch.float64)
    params[:, dog.RHO] = dog.raw_from_sigma(sigma)
    jet = dog.dog_basis(params, ks, profile)[:, :6].reshape(-1, *ks)
    return (jet / jet.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]).to(dtype)


def get_bank(bank: Union[str, torch.Tensor], kernel_size: Sequence[int]) -> torch.Tensor:
    """A named bank generated at ``kernel_size``, or a user tensor checked to be ``[M, kh, kw]``."""
    ks = tuple(kernel_size)
    if isinstance(bank, str):
        if bank == "master8":
            return master8(ks)
        if bank == "dog_jet":
            return dog_jet_bank(ks)
        raise ValueError(f"bank: expected one of {BANK_NAMES} or a [M, kh, kw] tensor, got {bank!r}")
    if not isinstance(bank, torch.Tensor):
        raise TypeError(f"bank: expected a bank name or a tensor, got {type(bank).__name__}")
    if bank.dim() != 3 or tuple(bank.shape[1:]) != ks:
        raise ValueError(f"bank: expected shape [M, {ks[0]}, {ks[1]}] for kernel_size {ks}, got {list(bank.shape)}")
    if not bank.is_floating_point():
        raise TypeError(f"bank: expected a floating-point dtype, got {bank.dtype}")
    return bank


def bank_filters(bank: torch.Tensor, coeffs: torch.Tensor, offset: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Reference synthesis: ``bank [M, kh, kw]``, ``coeffs [C, M]``, ``offset [C]`` -> ``[C, kh, kw]``."""
    dtype = torch.promote_types(torch.promote_types(bank.dtype, coeffs.dtype), torch.float32)
    filters = torch.einsum("cm,mhw->chw", coeffs.to(dtype), bank.to(dtype))
    if offset is not None:
        filters = filters + offset.to(dtype)[:, None, None]
    return filters


def bank_filters_vjp(
    bank: torch.Tensor, coeffs: torch.Tensor, grad_filters: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``grad_filters [C, kh, kw]`` -> (grad_coeffs [C, M], grad_bank [M, kh, kw], grad_offset [C])."""
    g = grad_filters.flatten(1)
    dtype = g.dtype
    grad_coeffs = g @ bank.to(dtype).flatten(1).t()
    grad_bank = (coeffs.to(dtype).t() @ g).reshape(bank.shape)
    return grad_coeffs, grad_bank, g.sum(1)
