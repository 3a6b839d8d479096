"""The native CPU kernels' vectorised code paths against the oracle, forward and backward.

The small shapes of test_backends_grid.py only reach the narrowest register tiles. Here:
* NCHW planes wide enough for every tile shape (1, 2 and 4 vectors of output columns, 8, 4 and
  2 rows), with output heights that are not multiples of the tile height;
* channels_last with channel counts below, at and around multiples of the vector width (the
  vector part plus the partial tail);
* strides 2 and 3 (phase-split planes, residue classes of grad-input), dilation, kernels wider
  than 8 taps (split filter-gradient blocks), padding wider than the kernel, 1xk and kx1 kernels;
* every dtype (fp64 has half as many lanes; bf16 / fp16 convert on load and store);
* the direct NCHW fp32 kernels (masked loads in place of padding) on row-sliced views, whose
  rows are further apart than their width, and on values that must not leak across row ends.
"""


import pytest
import torch

import dsconv_ext

from conftest import LAYOUTS, assert_close_for, grads
from test_backends_grid import check_depthwise, geometry_cases


def _cases(shapes, kernels, strides, dilations, paddings):
    return geometry_cases(shapes, kernels, strides, dilations, paddings)


WIDE_PLANES = _cases(
    shapes=[(2, 3, 11, 40), (1, 2, 9, 70), (1, 1, 19, 23)],
    kernels=[(3, 3), (7, 7), (5, 11), (1, 9), (9, 1)],
    strides=[1, 2, 3, (2, 1)],
    dilations=[1, 2],
    paddings=[0, "same", (3, 0, 1, 5), (6, 7, 9, 8)],
)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("shape,kernel_size,stride,padding,dilation", WIDE_PLANES)
def test_cpu_wide_planes(layout, shape, kernel_size, stride, padding, dilation):
    check_depthwise("cpu", shape, kernel_size, stride, padding, dilation, True, layout, torch.float32)


CHANNEL_COUNTS = [1, 7, 8, 15, 16, 17, 31, 32, 33, 48, 65]


@pytest.mark.parametrize("channels", CHANNEL_COUNTS)
@pytest.mark.parametrize("stride,padding", [(1, 1), (2, (0, 2, 1, 0)), (3, 4)])
def test_cpu_channels_last_channel_counts(channels, stride, padding):
    check_depthwise("cpu", (2, channels, 10, 13), (3, 5), stride, padding, 1, True, "channels_last", torch.float32)


