"""Fitting many layers at once: the filters of every layer with the same kernel size are
concatenated and fitted together, in chunks of ``chunk`` channels.

DoG jet (``fit_dog_layers``): for each channel, the scale ``sigma`` and ratio ``gamma`` are
searched and the eight coefficients solved by least squares at each candidate (variable
projection: the coefficients are always optimal for the shape):

1. a grid search over ``(sigma, gamma)`` (``families.fitting.fit_dog``'s grid: 24 log-spaced
   scales, 6 gammas);
2. a coarse-to-fine local search: ``levels`` rounds, each trying the 3x3 neighbours of every
   channel's best point at half the previous spacing (in log sigma and gamma);
3. optionally ``refine_steps`` of ``fit_dog``'s joint L-BFGS on all ten parameters.

On DoG-jet filters plus 2 % noise the local search reaches a better fit than 30 L-BFGS steps
(minimum cosine over 6,624 7x7 filters 0.9993 against 0.9987) at less cost, and L-BFGS after it
gains nothing, so ``refine_steps`` defaults to 0. Batched over layers:

* every filter is first scaled to unit L2 norm (the jet is linear in its coefficients, which are
  scaled back afterwards), so the joint L-BFGS loss weighs every channel of every layer equally;
* the grid search never forms the ``[grid, C, kh*kw]`` residuals: the squared error of the
  least-squares coefficients ``c`` is ``|t|^2 - 2 c.(B t) + c.(B B^T) c``, which needs only
  ``[grid, 8, C]`` tensors;
* the local search builds the normal equations from the separable 1-D profiles
  (``gram = (PY PY^T) * (PX PX^T)``), never the ``[9 C, 8, kh*kw]`` candidate bases;
* channels go in chunks sized so the grid search's ``[grid, 8, C]`` tensors and the local
  search's ``[9 C, 8, max(kh, kw)]`` ones stay near ``CHUNK_BYTES``.

Bank (``fit_bank_layers``): ``families.fitting.fit_bank`` on the concatenated filters.
"""

import contextlib
import math
from typing import Iterator, List, Optional, Sequence, Tuple

import torch

from ..families import dog
from ..families.fitting import cosine, fit_bank, refine_dog

CHUNK_BYTES = 256 * 2**20
GRID_RIDGE = 1e-8
DEFAULT_LEVELS = 4


