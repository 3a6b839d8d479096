"""``convert(model, to=...)``: replace, in place, every depthwise convolution of a model by a
dsconv_ext layer (explicit, DoG jet or filter bank), fitted to the old filters.

Which layers: see ``dsconv_ext.surgery.find``. What each family takes:

=====================  ===========  ============  =====================================
layer                  depthwise    dog           bank
=====================  ===========  ============  =====================================
k x k, kh != kw,       yes          yes           yes, where the bank exists at that
stride, dilation, bias                            size (``master8``: kh, kw >= 2)
timm Conv2dSame        ``*Same`` variant (TF "SAME" padding per call)
mixed-kernel members   yes (each member on its own)
1 x 1                  yes          skipped       where the bank exists (not ``master8``)
channel multiplier     skipped (the layers map C channels to C)
other Conv2d subclass  skipped when it overrides nn.Conv2d's forward (e.g. StdConv2d)
=====================  ===========  ============  =====================================

Everything is checked and fitted before the first module is swapped, so an error leaves the
model unchanged.
"""

import time
from collections import defaultdict
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from ..families import dog as dog_family
from ..families.bank import BANK_NAMES, get_bank
from ..families.fitting import cosine
from ..modules import BankConv2d, DepthwiseConv2d, DoGConv2d
from ..modules.base import DepthwiseBase, depthwise_conv_spec
from .find import (Selector, Site, check_model, count_parameters, find_depthwise, no_depthwise_error,
                   normalize_selector, replace, selected)
from .fit import DEFAULT_LEVELS, fit_bank_layers, fit_dog_layers, fitting_threads
from .report import ConversionReport, LayerRow, SkippedRow, kernel_text
from .same_padding import SAME_CLASSES

FAMILIES = {"depthwise": DepthwiseConv2d, "dog": DoGConv2d, "bank": BankConv2d}
BankSpec = Union[str, torch.Tensor, Mapping]


def filter_parameters(module: nn.Module) -> Dict[str, torch.Tensor]:
    """The parameters that make a depthwise layer's filters (not the bias)."""
    if isinstance(module, DoGConv2d):
        names = ("params",)
    elif isinstance(module, BankConv2d):
        names = ("scale", "coeffs", "offset", "bank")
    else:
        names = ("weight",)
    params = dict(module.named_parameters(recurse=False))
    return {n: params[n] for n in names if n in params}


def _filter_requires_grad(module: nn.Module) -> bool:
    params = filter_parameters(module)
    return any(p.requires_grad for p in params.values()) if params else True


def _skipped(site: Site, reason: str) -> SkippedRow:
    return SkippedRow(site.name, site.label, site.kernel_size, site.channels * site.multiplier, reason)


def _bank_for(bank: BankSpec, kernel_size: Tuple[int, int]):
    """The bank (name or tensor) to use at ``kernel_size``; None when a mapping has no entry."""
    if not isinstance(bank, Mapping):
        return bank
    if kernel_size in bank:
        return bank[kernel_size]
    if kernel_size[0] == kernel_size[1] and kernel_size[0] in bank:
        return bank[kernel_size[0]]
    return None


def _check_bank_argument(bank: BankSpec) -> None:
    values = list(bank.values()) if isinstance(bank, Mapping) else [bank]
    for value in values:
        if isinstance(value, str):
            if value not in BANK_NAMES:
                raise ValueError(f"bank: expected one of {BANK_NAMES}, a [M, kh, kw] tensor, or a mapping "
                                 f"kernel size -> bank, got {value!r}")
        elif isinstance(value, torch.Tensor):
            if value.dim() != 3 or not value.is_floating_point() or value.shape[0] < 1:
                raise ValueError(f"bank: expected a floating-point [M, kh, kw] tensor, got "
                                 f"{value.dtype} of shape {list(value.shape)}")
        else:
            raise TypeError(f"bank: expected a bank name, a [M, kh, kw] tensor or a mapping kernel size -> "
                            f"bank, got {type(value).__name__}")


