"""Bad input raises ValueError / TypeError whose message names the offending argument; nothing
is broadcast or cast silently."""

import pytest
import torch

import dsconv_ext
from dsconv_ext.families import dog
from dsconv_ext.families.bank import master8

C = 3


def x_():
    return torch.randn(2, C, 8, 8)


def w_(k=3):
    return torch.randn(C, 1, k, k)


def params_():
    return torch.randn(C, dog.NUM_PARAMS)


def coeffs_():
    return torch.randn(C, 8)


def depthwise(**kw):
    args = {"x": x_(), "weight": w_()}
    args.update(kw)
    return dsconv_ext.depthwise_conv2d(**args)


def dog_conv(**kw):
    args = {"x": x_(), "params": params_(), "kernel_size": 3}
    args.update(kw)
    return dsconv_ext.dog_conv2d(**args)


def bank_conv(**kw):
    args = {"x": x_(), "bank": master8(3), "coeffs": coeffs_()}
    args.update(kw)
    return dsconv_ext.bank_conv2d(**args)


ALL_OPS = [depthwise, dog_conv, bank_conv]
OP_IDS = ["depthwise", "dog", "bank"]


# ------------------------------------------------------------------ x


@pytest.mark.parametrize("op", ALL_OPS, ids=OP_IDS)
@pytest.mark.parametrize("shape", [(C, 8, 8), (1, 2, C, 8, 8), (8,)])
def test_x_wrong_rank(op, shape):
    with pytest.raises(ValueError, match="x:"):
        op(x=torch.randn(*shape))


@pytest.mark.parametrize("op", ALL_OPS, ids=OP_IDS)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_x_integer_dtype(op, dtype):
    with pytest.raises(TypeError, match="x:"):
        op(x=torch.ones(2, C, 8, 8, dtype=dtype))


@pytest.mark.parametrize("op", ALL_OPS, ids=OP_IDS)
def test_x_not_a_tensor(op):
    with pytest.raises(TypeError, match="x:"):
        op(x=x_().numpy())


@pytest.mark.parametrize("op", ALL_OPS, ids=OP_IDS)
def test_kernel_larger_than_input(op):
    small = torch.randn(1, C, 2, 6)
    kwargs = {"x": small}
    with pytest.raises(ValueError, match="x:"):
        op(**kwargs)  # 3x3 kernel on a 2-row input without padding


def test_kernel_larger_than_input_with_dilation():
    with pytest.raises(ValueError, match="x:"):
        dsconv_ext.depthwise_conv2d(torch.randn(1, C, 5, 5), w_(), dilation=3)


# ------------------------------------------------------------------ weight


def test_weight_channel_mismatch():
    with pytest.raises(ValueError, match="weight:"):
        depthwise(weight=torch.randn(C + 1, 1, 3, 3))


def test_weight_not_depthwise():
    with pytest.raises(ValueError, match="weight:"):
        depthwise(weight=torch.randn(C, 2, 3, 3))


@pytest.mark.parametrize("shape", [(C, 3, 3), (C, 1, 3, 3, 1)])
def test_weight_wrong_rank(shape):
    with pytest.raises(ValueError, match="weight:"):
        depthwise(weight=torch.randn(*shape))


def test_weight_dtype_differs_from_x():
    with pytest.raises(TypeError, match="weight:"):
        depthwise(weight=w_().double())
    with pytest.raises(TypeError, match="weight:"):
        depthwise(x=x_().bfloat16(), weight=w_())


def test_weight_integer_dtype():
    with pytest.raises(TypeError, match="weight:"):
        depthwise(weight=torch.ones(C, 1, 3, 3, dtype=torch.int64))


def test_weight_not_a_tensor():
    with pytest.raises(TypeError, match="weight:"):
        depthwise(weight=[[1.0]])


def test_weight_on_another_device():
    with pytest.raises(ValueError, match=r"weight:.*meta"):
        depthwise(weight=torch.empty(C, 1, 3, 3, device="meta"))


# ------------------------------------------------------------------ bias


@pytest.mark.parametrize("op", ALL_OPS, ids=OP_IDS)
@pytest.mark.parametrize("shape", [(1,), (C + 1,), (C, 1), ()])
def test_bias_wrong_shape_is_not_broadcast(op, shape):
    with pytest.raises(ValueError, match="bias:"):
        op(bias=torch.randn(shape))


def test_bias_dtype_differs_from_x_for_explicit_filters():
    with pytest.raises(TypeError, match="bias:"):
        depthwise(bias=torch.randn(C, dtype=torch.float64))


