"""What extraction produces: the depthwise filters of a source, layer by layer, with provenance,
and their regrouping by kernel size for the analysis."""

import re
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch

from .errors import AnalysisInputError
from .normalize import constant_mask, dead_mask, normalize_filters


@dataclass
class LayerFilters:
    """One layer's filters.

    Attributes:
        name: where they came from (module path, state-dict key without ``.weight``, ONNX node,
            or array name).
        weights: ``[C, kh, kw]`` float32 raw filters; channel c is row c.
    """

    name: str
    weights: torch.Tensor

    @property
    def kernel_size(self) -> Tuple[int, int]:
        return int(self.weights.shape[1]), int(self.weights.shape[2])


@dataclass
class FilterSet:
    """Every depthwise filter of a source.

    Attributes:
        source: a description of the source (path, model name).
        layers: the layers in model order.
        skipped: notes on tensors that looked like filters but were left out, and why.
    """

    source: str
    layers: List[LayerFilters]
    skipped: List[str] = field(default_factory=list)

    @property
    def num_filters(self) -> int:
        return sum(layer.weights.shape[0] for layer in self.layers)

    def check_usable(self) -> None:
        """Raise ``AnalysisInputError`` (one line) when there is nothing to analyse or a
        filter holds NaN or inf."""
        if not self.layers:
            raise AnalysisInputError(f"{self.source}: no depthwise filters found")
        bad_total, first_bad = 0, None
        for layer in self.layers:
            finite = torch.isfinite(layer.weights).flatten(1).all(1)
            bad = int((~finite).sum())
            if bad and first_bad is None:
                first_bad = (layer.name, int((~finite).nonzero()[0]))
            bad_total += bad
        if bad_total:
            name, channel = first_bad
            raise AnalysisInputError(
                f"{self.source}: {bad_total} depthwise filter(s) contain NaN or inf "
                f"(first: layer {name!r}, channel {channel}); the analysis needs finite weights"
            )


@dataclass
class KernelSizeGroup:
    """All usable filters of one kernel size, pooled over layers.

    Attributes:
        kernel_size: ``(kh, kw)``.
        filters: ``[N, kh, kw]`` float32, normalised (zero mean, unit L2).
        layer: ``[N]`` int64 index into ``layer_names``.
        channel: ``[N]`` int64 channel within that layer.
        layer_names: names of the layers of this kernel size, in model order.
        layer_sizes: ``[L]`` filters per layer, dead and constant ones included.
        num_zero: dead (all-zero) filters left out; ``zero_per_layer [L]`` by layer.
        num_constant: constant (DC-only) filters left out.
    """

    kernel_size: Tuple[int, int]
    filters: torch.Tensor
    layer: torch.Tensor
    channel: torch.Tensor
    layer_names: List[str]
    layer_sizes: torch.Tensor
    zero_per_layer: torch.Tensor
    num_zero: int
    num_constant: int


def group_by_kernel_size(filter_set: FilterSet) -> Dict[Tuple[int, int], KernelSizeGroup]:
    """Pool layers by kernel size, drop dead and constant filters, normalise the rest.

    Returns ``{(kh, kw): KernelSizeGroup}`` ordered by kernel size. Raises
    ``AnalysisInputError`` when no filter is left.
    """
    by_size: Dict[Tuple[int, int], List[LayerFilters]] = {}
    for layer in filter_set.layers:
        by_size.setdefault(layer.kernel_size, []).append(layer)
    groups = {}
    for kernel_size in sorted(by_size):
        layers = by_size[kernel_size]
        kept_filters, kept_layer, kept_channel = [], [], []
        sizes, zeros, constants = [], [], 0
        for index, layer in enumerate(layers):
            weights = layer.weights
            dead = dead_mask(weights)
            constant = constant_mask(weights) & ~dead
            keep = ~(dead | constant)
            channels = keep.nonzero()[:, 0]
            kept_filters.append(weights[channels])
            kept_layer.append(torch.full((channels.numel(),), index, dtype=torch.long))
            kept_channel.append(channels)
            sizes.append(weights.shape[0])
            zeros.append(int(dead.sum()))
            constants += int(constant.sum())
        filters = torch.cat(kept_filters)
        groups[kernel_size] = KernelSizeGroup(
            kernel_size=kernel_size,
            filters=normalize_filters(filters) if filters.shape[0] else filters.to(torch.float32),
            layer=torch.cat(kept_layer),
            channel=torch.cat(kept_channel),
            layer_names=[layer.name for layer in layers],
            layer_sizes=torch.tensor(sizes),
            zero_per_layer=torch.tensor(zeros),
            num_zero=sum(zeros),
            num_constant=constants,
        )
    if not any(group.filters.shape[0] for group in groups.values()):
        raise AnalysisInputError(
            f"{filter_set.source}: all {filter_set.num_filters} depthwise filters are zero or constant; "
            "nothing to analyse"
        )
    return groups


def natural_key(text: str):
    """Sort key that orders ``blocks.2`` before ``blocks.10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]