# The partial channel vector (masked loads and stores) of the half-width storage types, which
# widen to fp32 on load: lanes past the channel count must neither be read nor written.
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64], ids=["bf16", "fp16", "fp64"])
@pytest.mark.parametrize("channels", [5, 21, 40])
def test_cpu_channels_last_partial_vectors_by_dtype(dtype, channels):
    check_depthwise("cpu", (2, channels, 9, 11), (3, 3), 1, 1, 1, True, "channels_last", dtype)


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "noncontiguous_cl"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16], ids=["fp64", "bf16", "fp16"])
@pytest.mark.parametrize(
    "shape,kernel_size,stride,padding,dilation",
    [
        ((2, 19, 12, 37), (5, 5), 1, "same", 1),
        ((1, 9, 10, 70), (3, 9), 2, (1, 2, 4, 3), 1),
        ((2, 33, 9, 21), (7, 3), (3, 2), 3, (1, 2)),
    ],
    ids=["wide-same", "wider-s2-asym", "s32-d12"],
)
def test_cpu_dtypes_on_vector_paths(layout, dtype, shape, kernel_size, stride, padding, dilation):
    check_depthwise("cpu", shape, kernel_size, stride, padding, dilation, True, layout, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_cpu_large_kernel(layout):
    # a 31x31 kernel (large-kernel CNNs) on a small plane: mostly padding
    check_depthwise("cpu", (1, 4, 20, 24), (31, 31), 1, 15, 1, True, layout, torch.float32)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("stride", [2, 3, (3, 2)])
def test_cpu_strided_1x1_leaves_skipped_pixels_with_zero_grad(layout, stride):
    # a 1x1 kernel at stride > 1 never reads most pixels: their grad must be exactly 0
    x = torch.randn(2, 5, 7, 8)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    w = torch.randn(5, 1, 1, 1)
    y = dsconv_ext.depthwise_conv2d(x, w, None, stride, 0, 1, backend="cpu")
    (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    read = torch.zeros(7, 8, dtype=torch.bool)
    read[::sh, ::sw] = True
    assert torch.equal(gx[:, :, ~read], torch.zeros_like(gx[:, :, ~read]))
    torch.testing.assert_close(gx[:, :, read], w.view(1, 5, 1).expand(2, 5, int(read.sum())))


# NCHW layers of 32 channels or more with planes narrower than 16 columns or strided columns
# run 16 planes at a time through the channels_last tiles: the blocks' transposes have full
# 16x16 tiles, partial tiles in both directions (channels and pixels not multiples of 16), and
# images a batch stride apart that is not N * C * H * W (a batch-sliced view, copied to
# contiguous planes first); strides, dilation and asymmetric padding exercise the residue-class
# grad-input gathers on a block. Fewer channels run on the width-vectorised kernels.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16],
                         ids=["fp32", "fp64", "bf16", "fp16"])
@pytest.mark.parametrize("channels,size", [(32, 4), (35, 7), (48, 13), (21, 5)])
def test_cpu_narrow_planes_in_plane_blocks(dtype, channels, size):
    check_depthwise("cpu", (3, channels, size + 2, size), (3, 3), 1, 1, 1, True, "nchw", dtype)


@pytest.mark.parametrize("kernel_size,stride,padding,dilation",
                         [((5, 5), 2, 2, 1), ((3, 3), (2, 1), (0, 2, 3, 0), 1), ((3, 3), 1, 2, 2), ((1, 4), 3, 1, 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_cpu_plane_blocks_strides_dilation_padding(kernel_size, stride, padding, dilation, bias):
    check_depthwise("cpu", (2, 37, 11, 13), kernel_size, stride, padding, dilation, bias, "nchw", torch.float32)


# Wide planes on the blocks: strided columns (3x3 and 5x5 at stride 2, stride (1, 2)), and
# filters of more than 12 taps in bf16 (no direct kernel): forward, grad-input and filter
# gradient all on the blocks.
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kernel_size,stride,padding",
                         [((3, 3), 2, 1), ((5, 5), 2, 2), ((3, 3), (1, 2), (1, 0, 2, 1)), ((7, 7), 1, 3)])
def test_cpu_wide_planes_in_plane_blocks(dtype, kernel_size, stride, padding):
    check_depthwise("cpu", (2, 40, 23, 37), kernel_size, stride, padding, 1, True, "nchw", dtype)


# fp32 NCHW with a filter of more than 12 taps on wide planes: grad-input runs on the direct
# kernels and the filter gradient on the blocks, in two passes; each asked for alone, and
# together with the bias gradient, must match the oracle.
@pytest.mark.parametrize("wanted", ["input", "weight", "bias", "weight+bias", "input+bias", "all"])
def test_cpu_backward_split_between_direct_kernels_and_blocks(wanted):
    x = torch.randn(2, 33, 20, 29)
    w = torch.randn(33, 1, 5, 5)
    b = torch.randn(33)
    x.requires_grad_("input" in wanted or wanted == "all")
    w.requires_grad_("weight" in wanted or wanted == "all")
    b.requires_grad_("bias" in wanted or wanted == "all")
    y = dsconv_ext.depthwise_conv2d(x, w, b, 1, 2, 1, backend="cpu")
    x64, w64, b64 = (t.detach().double().requires_grad_(t.requires_grad) for t in (x, w, b))
    y64 = torch.nn.functional.conv2d(x64, w64, b64, 1, 2, 1, 33)
    gy = torch.randn_like(y)
    inputs = [t for t in (x, w, b) if t.requires_grad]
    inputs64 = [t for t in (x64, w64, b64) if t.requires_grad]
    for got, want in zip(torch.autograd.grad(y, inputs, gy), torch.autograd.grad(y64, inputs64, gy.double())):
        assert_close_for(torch.float32, got, want, grad=True)


def test_cpu_narrow_planes_batch_sliced_view():
    base = torch.randn(6, 40, 9, 9)
    x = base[1::2].requires_grad_(True)  # dense planes, batch stride 2 * C * H * W
    w = torch.randn(40, 1, 3, 3, requires_grad=True)
    y = dsconv_ext.depthwise_conv2d(x, w, None, 1, 1, 1, backend="cpu")
    x64, w64 = x.detach().double().requires_grad_(True), w.detach().double().requires_grad_(True)
    y64 = torch.nn.functional.conv2d(x64, w64, None, 1, 1, 1, 40)
    torch.testing.assert_close(y.double(), y64, atol=1e-5, rtol=1e-5)
    gy = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, w), gy)
    gx64, gw64 = torch.autograd.grad(y64, (x64, w64), gy.double())
    torch.testing.assert_close(gx.double(), gx64, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gw.double(), gw64, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_cpu_kernel_wider_than_a_weight_grad_batch(layout):
    # 1 x 67 taps: the channels_last filter gradient flushes its 64-tap batches mid-row
    check_depthwise("cpu", (1, 3, 3, 40), (1, 67), 1, (0, 0, 33, 33), 1, True, layout, torch.float32)


# The direct NCHW kernels read each row in place with masked loads: a row-sliced view (unit
# column stride, rows wider apart than their width) for x and grad_out, every tile shape
# (widths of 1, 2 and 4+ vectors), heights that are not tile multiples, and asymmetric padding.
@pytest.mark.parametrize("width", [17, 33, 70])
@pytest.mark.parametrize("kernel_size,padding", [((3, 3), 1), ((5, 3), (2, 1, 0, 3)), ((1, 7), (0, 0, 6, 2))])
def test_cpu_direct_kernels_on_row_sliced_views(width, kernel_size, padding):
    base = torch.randn(2, 5, 13, width + 9)
    x = base[:, :, 2:, 4 : 4 + width].requires_grad_(True)
    w = torch.randn(5, 1, *kernel_size, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    y = dsconv_ext.depthwise_conv2d(x, w, b, 1, padding, 1, backend="cpu")
    x64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (x, w, b))
    y64 = dsconv_ext.depthwise_conv2d(x64, w64, b64, 1, padding, 1, backend="reference")
    assert_close_for(torch.float32, y, y64, msg="y")
    gy_base = torch.randn(*y.shape[:3], y.shape[3] + 5)
    gy = gy_base[..., 3 : 3 + y.shape[3]]
    for got, want, name in zip(grads(y, (x, w, b), gy), grads(y64, (x64, w64, b64), gy.double()), "xwb"):
        assert_close_for(torch.float32, got, want, grad=True, msg=f"grad_{name}")


def test_cpu_direct_kernels_keep_rows_apart():
    # Infinities just past each row's end (in the view's hidden columns) and in the next row's
    # first column: a load that ran across a row end unmasked would turn outputs into inf/nan.
    base = torch.randn(1, 2, 8, 24)
    base[..., 20:] = float("inf")
    x = base[..., :20].requires_grad_(True)
    w = torch.randn(2, 1, 3, 3, requires_grad=True)
    y = dsconv_ext.depthwise_conv2d(x, w, None, 1, 1, 1, backend="cpu")
    assert torch.isfinite(y).all()
    gx, gw = torch.autograd.grad(y, (x, w), torch.ones_like(y))
    assert torch.isfinite(gx).all() and torch.isfinite(gw).all()
    y64 = torch.nn.functional.conv2d(x.detach().double(), w.detach().double(), None, 1, 1, 1, 2)
    torch.testing.assert_close(y.double(), y64, atol=1e-5, rtol=1e-5)


# The channels_last filter gradient sums grad_out for the bias inside its tap loop; output rows
# whose kernel rows all fall in the padding have no taps and sum it alone, as does a call that
# asks for the bias gradient only.
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("need_weight", [True, False])
def test_cpu_bias_grad_on_rows_without_taps(layout, need_weight):
    x = torch.randn(2, 21, 2, 9, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(21, 1, 3, 3, dtype=torch.float64)
    b = torch.randn(21, dtype=torch.float64)
    padding = (4, 5, 1, 1)  # rows 0-1 and 5-7 of the 8 output rows see no input row
    x32, w32, b32 = (t.float().requires_grad_(True) for t in (x, w, b))
    w32.requires_grad_(need_weight)
    y = dsconv_ext.depthwise_conv2d(x32, w32, b32, 1, padding, 1, backend="cpu")
    x64, w64, b64 = (t.clone().requires_grad_(True) for t in (x, w, b))
    y64 = torch.nn.functional.conv2d(torch.nn.functional.pad(x64, (1, 1, 4, 5)), w64, b64, 1, 0, 1, 21)
    gy = torch.randn_like(y64)
    got = grads(y, (x32, w32, b32), gy.float())
    expected = torch.autograd.grad(y64, (x64, w64, b64), gy)
    for name, actual, reference in zip(("x", "weight", "bias"), got, expected):
        if actual is not None:
            assert_close_for(torch.float32, actual, reference, grad=True, msg=name)
    assert (got[1] is None) != need_weight


# fp32 channels_last outputs of 8 MiB and more are written with non-temporal stores (aligned
# full vectors only): 128 channels keep every pixel's vectors aligned, 136 leave some pixels
# unaligned and a partial channel block; stride 2 writes grad-input one residue class at a time.
@pytest.mark.parametrize("channels,stride", [(128, 1), (136, 1), (128, 2)])
def test_cpu_channels_last_outputs_written_around_the_cache(channels, stride):
    x = torch.randn(2, channels, 96, 96).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, 1, 3, 3)
    b = torch.randn(channels)
    x32 = x.clone().requires_grad_(True)
    y = dsconv_ext.depthwise_conv2d(x32, w, b, stride, 1, 1, backend="cpu")
    y64 = torch.nn.functional.conv2d(x.double(), w.double(), b.double(), stride, 1, 1, channels)
    assert_close_for(torch.float32, y, y64, msg="forward")
    gy = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, (x32,), gy)
    x64 = x.double().requires_grad_(True)
    (gx64,) = torch.autograd.grad(torch.nn.functional.conv2d(x64, w.double(), None, stride, 1, 1, channels), (x64,),
                                  gy.double())
    assert_close_for(torch.float32, gx, gx64, grad=True, msg="grad-input")
    assert gx.is_contiguous(memory_format=torch.channels_last)


# Row gathers run in tiles of 7 or 8 pixels, whichever leaves fewer idle pixels in the last tile
# (pixel_tile_for in channels_last_tiles.h): every row width from 1 to 30 ("same" padding, so the
# output rows are as wide; both tile widths, each with every partial last tile, interior and
# border tiles) in forward and grad-input, and at stride 2, where grad-input's residue classes
# have their own widths.
@pytest.mark.parametrize("width", list(range(1, 31)))
@pytest.mark.parametrize("layout,kernel_size,stride", [
    ("channels_last", (3, 3), 1), ("channels_last", (7, 7), 1), ("channels_last", (5, 5), 2),
    ("nchw", (7, 7), 1),  # narrow NCHW planes run on the same tiles (plane blocks)
])
def test_cpu_tile_widths(width, layout, kernel_size, stride):
    padding = kernel_size[0] // 2
    check_depthwise("cpu", (2, 35, 6, width), kernel_size, stride, padding, 1, True, layout, torch.float32)


# Window tiles (gather_tile_window in channels_last_tiles.h): stride-1 gathers of 5 or 7
# consecutive columns, or 3 in tiles of 8 pixels, load each source row's pixels once for all of
# a tile's taps; border tiles read the window's pixels outside the row as zero. Row widths give
# tiles of 7 (14, 21) and of 8 (16, 24, 40) and partial last tiles (19); odd heights give one-
# and two-row tiles; asymmetric padding moves the window; channel counts off the vector width
# take the masked tail. Forward and grad-input (flipped columns) both gather; NCHW planes
# narrower than 16 reach the tiles through the plane blocks.
WINDOW_CASES = [
    ((2, 21, 9, 14), (7, 7), 3),
    ((1, 40, 7, 24), (3, 3), (1, 1, 0, 2)),
    ((2, 35, 6, 19), (5, 5), 2),
    ((1, 17, 5, 16), (1, 7), (0, 0, 3, 3)),
    ((2, 33, 8, 40), (3, 3), 1),
    ((1, 48, 7, 7), (7, 7), (3, 3, 1, 5)),
    ((2, 32, 11, 13), (3, 5), (1, 1, 2, 2)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("shape,kernel_size,padding", WINDOW_CASES)
def test_cpu_window_tiles(shape, kernel_size, padding, layout, dtype):
    check_depthwise("cpu", shape, kernel_size, 1, padding, 1, True, layout, dtype)
