"""Shared test helpers: per-dtype tolerances (written once), seeding, and inputs in a given
memory layout.

Comparisons against the oracle are done in float64: for low-precision dtypes the reference is
computed in float64 on the *same* (already rounded) inputs upcast, and the absolute tolerance is
scaled by the magnitude of the expected tensor, since the kernels accumulate in fp32 and round
once at the end (the error is relative to the result's scale, not to each element).
"""

import pytest
import torch

import dsconv_ext  # noqa: F401  (registers the ops)

# dtype -> (atol, rtol). atol is relative to max|expected| (see assert_close_for). Observed
# worst cases over the grids: fp64 ~5e-16, fp32 ~5e-7, fp16 ~7e-4, bf16 ~2.2e-3 (one rounding
# of the fp32 accumulator, 2^-9): the tolerances leave a few-fold margin, no more.
TOLERANCES = {
    torch.float64: (1e-12, 1e-10),
    torch.float32: (5e-6, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (8e-3, 8e-3),
}
# Gradients are sums of many rounded products (and, for the families, chain-ruled through
# rounded filters): they get this factor on top of TOLERANCES.
GRAD_TOLERANCE_FACTOR = {
    torch.float64: 10.0,
    torch.float32: 4.0,
    torch.float16: 2.0,
    torch.bfloat16: 2.0,
}

LAYOUTS = ("nchw", "channels_last", "noncontiguous", "noncontiguous_cl", "permuted")
CHANNELS_LAST_LAYOUTS = ("channels_last", "noncontiguous_cl")


def tolerance_for(dtype: torch.dtype, grad: bool = False):
    atol, rtol = TOLERANCES[dtype]
    factor = GRAD_TOLERANCE_FACTOR[dtype] if grad else 1.0
    return atol * factor, rtol * factor


def assert_close_for(dtype: torch.dtype, actual, expected, grad: bool = False, msg: str = "") -> None:
    """``actual`` (computed in ``dtype``) against ``expected`` (usually fp64 on the same,
    rounded inputs), with ``dtype``'s tolerance; atol scales with max|expected|."""
    assert actual is not None, f"{msg}: got None"
    assert tuple(actual.shape) == tuple(expected.shape), f"{msg}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    actual64 = actual.detach().to(torch.float64)
    expected64 = expected.detach().to(torch.float64)
    atol, rtol = tolerance_for(dtype, grad)
    scale = float(expected64.abs().max()) if expected64.numel() else 1.0
    atol = atol * max(scale, 1e-3)
    torch.testing.assert_close(actual64, expected64, atol=atol, rtol=rtol, msg=lambda m: f"{msg} [{dtype}]: {m}")


def upcast(t, dtype=torch.float64):
    """A detached, upcast, contiguous copy that requires grad when ``t`` does (the oracle's
    input; contiguous because PyTorch's own fp64 channels_last grouped conv is very slow)."""
    if t is None:
        return None
    out = t.detach().to(dtype).contiguous()
    return out.requires_grad_(t.requires_grad)


def make_input(shape, layout: str = "nchw", dtype: torch.dtype = torch.float32, requires_grad: bool = False,
               generator=None) -> torch.Tensor:
    """A random ``[N, C, H, W]`` leaf tensor in ``layout``:

    * ``nchw``: contiguous;
    * ``channels_last``: ``torch.channels_last``;
    * ``noncontiguous``: a strided view ``big[:, :, ::2, 1::2]`` of an NCHW tensor;
    * ``noncontiguous_cl``: a channel- and column-sliced view of a channels_last tensor;
    * ``permuted``: an ``[N, H, C, W]`` tensor permuted to ``[N, C, H, W]``.
    """
    n, c, h, w = shape
    opts = {"dtype": dtype, "generator": generator}
    if layout == "nchw":
        x = torch.randn(n, c, h, w, **opts)
    elif layout == "channels_last":
        x = torch.randn(n, c, h, w, **opts).contiguous(memory_format=torch.channels_last)
    elif layout == "noncontiguous":
        x = torch.randn(n, c, 2 * h, 2 * w + 1, **opts)[:, :, ::2, 1::2]
        assert not x.is_contiguous()
    elif layout == "noncontiguous_cl":
        big = torch.randn(n, c + 2, h, 2 * w, **opts).contiguous(memory_format=torch.channels_last)
        x = big[:, 1 : c + 1, :, ::2]
        assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    elif layout == "permuted":
        x = torch.randn(n, h, c, w, **opts).permute(0, 2, 1, 3)
    else:
        raise ValueError(layout)
    assert tuple(x.shape) == (n, c, h, w)
    return x.detach().requires_grad_(requires_grad)


def expects_channels_last(layout: str) -> bool:
    return layout in CHANNELS_LAST_LAYOUTS


def assert_memory_format(y: torch.Tensor, layout: str, what: str = "output") -> None:
    """The output (or grad) keeps x's layout: channels_last in -> channels_last out, else NCHW."""
    if expects_channels_last(layout):
        assert y.is_contiguous(memory_format=torch.channels_last), f"{what}: expected channels_last, strides {y.stride()}"
    else:
        assert y.is_contiguous(), f"{what}: expected contiguous NCHW, strides {y.stride()}"


def grads(out: torch.Tensor, inputs, grad_out: torch.Tensor):
    """``torch.autograd.grad`` for the inputs that require grad (None for the others)."""
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    got = iter(torch.autograd.grad(out, wanted, grad_out, allow_unused=False))
    return [next(got) if (t is not None and t.requires_grad) else None for t in inputs]


@pytest.fixture(autouse=True)
def _seed_and_restore_global_state():
    """Every test starts from seed 0, and global switches it flips are restored."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


@pytest.fixture
def seed():
    """Re-seed explicitly inside a test: ``seed(123)``."""

    def _seed(value: int = 0) -> torch.Generator:
        torch.manual_seed(value)
        return torch.Generator().manual_seed(value)

    return _seed


@pytest.fixture(autouse=True)
def _no_backend_override(monkeypatch):
    """Tests choose their backend explicitly; a DSCONV_EXT_BACKEND / DSCONV_EXT_DETERMINISTIC
    from the calling shell must not change what they test."""
    monkeypatch.delenv("DSCONV_EXT_BACKEND", raising=False)
    monkeypatch.delenv("DSCONV_EXT_DETERMINISTIC", raising=False)


BACKENDS = ("cpu", "reference")


def pytest_configure(config):
    # F.conv2d (used as the oracle) warns about 'same' padding with even kernels; expected here.
    config.addinivalue_line("filterwarnings", "ignore:Using padding='same' with even kernel:UserWarning")
