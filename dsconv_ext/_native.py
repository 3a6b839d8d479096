"""Loads the compiled extensions ``dsconv_ext._C`` and ``dsconv_ext._C_cuda`` if they were built.

Importing ``_C`` registers the CPU kernels as ``torch.ops.dsconv_ext._cpu_*``; importing
``_C_cuda`` (a separate module, built only where a CUDA toolkit was found) registers the CUDA
kernels as ``_cuda_*``. A missing or broken ``_C`` is not an error: the package warns once and
runs on the ``reference`` backend. ``_C_cuda`` never affects the CPU backend: when it is missing
or fails to load, the ``cuda`` backend is unavailable, with one warning where a GPU is visible.
"""

import warnings

import torch

NATIVE_IMPORT_ERROR = None
try:
    from . import _C  # noqa: F401  (registers the native ops)
except ImportError as error:  # built with DSCONV_EXT_SKIP_BUILD=1, or not built at all
    NATIVE_IMPORT_ERROR = error
    warnings.warn(
        "dsconv_ext: the compiled extension dsconv_ext._C is not available "
        f"({error}); using the pure-PyTorch 'reference' backend. Build it with "
        "`pip install --no-build-isolation -e .` (or `make install`).",
        RuntimeWarning,
        stacklevel=2,
    )

CUDA_IMPORT_ERROR = None
try:
    from . import _C_cuda  # noqa: F401  (registers the _cuda_* ops)
except Exception as error:  # noqa: BLE001  not built (no toolkit), or a library mismatch: never fatal
    CUDA_IMPORT_ERROR = error
    try:
        gpu_visible = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        gpu_visible = False
    if gpu_visible:
        warnings.warn(
            "dsconv_ext: the CUDA kernels (dsconv_ext._C_cuda) are not available "
            f"({type(error).__name__}: {error}); the 'cuda' backend is off and GPU tensors run on the "
            "next available backend. Build them with nvcc on PATH or CUDA_HOME set "
            "(DSCONV_EXT_FORCE_CUDA=1 makes a missing toolkit an error).",
            RuntimeWarning,
            stacklevel=2,
        )


def has_native_op(name: str) -> bool:
    """Whether the native op ``torch.ops.dsconv_ext.<name>`` is registered."""
    error = CUDA_IMPORT_ERROR if name.startswith("_cuda_") else NATIVE_IMPORT_ERROR
    if error is not None:
        return False
    return hasattr(torch.ops.dsconv_ext, name)
