"""The CUDA kernels (dsconv_ext._C_cuda) against the PyTorch oracle on a GPU: forward and
backward of the three ops over layouts (NCHW, channels_last, strided views), compile-time
(3, 5, 7) and runtime kernel sizes (kh != kw, 1x1, even, 31x31), stride, dilation, asymmetric
padding, bias on/off, fp32/fp16/bf16, atomic and deterministic filter gradients; deterministic
mode bitwise repeatable; opcheck and torch.compile(fullgraph=True). Skipped without CUDA.

The oracle runs in fp64 on the CPU on the same (already rounded) inputs; tolerances are
conftest.TOLERANCES. Shapes are chosen to reach every kernel path: NCHW planes >= 16 wide go
through the shared-memory tile kernel, narrower ones through the channels_last kernel on
copies; C % 8 != 0 exercises the channel tail of the vector loads, C > 32 several channel groups;
stride > 1 grad-input the transposed gather kernel.
"""

import pytest
import torch

import dsconv_ext
from dsconv_ext import cuda_kernels
from dsconv_ext.conv_args import ConvArgs
from dsconv_ext.families import dog
from dsconv_ext.families.bank import bank_filters, master8
from dsconv_ext.reference import depthwise_conv2d_reference

from conftest import assert_close_for, assert_memory_format

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and cuda_kernels.available()),
    reason="needs a CUDA device and the dsconv_ext._C_cuda extension",
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp16", "bf16"]


def cuda_input(shape, layout, dtype, seed=0):
    """``make_input``'s layouts, built on the GPU (a host view moved with .to() would lose its
    strides)."""
    n, c, h, w = shape
    g = torch.Generator(device="cuda").manual_seed(seed)
    opts = dict(dtype=dtype, device="cuda", generator=g)
    if layout == "nchw":
        x = torch.randn(n, c, h, w, **opts)
    elif layout == "channels_last":
        x = torch.randn(n, c, h, w, **opts).contiguous(memory_format=torch.channels_last)
    elif layout == "noncontiguous":
        x = torch.randn(n, c, 2 * h, 2 * w + 1, **opts)[:, :, ::2, 1::2]
    elif layout == "noncontiguous_cl":
        x = torch.randn(n, c + 2, h, 2 * w, **opts).contiguous(memory_format=torch.channels_last)[:, 1 : c + 1, :, ::2]
    elif layout == "permuted":
        x = torch.randn(n, h, c, w, **opts).permute(0, 2, 1, 3)
    else:
        raise ValueError(layout)
    assert tuple(x.shape) == (n, c, h, w)
    return x


def oracle_grads(x, weight, bias, geometry, grad_out):
    """fp64 CPU reference output and (grad_x, grad_weight [C, 1, kh, kw], grad_bias)."""
    stride, padding, dilation = geometry
    x64 = x.detach().cpu().double().requires_grad_(True)
    w64 = weight.detach().cpu().double().requires_grad_(True)
    b64 = bias.detach().cpu().double().requires_grad_(True) if bias is not None else None
    y64 = depthwise_conv2d_reference(x64, w64, b64, stride, padding, dilation)
    wanted = [t for t in (x64, w64, b64) if t is not None]
    grads = torch.autograd.grad(y64, wanted, grad_out.detach().cpu().double())
    return y64.detach(), grads[0], grads[1], (grads[2] if bias is not None else None)


def normalized(kernel_size, stride, padding, dilation):
    args = ConvArgs(kernel_size, stride, padding, dilation)
    return list(args.stride), args.padding, list(args.dilation)


def expect_layout(layout):
    return "channels_last" if layout in ("channels_last", "noncontiguous_cl") else "nchw"