def chunk_for(kernel_size: Sequence[int]) -> int:
    """Channels per chunk for ``kernel_size`` (see the module docstring)."""
    per_channel = 8 * dog.NUM_COEFFS * max(24 * 6 * 2, 9 * (2 * max(kernel_size) + 2 * dog.NUM_COEFFS))
    return max(1024, CHUNK_BYTES // per_channel)


@contextlib.contextmanager
def fitting_threads(threads: Optional[int]) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` (None: unchanged), then restore.

    The fit is many mid-sized ops whose parallel speed-up is small, while on oversubscribed
    cores (a shared machine, DataLoader workers) every multi-threaded op can stall on its
    barrier: on the 2-core development machine under load, one thread fitted ConvNeXt-T's
    filters 4-5x faster than two. ``convert`` therefore fits with one thread by default.
    """
    if threads is None:
        yield
        return
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads: expected None or an int >= 1, got {threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_grid(kernel_size: Sequence[int], device) -> Tuple[torch.Tensor, torch.Tensor]:
    """``fit_dog``'s grid: 24 scales log-spaced in [0.15, max(1, 0.6 k)] px and six gammas."""
    top = max(1.0, 0.6 * max(kernel_size))
    sigmas = torch.logspace(math.log10(0.15), math.log10(top), 24, dtype=torch.float64, device=device)
    gammas = torch.tensor([0.2, 0.35, 0.5, 0.65, 0.8, 0.9], dtype=torch.float64, device=device)
    return sigmas, gammas


def grid_fit(target: torch.Tensor, kernel_size: Sequence[int], profile: str,
             sigmas: Optional[torch.Tensor] = None, gammas: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Best ``params [C, 10]`` per channel over the ``(sigma, gamma)`` grid, coefficients by
    (ridge-stabilised) least squares; ``target [C, kh*kw]`` float64."""
    if sigmas is None or gammas is None:
        default_sigmas, default_gammas = default_grid(kernel_size, target.device)
        sigmas = default_sigmas if sigmas is None else sigmas.to(target)
        gammas = default_gammas if gammas is None else gammas.to(target)
    grid_sigma, grid_gamma = torch.meshgrid(sigmas, gammas, indexing="ij")
    zeros = torch.zeros(grid_sigma.numel(), dog.NUM_COEFFS, dtype=torch.float64, device=target.device)
    grid = dog.make_params(zeros, grid_sigma.flatten(), grid_gamma.flatten())       # [G, 10]
    basis = dog.dog_basis(grid, kernel_size, profile).flatten(2)                  # [G, 8, K]
    gram = basis @ basis.transpose(1, 2)                                          # [G, 8, 8]
    scale = gram.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-30)[:, None, None]
    eye = torch.eye(dog.NUM_COEFFS, dtype=torch.float64, device=target.device)
    rhs = basis @ target.t()                                                      # [G, 8, C]
    coeffs = torch.linalg.solve(gram + GRID_RIDGE * scale * eye, rhs)             # [G, 8, C]
    errors = (target * target).sum(1) - 2 * (coeffs * rhs).sum(1) + (coeffs * (gram @ coeffs)).sum(1)  # [G, C]
    best = errors.argmin(0)
    channels = torch.arange(target.shape[0], device=target.device)
    params = grid[best].clone()
    params[:, :dog.NUM_COEFFS] = coeffs[best, :, channels]
    return params


# Orders (along y, along x) of the six jet functions, in parameter order (families.dog).
ORDER_Y = (0, 0, 1, 0, 1, 2)
ORDER_X = (0, 1, 0, 2, 1, 0)


def separable_basis(kernel_size: Sequence[int], sigma: torch.Tensor, gamma: torch.Tensor,
                    profile: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """The eight basis functions as separable products ``B_b = PY[:, b, :, None] * PX[:, b, None, :]``:
    ``PY [N, 8, kh]``, ``PX [N, 8, kw]`` (jet at ``sigma``, surround at ``sigma / gamma``, constant)."""
    kh, kw = kernel_size
    surround = sigma / gamma
    py, px = dog.profiles(kh, sigma, profile)[0], dog.profiles(kw, sigma, profile)[0]
    sy, sx = dog.profiles(kh, surround, profile)[0][:, :1], dog.profiles(kw, surround, profile)[0][:, :1]
    py = torch.cat([py[:, list(ORDER_Y)], sy, torch.ones_like(sy)], 1)
    px = torch.cat([px[:, list(ORDER_X)], sx, torch.ones_like(sx)], 1)
    return py, px


def _solve(gram: torch.Tensor, rhs: torch.Tensor, norm2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Least squares from the normal equations ``gram [N, 8, 8]``, ``rhs [N, 8]`` and ``|t|^2 [N]``:
    ``coeffs [N, 8]`` and the squared error ``[N]``."""
    scale = gram.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-30)[:, None, None]
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    coeffs = torch.linalg.solve(gram + GRID_RIDGE * scale * eye, rhs[:, :, None])[:, :, 0]
    errors = norm2 - 2 * (coeffs * rhs).sum(1) + (coeffs * (gram @ coeffs[:, :, None])[:, :, 0]).sum(1)
    return coeffs, errors


def local_search(params: torch.Tensor, target: torch.Tensor, kernel_size: Sequence[int], profile: str,
                 levels: int = DEFAULT_LEVELS, log_sigma_step: Optional[float] = None,
                 gamma_step: float = 0.15) -> torch.Tensor:
    """Coarse-to-fine search around each channel's ``(sigma, gamma)``: ``levels`` rounds over the
    3x3 neighbourhood at half the previous spacing; coefficients by least squares each time.

    The basis is separable, so the normal equations come from 1-D profiles:
    ``gram = (PY PY^T) * (PX PX^T)`` and ``rhs_b = PY_b^T T PX_b``; no ``[N, 8, kh*kw]`` basis is built.
    """
    if levels <= 0:
        return params
    if log_sigma_step is None:
        sigmas, _ = default_grid(kernel_size, "cpu")
        log_sigma_step = float(torch.log(sigmas[1] / sigmas[0]))
    kh, kw = kernel_size
    channels, device = target.shape[0], target.device
    images = target.reshape(channels, kh, kw)
    norm2 = (target * target).sum(1).repeat_interleave(9)
    log_sigma = torch.log(dog.sigma_from_raw(params[:, dog.RHO]))
    gamma = dog.gamma_from_raw(params[:, dog.TAU])
    coeffs = params[:, :dog.NUM_COEFFS]
    steps = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64, device=device)
    step_u, step_v = torch.meshgrid(steps, steps, indexing="ij")
    step_u, step_v = step_u.flatten(), step_v.flatten()
    low_u = math.log(dog.SIGMA_MIN + 1e-3)
    rows = torch.arange(channels, device=device) * 9
    du, dv = log_sigma_step, gamma_step
    for _ in range(levels):
        du, dv = du / 2, dv / 2
        cand_u = (log_sigma[:, None] + du * step_u).clamp_min(low_u).flatten()
        cand_v = (gamma[:, None] + dv * step_v).clamp(dog.GAMMA_MIN + 1e-3, dog.GAMMA_MAX - 1e-3).flatten()
        py, px = separable_basis(kernel_size, cand_u.exp(), cand_v, profile)        # [9C, 8, kh], [9C, 8, kw]
        gram = (py @ py.transpose(1, 2)) * (px @ px.transpose(1, 2))               # [9C, 8, 8]
        projected = py.reshape(channels, 9 * dog.NUM_COEFFS, kh) @ images           # [C, 72, kw]
        rhs = (projected.reshape(channels * 9, dog.NUM_COEFFS, kw) * px).sum(2)     # [9C, 8]
        cand_coeffs, errors = _solve(gram, rhs, norm2)
        pick = rows + errors.view(channels, 9).argmin(1)
        log_sigma, gamma, coeffs = cand_u[pick], cand_v[pick], cand_coeffs[pick]
    return dog.make_params(coeffs, log_sigma.exp(), gamma)


def fit_dog_filters(filters: torch.Tensor, profile: str = "integrated", levels: int = DEFAULT_LEVELS,
                    refine_steps: int = 0, chunk: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fit the DoG jet to ``filters [C, kh, kw]``: ``(params [C, 10] float64, cosine [C])``."""
    dog.check_profile(profile)
    kernel_size = tuple(filters.shape[1:])
    chunk = chunk or chunk_for(kernel_size)
    target = filters.detach().to(torch.float64).flatten(1)
    norms = target.norm(dim=1)
    unit = target / torch.where(norms > 0, norms, torch.ones_like(norms))[:, None]
    params = torch.empty(target.shape[0], dog.NUM_PARAMS, dtype=torch.float64, device=target.device)
    with torch.no_grad():
        for start in range(0, target.shape[0], chunk):
            part = unit[start:start + chunk]
            fitted = local_search(grid_fit(part, kernel_size, profile), part, kernel_size, profile, levels)
            if refine_steps > 0:
                fitted = refine_dog(fitted, part, kernel_size, profile, refine_steps)
            params[start:start + chunk] = fitted
        params[:, :dog.NUM_COEFFS] *= norms[:, None]
        cos = cosine(dog.dog_filters(params, kernel_size, profile), target.reshape(filters.shape))
    return params, cos


def fit_dog_layers(filters: Sequence[torch.Tensor], profile: str = "integrated", levels: int = DEFAULT_LEVELS,
                   refine_steps: int = 0, chunk: Optional[int] = None) -> List[torch.Tensor]:
    """``filters``: ``[C_i, kh, kw]`` per layer, one kernel size. Returns ``params [C_i, 10]``
    (float64) per layer, fitted together."""
    sizes = [f.shape[0] for f in filters]
    params, _ = fit_dog_filters(torch.cat([f.detach().to(torch.float64) for f in filters]), profile,
                                levels, refine_steps, chunk)
    return list(params.split(sizes))


def fit_bank_layers(filters: Sequence[torch.Tensor], bank: torch.Tensor, select: bool = False,
                    offset: bool = False) -> List[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """``filters``: ``[C_i, kh, kw]`` per layer, all for ``bank [M, kh, kw]``. Returns
    ``(coeffs [C_i, M], offset [C_i] or None)`` per layer (float64)."""
    sizes = [f.shape[0] for f in filters]
    target = torch.cat([f.detach().to(torch.float64) for f in filters])
    coeffs, offsets, _ = fit_bank(target, bank.to(target.device), offset=offset, select=select)
    coeff_parts = coeffs.split(sizes)
    offset_parts = offsets.split(sizes) if offsets is not None else [None] * len(sizes)
    return list(zip(coeff_parts, offset_parts))
