"""Triton kernels for the three ops (``backend="triton"``): dsconv_ext.triton.

Importing this package is cheap: it does not import Triton or compile anything. The kernels and
the registered ops load on first use (``load()``, called by ``dsconv_ext.backends`` when the
triton backend is chosen).

Backend interface (``dsconv_ext.triton.launch``; a CUDA backend can provide the same functions).
All geometry is normalised: ``stride`` and ``dilation`` are ``[h, w]``, ``padding`` is
``[top, bottom, left, right]``. Tensors may have any strides (NCHW, channels_last, views); the
outputs ``y`` / ``grad_x`` have x's memory format and dtype; reductions are fp32 (fp64 for fp64):

* ``depthwise_forward(x, weight, bias, stride, padding, dilation) -> y``
  x ``[N, C, H, W]``, weight ``[C, 1, kh, kw]`` (x's dtype), bias ``[C]`` or None -> ``[N, C, OH, OW]``.
* ``depthwise_backward(grad_out, x, weight, stride, padding, dilation, need_input, need_weight,
  need_bias, deterministic) -> (grad_x, grad_weight [C, 1, kh, kw] fp32, grad_bias [C] fp32)``;
  an output not asked for is an empty tensor. ``deterministic=False`` allows atomics.
* ``dog_forward(x, params, kernel_size, bias, stride, padding, dilation, profile) -> y`` with
  ``params [C, 10]`` (dsconv_ext.families.dog layout; profile "integrated" | "sampled"): the taps
  are computed inside the kernel, no filter tensor exists.
* ``dog_backward(grad_out, x, params, kernel_size, stride, padding, dilation, profile, need_input,
  need_filter, need_bias, deterministic) -> (grad_x, grad_filter [C, 1, kh, kw] fp32, grad_bias)``:
  the caller applies ``families.dog.dog_filters_vjp`` to ``grad_filter[:, 0]``.
* ``bank_forward(x, bank, coeffs, offset, bias, stride, padding, dilation) -> y`` with
  ``bank [M, kh, kw]``, ``coeffs [C, M]``, ``offset [C]`` or None:
  ``w_c = sum_m coeffs[c, m] bank[m] + offset[c]`` inside the kernel.
* ``bank_backward(grad_out, x, bank, coeffs, offset, stride, padding, dilation, need_input,
  need_filter, need_bias, deterministic) -> (grad_x, grad_filter, grad_bias)``; the caller applies
  ``families.bank.bank_filters_vjp``.

Kernels (one file each): ``forward.py`` (forward, and grad-input at stride 1 as the convolution
with the flipped filter), ``dgrad.py`` (grad-input at stride > 1, an output gather),
``wgrad.py`` (grad-filter and grad-bias: per-program fp32 partial sums over pixel chunks, then a
fixed-order reduction, or atomics when determinism is not asked for), ``taps.py`` (tap generation
for the explicit, DoG and bank families), ``configs.py`` (autotune configs and pruning).
``ops.py`` registers the ``torch.library.triton_op`` ops with autograd; ``selection.py`` is the
``auto`` rule for CUDA tensors.

Where it runs: CUDA tensors on a GPU; CPU tensors under Triton's interpreter, which needs
``TRITON_INTERPRET=1`` in the environment *before* the kernels are first loaded (``triton.jit``
decides at decoration time). ``auto`` never picks triton for CPU tensors. See docs/triton.md.
"""

import importlib.util
import sys

from ._mode import interpret_requested

__all__ = ["runs_on", "load", "kernels_loaded", "kernels_interpreted", "triton_importable"]

_KERNELS = __name__ + ".ops"


def triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def kernels_loaded() -> bool:
    return _KERNELS in sys.modules


def kernels_interpreted() -> bool:
    """Whether the loaded kernels run in the interpreter (fixed when they were loaded)."""
    from . import _mode

    return _mode.INTERPRETED


def runs_on(device_type: str) -> bool:
    """Whether backend "triton" can run tensors on ``device_type`` here. Does not load anything."""
    if not triton_importable():
        return False
    if device_type == "cuda":
        import torch

        if not torch.cuda.is_available():
            return False
        # Kernels loaded for the interpreter would run CUDA tensors through the host: not a GPU backend.
        return not (kernels_loaded() and kernels_interpreted())
    if device_type == "cpu":
        # Only in the interpreter, and only if the kernels were (or will be) created for it.
        if not interpret_requested():
            return False
        return not kernels_loaded() or kernels_interpreted()
    return False


def load() -> None:
    """Imports the kernels and registers ``torch.ops.dsconv_ext.triton_*`` (once)."""
    if not kernels_loaded():
        from . import _mode

        _mode.INTERPRETED = interpret_requested()
        from . import ops  # noqa: F401
