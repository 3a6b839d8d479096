r"""The DoG jet: a depthwise filter described by ten numbers per channel.

Taps sit at offsets ``t = n - (k - 1) / 2`` (n = 0 .. k-1) from the kernel centre, rows are y,
columns are x. For a scale ``s`` the 1-D profiles of order m = 0, 1, 2 are the Gaussian and its
first two derivatives, scale-normalised (multiplied by ``s**m``) so that coefficients of every
order have comparable size:

* ``"integrated"`` (default): each tap integrates the profile over its pixel, which stays
  accurate for ``s < 1`` px (where most trained 3x3-7x7 filters live):
  ``p_m(t; s) = Q_m((t + 1/2) / s) - Q_m((t - 1/2) / s)`` with ``Q_0 = Phi``, ``Q_1 = phi``,
  ``Q_2 = phi'`` (phi, Phi: standard normal pdf and cdf);
* ``"sampled"``: point samples ``p_m(t; s) = phi^(m)(t / s) / s``.

2-D basis functions are separable products ``p_i(y) p_j(x)``:
``G = p0 p0``, ``Gx = p0(y) p1(x)``, ``Gy = p1(y) p0(x)``, ``Gxx = p0(y) p2(x)``,
``Gxy = p1(y) p1(x)``, ``Gyy = p2(y) p0(x)``, all at scale ``sigma``, plus a surround Gaussian
``S = p0 p0`` at scale ``sigma / gamma`` and a constant. The filter of channel c is

    w_c = sum_b a_{c,b} B_b(sigma_c) + a_{c,6} S(sigma_c / gamma_c) + a_{c,7}

Parameters, ``params [C, 10]``, per channel:

====  ==========  ===========================================================
col   name        meaning
====  ==========  ===========================================================
0-5   a_G..a_yy   coefficients of G, Gx, Gy, Gxx, Gxy, Gyy
6     a_S         coefficient of the surround Gaussian (a centre-surround DoG
                  is a_G > 0, a_S < 0, or the reverse for off-centre)
7     a_1         constant
8     rho         ``sigma = SIGMA_MIN + softplus(rho)``
9     tau         ``gamma = GAMMA_MIN + (GAMMA_MAX - GAMMA_MIN) * sigmoid(tau)``
====  ==========  ===========================================================

First and second derivatives are steerable (Gx, Gy give every orientation of an edge;
Gxx, Gxy, Gyy every orientation of a bar), so no angle parameter is needed.

``dog_filters`` is the PyTorch reference (differentiable by autograd); ``dog_filters_vjp`` is
the analytic chain rule used by the ops' backward, tested against autograd.
"""

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

NUM_PARAMS = 10
NUM_COEFFS = 8
COEFF_NAMES = ("G", "Gx", "Gy", "Gxx", "Gxy", "Gyy", "surround", "const")
RHO, TAU = 8, 9
SIGMA_MIN = 0.1
GAMMA_MIN, GAMMA_MAX = 0.1, 0.95
PROFILES = ("integrated", "sampled")

# Orders (along y, along x) of the six jet functions, in parameter order.
_ORDER_Y = (0, 0, 1, 0, 1, 2)
_ORDER_X = (0, 1, 0, 2, 1, 0)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


def check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"profile: expected one of {PROFILES}, got {profile!r}")


def sigma_from_raw(rho: torch.Tensor) -> torch.Tensor:
    return SIGMA_MIN + F.softplus(rho)


def gamma_from_raw(tau: torch.Tensor) -> torch.Tensor:
    return GAMMA_MIN + (GAMMA_MAX - GAMMA_MIN) * torch.sigmoid(tau)


def raw_from_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """Inverse of ``sigma_from_raw`` (sigma is clamped into its range)."""
    excess = (sigma - SIGMA_MIN).clamp_min(1e-6)
    return torch.where(excess > 20, excess, torch.log(torch.expm1(excess)))


def raw_from_gamma(gamma: torch.Tensor) -> torch.Tensor:
    """Inverse of ``gamma_from_raw`` (gamma is clamped into its open range)."""
    unit = ((gamma - GAMMA_MIN) / (GAMMA_MAX - GAMMA_MIN)).clamp(1e-6, 1 - 1e-6)
    return torch.logit(unit)


def _hermite(order: int, u: torch.Tensor) -> torch.Tensor:
    """phi^(order)(u) / phi(u)."""
    if order == 0:
        return torch.ones_like(u)
    if order == 1:
        return -u
    if order == 2:
        return u * u - 1
    if order == 3:
        return u * (3 - u * u)
    raise ValueError(order)


def _pdf(u: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * u * u) * _INV_SQRT2PI


def _antiderivative(order: int, u: torch.Tensor) -> torch.Tensor:
    """Q_order(u): Phi for order 0, phi^(order-1) otherwise."""
    if order == 0:
        return 0.5 * (1 + torch.erf(u * _INV_SQRT2))
    return _hermite(order - 1, u) * _pdf(u)


def tap_offsets(size: int, dtype: torch.dtype, device) -> torch.Tensor:
    return torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2


