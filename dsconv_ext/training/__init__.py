"""Training compact DoG-parameterised and frozen-filter DS-CNNs (``dsconv-ext train``).

One job per file: ``data`` (datasets, seeded split, normalisation), ``models`` (timm model +
training mode via the surgery API), ``config`` (``TrainConfig``), ``checkpoint`` (atomic save,
validated load), ``rng`` (random states), ``distributed`` (torchrun, samplers, reductions),
``loop`` (``train``). See docs/training.md.
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig, TrainError
from .data import DatasetError, load_data
from .loop import train
from .models import DEFAULT_MODEL, MODES, ModelError, build_model

__all__ = ["train", "TrainConfig", "TrainError", "DatasetError", "ModelError", "CheckpointError", "load_data",
           "build_model", "load_checkpoint", "save_checkpoint", "MODES", "DEFAULT_MODEL"]
