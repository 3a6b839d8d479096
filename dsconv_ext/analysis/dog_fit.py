r"""The DoG-jet fit of many filters at once (a million 7x7 filters in seconds).

``dsconv_ext.families.fitting.fit_dog`` is the reference: a grid search over the two shape
numbers (sigma, gamma) with least-squares coefficients at every grid point, then a joint L-BFGS
refinement. Its grid step materialises the fit of every filter at every grid point
(``[grid, N, k*k]``), which for N = 1e6 would be tens of gigabytes, and L-BFGS on a million
channels takes minutes. This module keeps the same model and grid but reorganises the work:

1. **Grid search by spectral scores.** For a normalised filter t (zero mean, unit norm) the
   (ridge) least-squares fit on a grid point's basis is ``U diag(w) U^T t`` (U: the basis'
   left singular vectors, w: the ridge's shrinkage of each), so its cosine with t follows from
   the products ``U^T t``: matrix products ``T [N, K] @ [K, grid]`` score every filter against
   every grid point, chunk by chunk, with no per-filter solve, and rank the grid points exactly
   as ``fit_dog``'s grid search does.
2. **Sub-grid refinement.** Per filter, a parabola through the best grid point and its two
   neighbours along each grid axis (log-sigma and gamma) moves (sigma, gamma) between grid
   points; the basis is then built at the per-filter (sigma, gamma) and the eight coefficients
   solved by a batched 8x8 least squares (float64, the same tiny ridge as ``fit_dog``). The
   refinement is kept only where it fits better than the grid point, so it never makes a fit
   worse.

The result has ``fit_dog``'s parameter layout (``params [N, 10]``, see ``families.dog``) and its
fit quality, the cosine between filter and fit; the tests compare the two.
"""

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

from ..families import dog

# Filters per batch: the per-filter solves hold a few [chunk, 8, 8] float64 tensors and the
# scores a few [chunk, grid] float32 ones, tens of MB.
DEFAULT_CHUNK = 16384
# Relative ridge of the per-filter least squares, as in fitting._grid_fit: keeps the
# near-collinear centre and surround Gaussians (gamma close to 1) solvable.
RIDGE = 1e-8


@dataclass
class DogFit:
    """DoG-jet fits of N filters.

    Attributes:
        params: ``[N, 10]`` float64, the ``families.dog`` layout (coefficients, rho, tau); float64
            because near-collinear centre and surround Gaussians can have large, cancelling
            coefficients.
        cosine: ``[N]`` float32, cosine between each (normalised) filter and its fit.
        sigma: ``[N]`` float32, centre scale in pixels.
        gamma: ``[N]`` float32, centre/surround scale ratio (surround scale = sigma / gamma).
    """

    params: torch.Tensor
    cosine: torch.Tensor
    sigma: torch.Tensor
    gamma: torch.Tensor


