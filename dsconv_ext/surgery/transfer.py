"""Frozen-filter transfer (the "master key" setting): ``freeze_depthwise`` and
``transplant_depthwise``.

``transplant_depthwise(src, dst)`` copies depthwise filters into ``dst``'s depthwise layers:

* layers are matched by ``match="order"`` (the i-th of ``dst`` takes the i-th of ``src``; with
  different counts, the one at the same relative depth, ``round(i (n_src - 1) / (n_dst - 1))``), by
  ``match="name"`` (the same qualified name; unmatched ``dst`` layers are listed as skipped), or
  by a mapping ``{dst_name: src_name}``;
* a channel-count mismatch by ``channels="cycle"`` (channel j takes source channel
  ``j mod C_src``) or ``channels="sample"`` (random source channels, without replacement where
  there are enough);
* a kernel-size mismatch per axis by a centred crop (larger source) or centred zero padding
  (smaller source).

Plain depthwise convs and ``DepthwiseConv2d`` get the filters as they are; ``DoGConv2d`` and
``BankConv2d`` get their family fitted to them (the report gives the fit's cosine).
"""

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..families.fitting import cosine
from ..modules import BankConv2d, DoGConv2d
from .convert import filter_parameters
from .find import Selector, Site, check_model, find_depthwise, no_depthwise_error, normalize_selector, selected
from .fit import fit_bank_layers, fit_dog_layers
from .report import SkippedRow, format_table, kernel_text

Source = Union[nn.Module, Mapping[str, torch.Tensor], Sequence[torch.Tensor]]


@torch.no_grad()
def freeze_depthwise(model: nn.Module, include: Selector = None, exclude: Selector = None, bias: bool = False,
                     freeze: bool = True) -> List[str]:
    """Stop (``freeze=False``: restart) the gradient of every depthwise layer's filters: the
    ``weight`` of plain convs and ``DepthwiseConv2d``, ``params`` of ``DoGConv2d``, the
    coefficients / scale / offset (and trainable bank) of ``BankConv2d``; with ``bias=True`` the
    bias too. Returns the qualified names of the parameters changed."""
    check_model(model)
    include = normalize_selector(include, "include")
    exclude = normalize_selector(exclude, "exclude")
    holder = nn.ModuleDict({"layer": model}) if _is_depthwise_layer(model) else model
    sites = [s for s in find_depthwise(holder) if selected(s.name, s.module, include, exclude)]
    if not sites:
        raise no_depthwise_error(model, "freeze_depthwise")
    names = []
    for site in sites:
        params = dict(filter_parameters(site.module))
        if bias and getattr(site.module, "bias", None) is not None:
            params["bias"] = site.module.bias
        for pname, param in params.items():
            param.requires_grad_(not freeze)
            names.append(f"{site.name}.{pname}" if holder is model else pname)
    return names


def _is_depthwise_layer(module: nn.Module) -> bool:
    from ..modules.base import DepthwiseBase
    return isinstance(module, DepthwiseBase) or (isinstance(module, nn.Conv2d) and module.groups == module.in_channels > 1)


@dataclass
class TransplantRow:
    dst: str
    src: str
    dst_shape: Tuple[int, int, int]     # (channels, kh, kw)
    src_shape: Tuple[int, int, int]
    channels: str                       # "same", "cycle", "sample"
    kernel: str                         # "same", "crop", "pad", "crop+pad"
    fitted: Optional[str] = None        # family fitted to the filters, if any
    cos_median: Optional[float] = None
    cos_min: Optional[float] = None


@dataclass
class TransplantReport:
    """What ``transplant_depthwise`` copied: one row per destination layer, and the layers left alone."""

    rows: List[TransplantRow] = field(default_factory=list)
    skipped: List[SkippedRow] = field(default_factory=list)
    frozen: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {"layers": [asdict(r) for r in self.rows], "skipped": [s.to_dict() for s in self.skipped],
                "frozen": list(self.frozen)}

    def __str__(self) -> str:
        parts = [f"transplant: {len(self.rows)} layers copied, {len(self.skipped)} skipped"
                 + (f", {len(self.frozen)} parameters frozen" if self.frozen else "")]
        if self.rows:
            shape = lambda s: f"{s[0]}x{kernel_text(s[1:])}"
            parts.append(format_table(
                ("layer", "from", "shape", "source shape", "channels", "kernel", "fitted", "cos median", "cos min"),
                [(r.dst, r.src, shape(r.dst_shape), shape(r.src_shape), r.channels, r.kernel, r.fitted,
                  None if r.cos_median is None else f"{r.cos_median:.4f}",
                  None if r.cos_min is None else f"{r.cos_min:.4f}") for r in self.rows],
                "lllllllrr"))
        if self.skipped:
            parts.append("skipped:")
            parts.append(format_table(("layer", "kind", "kernel", "channels", "reason"),
                                      [(s.name, s.kind, kernel_text(s.kernel_size), s.channels, s.reason)
                                       for s in self.skipped], "lllrl"))
        return "\n".join(parts)


