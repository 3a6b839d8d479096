"""``backend="auto"`` for CUDA tensors: which built GPU backend runs a given shape.

The rule is data-driven. ``benchmarks/bench_gpu.py`` writes, for the GPU it ran on,
``benchmarks/results/auto-table-<gpu-slug>.json``: one entry per measured shape with the
forward+backward time of every backend. For a call, the entry of the same op, kernel size,
stride, dtype and layout whose ``C * H * W`` is nearest (in log scale) decides; the fastest
*available* backend of that entry wins. The table is looked up at ``$DSCONV_EXT_AUTO_TABLE``
(a file) if set, else next to the package in ``benchmarks/results/`` for the current GPU's name.

Without a table (nothing measured for this GPU, or no entry for the kind of shape) the rule is
the fixed preference: ``cuda`` if it is built, else ``triton``.

Shape keys come from ``dsconv_ext.functional._shape_key``:
``(op, C, H, W, kh, kw, stride_h, stride_w, dtype name, "channels_last" | "nchw")``.
"""

import json
import math
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ENV_TABLE = "DSCONV_EXT_AUTO_TABLE"
PREFERENCE = ("cuda", "triton")
_tables: Dict[str, Optional[list]] = {}


def gpu_slug(name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"`` (file-name safe)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def default_table_path(gpu_name: str) -> Path:
    return Path(__file__).resolve().parents[2] / "benchmarks" / "results" / f"auto-table-{gpu_slug(gpu_name)}.json"


def _current_gpu_name() -> Optional[str]:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name()


def load_table(path: Optional[os.PathLike] = None) -> Optional[list]:
    """The entries of a table file, or None if there is none (cached per path)."""
    if path is None:
        path = os.environ.get(ENV_TABLE) or None
        if path is None:
            name = _current_gpu_name()
            if name is None:
                return None
            path = default_table_path(name)
    key = str(path)
    if key not in _tables:
        try:
            with open(path) as f:
                entries = json.load(f)["entries"]
            _tables[key] = [e for e in entries if isinstance(e, dict) and e.get("times_ms")]
        except (OSError, ValueError, KeyError, TypeError):
            _tables[key] = None
    return _tables[key]


def _matches(entry: dict, key: Sequence) -> bool:
    op, _c, _h, _w, kh, kw, sh, sw, dtype, layout = key
    return (entry.get("op") == op and entry.get("kernel") == [kh, kw] and entry.get("stride") == [sh, sw]
            and entry.get("dtype") == dtype and entry.get("layout") == layout)


def choose_from_table(candidates: List[str], key: Optional[Sequence], entries: Optional[list]) -> Optional[str]:
    """The fastest of ``candidates`` in the nearest matching entry, or None if none matches."""
    if not entries or key is None:
        return None
    size = max(1, key[1] * key[2] * key[3])
    best, best_distance = None, math.inf
    for entry in entries:
        if not _matches(entry, key):
            continue
        timed = {b: t for b, t in entry["times_ms"].items() if b in candidates and t is not None and t > 0}
        if not timed:
            continue
        entry_size = max(1, entry["C"] * entry["H"] * entry["W"])
        distance = abs(math.log(entry_size / size))
        if distance < best_distance:
            best, best_distance = min(timed, key=timed.get), distance
    return best


def choose(candidates: List[str], key: Optional[Sequence] = None, entries: Optional[list] = None) -> str:
    """The backend ``auto`` runs for a CUDA tensor with shape key ``key`` among ``candidates``
    (the GPU backends that can run here, non-empty)."""
    picked = choose_from_table(candidates, key, entries if entries is not None else load_table())
    if picked is not None:
        return picked
    for backend in PREFERENCE:
        if backend in candidates:
            return backend
    return candidates[0]
