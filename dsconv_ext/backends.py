"""Which backend runs an op: ``cuda`` | ``triton`` | ``cpu`` | ``reference``.

``resolve_backend`` is called once per call site, outside any traced region's data flow: it
only looks at the requested name, the tensor's device type and the environment, and
``torch.compile`` treats its result as a constant. ``auto`` picks the fastest backend built
for the device. ``DSCONV_EXT_BACKEND`` overrides every request. A backend that is asked for
and cannot run on that device warns once and falls back to what ``auto`` would pick, so the
answer is always the same, only the speed differs.

Deterministic gradients: ``torch.use_deterministic_algorithms(True)`` or
``DSCONV_EXT_DETERMINISTIC=1``. The ``cpu`` and ``reference`` backends are always
deterministic; GPU backends use atomics only when neither is set.
"""

import os
import warnings
from typing import List, Optional

import torch

from ._native import has_native_op

BACKENDS = ("cuda", "triton", "cpu", "reference")
ENV_BACKEND = "DSCONV_EXT_BACKEND"
ENV_DETERMINISTIC = "DSCONV_EXT_DETERMINISTIC"

_warned = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _runs_on(backend: str, device_type: str) -> bool:
    """Whether ``backend`` is built in this install and can run tensors on ``device_type``."""
    if backend == "reference":
        return True
    if backend == "cpu":
        return device_type == "cpu" and has_native_op("_cpu_depthwise_forward")
    if backend == "cuda":
        # dsconv_ext._C_cuda (csrc/cuda) registers the _cuda_* ops where it was built.
        return device_type == "cuda" and has_native_op("_cuda_depthwise_forward")
    if backend == "triton":
        # CUDA tensors on a GPU; CPU tensors only under TRITON_INTERPRET=1 (tests, CI). Loading
        # registers torch.ops.dsconv_ext.triton_* (this runs eagerly even under torch.compile:
        # resolve_backend is a constant to dynamo), so callers can use the ops right after.
        from . import triton as triton_backend

        if not triton_backend.runs_on(device_type):
            return False
        triton_backend.load()
        return True
    return False


def available_backends() -> List[str]:
    """Backends usable in this install on some device present here, fastest first."""
    device_types = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [b for b in BACKENDS if any(_runs_on(b, d) for d in device_types)]


def _auto(device_type: str, shape: Optional[tuple] = None) -> str:
    if device_type == "cuda":
        # GPU backends are chosen per shape (dsconv_ext/triton/selection.py: a measured table
        # when the GPU benchmark wrote one for this GPU, else cuda if built, else triton).
        candidates = [b for b in ("cuda", "triton") if _runs_on(b, device_type)]
        if candidates:
            from .triton.selection import choose

            return choose(candidates, shape)
        return "reference"
    for backend in BACKENDS:
        # triton never for CPU tensors: there it only runs in the (slow) interpreter.
        if backend != "triton" and _runs_on(backend, device_type):
            return backend
    return "reference"


@torch.compiler.assume_constant_result
def resolve_backend(requested: str, device_type: str, shape: Optional[tuple] = None) -> str:
    """The concrete backend for a call: ``requested`` (or the env override) if it can run on
    ``device_type``, else what ``auto`` picks there, with a one-time warning. ``shape`` (plain
    ints and strings, see ``functional._shape_key``) lets ``auto`` choose per shape on CUDA."""
    forced = os.environ.get(ENV_BACKEND, "").strip().lower()
    if forced:
        if forced != "auto" and forced not in BACKENDS:
            raise ValueError(f"{ENV_BACKEND}: expected one of {('auto',) + BACKENDS}, got {forced!r}")
        requested = forced
    if requested == "auto":
        return _auto(device_type, shape)
    if requested not in BACKENDS:
        raise ValueError(f"backend: expected 'auto' or one of {BACKENDS}, got {requested!r}")
    if _runs_on(requested, device_type):
        return requested
    fallback = _auto(device_type, shape)
    _warn_once(
        f"dsconv_ext: backend {requested!r} is not available for {device_type} tensors in this "
        f"install; falling back to {fallback!r}"
    )
    return fallback


def deterministic_enabled() -> bool:
    """Whether gradients must be bitwise repeatable (no atomics in reductions)."""
    if os.environ.get(ENV_DETERMINISTIC, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    return torch.are_deterministic_algorithms_enabled()
