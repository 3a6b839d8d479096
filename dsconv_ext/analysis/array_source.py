"""Filters from ``.npy`` / ``.npz`` files: every array of shape ``[N, kh, kw]`` with
``kh, kw >= 2`` is a set of filters (named by its key in an ``.npz``, by the file name for an
``.npy``); other arrays are metadata and are ignored."""

import zipfile
from pathlib import Path
from typing import List

import numpy as np
import torch

from .errors import AnalysisInputError
from .filterset import FilterSet, LayerFilters


def is_filter_array(array: np.ndarray) -> bool:
    """``[N, kh, kw]``, kh and kw >= 2, N >= 1, real numbers."""
    return (
        array.ndim == 3
        and array.shape[0] >= 1
        and array.shape[1] >= 2
        and array.shape[2] >= 2
        and (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer))
    )


def _to_layer(name: str, array: np.ndarray) -> LayerFilters:
    return LayerFilters(name=name, weights=torch.from_numpy(np.array(array, dtype=np.float32)))  # a writable copy


def read_array_file(path: Path) -> FilterSet:
    """Read an ``.npy`` or ``.npz`` file (no pickled objects are loaded)."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise AnalysisInputError(f"{path}: cannot read as a NumPy file ({reason})") from None
    layers: List[LayerFilters] = []
    skipped: List[str] = []
    if isinstance(loaded, np.ndarray):
        if not is_filter_array(loaded):
            raise AnalysisInputError(
                f"{path}: no depthwise filters found (expected an array of shape [N, kh, kw] with kh, kw >= 2, "
                f"got {list(loaded.shape)} {loaded.dtype})"
            )
        layers.append(_to_layer(path.stem, loaded))
    else:
        with loaded:
            for key in loaded.files:
                try:
                    array = loaded[key]
                except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
                    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                    raise AnalysisInputError(f"{path}: cannot read array {key!r} ({reason})") from None
                if is_filter_array(array):
                    layers.append(_to_layer(key, array))
                else:
                    skipped.append(f"{key}: shape {list(array.shape)} {array.dtype} (metadata, not [N, kh, kw])")
    return FilterSet(source=str(path), layers=layers, skipped=skipped)