def profiles(
    size: int, scale: torch.Tensor, profile: str, with_scale_derivative: bool = False
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """1-D profiles of orders 0, 1, 2.

    Args:
        size: number of taps k.
        scale: ``[C]`` scales.
    Returns:
        ``p [C, 3, k]`` and, if asked, ``dp/dscale [C, 3, k]`` (else None).
    """
    t = tap_offsets(size, scale.dtype, scale.device)
    s = scale[:, None]
    values, derivatives = [], []
    if profile == "integrated":
        upper, lower = (t + 0.5) / s, (t - 0.5) / s
        pdf_upper, pdf_lower = _pdf(upper), _pdf(lower)
        for m in range(3):
            values.append(_antiderivative(m, upper) - _antiderivative(m, lower))
            if with_scale_derivative:
                # d/ds Q_m(x/s) = -(u/s) Q_m'(u) with Q_m' = phi^(m)
                derivatives.append(
                    -(upper * _hermite(m, upper) * pdf_upper - lower * _hermite(m, lower) * pdf_lower) / s
                )
    else:
        u = t / s
        pdf = _pdf(u)
        for m in range(3):
            values.append(_hermite(m, u) * pdf / s)
            if with_scale_derivative:
                # d/ds [phi^(m)(t/s) / s] = -(u phi^(m+1)(u) + phi^(m)(u)) / s^2
                derivatives.append(-(u * _hermite(m + 1, u) + _hermite(m, u)) * pdf / (s * s))
    p = torch.stack(values, dim=1)
    dp = torch.stack(derivatives, dim=1) if with_scale_derivative else None
    return p, dp


def _jet(py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """Six jet functions ``[C, 6, kh, kw]`` from profiles ``py [C, 3, kh]``, ``px [C, 3, kw]``."""
    return py[:, _ORDER_Y, :, None] * px[:, _ORDER_X, None, :]


def dog_basis(params: torch.Tensor, kernel_size: Sequence[int], profile: str = "integrated") -> torch.Tensor:
    """The eight basis functions of every channel, ``[C, 8, kh, kw]`` (G .. Gyy, surround, const)."""
    kh, kw = kernel_size
    sigma = sigma_from_raw(params[:, RHO])
    surround_scale = sigma / gamma_from_raw(params[:, TAU])
    jet = _jet(profiles(kh, sigma, profile)[0], profiles(kw, sigma, profile)[0])
    sy, sx = profiles(kh, surround_scale, profile)[0], profiles(kw, surround_scale, profile)[0]
    surround = (sy[:, 0, :, None] * sx[:, 0, None, :])[:, None]
    const = torch.ones_like(surround)
    return torch.cat([jet, surround, const], dim=1)


def dog_filters(params: torch.Tensor, kernel_size: Sequence[int], profile: str = "integrated") -> torch.Tensor:
    """Reference synthesis: ``params [C, 10]`` -> filters ``[C, kh, kw]`` (differentiable)."""
    return torch.einsum("cb,cbhw->chw", params[:, :NUM_COEFFS], dog_basis(params, kernel_size, profile))


def dog_filters_vjp(
    params: torch.Tensor, grad_filters: torch.Tensor, kernel_size: Sequence[int], profile: str = "integrated"
) -> torch.Tensor:
    """Analytic chain rule: ``grad_filters [C, kh, kw]`` -> ``grad_params [C, 10]``.

    Uses ``d(p_i(y) p_j(x))/ds = p_i'(y) p_j(x) + p_i(y) p_j'(x)`` for the jet, the surround's
    scale ``sigma / gamma``, and the derivatives of the softplus / sigmoid maps.
    """
    kh, kw = kernel_size
    g = grad_filters.to(params.dtype)
    rho, tau = params[:, RHO], params[:, TAU]
    sigma, gamma = sigma_from_raw(rho), gamma_from_raw(tau)
    surround_scale = sigma / gamma
    py, dpy = profiles(kh, sigma, profile, True)
    px, dpx = profiles(kw, sigma, profile, True)
    sy, dsy = profiles(kh, surround_scale, profile, True)
    sx, dsx = profiles(kw, surround_scale, profile, True)

    # <g, a(y) b(x)> = a^T g b: contract x first, then y.
    g_px = torch.einsum("chw,cjw->chj", g, px)     # [C, kh, 3]
    g_dpx = torch.einsum("chw,cjw->chj", g, dpx)
    proj = torch.einsum("cih,chj->cij", py, g_px)  # <g, p_i(y) p_j(x)>        [C, 3, 3]
    proj_dy = torch.einsum("cih,chj->cij", dpy, g_px)
    proj_dx = torch.einsum("cih,chj->cij", py, g_dpx)
    oy, ox = list(_ORDER_Y), list(_ORDER_X)
    grad_jet = proj[:, oy, ox]                              # [C, 6]
    dgrad_jet_dsigma = (proj_dy + proj_dx)[:, oy, ox]       # [C, 6]

    g_sx = torch.einsum("chw,cw->ch", g, sx[:, 0])
    grad_surround = torch.einsum("ch,ch->c", sy[:, 0], g_sx)
    dgrad_surround_dscale = torch.einsum("ch,ch->c", dsy[:, 0], g_sx) + torch.einsum(
        "ch,chw,cw->c", sy[:, 0], g, dsx[:, 0]
    )
    a = params[:, :NUM_COEFFS]
    a_surround = a[:, 6]
    grad_sigma = (a[:, :6] * dgrad_jet_dsigma).sum(1) + a_surround * dgrad_surround_dscale / gamma
    grad_gamma = -a_surround * dgrad_surround_dscale * sigma / (gamma * gamma)
    sig_tau = torch.sigmoid(tau)
    return torch.cat(
        [
            grad_jet,
            grad_surround[:, None],
            g.sum((1, 2))[:, None],
            (grad_sigma * torch.sigmoid(rho))[:, None],
            (grad_gamma * (GAMMA_MAX - GAMMA_MIN) * sig_tau * (1 - sig_tau))[:, None],
        ],
        dim=1,
    )


def make_params(
    coeffs: torch.Tensor, sigma: torch.Tensor, gamma: torch.Tensor
) -> torch.Tensor:
    """``params [C, 10]`` from coefficients ``[C, 8]`` and shapes ``sigma [C]``, ``gamma [C]``."""
    return torch.cat([coeffs, raw_from_sigma(sigma)[:, None], raw_from_gamma(gamma)[:, None]], dim=1)
