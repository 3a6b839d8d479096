"""Per-filter normalisation: zero mean, unit L2 norm, the form every later stage compares.

A filter with no spatial structure cannot be normalised: dead (all-zero) filters and constant
filters are detected here so that the caller can count them and leave them out.
"""

import torch

# A filter counts as dead when its L2 norm is below this fraction of its layer's median norm,
# or exactly zero: weight decay leaves unused channels at ~1e-20, not exactly at zero.
DEAD_RELATIVE_NORM = 1e-6
# After removing the mean, a filter whose remaining norm is below this fraction of its norm is
# constant (a DC-only filter): it has no shape to cluster.
CONSTANT_RELATIVE_NORM = 1e-6


def dead_mask(filters: torch.Tensor) -> torch.Tensor:
    """``filters [N, kh, kw]`` of one layer -> ``[N]`` bool, True for dead (all-zero) filters."""
    norms = filters.detach().to(torch.float64).flatten(1).norm(dim=1)
    alive = norms[norms > 0]
    reference = alive.median() if alive.numel() else norms.new_tensor(0.0)
    return (norms == 0) | (norms < DEAD_RELATIVE_NORM * reference)


def constant_mask(filters: torch.Tensor) -> torch.Tensor:
    """``filters [N, kh, kw]`` (not dead) -> ``[N]`` bool, True where the filter is constant."""
    flat = filters.detach().to(torch.float64).flatten(1)
    centred = flat - flat.mean(dim=1, keepdim=True)
    return centred.norm(dim=1) <= CONSTANT_RELATIVE_NORM * flat.norm(dim=1)


def normalize_filters(filters: torch.Tensor) -> torch.Tensor:
    """``filters [N, kh, kw]`` -> float32 ``[N, kh, kw]``, each with zero mean and unit L2 norm.

    The arithmetic is done in float64 so that filters with a large mean do not lose their shape
    to cancellation; callers remove dead and constant filters first (their norm would be 0).
    """
    flat = filters.detach().to(torch.float64).flatten(1)
    centred = flat - flat.mean(dim=1, keepdim=True)
    unit = centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return unit.to(torch.float32).reshape(filters.shape)