def convert(
    model: nn.Module,
    to: str = "dog",
    fit: bool = True,
    bank: BankSpec = "master8",
    include: Selector = None,
    exclude: Selector = None,
    *,
    select: bool = False,
    offset: bool = False,
    trainable_bank: bool = False,
    profile: str = "integrated",
    levels: int = DEFAULT_LEVELS,
    refine_steps: int = 0,
    backend: str = "auto",
    chunk: Optional[int] = None,
    threads: Optional[int] = 1,
) -> ConversionReport:
    """Replace every depthwise convolution of ``model`` in place; return a ``ConversionReport``.

    Args:
        model: any ``nn.Module`` (timm, torchvision, your own).
        to: ``"depthwise"`` (``DepthwiseConv2d``: the same filters, exactly), ``"dog"``
            (``DoGConv2d``: the DoG jet, 10 numbers per channel) or ``"bank"`` (``BankConv2d``).
            Layers with TF "SAME" padding become the ``*Same`` variant of the class.
        fit: fit the new layers to the old filters (and copy the bias). ``False``: the new
            layers keep their own random initialisation (for training from scratch).
        bank: for ``to="bank"``: ``"master8"``, ``"dog_jet"``, a ``[M, kh, kw]`` tensor (every
            converted layer must have that kernel size), or a mapping from kernel size
            (``(kh, kw)`` or ``k``) to a name or tensor.
        include, exclude: which layers: glob patterns on the qualified name (``"stages.3.*"``),
            callables ``(name, module) -> bool``, or lists of those.
        select, offset, trainable_bank: ``BankConv2d`` options (``select=True``: one bank filter
            per channel times a scale, the "master key" setting).
        profile: the ``DoGConv2d`` profile (``"integrated"`` or ``"sampled"``).
        levels, refine_steps: the DoG fit: coarse-to-fine search levels after the grid search,
            then optional joint L-BFGS steps (see ``dsconv_ext.surgery.fit``).
        backend: the new layers' backend.
        chunk: channels per DoG fitting chunk (default: sized to bound memory).
        threads: torch threads while converting (restored afterwards; None: leave them). One
            by default: see ``dsconv_ext.surgery.fit.fitting_threads``.

    The report lists, per layer, kernel size, channels, parameters before and after, and the
    cosine between old and new filters (median and minimum over channels), plus the layers
    left alone and why. Raises (with the model unchanged) for an unknown ``to``, a model without
    depthwise convolutions, or a bank tensor of the wrong kernel size.
    """
    with fitting_threads(threads):
        return _convert(model, to, fit, bank, include, exclude, select, offset, trainable_bank, profile, levels,
                        refine_steps, backend, chunk)


