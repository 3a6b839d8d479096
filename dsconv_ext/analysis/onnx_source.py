"""Filters from ONNX files: ``Conv`` nodes whose ``group`` equals their input channels
(weight ``[C, 1, kh, kw]`` with ``group > 1``). Weights may be graph initializers or the outputs
of ``Constant`` nodes; a depthwise ``Conv`` whose weight is computed at run time is listed as
skipped. Layers are named after the weight initializer (exporters keep the PyTorch parameter
name), else after the node."""

from pathlib import Path
from typing import Dict, Set, Tuple

import numpy as np
import torch

from .errors import AnalysisInputError
from .filterset import FilterSet, LayerFilters


def _constant_arrays(graph) -> Tuple[Dict[str, np.ndarray], Set[str]]:
    """Every constant tensor of the graph by name (initializers and ``Constant`` outputs), and
    the names that are initializers."""
    from onnx import numpy_helper

    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    initializer_names = set(arrays)
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attribute in node.attribute:
                if attribute.name == "value":
                    arrays[node.output[0]] = numpy_helper.to_array(attribute.t)
    return arrays, initializer_names


def _layer_name(node, position: int, weight_name: str, initializer_names: Set[str]) -> str:
    """Exporters name initializers after the PyTorch parameter (``blocks.0.conv_dw.weight``):
    that name, without ``.weight``, is the most useful provenance; else the node's name."""
    if weight_name in initializer_names and weight_name.endswith(".weight"):
        return weight_name[: -len(".weight")]
    return node.name or f"Conv_{position}"


def read_onnx_file(path: Path) -> FilterSet:
    try:
        import onnx
    except ImportError:
        raise AnalysisInputError(f"{path}: reading ONNX files needs the 'onnx' package (pip install onnx)") from None
    try:
        model = onnx.load(str(path))
        arrays, initializer_names = _constant_arrays(model.graph)
    except Exception as error:  # onnx raises DecodeError, ValueError, OSError ... for bad files
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise AnalysisInputError(f"{path}: cannot read as an ONNX model ({reason})") from None
    layers, skipped = [], []
    for position, node in enumerate(model.graph.node):
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        group = next((int(a.i) for a in node.attribute if a.name == "group"), 1)
        name = _layer_name(node, position, node.input[1], initializer_names)
        weight = arrays.get(node.input[1])
        if weight is None:
            if group > 1:
                skipped.append(f"{name}: grouped Conv whose weight {node.input[1]!r} is not a constant")
            continue
        if weight.ndim != 4 or group <= 1 or weight.shape[1] != 1:
            continue  # not a 2-D depthwise convolution
        if weight.shape[2] < 2 or weight.shape[3] < 2:
            skipped.append(f"{name}: {weight.shape[2]}x{weight.shape[3]} kernel (needs at least 2x2)")
            continue
        filters = torch.from_numpy(np.array(weight[:, 0], dtype=np.float32))  # a writable copy
        layers.append(LayerFilters(name=name, weights=filters))
    return FilterSet(source=str(path), layers=layers, skipped=skipped)
