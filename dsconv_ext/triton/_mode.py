"""Whether the kernels run on a GPU or in Triton's CPU interpreter.

``triton.jit`` decides at decoration time: with ``TRITON_INTERPRET=1`` in the environment it
returns an interpreter function that runs on CPU tensors (numpy, slow, exact semantics). The
kernel modules record the mode they were created in here, so the rest of the package can tell.
"""

import os


def interpret_requested() -> bool:
    """``TRITON_INTERPRET=1`` in the environment now."""
    return os.environ.get("TRITON_INTERPRET", "0").strip() == "1"


# Fixed when the kernel modules are first imported (see kernels_interpreted()).
INTERPRETED = interpret_requested()