def run_and_check_depthwise(shape, kernel_size, stride, padding, dilation, bias, layout, dtype, deterministic):
    geometry = normalized(kernel_size, stride, padding, dilation)
    c = shape[1]
    x = cuda_input(shape, layout, dtype)
    weight = torch.randn(c, 1, *kernel_size, dtype=dtype, device="cuda")
    b = torch.randn(c, dtype=dtype, device="cuda") if bias else None
    y = cuda_kernels.depthwise_forward(x, weight, b, *geometry)
    assert y.dtype == dtype and y.is_cuda
    assert_memory_format(y, expect_layout(layout), "y")
    grad_out = torch.randn_like(y)
    y64, gx64, gw64, gb64 = oracle_grads(x, weight, b, geometry, grad_out)
    assert_close_for(dtype, y.cpu(), y64, msg="y")
    gx, gw, gb = cuda_kernels.depthwise_backward(grad_out, x, weight, *geometry, True, True, bias, deterministic)
    assert gx.dtype == dtype and gw.dtype == torch.float32 and gw.shape == weight.shape
    assert_memory_format(gx, expect_layout(layout), "grad_x")
    assert_close_for(dtype, gx.cpu(), gx64, grad=True, msg="grad_x")
    assert_close_for(dtype, gw.cpu(), gw64, grad=True, msg="grad_weight")
    if bias:
        assert gb.dtype == torch.float32
        assert_close_for(dtype, gb.cpu(), gb64, grad=True, msg="grad_bias")
    else:
        assert gb.numel() == 0


# (shape, kernel_size, stride, padding, dilation): every layout x dtype x bias x mode.
CROSS = [
    ((2, 24, 20, 21), (3, 3), 1, 1, 1),         # NCHW tile, k3 fast path; C % 8 == 0: vector loads
    ((2, 13, 19, 18), (5, 5), 2, (0, 1, 2, 0), 1),  # stride 2, asymmetric: general + transposed paths
    ((3, 40, 9, 11), (7, 7), 1, 3, 1),           # narrow planes (via channels_last), 2 channel groups
    ((1, 5, 17, 23), (3, 5), 1, "same", (2, 1)),  # runtime K, kh != kw, dilation
    ((2, 9, 40, 37), (7, 7), (1, 2), (3, 3, 2, 4), 1),  # compile-time K with stride_w 2 (general column path)
]


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "noncontiguous", "noncontiguous_cl", "permuted"])
@pytest.mark.parametrize("geometry", CROSS, ids=lambda g: f"{g[0]}-k{g[1]}-s{g[2]}-p{g[3]}-d{g[4]}")
def test_depthwise_cross(geometry, layout, dtype, bias, deterministic):
    run_and_check_depthwise(*geometry, bias, layout, dtype, deterministic)


SWEEP_SHAPES = [(2, 8, 33, 35), (1, 3, 6, 7)]
SWEEP_KERNELS = [(1, 1), (3, 3), (5, 5), (7, 7), (4, 4), (2, 5), (9, 9)]
SWEEP_GEOMETRIES = [(1, 0, 1), (1, "same", 1), (2, 1, 1), ((2, 1), (1, 0, 2, 1), 1), (1, (0, 2, 1, 0), 2),
                    (3, 2, (1, 2))]


def _sweep():
    cases = []
    for shape in SWEEP_SHAPES:
        for kernel in SWEEP_KERNELS:
            for stride, padding, dilation in SWEEP_GEOMETRIES:
                args = ConvArgs(kernel, stride, padding, dilation)
                try:
                    args.check_input_size(shape[2], shape[3])
                except ValueError:
                    continue
                cases.append(pytest.param(shape, kernel, stride, padding, dilation,
                                          id=f"{'x'.join(map(str, shape))}-k{kernel}-s{stride}-p{padding}-d{dilation}"))
    return cases


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("shape,kernel_size,stride,padding,dilation", _sweep())
def test_depthwise_geometry_sweep(layout, shape, kernel_size, stride, padding, dilation):
    run_and_check_depthwise(shape, kernel_size, stride, padding, dilation, True, layout, torch.float32, False)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("kernel_size,padding", [((31, 31), 15), ((31, 31), (3, 20, 15, 15)), ((13, 31), 0)])
def test_depthwise_large_kernels(layout, dtype, kernel_size, padding):
    run_and_check_depthwise((2, 16, 40, 36), kernel_size, 1, padding, 1, True, layout, dtype, True)


def test_depthwise_large_dilated_kernel_falls_back_to_gather():
    # The staged input tile would exceed 48 KB: the gather kernel runs instead.
    run_and_check_depthwise((1, 4, 120, 100), (15, 15), 1, 42, 6, True, "nchw", torch.float32, True)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("grad_out_kind", ["nchw", "channels_last", "expanded"])