@pytest.mark.parametrize("op", ALL_OPS, ids=OP_IDS)
def test_bias_on_another_device(op):
    with pytest.raises(ValueError, match=r"bias:.*meta"):
        op(bias=torch.empty(C, device="meta"))


# ------------------------------------------------------------------ dog


@pytest.mark.parametrize("shape", [(C, 9), (C + 1, 10), (C * 10,), (C, 10, 1)])
def test_params_wrong_shape(shape):
    with pytest.raises(ValueError, match="params:"):
        dog_conv(params=torch.randn(*shape))


# The cpu backend checks finiteness in C++ (in the synthesis' pass), the others in Python: both say
# the same thing.
FINITE_CHECK_BACKENDS = ["cpu", "reference"]


@pytest.mark.parametrize("backend", FINITE_CHECK_BACKENDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_params_not_finite(bad, backend):
    params = params_()
    params[1, 8] = bad
    with pytest.raises(ValueError, match="params: expected finite values"):
        dog_conv(params=params, backend=backend)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_params_not_finite_any_dtype(dtype):
    params = params_().to(dtype)
    params[2, 0] = float("inf")
    with pytest.raises(ValueError, match="params: expected finite values"):
        dog_conv(params=params, x=x_().to(dtype))


def test_params_not_finite_in_a_compiled_graph():
    """Python's check is skipped while tracing; the cpu backend's C++ one still runs in the graph."""
    compiled = torch.compile(lambda x, p: dsconv_ext.dog_conv2d(x, p, 3, padding=1), fullgraph=True)
    x, params = x_(), params_()
    compiled(x, params)
    params[0, 3] = float("nan")
    with pytest.raises(ValueError, match="params: expected finite values"):
        compiled(x, params)


def test_params_integer_dtype():
    with pytest.raises(TypeError, match="params:"):
        dog_conv(params=torch.ones(C, 10, dtype=torch.int64))


def test_params_on_another_device():
    with pytest.raises(ValueError, match=r"params:.*meta"):
        dog_conv(params=torch.empty(C, 10, device="meta"))


def test_unknown_profile():
    with pytest.raises(ValueError, match="profile:"):
        dog_conv(profile="gaussian")


@pytest.mark.parametrize("kernel_size", [0, (3, 0), (3, 3, 3), "3"])
def test_bad_kernel_size(kernel_size):
    with pytest.raises((ValueError, TypeError), match="kernel_size:"):
        dog_conv(kernel_size=kernel_size)


# ------------------------------------------------------------------ bank


@pytest.mark.parametrize("shape", [(8, 9), (8, 3, 3, 1), (9,)])
def test_bank_wrong_rank(shape):
    with pytest.raises(ValueError, match="bank:"):
        bank_conv(bank=torch.randn(*shape))


def test_bank_not_a_tensor():
    with pytest.raises(TypeError, match="bank:"):
        bank_conv(bank="master8")


@pytest.mark.parametrize("shape", [(C, 7), (C, 9), (C + 1, 8), (8,)])
def test_coeffs_shape_mismatch(shape):
    with pytest.raises(ValueError, match="coeffs:"):
        bank_conv(coeffs=torch.randn(*shape))


@pytest.mark.parametrize("backend", FINITE_CHECK_BACKENDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_coeffs_not_finite(bad, backend):
    coeffs = coeffs_()
    coeffs[2, 3] = bad
    with pytest.raises(ValueError, match="coeffs: expected finite values"):
        bank_conv(coeffs=coeffs, backend=backend)


@pytest.mark.parametrize("backend", FINITE_CHECK_BACKENDS)
def test_bank_not_finite(backend):
    bank = master8(3)
    bank[0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="bank: expected finite values"):
        bank_conv(bank=bank, backend=backend)


def test_bank_not_finite_in_a_compiled_graph():
    compiled = torch.compile(lambda x, k, c: dsconv_ext.bank_conv2d(x, k, c, padding=1), fullgraph=True)
    x, bank, coeffs = x_(), master8(3), coeffs_()
    compiled(x, bank, coeffs)
    coeffs[1, 1] = float("inf")
    with pytest.raises(ValueError, match="coeffs: expected finite values"):
        compiled(x, bank, coeffs)


@pytest.mark.parametrize("shape", [(1,), (C, 1), (C + 1,)])
def test_offset_wrong_shape(shape):
    with pytest.raises(ValueError, match="offset:"):
        bank_conv(offset=torch.randn(*shape))


@pytest.mark.parametrize("backend", FINITE_CHECK_BACKENDS)
def test_offset_not_finite(backend):
    with pytest.raises(ValueError, match="offset: expected finite values"):
        bank_conv(offset=torch.tensor([0.0, float("nan"), 0.0]), backend=backend)


def test_bank_on_another_device():
    with pytest.raises(ValueError, match=r"bank:.*meta"):
        bank_conv(bank=torch.empty(8, 3, 3, device="meta"))


# ------------------------------------------------------------------ geometry


@pytest.mark.parametrize("op", ALL_OPS, ids=OP_IDS)
@pytest.mark.parametrize("padding", [-1, (1, -1), (0, 0, -1, 0)])
def test_negative_padding(op, padding):
    with pytest.raises(ValueError, match="padding:"):
        op(padding=padding)


@pytest.mark.parametrize("op", ALL_OPS, ids=OP_IDS)
@pytest.mark.parametrize("stride", [0, (1, 0), -1])
def test_non_positive_stride(op, stride):
    with pytest.raises(ValueError, match="stride:"):
        op(stride=stride)


@pytest.mark.parametrize("op", ALL_OPS, ids=OP_IDS)
@pytest.mark.parametrize("dilation", [0, (0, 1)])
def test_non_positive_dilation(op, dilation):
    with pytest.raises(ValueError, match="dilation:"):
        op(dilation=dilation)


@pytest.mark.parametrize("value", [(1, 2, 3), 1.5, True, None])
def test_stride_wrong_type(value):
    with pytest.raises(TypeError, match="stride:"):
        depthwise(stride=value)


@pytest.mark.parametrize("op", ALL_OPS, ids=OP_IDS)
@pytest.mark.parametrize("stride", [2, (1, 2)])
def test_same_padding_with_stride(op, stride):
    with pytest.raises(ValueError, match="padding:"):
        op(padding="same", stride=stride)


@pytest.mark.parametrize("op", ALL_OPS, ids=OP_IDS)
@pytest.mark.parametrize("padding", ["full", "SAME", ""])
def test_unknown_padding_string(op, padding):
    with pytest.raises(ValueError, match="padding:"):
        op(padding=padding)


@pytest.mark.parametrize("padding", [(1, 1, 1), (1.0, 1.0)])
def test_padding_wrong_length_or_type(padding):
    with pytest.raises((ValueError, TypeError), match="padding:"):
        depthwise(padding=padding)


# ------------------------------------------------------------------ backend


@pytest.mark.parametrize("op", ALL_OPS, ids=OP_IDS)
@pytest.mark.parametrize("backend", ["gpu", "CPU_", "", "torch"])
def test_unknown_backend(op, backend):
    with pytest.raises(ValueError, match="backend:"):
        op(backend=backend)


# ------------------------------------------------------------------ modules


@pytest.mark.parametrize("cls", [dsconv_ext.DepthwiseConv2d, dsconv_ext.DoGConv2d, dsconv_ext.BankConv2d])
def test_module_bad_channels(cls):
    with pytest.raises(ValueError, match="channels:"):
        cls(0, 3)


@pytest.mark.parametrize("cls", [dsconv_ext.DepthwiseConv2d, dsconv_ext.DoGConv2d, dsconv_ext.BankConv2d])
def test_module_bad_geometry_fails_at_construction(cls):
    with pytest.raises(ValueError, match="padding:"):
        cls(4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="stride:"):
        cls(4, 3, stride=0)


def test_module_channel_mismatch_at_call():
    module = dsconv_ext.DepthwiseConv2d(4, 3)
    with pytest.raises(ValueError, match="weight:"):
        module(torch.randn(1, 3, 8, 8))


def test_module_unknown_bank_name_and_profile():
    with pytest.raises(ValueError, match="bank:"):
        dsconv_ext.BankConv2d(4, 3, bank="master9")
    with pytest.raises(ValueError, match="bank:"):
        dsconv_ext.BankConv2d(4, 3, bank=torch.randn(8, 5, 5))  # bank of the wrong kernel size
    with pytest.raises(ValueError, match="profile:"):
        dsconv_ext.DoGConv2d(4, 3, profile="bad")


def test_from_conv_rejects_non_depthwise():
    with pytest.raises(ValueError, match="conv:"):
        dsconv_ext.DepthwiseConv2d.from_conv(torch.nn.Conv2d(4, 8, 3, groups=4))
    with pytest.raises(TypeError, match="conv:"):
        dsconv_ext.DoGConv2d.from_conv(torch.nn.Linear(3, 3))
