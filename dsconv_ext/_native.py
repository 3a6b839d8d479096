"""Loads the compiled extension ``dsconv_ext._C`` if it was built.

Importing it registers the native kernels as ``torch.ops.dsconv_ext._cpu_*`` (the CUDA
kernels, when they land, register as ``_cuda_*``). A missing or broken build is not an error: the package
warns once and runs on the ``reference`` backend.
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


def has_native_op(name: str) -> bool:
    """Whether the native op ``torch.ops.dsconv_ext.<name>`` is registered."""
    if NATIVE_IMPORT_ERROR is not None:
        return False
    return hasattr(torch.ops.dsconv_ext, name)