def test_grad_out_in_any_layout(layout, grad_out_kind):
    geometry = normalized((3, 3), 2, (1, 0, 0, 2), 1)
    x = cuda_input((2, 16, 21, 19), layout, torch.float32)
    w = torch.randn(16, 1, 3, 3, device="cuda")
    y = cuda_kernels.depthwise_forward(x, w, None, *geometry)
    if grad_out_kind == "expanded":
        grad_out = torch.ones((), device="cuda").expand(y.shape)
    else:
        grad_out = torch.randn(y.shape, device="cuda")
        if grad_out_kind == "channels_last":
            grad_out = grad_out.contiguous(memory_format=torch.channels_last)
    _, gx64, gw64, _ = oracle_grads(x, w, None, geometry, grad_out)
    gx, gw, _ = cuda_kernels.depthwise_backward(grad_out, x, w, *geometry, True, True, False, False)
    assert_close_for(torch.float32, gx.cpu(), gx64, grad=True, msg="grad_x")
    assert_close_for(torch.float32, gw.cpu(), gw64, grad=True, msg="grad_weight")


def test_large_batch_offsets_are_64_bit():
    # > 2^31 elements in x: batch offsets overflow int32.
    free = torch.cuda.mem_get_info()[0]
    if free < 12 * 2**30:
        pytest.skip("needs ~12 GB of free GPU memory")
    x = torch.zeros(2, 64, 4096, 4100, dtype=torch.float16, device="cuda")
    x[1, 63, -1, -1] = 1.0
    w = torch.ones(64, 1, 3, 3, dtype=torch.float16, device="cuda")
    for layout in ("nchw", "channels_last"):
        xl = x if layout == "nchw" else x.contiguous(memory_format=torch.channels_last)
        y = cuda_kernels.depthwise_forward(xl, w, None, [1, 1], [1, 1, 1, 1], [1, 1])
        assert float(y[1, 63, -1, -1]) == 1.0 and float(y[1, 63, -2, -2]) == 1.0
        assert float(y[0].abs().sum()) == 0.0
        del xl, y
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------
# Fused families
# --------------------------------------------------------------------------------------------


def random_dog_params(channels):
    coeffs = torch.randn(channels, dog.NUM_COEFFS, dtype=torch.float64)
    sigma = torch.empty(channels, dtype=torch.float64).uniform_(0.5, 2.0)
    gamma = torch.empty(channels, dtype=torch.float64).uniform_(0.3, 0.8)
    return dog.make_params(coeffs, sigma, gamma).float()