def default_grid(kernel_size: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """The (sigmas, gammas) grid ``fit_dog`` searches by default, float64."""
    top = max(1.0, 0.6 * max(kernel_size))
    sigmas = torch.logspace(torch.log10(torch.tensor(0.15)), torch.log10(torch.tensor(top)), 24)
    gammas = torch.tensor([0.2, 0.35, 0.5, 0.65, 0.8, 0.9])
    return sigmas.to(torch.float64), gammas.to(torch.float64)


def _grid_params(sigmas: torch.Tensor, gammas: torch.Tensor) -> torch.Tensor:
    """``[S * G, 10]`` params (zero coefficients) for every (sigma, gamma), sigma-major."""
    grid_sigma, grid_gamma = torch.meshgrid(sigmas, gammas, indexing="ij")
    zeros = torch.zeros(grid_sigma.numel(), dog.NUM_COEFFS, dtype=torch.float64)
    return dog.make_params(zeros, grid_sigma.flatten(), grid_gamma.flatten())


def _ridge_spans(basis: torch.Tensor) -> torch.Tensor:
    """Per grid point, the span of its basis with the ridge's shrinkage, for scoring.

    With ``B^T = U S V^T`` (``basis [P, B, K]``) the ridge fit of t is ``U diag(w) U^T t``,
    ``w = s^2 / (s^2 + ridge)``, so with ``p = U^T t`` its cosine with t is
    ``sum(w p^2) / sqrt(sum(w^2 p^2))`` (for unit t). Returns ``[2, B, K, P]``: ``U sqrt(w)``
    and ``U w``, laid out so that column j of every grid point is one ``[K, P]`` matrix
    (the scores are then a few small matrix products, accumulated).
    """
    gram_scale = basis.square().sum((1, 2)) / basis.shape[1]  # mean diagonal of the Gram matrix
    u, s, _ = torch.linalg.svd(basis.transpose(1, 2), full_matrices=False)  # u [P, K, B]
    weight = s.square() / (s.square() + RIDGE * gram_scale[:, None])  # [P, B]
    spans = torch.stack([u * weight.sqrt()[:, None, :], u * weight[:, None, :]])  # [2, P, K, B]
    return spans.permute(0, 3, 2, 1).contiguous()


def _fit_scores(target: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
    """``target [n, K]`` (unit rows), ``spans [2, B, K, P]`` -> ``[n, P]``: the squared cosine
    between each filter and its ridge fit at every grid point."""
    first = second = None
    for half_weighted, weighted in zip(spans[0], spans[1]):  # B pairs of [n, K] @ [K, P]
        a = (target @ half_weighted).square_()
        b = (target @ weighted).square_()
        first = a if first is None else first.add_(a)
        second = b if second is None else second.add_(b)
    return first.square_().div_(second.clamp_min_(1e-30))


def _parabola_offset(left: torch.Tensor, centre: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Vertex of the parabola through (-1, left), (0, centre), (1, right), clipped to
    [-0.5, 0.5] (beyond that a neighbouring grid point would have won)."""
    curvature = left - 2 * centre + right  # < 0 at a maximum
    safe = torch.where(curvature < 0, curvature, -torch.ones_like(curvature))
    offset = torch.where(curvature < 0, 0.5 * (left - right) / safe, torch.zeros_like(curvature))
    return offset.clamp(-0.5, 0.5)


def _interpolate(values: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """Grid ``values [M]`` at fractional indices ``position [N]`` (linear between points)."""
    low = position.floor().long().clamp(0, values.numel() - 1)
    high = (low + 1).clamp(max=values.numel() - 1)
    weight = (position - low.to(position.dtype)).to(values.dtype)
    return values[low] * (1 - weight) + values[high] * weight


def _subgrid_optimum(scores: torch.Tensor, best: torch.Tensor, sigmas: torch.Tensor, gammas: torch.Tensor):
    """Per filter, (sigma, gamma) between grid points: a parabola through the best grid
    point's score and its two neighbours, along log-sigma and along gamma separately. At the
    edge of the grid (no neighbour on one side) the grid value is kept.

    Args:
        scores: ``[n, S * G]`` grid scores (sigma-major), ``best [n]`` the best grid index.
    Returns:
        ``(sigma [n], gamma [n])`` float64.
    """
    num_sigmas, num_gammas = sigmas.numel(), gammas.numel()
    grid_scores = scores.reshape(-1, num_sigmas, num_gammas)
    rows = torch.arange(scores.shape[0])
    sigma_index, gamma_index = best // num_gammas, best % num_gammas
    centre = grid_scores[rows, sigma_index, gamma_index]

    def step_along(index, size, pick):
        has_both = (index > 0) & (index < size - 1)
        left, right = pick((index - 1).clamp(min=0)), pick((index + 1).clamp(max=size - 1))
        step = torch.where(has_both, _parabola_offset(left, centre, right), torch.zeros_like(centre))
        return index.to(torch.float64) + step.to(torch.float64)

    sigma_position = step_along(sigma_index, num_sigmas, lambda i: grid_scores[rows, i, gamma_index])
    gamma_position = step_along(gamma_index, num_gammas, lambda i: grid_scores[rows, sigma_index, i])
    return _interpolate(sigmas.log(), sigma_position).exp(), _interpolate(gammas, gamma_position)


# (order along y, order along x) of the six jet functions in ``families.dog`` parameter order
# (G, Gx, Gy, Gxx, Gxy, Gyy), then the surround Gaussian and the constant, as indices into the
# per-axis factor list [p0, p1, p2, surround p0, ones] built by ``_axis_factors``.
_FACTOR_Y = (0, 0, 1, 0, 1, 2, 3, 4)
_FACTOR_X = (0, 1, 0, 2, 1, 0, 3, 4)


def _axis_factors(size: int, sigma: torch.Tensor, surround_scale: torch.Tensor, profile: str) -> torch.Tensor:
    """The 1-D factors of the eight basis functions along one axis, ``[n, 5, size]``:
    profiles of order 0, 1, 2 at ``sigma``, order 0 at ``surround_scale``, and ones."""
    jet = dog.profiles(size, sigma, profile)[0]
    surround = dog.profiles(size, surround_scale, profile)[0][:, :1]
    return torch.cat([jet, surround, torch.ones_like(surround)], dim=1)


def _solve_per_filter(target: torch.Tensor, params: torch.Tensor, kernel_size, profile: str):
    """Least-squares coefficients with each filter's own basis.

    Every basis function is a separable product ``u(y) v(x)``, so the 8x8 Gram matrix and the
    right-hand side come from 1-D factors (``<u v, u' v'> = <u, u'> <v, v'>`` and
    ``<T, u v> = u^T T v``): the ``[n, 8, kh*kw]`` basis is never built.

    Args:
        target: ``[n, kh, kw]`` float64 filters.
        params: ``[n, 10]`` float64, only rho and tau are read.
    Returns:
        ``(params [n, 10] with the coefficients filled in, cosine [n])``.
    """
    kh, kw = kernel_size
    sigma = dog.sigma_from_raw(params[:, dog.RHO])
    surround_scale = sigma / dog.gamma_from_raw(params[:, dog.TAU])
    factors_y = _axis_factors(kh, sigma, surround_scale, profile)  # [n, 5, kh]
    factors_x = _axis_factors(kw, sigma, surround_scale, profile)  # [n, 5, kw]
    index_y, index_x = list(_FACTOR_Y), list(_FACTOR_X)
    gram_y = factors_y @ factors_y.transpose(1, 2)  # [n, 5, 5]
    gram_x = factors_x @ factors_x.transpose(1, 2)
    gram = gram_y[:, index_y][:, :, index_y] * gram_x[:, index_x][:, :, index_x]  # [n, 8, 8]
    moments = factors_y @ target @ factors_x.transpose(1, 2)  # [n, 5, 5]: u^T T v
    rhs = moments[:, index_y, index_x]  # [n, 8]
    scale = gram.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-30)[:, None, None]
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
    coeffs = torch.linalg.solve(gram + RIDGE * scale * eye, rhs[:, :, None])[:, :, 0]
    # cos(t, fit) = <t, fit> / (|t| |fit|) with <t, fit> = c.rhs and |fit|^2 = c^T G c.
    fit_norm_sq = (coeffs[:, None, :] @ gram @ coeffs[:, :, None])[:, 0, 0]
    target_norm = target.flatten(1).norm(dim=1)
    cos = (coeffs * rhs).sum(1) / (fit_norm_sq.clamp_min(0).sqrt() * target_norm).clamp_min(1e-30)
    out = params.clone()
    out[:, : dog.NUM_COEFFS] = coeffs
    return out, cos


def fit_dog_batched(
    filters: torch.Tensor,
    profile: str = "integrated",
    sigmas: Optional[torch.Tensor] = None,
    gammas: Optional[torch.Tensor] = None,
    refine: bool = True,
    chunk: int = DEFAULT_CHUNK,
    progress=None,
) -> DogFit:
    """Fit the DoG jet to every filter.

    Args:
        filters: ``[N, kh, kw]``, normalised (zero mean, unit L2; see ``normalize_filters``).
            The grid scores assume unit norm; the final cosines do not.
        profile: ``"integrated"`` or ``"sampled"`` (see ``families.dog``).
        sigmas, gammas: the search grid (default: ``default_grid``, the grid of ``fit_dog``).
        refine: sub-grid refinement of (sigma, gamma) before the per-filter solve (else the
            solve is at the best grid point).
        chunk: filters per batch (memory ~ chunk * grid * 32 bytes).
        progress: optional callable ``progress(n_done)`` called after each chunk.
    Returns:
        ``DogFit`` with ``params [N, 10]``, ``cosine [N]``, ``sigma [N]``, ``gamma [N]``.
    """
    dog.check_profile(profile)
    kernel_size = tuple(filters.shape[1:])
    if sigmas is None or gammas is None:
        default_sigmas, default_gammas = default_grid(kernel_size)
        sigmas = default_sigmas if sigmas is None else sigmas.to(torch.float64)
        gammas = default_gammas if gammas is None else gammas.to(torch.float64)
    grid = _grid_params(sigmas, gammas)
    grid_basis = dog.dog_basis(grid, kernel_size, profile).flatten(2)  # [P, 8, K]
    spans = _ridge_spans(grid_basis).to(torch.float32)  # [2, 8, K, P]

    flat = filters.detach().reshape(filters.shape[0], -1)
    params_out = torch.empty(flat.shape[0], dog.NUM_PARAMS, dtype=torch.float64)
    cos_out = torch.empty(flat.shape[0], dtype=torch.float32)
    for start in range(0, flat.shape[0], chunk):
        target32 = flat[start : start + chunk].to(torch.float32)
        n = target32.shape[0]
        scores = _fit_scores(target32, spans)  # [n, P]: squared fit cosines
        best = scores.argmax(1)
        best_params = grid[best]
        target = target32.to(torch.float64).reshape(n, *kernel_size)
        if refine:
            sigma, gamma = _subgrid_optimum(scores, best, sigmas, gammas)
            refined_params = dog.make_params(torch.zeros(n, dog.NUM_COEFFS, dtype=torch.float64), sigma, gamma)
            params, cos = _solve_per_filter(target, refined_params, kernel_size, profile)
            # Where the refined point fits worse than the grid point, fall back to it.
            best_scores = scores.gather(1, best[:, None])[:, 0].to(torch.float64)
            worse = cos.square() < best_scores - 1e-7
            if worse.any():
                grid_params, grid_cos = _solve_per_filter(target[worse], best_params[worse], kernel_size, profile)
                params[worse], cos[worse] = grid_params, grid_cos
        else:
            params, cos = _solve_per_filter(target, best_params, kernel_size, profile)
        params_out[start : start + n] = params
        cos_out[start : start + n] = cos.to(torch.float32)
        if progress is not None:
            progress(start + n)
    return DogFit(
        params=params_out,
        cosine=cos_out,
        sigma=dog.sigma_from_raw(params_out[:, dog.RHO]).to(torch.float32),
        gamma=dog.gamma_from_raw(params_out[:, dog.TAU]).to(torch.float32),
    )