def _relative_depth(index: int, count: int, sources: int) -> int:
    """The source layer at the same relative depth: ``round(i * (n_src - 1) / (n_dst - 1))``
    (first to first, last to last; one-to-one when the counts agree)."""
    if count == 1:
        return 0
    return int(math.floor(index * (sources - 1) / (count - 1) + 0.5))


def _source_filters(src: Source) -> List[Tuple[str, torch.Tensor]]:
    """(name, filters [C, kh, kw]) of the source, in order."""
    if isinstance(src, nn.Module):
        sites = find_depthwise(src) if not _is_depthwise_layer(src) else find_depthwise(nn.ModuleDict({"layer": src}))
        out = [(s.name, s.module.weight.detach()[:, 0]) for s in sites
               if not s.unsupported or s.unsupported.startswith("channel multiplier")]
        if not out:
            raise no_depthwise_error(src, "transplant_depthwise (src)")
        return out
    items = list(src.items()) if isinstance(src, Mapping) else [(str(i), t) for i, t in enumerate(src)]
    out = []
    for name, tensor in items:
        if not isinstance(tensor, torch.Tensor) or tensor.dim() not in (3, 4) or (tensor.dim() == 4 and tensor.shape[1] != 1):
            raise ValueError(f"src: expected depthwise filters [C, 1, kh, kw] or [C, kh, kw], got "
                             f"{getattr(tensor, 'shape', type(tensor).__name__)} for {name!r}")
        out.append((name, tensor.detach()[:, 0] if tensor.dim() == 4 else tensor.detach()))
    if not out:
        raise ValueError("src: no filters given")
    return out


def _resize_kernel(filters: torch.Tensor, kernel_size: Tuple[int, int]) -> Tuple[torch.Tensor, str]:
    how = set()
    for axis, target in ((1, kernel_size[0]), (2, kernel_size[1])):
        size = filters.shape[axis]
        if size > target:
            start = (size - target) // 2
            filters = filters.narrow(axis, start, target)
            how.add("crop")
        elif size < target:
            before = (target - size) // 2
            pad = [0, 0, 0, 0]
            pad[(2 - axis) * 2] = before
            pad[(2 - axis) * 2 + 1] = target - size - before
            filters = torch.nn.functional.pad(filters, pad)
            how.add("pad")
    return filters, "+".join(sorted(how)) or "same"


def _resize_channels(filters: torch.Tensor, channels: int, mode: str, generator) -> Tuple[torch.Tensor, str]:
    have = filters.shape[0]
    if have == channels:
        return filters, "same"
    if mode == "cycle":
        index = torch.arange(channels) % have
    else:
        if channels <= have:
            index = torch.randperm(have, generator=generator)[:channels]
        else:
            index = torch.randint(have, (channels,), generator=generator)
    return filters[index.to(filters.device)], mode


