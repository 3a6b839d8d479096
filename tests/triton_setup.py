"""Shared set-up of the Triton tests (imported by tests/test_triton_*.py).

On a machine with a GPU the tests run the compiled kernels on CUDA tensors. Without one they
run on CPU tensors in Triton's interpreter: ``TRITON_INTERPRET=1`` must be set when the kernels
are created, so ``load_kernels()`` sets it just around that import and restores the
environment; the ``interpret_env`` fixture sets it again for each test only (``backend="triton"``
on CPU tensors asks for it). Other test modules never see it.
"""

import os

import pytest
import torch

triton = pytest.importorskip("triton")

import dsconv_ext  # noqa: E402,F401  (registers the ops)
from dsconv_ext import triton as triton_backend  # noqa: E402

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1"
DEVICE = "cuda" if ON_GPU else "cpu"


def load_kernels() -> None:
    if ON_GPU:
        triton_backend.load()
        return
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        triton_backend.load()
    finally:
        if saved is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = saved
    if not triton_backend.kernels_interpreted():
        pytest.skip("dsconv_ext.triton kernels were loaded for a GPU earlier in this process", allow_module_level=True)


@pytest.fixture(autouse=True)
def interpret_env(monkeypatch):
    if not ON_GPU:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    yield
