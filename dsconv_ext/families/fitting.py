"""Fitting a family to given filters (``from_conv``): least squares for linear coefficients,
a grid search over scales (then a short joint refinement) for the DoG jet.

Fit quality is the cosine between each filter and its fit (1 = exact); a zero filter fitted
by zero counts as exact.
"""

from typing import Optional, Sequence, Tuple

import torch

from . import dog
from .bank import bank_filters


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-filter cosine between ``a`` and ``b`` ``[C, ...]``; 1 where both are zero."""
    a, b = a.flatten(1), b.flatten(1)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    cos = (a * b).sum(1) / (na * nb).clamp_min(1e-30)
    both_zero = (na < 1e-12) & (nb < 1e-12)
    return torch.where(both_zero, torch.ones_like(cos), cos)


def _ridge_solve(basis: torch.Tensor, targets: torch.Tensor, ridge: float) -> torch.Tensor:
    """Least squares ``coeffs @ basis ~ targets`` for ``basis [..., B, K]``, ``targets [C, K]``
    -> ``coeffs [..., C, B]``; a tiny ridge keeps near-collinear bases solvable."""
    gram = basis @ basis.transpose(-1, -2)
    scale = gram.diagonal(dim1=-2, dim2=-1).mean(-1, keepdim=True).clamp_min(1e-30)[..., None]
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    rhs = basis @ targets.t()  # [..., B, C]
    return torch.linalg.solve(gram + ridge * scale * eye, rhs).transpose(-1, -2)


def fit_bank(
    filters: torch.Tensor,
    bank: torch.Tensor,
    offset: bool = False,
    select: bool = False,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """Fit ``filters [C, kh, kw]`` with ``bank [M, kh, kw]``.

    ``select=False``: least-squares coefficients ``[C, M]``. ``select=True``: one bank filter per
    channel (the best fit up to scale, or up to ``a*f+b`` with ``offset``), returned as one-hot
    coefficients times that scale. Returns ``(coeffs [C, M], offset [C] or None, cosine [C])``.
    """
    target = filters.to(torch.float64).flatten(1)
    basis = bank.to(device=target.device, dtype=torch.float64).flatten(1)
    num_filters = basis.shape[0]
    if select:
        candidates = basis[:, None, :]  # [M, 1, K]
        if offset:
            ones = torch.ones_like(candidates)
            candidates = torch.cat([candidates, ones], dim=1)  # [M, 2, K]
        solved = _ridge_solve(candidates, target, 1e-9)  # [M, C, 1|2]
        fits = solved @ candidates  # [M, C, K]
        errors = ((fits - target[None]) ** 2).sum(-1)  # [M, C]
        best = errors.argmin(0)
        channels = torch.arange(target.shape[0], device=target.device)
        coeffs = torch.zeros(target.shape[0], num_filters, dtype=torch.float64, device=target.device)
        coeffs[channels, best] = solved[best, channels, 0]
        offsets = solved[best, channels, 1] if offset else None
    else:
        full = torch.cat([basis, torch.ones_like(basis[:1])], dim=0) if offset else basis
        solved = _ridge_solve(full, target, 1e-9)
        coeffs = solved[:, :num_filters]
        offsets = solved[:, num_filters] if offset else None
    fitted = bank_filters(basis.reshape(bank.shape), coeffs, offsets)
    return coeffs, offsets, cosine(fitted, target)


def _grid_fit(target: torch.Tensor, kernel_size: Sequence[int], profile: str, sigmas, gammas) -> torch.Tensor:
    """Best params per channel over a grid of (sigma, gamma), coefficients by least squares."""
    grid_sigma, grid_gamma = torch.meshgrid(sigmas, gammas, indexing="ij")
    grid = dog.make_params(
        torch.zeros(grid_sigma.numel(), dog.NUM_COEFFS, dtype=torch.float64, device=target.device),
        grid_sigma.flatten(),
        grid_gamma.flatten(),
    )
    basis = dog.dog_basis(grid, kernel_size, profile).flatten(2)  # [G, 8, K]
    coeffs = _ridge_solve(basis, target, 1e-8)  # [G, C, 8]
    errors = ((coeffs @ basis - target[None]) ** 2).sum(-1)  # [G, C]
    best = errors.argmin(0)
    params = grid[best].clone()
    params[:, : dog.NUM_COEFFS] = coeffs[best, torch.arange(target.shape[0], device=target.device)]
    return params


def refine_dog(params: torch.Tensor, target: torch.Tensor, kernel_size, profile: str, steps: int) -> torch.Tensor:
    """A few L-BFGS steps on all ten parameters jointly (``params [C, 10]``, ``target [C, kh*kw]``);
    channels are independent, so one summed loss refines all at once. Keeps, per channel,
    whichever of before/after fits better."""
    start = params.detach().clone()
    refined = start.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([refined], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = ((dog.dog_filters(refined, kernel_size, profile).flatten(1) - target) ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    refined = refined.detach()

    def error(p):
        return ((dog.dog_filters(p, kernel_size, profile).flatten(1) - target) ** 2).sum(1)

    better = torch.isfinite(refined).all(1) & (error(refined) < error(start))
    return torch.where(better[:, None], refined, start)


def fit_dog(
    filters: torch.Tensor,
    profile: str = "integrated",
    refine_steps: int = 30,
    sigmas: Optional[torch.Tensor] = None,
    gammas: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fit the DoG jet to ``filters [C, kh, kw]``: returns ``(params [C, 10] float64, cosine [C])``."""
    dog.check_profile(profile)
    kernel_size = tuple(filters.shape[1:])
    target = filters.detach().to(torch.float64).flatten(1)
    device = target.device
    if sigmas is None:
        top = max(1.0, 0.6 * max(kernel_size))
        sigmas = torch.logspace(torch.log10(torch.tensor(0.15)), torch.log10(torch.tensor(top)), 24)
    if gammas is None:
        gammas = torch.tensor([0.2, 0.35, 0.5, 0.65, 0.8, 0.9])
    sigmas = sigmas.to(device=device, dtype=torch.float64)
    gammas = gammas.to(device=device, dtype=torch.float64)
    params = _grid_fit(target, kernel_size, profile, sigmas, gammas)
    if refine_steps > 0:
        params = refine_dog(params, target, kernel_size, profile, refine_steps)
    fitted = dog.dog_filters(params, kernel_size, profile)
    return params, cosine(fitted, target)
