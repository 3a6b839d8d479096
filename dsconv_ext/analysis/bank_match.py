"""The master-key test: how well does the nearest filter of a small bank explain each filter?

Each filter t is matched to every bank filter f up to ``a * f + b`` (any scale, sign and
offset); the best cosine between t and ``a * f + b`` is the match quality. For a zero-mean,
unit-norm t the best offset removes f's mean, so the best cosine is ``|<t, f - mean(f)>| /
||f - mean(f)||``: one matrix product for all filters, the same answer as
``families.fitting.fit_bank(select=True, offset=True)`` (the tests compare them).
"""

from dataclasses import dataclass
from typing import Union

import torch

from ..families.bank import get_bank


@dataclass
class BankMatch:
    """Nearest bank filter of each of N filters.

    Attributes:
        name: the bank's name (or "custom").
        bank: ``[M, kh, kw]`` the bank at this kernel size.
        index: ``[N]`` int64 best bank filter.
        cosine: ``[N]`` float32 cosine between the filter and ``a * bank[index] + b``.
    """

    name: str
    bank: torch.Tensor
    index: torch.Tensor
    cosine: torch.Tensor


def resolve_bank(bank: Union[str, torch.Tensor], kernel_size) -> torch.Tensor:
    """A named bank generated at ``kernel_size`` (``master8``, ``dog_jet``) or a user tensor
    ``[M, kh, kw]`` (checked to match)."""
    return get_bank(bank, tuple(kernel_size))


def match_bank(filters: torch.Tensor, bank: torch.Tensor, name: str = "custom", chunk: int = 262144) -> BankMatch:
    """Match ``filters [N, kh, kw]`` (normalised: zero mean, unit norm) against ``bank [M, kh, kw]``."""
    flat_bank = bank.detach().to(torch.float32).flatten(1)
    centred = flat_bank - flat_bank.mean(1, keepdim=True)
    norms = centred.norm(dim=1, keepdim=True)
    # A constant bank filter explains nothing a zero-mean filter has: its column stays zero.
    unit_bank = torch.where(norms > 1e-12, centred / norms.clamp_min(1e-12), torch.zeros_like(centred))
    flat = filters.detach().reshape(filters.shape[0], -1)
    indices, cosines = [], []
    for start in range(0, flat.shape[0], chunk):
        similarity = (flat[start : start + chunk].to(torch.float32) @ unit_bank.t()).abs()
        cos, index = similarity.max(1)
        indices.append(index)
        cosines.append(cos)
    return BankMatch(
        name=name, bank=bank.detach().to(torch.float32), index=torch.cat(indices), cosine=torch.cat(cosines)
    )