def transplant_depthwise(
    src: Source,
    dst: nn.Module,
    match: Union[str, Mapping[str, str]] = "order",
    channels: str = "cycle",
    include: Selector = None,
    exclude: Selector = None,
    freeze: bool = False,
    generator: Optional[torch.Generator] = None,
    refine_steps: int = 0,
) -> TransplantReport:
    """Copy the depthwise filters of ``src`` (a model, a mapping name -> filters, or a list of
    ``[C, 1, kh, kw]`` / ``[C, kh, kw]`` tensors) into ``dst``'s depthwise layers, in place; with
    ``freeze=True`` the copied filters are then frozen (``freeze_depthwise``). See the module
    docstring for ``match`` and ``channels``. ``include`` / ``exclude`` select ``dst`` layers.
    ``refine_steps``: extra L-BFGS steps when fitting ``DoGConv2d`` destinations. Returns a
    ``TransplantReport``; on an error ``dst`` is unchanged."""
    check_model(dst, "dst")
    if channels not in ("cycle", "sample"):
        raise ValueError(f"channels: expected 'cycle' or 'sample', got {channels!r}")
    if not (isinstance(match, Mapping) or match in ("order", "name")):
        raise ValueError(f"match: expected 'order', 'name' or a mapping dst name -> src name, got {match!r}")
    include = normalize_selector(include, "include")
    exclude = normalize_selector(exclude, "exclude")
    sources = _source_filters(src)
    by_name = dict(sources)
    dst_sites: List[Site] = find_depthwise(nn.ModuleDict({"layer": dst}) if _is_depthwise_layer(dst) else dst)
    if not dst_sites:
        raise no_depthwise_error(dst, "transplant_depthwise (dst)")
    report = TransplantReport()
    chosen = []
    for site in dst_sites:
        reason = None
        if not selected(site.name, site.module, include, exclude):
            reason = "excluded by include/exclude"
        elif site.unsupported and not site.unsupported.startswith("channel multiplier"):
            reason = site.unsupported
        if reason:
            report.skipped.append(SkippedRow(site.name, site.label, site.kernel_size,
                                             site.channels * site.multiplier, reason))
        else:
            chosen.append(site)
    if not chosen:
        raise ValueError("transplant_depthwise: no destination layer left to copy into")

    # Pair every destination layer with a source.
    pairs = []
    for i, site in enumerate(chosen):
        if isinstance(match, Mapping) or match == "name":
            src_name = match.get(site.name) if isinstance(match, Mapping) else site.name
            if src_name is None or src_name not in by_name:
                report.skipped.append(SkippedRow(site.name, site.label, site.kernel_size,
                                                 site.channels * site.multiplier,
                                                 f"no source layer {src_name!r}" if src_name else "not in the mapping"))
                continue
        else:
            src_name = sources[_relative_depth(i, len(chosen), len(sources))][0]
        pairs.append((site, src_name))
    if not pairs:
        raise ValueError("transplant_depthwise: no destination layer matched a source layer")

    # Prepare every new filter set (and fit families) before writing anything.
    prepared = []
    for site, src_name in pairs:
        source = by_name[src_name]
        weight = site.module.weight.detach()
        filters, kernel_how = _resize_kernel(source.to(torch.float64), site.kernel_size)
        filters, channel_how = _resize_channels(filters, weight.shape[0], channels, generator)
        prepared.append((site, src_name, source, filters.to(weight.device), kernel_how, channel_how))
    writes = []
    for site, src_name, source, filters, kernel_how, channel_how in prepared:
        layer = site.module
        fitted = None
        if isinstance(layer, DoGConv2d):
            params = fit_dog_layers([filters], layer.profile, refine_steps=refine_steps)[0]
            value, fitted = ("params", params), "dog"
        elif isinstance(layer, BankConv2d):
            coeffs, offsets = fit_bank_layers([filters], layer.bank.detach(), select=layer.select,
                                              offset=layer.offset is not None)[0]
            value, fitted = ("bank", (coeffs, offsets)), "bank"
        else:
            value = ("weight", filters)
        writes.append((site, value))
        report.rows.append(TransplantRow(site.name, src_name, (filters.shape[0], *site.kernel_size),
                                         (source.shape[0], *source.shape[1:]), channel_how, kernel_how, fitted))
    with torch.no_grad():
        for (site, (kind, value)), row, prep in zip(writes, report.rows, prepared):
            layer = site.module
            if kind == "weight":
                layer.weight.copy_(value.to(layer.weight).unsqueeze(1))
            elif kind == "params":
                layer.params.copy_(value.to(layer.params))
            else:
                layer.load_fitted(*value)
            if kind != "weight":
                cos = cosine(layer.weight.detach().to(torch.float64)[:, 0], prep[3])
                row.cos_median, row.cos_min = float(cos.median()), float(cos.min())
    if freeze:
        names = {site.name for site, _ in pairs}
        report.frozen = freeze_depthwise(dst, include=lambda name, module: name in names)
    return report