def _convert(model, to, fit, bank, include, exclude, select, offset, trainable_bank, profile, levels, refine_steps,
             backend, chunk) -> ConversionReport:
    started = time.perf_counter()
    check_model(model)
    if to not in FAMILIES:
        raise ValueError(f"to: expected one of {tuple(FAMILIES)}, got {to!r}")
    if to == "dog":
        dog_family.check_profile(profile)
        for label, value in (("levels", levels), ("refine_steps", refine_steps)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{label}: expected an int >= 0, got {value!r}")
    if to == "bank":
        _check_bank_argument(bank)
    include = normalize_selector(include, "include")
    exclude = normalize_selector(exclude, "exclude")
    if isinstance(model, DepthwiseBase) or (isinstance(model, nn.Conv2d) and model.groups == model.in_channels > 1):
        raise ValueError("model: convert replaces the depthwise convs *inside* a module and cannot replace the "
                         "module itself; wrap it (nn.Sequential(conv)) or use DoGConv2d.from_conv / "
                         "BankConv2d.from_conv / DepthwiseConv2d.from_conv")
    target = FAMILIES[to]

    sites = find_depthwise(model)
    if not sites:
        raise no_depthwise_error(model, "convert")

    # 1. Decide, per layer, what happens (no module is touched yet).
    plan: List[Tuple[Site, object]] = []   # (site, (bank label, bank tensor) for that layer, or None)
    banks: Dict[Tuple[str, Tuple[int, int]], object] = {}  # named banks generated once per kernel size
    skipped: List[SkippedRow] = []
    bank_errors: List[str] = []
    chosen = 0
    for site in sites:
        if not selected(site.name, site.module, include, exclude):
            skipped.append(_skipped(site, "excluded by include/exclude"))
            continue
        chosen += 1
        if site.unsupported:
            skipped.append(_skipped(site, site.unsupported))
            continue
        if isinstance(site.module, target):
            skipped.append(_skipped(site, f"already a {type(site.module).__name__}"))
            continue
        layer_bank = None
        if to == "dog" and site.kernel_size == (1, 1):
            skipped.append(_skipped(site, "1x1 kernel: nothing spatial for the DoG jet "
                                          "(10 numbers per channel instead of 1)"))
            continue
        if to == "bank":
            layer_bank = _bank_for(bank, site.kernel_size)
            if layer_bank is None:
                bank_errors.append(f"{site.name} ({kernel_text(site.kernel_size)}): no bank given for this kernel size")
                continue
            if isinstance(layer_bank, torch.Tensor):
                if tuple(layer_bank.shape[1:]) != site.kernel_size:
                    bank_errors.append(f"{site.name} ({kernel_text(site.kernel_size)}): bank is "
                                       f"{kernel_text(layer_bank.shape[1:])}")
                    continue
                layer_bank = ("custom", layer_bank)
            else:
                key = (layer_bank, site.kernel_size)
                if key not in banks:
                    try:
                        banks[key] = (layer_bank, get_bank(layer_bank, site.kernel_size))
                    except ValueError as error:
                        banks[key] = error
                if isinstance(banks[key], ValueError):
                    skipped.append(_skipped(site, f"bank {layer_bank!r} does not exist at this size ({banks[key]})"))
                    continue
                layer_bank = banks[key]
        plan.append((site, layer_bank))
    if chosen == 0:
        raise ValueError(f"convert: include/exclude left none of the {len(sites)} depthwise convs of "
                         f"{type(model).__name__} (names look like {sites[0].name!r})")
    if bank_errors:
        shown = "; ".join(bank_errors[:5]) + (f"; ... ({len(bank_errors)} layers)" if len(bank_errors) > 5 else "")
        raise ValueError(f"bank: its kernel size does not match these layers: {shown}. Pass a mapping kernel size -> "
                         "bank, a named bank, or restrict the layers with include/exclude. The model is unchanged.")

    # 2. Fit, batched over channels and layers: one call per kernel size (and bank).
    fit_started = time.perf_counter()
    fitted: Dict[int, object] = {}
    if fit and to != "depthwise":
        _fit_all(plan, fitted, to, profile, levels, refine_steps, chunk, select, offset)
    fit_seconds = time.perf_counter() - fit_started

    # 3. Build the new layers.
    rows: List[LayerRow] = []
    new_modules: List[nn.Module] = []
    for index, (site, layer_bank) in enumerate(plan):
        new = _build(site, target, layer_bank, fitted.get(index), fit, select=select, offset=offset,
                     trainable_bank=trainable_bank, profile=profile, backend=backend)
        new_modules.append(new)
        cos_median = cos_min = None
        if fit:
            with torch.no_grad():
                cos = cosine(new.weight.detach().to(torch.float64)[:, 0],
                             site.module.weight.detach().to(torch.float64)[:, 0])
            new.fit_cosine = cos.to(torch.float32).cpu()
            cos_median, cos_min = float(cos.median()), float(cos.min())
        rows.append(LayerRow(site.name, site.label, type(new).__name__, site.kernel_size, site.stride, site.channels,
                             count_parameters(site.module), count_parameters(new), cos_median, cos_min))

    # 4. Swap (nothing above changed the model).
    before = count_parameters(model)
    for (site, _), new in zip(plan, new_modules):
        replace(site, new)
    options = {"fit": fit}
    if to == "dog":
        options.update(profile=profile, levels=levels, refine_steps=refine_steps)
    if to == "bank":
        options.update(bank=bank if isinstance(bank, str) else "custom", select=select, offset=offset,
                       trainable_bank=trainable_bank)
    report = ConversionReport(to, rows, skipped, options, before, count_parameters(model), fit_seconds,
                              time.perf_counter() - started)
    return report


def _fit_all(plan, fitted: Dict[int, object], to: str, profile, levels, refine_steps, chunk, select,
             offset) -> None:
    """Fit every planned layer into ``fitted`` (plan index -> result), batched over channels and
    layers: one fitting call per kernel size (and bank)."""
    groups = defaultdict(list)
    for index, (site, layer_bank) in enumerate(plan):
        groups[site.kernel_size if to == "dog" else (site.kernel_size, id(layer_bank[1]))].append(index)
    for indices in groups.values():
        filters = [plan[i][0].module.weight.detach()[:, 0] for i in indices]
        if to == "dog":
            results = fit_dog_layers(filters, profile, levels, refine_steps, chunk)
        else:
            results = fit_bank_layers(filters, plan[indices[0]][1][1], select=select, offset=offset)
        fitted.update(zip(indices, results))


def _build(site: Site, target, layer_bank, fitted, fit: bool, *, select, offset, trainable_bank, profile,
           backend) -> DepthwiseBase:
    old = site.module
    spec = depthwise_conv_spec(old)
    cls = SAME_CLASSES[target] if site.tf_same else target
    if site.tf_same:
        spec["padding"] = 0
    kwargs = {"backend": backend}
    if target is DoGConv2d:
        kwargs["profile"] = profile
    elif target is BankConv2d:
        kwargs.update(bank=layer_bank[1], select=select, offset=offset, trainable_bank=trainable_bank)
    if not fit:
        new = cls(**spec, **kwargs)
    else:
        with torch.random.fork_rng(devices=[]):  # the throw-away initialisation leaves the caller's RNG alone
            new = cls(**spec, **kwargs)
    if target is BankConv2d:
        new.bank_name = layer_bank[0]
    if not fit:
        new.train(old.training)
        return new
    with torch.no_grad():
        if target is DepthwiseConv2d:
            new.weight.copy_(old.weight.detach())
        elif target is DoGConv2d:
            new.params.copy_(fitted.to(new.params))
        else:
            new.load_fitted(*fitted)
        if new.bias is not None:
            new.bias.copy_(old.bias.detach())
    frozen = not _filter_requires_grad(old)
    for param in filter_parameters(new).values():
        param.requires_grad_(not frozen)
    if new.bias is not None:
        new.bias.requires_grad_(old.bias.requires_grad)
    new.train(old.training)
    return new
