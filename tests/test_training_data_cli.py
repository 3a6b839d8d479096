"""Datasets (split, normalisation, image folders, shifts) and the ``train`` command end to end,
including its one-line errors (exit code 2)."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from dsconv_ext.cli import main
from dsconv_ext.training import DatasetError, load_data, train
from dsconv_ext.training.data import random_shift, stratified_split

from training_common import read_metrics, tiny_config


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_split_is_stratified_fixed_and_disjoint():
    labels = torch.arange(10).repeat_interleave(50)
    train_a, val_a = stratified_split(labels, 0.2, seed=0)
    train_b, val_b = stratified_split(labels, 0.2, seed=0)
    assert torch.equal(val_a, val_b) and torch.equal(train_a, train_b)
    assert not set(train_a.tolist()) & set(val_a.tolist()) and len(train_a) + len(val_a) == 500
    assert torch.bincount(labels[val_a]).tolist() == [10] * 10
    _, val_c = stratified_split(labels, 0.2, seed=1)
    assert not torch.equal(val_a, val_c)


def test_builtin_datasets_shapes_and_normalisation():
    train, val, info = load_data("digits", img_size=16, in_chans=3, subset=300)
    assert (info.n_train, info.n_val, info.num_classes, info.in_chans) == (240, 60, 10, 3)
    image, label = train[0]
    assert image.shape == (3, 16, 16) and label.dtype == torch.long
    assert torch.equal(image[0], image[2])                                    # grayscale repeated
    # Normalised with the training split's statistics.
    assert abs(float(train.images.mean())) < 1e-4 and float(train.images.std()) == pytest.approx(1.0, abs=1e-3)
    mnist_train, mnist_val, mnist_info = load_data("mnist5k", subset=100)
    assert mnist_train[0][0].shape == (1, 28, 28) and mnist_info.n_val == 20


def test_random_shift_moves_images_within_range():
    x = torch.zeros(4, 1, 9, 9)
    x[:, :, 4, 4] = 1.0
    shifted = random_shift(x, 2, generator=torch.Generator().manual_seed(0))
    assert shifted.shape == x.shape
    for image in shifted:
        y, xx = (image[0] == 1).nonzero()[0].tolist()
        assert abs(y - 4) <= 2 and abs(xx - 4) <= 2
    assert not all(torch.equal(s, x[0]) for s in shifted)


def _png_folder(root, classes=("cat", "dog"), per_class=6, size=(10, 14)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 80, (*size, 3), dtype=np.uint8) + np.uint8(120 * index)  # classes differ in brightness
            Image.fromarray(pixels).save(folder / f"{i}.png")
    (root / "notes.txt").write_text("not an image")


def test_imagefolder_dataset_and_training(tmp_path):
    _png_folder(tmp_path / "images")
    spec = f"imagefolder:{tmp_path / 'images'}"
    train_set, val_set, info = load_data(spec, img_size=8)
    assert info.classes == ["cat", "dog"] and info.in_chans == 3 and (info.n_train, info.n_val) == (10, 2)
    image, label = train_set[0]
    assert image.shape == (3, 8, 8)
    gray, _, gray_info = load_data(spec, img_size=8, in_chans=1)
    assert gray[0][0].shape == (1, 8, 8)
    metrics = train(tiny_config(tmp_path / "run", dataset=spec, subset=None, img_size=8, batch_size=4, epochs=1))
    assert metrics["status"] == "complete" and metrics["data"]["classes"] == ["cat", "dog"]


def test_missing_and_bad_datasets(tmp_path):
    with pytest.raises(DatasetError, match="no such directory"):
        load_data(f"imagefolder:{tmp_path / 'nope'}")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        load_data(f"imagefolder:{tmp_path / 'empty'}")
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'"):
        load_data("cifar")


def _cli(args, capsys):
    code = main(["train", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_end_to_end_and_errors(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--dataset", "digits", "--subset", "200", "--img-size", "12", "--batch-size", "32", "--threads", "1",
              "--no-progress", "--out", str(out)]
    code, stdout, _ = _cli([*common, "--mode", "bank-master8", "--max-steps", "3"], capsys)
    assert code == 0 and "done: val acc" in stdout
    metrics = read_metrics(out)
    assert metrics["config"]["mode"] == "bank-master8" and metrics["steps_done"] == 3
    assert (out / "last.pt").is_file() and (out / "log.txt").is_file()

    # Corrupt checkpoint: exit 2, one line on stderr naming the file.
    (out / "last.pt").write_bytes(b"\x00garbage" * 10)
    code, _, err = _cli([*common, "--mode", "bank-master8", "--max-steps", "3", "--resume"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "last.pt: corrupt or unreadable checkpoint" in err and err.startswith("dsconv-ext train: error:")

    # Missing dataset folder and unknown dataset name: exit 2, one line.
    code, _, err = _cli(["--dataset", f"imagefolder:{tmp_path / 'missing'}", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "no such directory" in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli(["--dataset", "imagenet", "--out", str(tmp_path / "y")], capsys)
    assert code == 2 and "unknown dataset 'imagenet'" in err


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "dsconv_ext.cli", "train", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    for flag in ("--dataset", "--mode", "--source-weights", "--resume", "--amp", "--channels-last", "--compile",
                 "--max-steps", "frozen-random"):
        assert flag in result.stdout
