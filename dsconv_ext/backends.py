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
from typing import List

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
        # csrc/cuda has no kernels yet: this stays False until they register _cuda_* ops.
        return device_type == "cuda" and has_native_op("_cuda_depthwise_forward")
    # "triton" has no kernels in this version: asking for it falls back with a warning.
    return False


def available_backends() -> List[str]:
    """Backends usable in this install on some device present here, fastest first."""
    device_types = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [b for b in BACKENDS if any(_runs_on(b, d) for d in device_types)]


def _auto(device_type: str) -> str:
    for backend in BACKENDS:
        if backend != "triton" and _runs_on(backend, device_type):
            return backend
    return "reference"


@torch.compiler.assume_constant_result
def resolve_backend(requested: str, device_type: str) -> str:
    """The concrete backend for a call: ``requested`` (or the env override) if it can run on
    ``device_type``, else what ``auto`` picks there, with a one-time warning."""
    forced = os.environ.get(ENV_BACKEND, "").strip().lower()
    if forced:
        if forced != "auto" and forced not in BACKENDS:
            raise ValueError(f"{ENV_BACKEND}: expected one of {('auto',) + BACKENDS}, got {forced!r}")
        requested = forced
    if requested == "auto":
        return _auto(device_type)
    if requested not in BACKENDS:
        raise ValueError(f"backend: expected 'auto' or one of {BACKENDS}, got {requested!r}")
    if _runs_on(requested, device_type):
        return requested
    fallback = _auto(device_type)
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
