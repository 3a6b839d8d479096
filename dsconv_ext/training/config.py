"""``TrainConfig``: every setting of a training run, with its default and the reason for it.

The defaults train the default model (timm ``mobilenetv2_050`` with 5x5 depthwise kernels and a
stride-1 stem, see ``models``) on ``mnist5k`` (4,000 train / 1,000 val images, 28x28) in a few
minutes on one CPU core.
"""

from dataclasses import asdict, dataclass, fields
from typing import Optional

from .models import DEFAULT_DW_KERNEL, DEFAULT_MODEL, MODES


class TrainError(ValueError):
    """A run that cannot start or resume as asked (bad option, mismatched checkpoint); one line."""


@dataclass
class TrainConfig:
    # What is trained on what.
    dataset: str = "mnist5k"            # mnist5k | digits | imagefolder:PATH
    model: str = DEFAULT_MODEL          # any timm name (built with pretrained=False)
    mode: str = "standard"              # see models.MODES
    source_weights: Optional[str] = None  # frozen-transplant source; None: ImageNet MobileNetV2
    dw_kernel: int = DEFAULT_DW_KERNEL  # depthwise kernel size (0: keep the model's)
    stem_stride: Optional[int] = None   # None: 1 for inputs <= 64 px (timm conv_stem models)
    bank_offset: bool = True            # bank-master8: per-channel offset (zero-mean bank)
    head_init: str = "zero"             # zero | timm: the classifier's init (see models.build_model)
    depthwise_backend: str = "dsconv"   # dsconv | torch: what runs the plain depthwise convs
    img_size: Optional[int] = None      # None: the dataset's native size (28 / 8 / 32 for folders)
    in_chans: Optional[int] = None      # None: 1 for the grayscale built-ins, 3 for folders
    subset: Optional[int] = None        # use a class-balanced subset of this many samples
    val_fraction: float = 0.2           # stratified validation share
    augment: str = "shift"              # shift: random translation by up to img_size // 14 px; none
    split_seed: int = 0                 # the split depends on this only (same for every run)
    # Optimisation: AdamW, linear warmup then cosine decay; a small CNN from scratch on digits
    # trains stably at 2e-3 with batch 64 (lr is not scaled with the world size: --batch-size is global).
    epochs: int = 10
    max_steps: int = 0                  # cap on optimiser steps (0: epochs decide); sets the schedule length
    batch_size: int = 64                # global batch, split evenly over the processes
    lr: float = 2e-3
    weight_decay: float = 0.05          # not applied to biases, norms, or other 1-D parameters
    warmup_fraction: float = 0.05       # of the total steps (at least 1 step)
    min_lr_ratio: float = 0.01          # the cosine ends at lr * min_lr_ratio
    label_smoothing: float = 0.0
    seed: int = 0
    # Where and how.
    out: str = "runs/train"
    resume: bool = False
    overwrite: bool = False
    amp: bool = False                   # autocast: bf16 on CPU; bf16 (or fp16 + GradScaler) on GPU
    amp_dtype: str = "auto"             # auto | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"                # auto | cpu | cuda
    threads: Optional[int] = None       # torch intra-op threads (None: leave torch's default)
    workers: int = 0                    # DataLoader workers (0: in-process; the built-ins are in memory)
    progress: bool = True               # a tqdm bar on rank 0 (only when stderr is a terminal)
    checkpoint_every: int = 0           # also checkpoint every N steps inside an epoch (0: epoch ends only)
    halt_after_steps: int = 0           # stop this invocation after N steps, checkpointed (then --resume)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        if self.mode not in MODES:
            raise TrainError(f"--mode: expected one of {', '.join(MODES)}, got {self.mode!r}")
        positive = {"epochs": self.epochs, "batch-size": self.batch_size}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise TrainError(f"--{name}: expected a positive int, got {value!r}")
        for name in ("max_steps", "workers", "checkpoint_every", "halt_after_steps", "dw_kernel"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise TrainError(f"--{name.replace('_', '-')}: expected an int >= 0, got {value!r}")
        if not self.lr > 0:
            raise TrainError(f"--lr: expected a positive number, got {self.lr}")
        if self.weight_decay < 0:
            raise TrainError(f"--weight-decay: expected >= 0, got {self.weight_decay}")
        if not 0 <= self.warmup_fraction < 1:
            raise TrainError(f"--warmup-fraction: expected a number in [0, 1), got {self.warmup_fraction}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise TrainError(f"--min-lr-ratio: expected a number in [0, 1], got {self.min_lr_ratio}")
        if not 0 <= self.label_smoothing < 1:
            raise TrainError(f"--label-smoothing: expected a number in [0, 1), got {self.label_smoothing}")
        if self.augment not in ("shift", "none"):
            raise TrainError(f"--augment: expected shift or none, got {self.augment!r}")
        if self.amp_dtype not in ("auto", "bf16", "fp16"):
            raise TrainError(f"--amp-dtype: expected auto, bf16 or fp16, got {self.amp_dtype!r}")
        if self.threads is not None and self.threads < 1:
            raise TrainError(f"--threads: expected a positive int, got {self.threads}")


# Settings that may differ between an interrupted run and its resumption: they change where or
# how fast it runs, not what it computes (channels_last / compile / device change rounding, so a
# resume with them changed continues correctly but not bitwise).
RUNTIME_ONLY = ("out", "resume", "overwrite", "progress", "workers", "threads", "checkpoint_every",
                "halt_after_steps", "compile", "channels_last", "device")


def resume_mismatches(saved: dict, config: TrainConfig) -> list:
    """``["key: saved -> now", ...]`` for settings that must not change on resume."""
    now = config.to_dict()
    names = [f.name for f in fields(TrainConfig) if f.name not in RUNTIME_ONLY]
    return [f"{name}: {saved.get(name)!r} -> {now[name]!r}" for name in names if saved.get(name) != now[name]]
