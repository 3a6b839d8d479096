"""Exact resume: a run halted (mid-epoch and at an epoch end) and resumed ends bitwise equal to an
uninterrupted one: model, optimizer, scheduler, history; and the checkpoint's guard rails."""

import pytest
import torch

from dsconv_ext.training import CheckpointError, TrainError, load_checkpoint, train

from training_common import read_metrics, tiny_config, without_times


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _assert_same_state(a, b, what=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), what
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for key in a:
            _assert_same_state(a[key], b[key], f"{what}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{what}[{i}]")
    else:
        assert a == b, f"{what}: {a!r} != {b!r}"


@pytest.mark.parametrize("mode", ["dog", "bank-master8"])
def test_halted_and_resumed_equals_uninterrupted(tmp_path, mode):
    # Dropout-free models would hide a lost RNG state: drop_rate is not exposed, so the
    # uninterrupted and resumed runs are also compared on the RNG state they end with.
    full = tmp_path / "full"
    train(tiny_config(full, mode=mode, epochs=3))
    parts = tmp_path / "parts"
    first = train(tiny_config(parts, mode=mode, epochs=3, halt_after_steps=3))          # mid epoch 1
    assert first["status"] == "halted"
    assert load_checkpoint(parts / "last.pt")["step_in_epoch"] == 3
    second = train(tiny_config(parts, mode=mode, epochs=3, halt_after_steps=7, resume=True))  # epoch end (10)
    assert second["status"] == "halted" and load_checkpoint(parts / "last.pt")["step_in_epoch"] == 0
    third = train(tiny_config(parts, mode=mode, epochs=3, resume=True))
    assert third["status"] == "complete"

    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(parts / "last.pt")
    for key in ("model", "optimizer", "scheduler", "epoch", "step", "step_in_epoch", "rng", "running"):
        _assert_same_state(a[key], b[key], key)
    _assert_same_state(without_times(a["history"]), without_times(b["history"]), "history")
    ma, mb = read_metrics(full), read_metrics(parts)
    assert without_times(ma["epochs"]) == without_times(mb["epochs"])
    assert ma["rank_checksums"] == mb["rank_checksums"]
    assert len(ma["epochs"]) == 3 and ma["steps_done"] == 15
    assert mb["wall_time_s"] >= mb["epochs"][-1]["wall_time_s"] - 1e-9


def test_a_different_seed_gives_a_different_run(tmp_path):
    """The equality above is not vacuous: a changed seed changes the weights and the metrics."""
    train(tiny_config(tmp_path / "a", max_steps=4))
    train(tiny_config(tmp_path / "b", max_steps=4, seed=1))
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert a["rank_checksums"] != b["rank_checksums"]
    assert without_times(a["epochs"]) != without_times(b["epochs"])


def test_resume_guard_rails(tmp_path):
    train(tiny_config(tmp_path, max_steps=2))
    with pytest.raises(TrainError, match="already holds a checkpoint"):
        train(tiny_config(tmp_path, max_steps=2))
    with pytest.raises(TrainError, match=r"different settings \(lr: 0.003 -> 0.001"):
        train(tiny_config(tmp_path, max_steps=2, lr=1e-3, resume=True))
    # --resume of a finished run changes nothing; --resume without a checkpoint starts fresh.
    done = train(tiny_config(tmp_path, max_steps=2, resume=True))
    assert done["status"] == "complete" and done["steps_done"] == 2
    fresh = train(tiny_config(tmp_path / "new", max_steps=2, resume=True))
    assert fresh["steps_done"] == 2


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    """A crash while writing leaves the previous checkpoint intact and no temporary file."""
    from dsconv_ext.training import checkpoint as ckpt

    path = tmp_path / "last.pt"
    ckpt.save_checkpoint(path, {"value": torch.arange(3)})

    def exploding_save(obj, stream):
        stream.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", exploding_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(path, {"value": torch.arange(5)})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["value"], torch.arange(3))


def test_corrupt_and_foreign_checkpoints(tmp_path):
    train(tiny_config(tmp_path, max_steps=2))
    path = tmp_path / "last.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])                         # truncated
    with pytest.raises(CheckpointError, match="corrupt or unreadable checkpoint"):
        train(tiny_config(tmp_path, max_steps=2, resume=True))
    torch.save({"model": {}}, path)                                  # readable but not ours
    with pytest.raises(CheckpointError, match="not a dsconv-ext train checkpoint"):
        load_checkpoint(path)
