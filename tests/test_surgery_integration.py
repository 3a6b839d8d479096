"""Converted models in the rest of the ecosystem: timm features_only, gradient checkpointing,
torch.compile, DDP, state_dict save / load, ONNX export of reverted models, the CLI."""

import copy
import io
import json

import pytest
import torch
from torch import nn

from dsconv_ext import DoGConv2d
from dsconv_ext.surgery import convert, find_depthwise, revert

from test_surgery_common import assert_same_output, make_input, make_model, plant_dog_filters, relative_error, timm

from timm.layers import Conv2dSame, MixedConv2d  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("name", ["convnext_atto", "tf_efficientnet_b0"])
def test_features_only(name):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, features_only=True).eval()
    x = make_input()
    with torch.no_grad():
        expected = model(x)
    twin = copy.deepcopy(model)
    convert(model, to="depthwise")
    report = convert(twin, to="dog")
    assert report.layers
    with torch.no_grad():
        got, fitted = model(x), twin(x)
    assert len(got) == len(expected) == len(fitted)
    for g, e, f in zip(got, expected, fitted):
        assert_same_output(g, e)
        assert f.shape == e.shape
    assert model.feature_info.channels() == twin.feature_info.channels()


def test_gradient_checkpointing():
    model = make_model("convnext_atto")
    convert(model, to="dog")
    model.train()
    x = make_input()

    def grads():
        model.zero_grad()
        model(x).square().mean().backward()
        return [s.module.params.grad.clone() for s in find_depthwise(model)]

    plain = grads()
    model.set_grad_checkpointing(True)
    checkpointed = grads()
    assert any(getattr(stage, "grad_checkpointing", False) for stage in model.stages)
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def _mixed_family_model():
    torch.manual_seed(0)
    model = nn.Sequential(
        Conv2dSame(8, 8, 3, stride=2, groups=8),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        MixedConv2d(8, 8, [3, 5], padding="same", stride=2, depthwise=True),
        nn.Conv2d(8, 8, 7, padding=3, groups=8),
    ).eval()
    convert(model, to="dog", include="0")
    convert(model, to="bank", include="3.*", offset=True)
    convert(model, to="depthwise", include="4")
    assert [type(m).__name__ for m in (model[0], model[3]["0"], model[4])] == [
        "DoGConv2dSame", "BankConv2dSame", "DepthwiseConv2d"]
    return model


def test_torch_compile_fullgraph():
    model = _mixed_family_model()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    for size in [(17, 16), (20, 21)]:   # TF "SAME" padding follows the input size
        x = torch.randn(2, 8, *size, requires_grad=True)
        y = model(x)
        y_compiled = compiled(x)
        assert_same_output(y_compiled, y)
        g, = torch.autograd.grad(y.square().sum(), model[0].params)
        g_compiled, = torch.autograd.grad(compiled(x).square().sum(), model[0].params)
        torch.testing.assert_close(g_compiled, g, rtol=1e-4, atol=1e-6)


def test_torch_compile_timm_model():
    model = make_model("mobilenetv3_small_050")
    convert(model, to="dog")
    x = make_input()
    with torch.no_grad():
        assert_same_output(torch.compile(model, backend="aot_eager")(x), model(x))


def test_ddp_single_process(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if dist.is_initialized():
        pytest.skip("a process group is already initialised")
    model = make_model("convnext_atto")
    convert(model, to="bank", select=True, include="stages.0.*")      # buffers (bank, assignment)
    convert(model, to="dog")
    model.train()
    twin = copy.deepcopy(model)
    x = make_input()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(model)
        ddp(x).square().mean().backward()
        twin(x).square().mean().backward()
        for (name, a), (_, b) in zip(model.named_parameters(), twin.named_parameters()):
            if a.grad is not None or b.grad is not None:
                torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-7, msg=name)
        torch.optim.SGD(ddp.parameters(), lr=0.1).step()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("to,options", [("dog", {}), ("bank", {"select": True, "offset": True}), ("depthwise", {})])
def test_state_dict_save_and_load(tmp_path, to, options):
    model = make_model("tf_efficientnet_b0")        # Conv2dSame layers included
    plant_dog_filters(model)
    convert(model, to=to, **options)
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)

    torch.manual_seed(1)
    fresh = timm.create_model("tf_efficientnet_b0", pretrained=False).eval()
    convert(fresh, to=to, fit=False, **options)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    x = make_input()
    with torch.no_grad():
        assert_same_output(fresh(x), model(x))


