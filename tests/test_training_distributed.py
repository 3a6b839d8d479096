"""Two processes under torchrun (gloo on CPU): the run completes, the ranks end with bitwise
equal weights, and every validation image is counted exactly once."""

import os
import subprocess
import sys


from training_common import read_metrics


def test_two_process_gloo_run(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("DSCONV_EXT_BACKEND", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "dsconv_ext.cli", "train", "--dataset", "digits", "--subset", "202", "--img-size", "12",
               "--batch-size", "32", "--epochs", "2", "--mode", "dog", "--threads", "1", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(out)
    assert metrics["environment"]["world_size"] == 2 and metrics["environment"]["dist_backend"] == "gloo"
    assert metrics["status"] == "complete" and metrics["ranks_agree"] is True
    assert len(metrics["rank_checksums"]) == 2
    # 162 train images: 81 per rank, 16 per rank per step -> 5 steps per epoch.
    assert metrics["steps_per_epoch"] == 5 and metrics["steps_done"] == 10
    # 40 validation images split 20/20 with no padding: each counted once.
    assert [e["val_images"] for e in metrics["epochs"]] == [metrics["data"]["n_val"]] * 2
    # Rank 0 alone logs: one header line, one line per epoch, one "done" line.
    log = (out / "log.txt").read_text().splitlines()
    assert len(log) == 4 and log[-1].startswith("done:")
