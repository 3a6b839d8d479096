"""Shared helpers for the training tests: tiny, fast configurations."""

import json
from pathlib import Path

from dsconv_ext.training import TrainConfig

# Time-dependent fields of metrics.json: everything else must be reproducible.
TIME_KEYS = ("epoch_time_s", "wall_time_s")


def tiny_config(out, **overrides) -> TrainConfig:
    """scikit-learn digits, 200 images (160 train / 40 val), 12x12, batch 32: 5 steps per epoch."""
    options = dict(dataset="digits", subset=200, img_size=12, batch_size=32, epochs=2, out=str(out), threads=1,
                   progress=False, lr=3e-3)
    options.update(overrides)
    return TrainConfig(**options)


def read_metrics(out) -> dict:
    return json.loads((Path(out) / "metrics.json").read_text())


def without_times(epochs):
    return [{k: v for k, v in entry.items() if k not in TIME_KEYS} for entry in epochs]