def test_state_dict_safetensors(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.torch import load_file, save_file

    model = make_model("convnextv2_atto")
    convert(model, to="dog")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    fresh = make_model("convnextv2_atto")
    convert(fresh, to="dog", fit=False)
    fresh.load_state_dict(load_file(str(tmp_path / "m.safetensors")))
    x = make_input()
    with torch.no_grad():
        assert_same_output(fresh(x), model(x))


def _onnx_outputs(model_bytes: bytes, x: torch.Tensor):
    import onnx
    from onnx.reference import ReferenceEvaluator

    proto = onnx.load_from_string(model_bytes)
    onnx.checker.check_model(proto)
    assert not [n for n in proto.graph.node if n.domain not in ("", "ai.onnx")], "custom ops in the graph"
    evaluator = ReferenceEvaluator(proto)
    return torch.from_numpy(evaluator.run(None, {evaluator.input_names[0]: x.numpy()})[0])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("dynamo", [False, True])
def test_onnx_export_of_reverted_model(dynamo):
    pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    model = make_model("mobilenetv3_small_050")
    convert(model, to="dog")
    x = make_input(batch=1)
    with torch.no_grad():
        expected = model(x)
    revert(model)
    if dynamo:
        program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
        data = program.model_proto.SerializeToString()
    else:
        buffer = io.BytesIO()
        torch.onnx.export(model, (x,), buffer, dynamo=False)
        data = buffer.getvalue()
    assert relative_error(_onnx_outputs(data, x), expected) < 1e-4


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_export_of_reverted_same_padding():
    pytest.importorskip("onnx")
    model = _mixed_family_model()
    x = torch.randn(1, 8, 17, 16)
    with torch.no_grad():
        expected = model(x)
    revert(model)
    assert isinstance(model[0], Conv2dSame) and isinstance(model[3]["0"], Conv2dSame)
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, dynamo=False)
    assert relative_error(_onnx_outputs(buffer.getvalue(), x), expected) < 1e-5


# ---- the CLI --------------------------------------------------------------------------------

def test_cli_convert_writes_loadable_weights(tmp_path, capsys):
    pytest.importorskip("safetensors")
    from safetensors import safe_open
    from safetensors.torch import load_file

    from dsconv_ext.cli import main

    out, report_path = tmp_path / "atto_dog.safetensors", tmp_path / "report.json"
    assert main(["convert", "convnext_atto", "--to", "dog", "--out", str(out), "--json", str(report_path)]) == 0
    printed = capsys.readouterr().out
    assert "convert -> dog" in printed and "total" in printed and str(out) in printed
    report = json.loads(report_path.read_text())
    assert report["totals"]["layers"] == 12
    with safe_open(str(out), "pt") as handle:
        metadata = handle.metadata()
    assert metadata["model"] == "convnext_atto" and metadata["to"] == "dog"
    model = timm.create_model("convnext_atto", pretrained=False)
    convert(model, to="dog", fit=False)
    model.load_state_dict(load_file(str(out)))
    assert isinstance(model.stages[0].blocks[0].conv_dw, DoGConv2d)


def test_cli_checkpoint_torchvision(tmp_path, capsys):
    pytest.importorskip("safetensors")
    from safetensors.torch import load_file

    from dsconv_ext.cli import main

    source = make_model("torchvision:mobilenet_v2")
    plant_dog_filters(source)
    checkpoint = tmp_path / "mbv2.pth"
    torch.save({"state_dict": source.state_dict()}, checkpoint)
    out = tmp_path / "mbv2_bank.safetensors"
    code = main(["convert", "torchvision:mobilenet_v2", "--checkpoint", str(checkpoint), "--to", "bank",
                 "--offset", "--out", str(out), "--json", "-"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["options"]["offset"] is True and printed["totals"]["layers"] == 17
    expected = copy.deepcopy(source)
    convert(expected, to="bank", offset=True)
    state = load_file(str(out))
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(state[key], value, msg=key)


@pytest.mark.parametrize("argv,message", [
    (["convert", "no_such_model_xyz", "--to", "dog"], "MODEL"),
    (["convert", "convnext_atto", "--to", "bank", "--bank", "nope"], "bank"),
    (["convert", "convnext_atto", "--out", "weights.pth"], "--out"),
])
def test_cli_errors(argv, message, capsys):
    from dsconv_ext.cli import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err