FAMILY_GEOMETRIES = [
    ((2, 24, 20, 21), (3, 3), 1, 1, 1),
    ((2, 13, 19, 18), (5, 5), 2, (0, 1, 2, 0), 1),
    ((3, 40, 9, 11), (7, 7), 1, 3, 1),
    ((1, 5, 17, 23), (3, 5), 1, "same", (2, 1)),
    ((1, 8, 36, 40), (31, 31), 1, 15, 1),
]


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "noncontiguous_cl"])
@pytest.mark.parametrize("profile", ["integrated", "sampled"])
@pytest.mark.parametrize("geometry", FAMILY_GEOMETRIES, ids=lambda g: f"{g[0]}-k{g[1]}-s{g[2]}")
def test_dog_fused(geometry, profile, layout, dtype, deterministic):
    shape, kernel_size, stride, padding, dilation = geometry
    stride, padding, dilation = normalized(kernel_size, stride, padding, dilation)
    c = shape[1]
    x = cuda_input(shape, layout, dtype)
    params = random_dog_params(c).cuda()
    bias = torch.randn(c, device="cuda")
    y = cuda_kernels.dog_forward(x, params, list(kernel_size), bias, stride, padding, dilation, profile)
    assert_memory_format(y, expect_layout(layout), "y")
    grad_out = torch.randn_like(y)

    x64 = x.detach().cpu().double().requires_grad_(True)
    p64 = params.cpu().double().requires_grad_(True)
    b64 = bias.cpu().to(dtype).double().requires_grad_(True)
    w64 = dog.dog_filters(p64, kernel_size, profile)
    # the kernels round the generated taps to x's dtype, like the weight tensor of the other backends
    w64 = w64 + (w64.detach().to(dtype).double() - w64.detach())
    y64 = depthwise_conv2d_reference(x64, w64.unsqueeze(1), b64, stride, padding, dilation)
    gx64, gp64, gb64 = torch.autograd.grad(y64, (x64, p64, b64), grad_out.cpu().double())
    assert_close_for(dtype, y.cpu(), y64, msg="y")
    gx, gp, gb = cuda_kernels.dog_backward(grad_out, x, params, list(kernel_size), stride, padding, dilation, profile,
                                           True, True, True, deterministic)
    assert gp.dtype == params.dtype and gp.shape == params.shape
    assert_close_for(dtype, gx.cpu(), gx64, grad=True, msg="grad_x")
    assert_close_for(dtype, gp.cpu(), gp64, grad=True, msg="grad_params")
    assert_close_for(dtype, gb.cpu(), gb64, grad=True, msg="grad_bias")


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "permuted"])
@pytest.mark.parametrize("offset", [True, False], ids=["offset", "nooffset"])
@pytest.mark.parametrize("geometry", FAMILY_GEOMETRIES, ids=lambda g: f"{g[0]}-k{g[1]}-s{g[2]}")
def test_bank_fused(geometry, offset, layout, dtype, deterministic):
    shape, kernel_size, stride, padding, dilation = geometry
    stride, padding, dilation = normalized(kernel_size, stride, padding, dilation)
    c = shape[1]
    x = cuda_input(shape, layout, dtype)
    bank = (master8(kernel_size) if min(kernel_size) >= 2 else torch.randn(8, *kernel_size)).cuda()
    coeffs = torch.randn(c, 8, device="cuda")
    off = torch.randn(c, device="cuda") if offset else None
    y = cuda_kernels.bank_forward(x, bank, coeffs, off, None, stride, padding, dilation)
    grad_out = torch.randn_like(y)

    x64 = x.detach().cpu().double().requires_grad_(True)
    bank64 = bank.cpu().double().requires_grad_(True)
    c64 = coeffs.cpu().double().requires_grad_(True)
    o64 = off.cpu().double().requires_grad_(True) if offset else None
    w64 = bank_filters(bank64, c64, o64)
    w64 = w64 + (w64.detach().to(dtype).double() - w64.detach())
    y64 = depthwise_conv2d_reference(x64, w64.unsqueeze(1), None, stride, padding, dilation)
    leaves = [x64, bank64, c64] + ([o64] if offset else [])
    expected = torch.autograd.grad(y64, leaves, grad_out.cpu().double())
    assert_close_for(dtype, y.cpu(), y64, msg="y")
    got = cuda_kernels.bank_backward(grad_out, x, bank, coeffs, off, stride, padding, dilation, True, True, True,
                                     offset, False, deterministic)
    names = ["grad_x", "grad_bank", "grad_coeffs", "grad_offset"]
    for name, g, e in zip(names, got, expected):
        assert_close_for(dtype, g.cpu(), e, grad=True, msg=name)


# --------------------------------------------------------------------------------------------
# Through the public API, determinism, opcheck, compile
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_public_api_backend_cuda(layout):
    x = cuda_input((2, 16, 20, 20), layout, torch.float32).requires_grad_(True)
    w = torch.randn(16, 1, 7, 7, device="cuda", requires_grad=True)
    b = torch.randn(16, device="cuda", requires_grad=True)
    y = dsconv_ext.depthwise_conv2d(x, w, b, padding=3, backend="cuda")
    g = torch.randn_like(y)
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), g)
    y64, gx64, gw64, gb64 = oracle_grads(x, w, b, normalized((7, 7), 1, 3, 1), g)
    assert_close_for(torch.float32, y.detach().cpu(), y64)
    assert_close_for(torch.float32, gx.cpu(), gx64, grad=True)
    assert_close_for(torch.float32, gw.cpu(), gw64, grad=True)
    assert_close_for(torch.float32, gb.cpu(), gb64, grad=True)
    assert dsconv_ext.backends.resolve_backend("auto", "cuda") == "cuda"


