"""Small ``@triton.jit`` building blocks used instead of triton.language's own jit-defined helpers.

``tl.zeros``, ``tl.sum``, ``tl.cdiv``, ``tl.zeros_like`` ... are ``@triton.jit`` functions inside
triton.language, created when Triton is first imported. If that import happened without
``TRITON_INTERPRET=1`` (pytest imports torch, which imports Triton, before any test can set it),
the interpreter cannot call them. Builtins (``tl.full``, ``tl.reduce``, ``tl.where`` ...) and our
own jit functions, created when the kernels load, work either way, and compile to the same code.
"""

import triton


@triton.jit
def add(a, b):
    """Combine function of a sum reduction: ``tl.reduce(x, axis, add)`` == ``tl.sum(x, axis)``."""
    return a + b