@pytest.mark.parametrize("op", ["depthwise", "dog", "bank"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_deterministic_bitwise_repeatable(op, layout, dtype):
    c = 72
    x = cuda_input((4, c, 29, 31), layout, dtype)
    grad_shape_y = None
    geo = normalized((5, 5), 1, 2, 1)

    def run():
        if op == "depthwise":
            w = torch.randn(c, 1, 5, 5, dtype=dtype, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
            y = cuda_kernels.depthwise_forward(x, w, None, *geo)
            g = torch.randn(y.shape, dtype=dtype, device="cuda", generator=torch.Generator("cuda").manual_seed(2))
            return (y,) + tuple(cuda_kernels.depthwise_backward(g, x, w, *geo, True, True, True, True))
        if op == "dog":
            p = random_dog_params(c).cuda()
            y = cuda_kernels.dog_forward(x, p, [5, 5], None, *geo, "integrated")
            g = torch.randn(y.shape, dtype=dtype, device="cuda", generator=torch.Generator("cuda").manual_seed(2))
            return (y,) + tuple(cuda_kernels.dog_backward(g, x, p, [5, 5], *geo, "integrated", True, True, True, True))
        bank, coeffs = master8(5).cuda(), torch.ones(c, 8, device="cuda")
        y = cuda_kernels.bank_forward(x, bank, coeffs, None, None, *geo)
        g = torch.randn(y.shape, dtype=dtype, device="cuda", generator=torch.Generator("cuda").manual_seed(2))
        return (y,) + tuple(cuda_kernels.bank_backward(g, x, bank, coeffs, None, *geo, True, True, True, False, True,
                                                       True))

    torch.manual_seed(0)
    first = run()
    torch.manual_seed(0)
    second = run()
    assert grad_shape_y is None
    for i, (a, b) in enumerate(zip(first, second)):
        assert torch.equal(a, b), f"output {i} differs between two deterministic runs"


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_opcheck_cuda_ops(layout):
    x = cuda_input((2, 8, 18, 17), layout, torch.float32)
    cl = layout == "channels_last"
    w = torch.randn(8, 1, 3, 3, device="cuda")
    b = torch.randn(8, device="cuda")
    geo = ([2, 1], [0, 1, 2, 0], [1, 2])
    y = torch.ops.dsconv_ext._cuda_depthwise_forward(x, w, b, *geo, cl)
    g = torch.randn_like(y)
    params = random_dog_params(8).cuda()
    bank, coeffs = master8(3).cuda(), torch.randn(8, 8, device="cuda")
    ops = torch.ops.dsconv_ext
    calls = [
        (ops._cuda_depthwise_forward, (x, w, b, *geo, cl)),
        (ops._cuda_depthwise_backward, (g, x, w, *geo, True, True, True, cl, True)),
        (ops._cuda_dog_forward, (x, params, [3, 3], b, *geo, "integrated", cl)),
        (ops._cuda_dog_backward, (g, x, params, [3, 3], *geo, "sampled", True, True, True, cl, True)),
        (ops._cuda_bank_forward, (x, bank, coeffs, b, b, *geo, cl)),
        (ops._cuda_bank_backward, (g, x, bank, coeffs, None, *geo, True, True, False, cl, True)),
    ]
    for op, args in calls:
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_opcheck_public_ops_on_cuda(layout):
    x = cuda_input((2, 8, 18, 17), layout, torch.float32).requires_grad_(True)
    w = torch.randn(8, 1, 3, 3, device="cuda", requires_grad=True)
    b = torch.randn(8, device="cuda", requires_grad=True)
    torch.library.opcheck(torch.ops.dsconv_ext.depthwise_conv2d, (x, w, b, [1, 1], [1, 1, 1, 1], [1, 1], "cuda"))


@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_compile_fullgraph_cuda(compiler, layout):
    torch._dynamo.reset()

    def fn(x, w, b):
        return dsconv_ext.depthwise_conv2d(x, w, b, padding="same", backend="cuda").relu()

    def fused(x, p):
        return torch.ops.dsconv_ext._cuda_dog_forward(x, p, [5, 5], None, [1, 1], [2, 2, 2, 2], [1, 1], "integrated",
                                                      layout == "channels_last") * 2

    x = cuda_input((2, 16, 24, 24), layout, torch.float32)
    w = torch.randn(16, 1, 7, 7, device="cuda")
    b = torch.randn(16, device="cuda")
    results = []
    for runner in (fn, torch.compile(fn, backend=compiler, fullgraph=True)):
        xs, ws, bs = (t.detach().clone().requires_grad_(True) for t in (x, w, b))
        y = runner(xs, ws, bs)
        results.append((y, torch.autograd.grad(y, (xs, ws, bs), torch.ones_like(y))))
    (y_e, g_e), (y_c, g_c) = results
    assert y_c.stride() == y_e.stride()
    assert_close_for(torch.float32, y_c, y_e)
    for a, e in zip(g_c, g_e):
        assert_close_for(torch.float32, a, e, grad=True)
    p = random_dog_params(16).cuda()
    assert_close_for(torch.float32, torch.compile(fused, backend=compiler, fullgraph=True)(x, p), fused(x, p))
    torch._dynamo.reset()
