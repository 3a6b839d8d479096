"""The training loop: ``train(config)`` builds data and model, trains with AdamW and a warmup +
cosine schedule, evaluates every epoch, checkpoints atomically, writes ``DIR/metrics.json``, and
resumes exactly.

Exact resume. A checkpoint holds the model, optimizer, scheduler (and GradScaler), the epoch and
the step inside it, the running train-loss sums of the unfinished epoch, every rank's Python /
NumPy / torch RNG states, the metrics history and the elapsed wall time. The data order of epoch
``e`` is a permutation seeded by ``seed + e`` (``ShardSampler``), independent of the global RNG,
and the DataLoader gets its own generator, so resuming at step ``k`` of epoch ``e`` replays the
rest of that permutation. With the same thread count and settings, a run halted and resumed ends
bitwise equal to an uninterrupted one (tested).

Shapes: a batch is ``[B/world, in_chans, S, S]`` images and ``[B/world]`` labels per process; the
model maps it to logits ``[B/world, num_classes]``.
"""

import contextlib
import hashlib
import math
import platform
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_json_atomic
from .config import TrainConfig, TrainError, resume_mismatches
from .data import load_data, random_shift, shift_for
from .distributed import (DistInfo, EvalShard, ShardSampler, all_gather_object, all_reduce_sum, barrier,
                          broadcast_buffers, cleanup, setup)
from .models import build_model
from .rng import get_rng_state, seed_everything, set_rng_state

CHECKPOINT_NAME = "last.pt"
METRICS_NAME = "metrics.json"


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the base lr for optimiser step ``step`` (0-based): linear warmup over
    ``warmup`` steps, then a cosine from 1 down to ``min_ratio`` at step ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float):
    """Trainable parameters in two AdamW groups: decayed (``ndim >= 2``: conv, linear, DoG and
    bank coefficient matrices) and not decayed (biases, norm weights, per-channel scales and
    offsets), the usual convention (timm's ``param_groups_weight_decay``)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _amp_dtype(config: TrainConfig, device: torch.device) -> Optional[torch.dtype]:
    if not config.amp:
        return None
    if config.amp_dtype == "fp16":
        return torch.float16
    if config.amp_dtype == "bf16" or device.type == "cpu":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def state_checksum(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer (name, dtype, bytes): equal iff the states are
    bitwise equal."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(t.dtype).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _environment(info: DistInfo) -> Dict[str, object]:
    import timm

    from .. import __version__

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"dsconv_ext": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "python": platform.python_version(), "cpu": cpu, "threads": torch.get_num_threads(),
            "device": str(info.device), "world_size": info.world_size, "dist_backend": info.backend}


class _Logger:
    """Rank 0 prints and appends to ``DIR/log.txt``; other ranks stay silent."""

    def __init__(self, out: Path, enabled: bool):
        self.path = out / "log.txt"
        self.enabled = enabled

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        print(message, flush=True)
        with open(self.path, "a") as handle:
            handle.write(message + "\n")


def train(config: TrainConfig) -> Dict[str, object]:
    """Run (or resume) one training run; returns the metrics written to ``DIR/metrics.json``.

    Raises ``TrainError``, ``DatasetError``, ``ModelError`` or ``CheckpointError`` (one-line
    messages) for bad settings, data, models or checkpoints. Works under ``torchrun`` as is.
    """
    config.validate()
    info = setup(config.device)
    try:
        return _train(config, info)
    finally:
        cleanup(info)


def _train(config: TrainConfig, info: DistInfo) -> Dict[str, object]:
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.batch_size % info.world_size:
        raise TrainError(f"--batch-size {config.batch_size} is the global batch and must divide evenly over "
                         f"{info.world_size} processes")
    out = Path(config.out)
    ckpt_path = out / CHECKPOINT_NAME
    resume_state = None
    if config.resume and ckpt_path.exists():
        resume_state = load_checkpoint(ckpt_path)
        mismatches = resume_mismatches(resume_state["config"], config)
        if mismatches:
            raise TrainError(f"{ckpt_path}: --resume with different settings ({'; '.join(mismatches)}); "
                             "use the original settings or a new --out")
    elif ckpt_path.exists() and not config.overwrite:
        raise TrainError(f"{out}: already holds a checkpoint ({CHECKPOINT_NAME}); pass --resume to continue it, "
                         "--overwrite to start again, or another --out")
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    barrier(info)
    log = _Logger(out, info.is_main)

    # Data and model (identical on every rank: seeded, and DDP broadcasts rank 0's weights anyway).
    train_set, val_set, data_info = load_data(config.dataset, config.img_size, config.in_chans,
                                              config.val_fraction, config.split_seed, config.subset)
    model, model_info = build_model(config.model, config.mode, data_info.num_classes, data_info.in_chans,
                                    data_info.img_size, config.seed, config.dw_kernel, config.stem_stride,
                                    config.source_weights, config.bank_offset, config.depthwise_backend,
                                    config.head_init)
    device = info.device
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)

    per_rank_batch = config.batch_size // info.world_size
    sampler = ShardSampler(len(train_set), info, seed=config.seed)
    steps_per_epoch = sampler.shard_size // per_rank_batch
    if steps_per_epoch < 1:
        raise TrainError(f"--batch-size {config.batch_size} is larger than the training split "
                         f"({len(train_set)} images over {info.world_size} processes)")
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    epochs = math.ceil(total_steps / steps_per_epoch)
    warmup = max(1, int(round(config.warmup_fraction * total_steps))) if config.warmup_fraction > 0 else 0

    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, config.min_lr_ratio))
    amp_dtype = _amp_dtype(config, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext

    # The random state training starts from: seed + rank (each rank its own stream for anything
    # stochastic in the model), unless a checkpoint restores it.
    seed_everything(config.seed * 1000 + info.rank)
    epoch, step, step_in_epoch, wall_before = 0, 0, 0, 0.0
    history = []
    running = torch.zeros(3, dtype=torch.float64)    # loss sum, correct, count of the unfinished epoch
    if resume_state is not None:
        try:
            model.load_state_dict(resume_state["model"])
            optimizer.load_state_dict(resume_state["optimizer"])
            scheduler.load_state_dict(resume_state["scheduler"])
            if scaler is not None and resume_state.get("scaler"):
                scaler.load_state_dict(resume_state["scaler"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(f"{ckpt_path}: does not fit this model/optimizer "
                                  f"({str(error).splitlines()[0][:160]})") from None
        epoch, step, step_in_epoch = resume_state["epoch"], resume_state["step"], resume_state["step_in_epoch"]
        wall_before = float(resume_state["wall_time_s"])
        history = list(resume_state["history"])
        saved_world = len(resume_state["rng"])
        if saved_world == info.world_size:
            set_rng_state(resume_state["rng"][info.rank])
            running = resume_state["running"][info.rank].clone()
        elif step_in_epoch:
            raise TrainError(f"{ckpt_path}: saved mid-epoch by {saved_world} processes; resume it with the same "
                             f"number of processes (now {info.world_size})")
        else:
            log(f"note: checkpoint from {saved_world} processes, now {info.world_size}: random states reseeded")
        log(f"resumed from {ckpt_path} at epoch {epoch + 1}, step {step}/{total_steps}")

    train_model: nn.Module = model
    if info.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        train_model = torch.compile(train_model)

    environment = _environment(info)
    metrics = {"config": config.to_dict(), "data": vars(data_info), "model": model_info.to_dict(),
               "environment": environment, "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
               "warmup_steps": warmup, "epochs": history}
    log(f"{config.model} [{config.mode}] on {data_info.spec}: {data_info.n_train} train / {data_info.n_val} val, "
        f"{data_info.img_size}x{data_info.img_size}x{data_info.in_chans}; params {model_info.params:,} "
        f"(trainable {model_info.trainable_params:,}; depthwise {model_info.depthwise_params:,}, trainable "
        f"{model_info.depthwise_trainable_params:,}); {total_steps} steps, {info.world_size} process(es)")

    def checkpoint(status: str) -> None:
        # Every rank's RNG state and running sums (needed to resume mid-epoch), saved by rank 0.
        rngs = all_gather_object(get_rng_state(), info)
        runs = all_gather_object(running.clone(), info)
        if info.is_main:
            save_checkpoint(ckpt_path, {
                "config": config.to_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                "epoch": epoch, "step": step, "step_in_epoch": step_in_epoch, "rng": rngs, "running": runs,
                "history": history, "wall_time_s": wall_before + time.perf_counter() - started, "status": status})
        barrier(info)

    def write_metrics(status: str) -> None:
        if info.is_main:
            metrics["status"] = status
            metrics["steps_done"] = step
            metrics["wall_time_s"] = wall_before + time.perf_counter() - started
            if history:
                metrics["final"] = dict(history[-1])
            write_json_atomic(out / METRICS_NAME, metrics)

    loader_generator = torch.Generator()    # keeps the DataLoader off the global RNG
    invocation_steps = 0
    status = "complete"
    while step < total_steps:
        epoch_started = time.perf_counter()
        sampler.set_epoch(epoch, skip=step_in_epoch * per_rank_batch)
        loader = DataLoader(train_set, batch_size=per_rank_batch, sampler=sampler, num_workers=config.workers,
                            drop_last=True, generator=loader_generator)
        epoch_steps = min(steps_per_epoch, total_steps - (step - step_in_epoch))
        bar = _progress(epoch_steps, step_in_epoch, f"epoch {epoch + 1}/{epochs}", info.is_main and config.progress)
        train_model.train()
        halted = False
        for images, labels in loader:
            if step_in_epoch >= epoch_steps:
                break
            if config.augment == "shift":   # on the batch, with the (checkpointed) global RNG
                images = random_shift(images, shift_for(data_info.img_size))
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast():
                logits = train_model(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            scheduler.step()
            if not torch.isfinite(loss):
                raise TrainError(f"the loss became {float(loss)} at step {step + 1}; lower --lr (now {config.lr})")
            with torch.no_grad():
                running += torch.tensor([float(loss) * labels.numel(),
                                         float((logits.argmax(1) == labels).sum()), labels.numel()],
                                        dtype=torch.float64)
            step += 1
            step_in_epoch += 1
            invocation_steps += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.3f}", refresh=False)
            if config.halt_after_steps and invocation_steps >= config.halt_after_steps and step < total_steps \
                    and step_in_epoch < epoch_steps:
                halted = True
                break
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step_in_epoch < epoch_steps:
                checkpoint("running")
        if bar is not None:
            bar.close()
        broadcast_buffers(model, info)
        if halted:
            checkpoint("halted")
            write_metrics("halted")
            log(f"halted after {invocation_steps} steps at step {step}/{total_steps} (epoch {epoch + 1}); "
                f"--resume continues")
            status = "halted"
            break

        # End of an epoch (or of the step budget inside one): reduce, evaluate, record.
        sums = all_reduce_sum(running, info)
        # The unwrapped model: the ranks hold identical weights, and DDP's forward would issue
        # collectives that ranks with different numbers of validation batches cannot match.
        val_loss, val_acc, val_count = evaluate(model, val_set, info, per_rank_batch, autocast,
                                                config.channels_last)
        entry = {"epoch": epoch + 1, "steps": step, "train_loss": float(sums[0] / sums[2]),
                 "train_acc": float(sums[1] / sums[2]), "val_loss": val_loss, "val_acc": val_acc,
                 "val_images": val_count, "lr": optimizer.param_groups[0]["lr"],
                 "trainable_params": model_info.trainable_params, "depthwise_params": model_info.depthwise_params,
                 "depthwise_trainable_params": model_info.depthwise_trainable_params,
                 "epoch_time_s": time.perf_counter() - epoch_started,
                 "wall_time_s": wall_before + time.perf_counter() - started}
        history.append(entry)
        log(f"epoch {epoch + 1}/{epochs} step {step}: train loss {entry['train_loss']:.4f} acc {entry['train_acc']:.4f}"
            f" | val loss {val_loss:.4f} acc {val_acc:.4f} | {entry['epoch_time_s']:.1f} s")
        epoch += 1
        step_in_epoch = 0
        running.zero_()
        # Stop at the step budget or at --halt-after-steps when that lands on an epoch end.
        halting = bool(config.halt_after_steps and invocation_steps >= config.halt_after_steps and step < total_steps)
        status = "complete" if step >= total_steps else ("halted" if halting else "running")
        checkpoint(status)
        write_metrics(status)
        if halting:
            log(f"halted after {invocation_steps} steps at step {step}/{total_steps}; --resume continues")
            break

    if status == "complete":
        checksums = all_gather_object(state_checksum(model), info)
        metrics["rank_checksums"] = checksums
        metrics["ranks_agree"] = len(set(checksums)) == 1
        write_metrics("complete")
        log(f"done: val acc {history[-1]['val_acc']:.4f} after {step} steps; metrics in {out / METRICS_NAME}")
    metrics["status"] = status
    return metrics


@torch.no_grad()
def evaluate(model: nn.Module, dataset, info: DistInfo, batch_size: int, autocast, channels_last: bool = False):
    """``(mean loss, accuracy, images)`` over the whole ``dataset``, every image counted once
    across ranks. The model is left in eval mode."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, sampler=EvalShard(len(dataset), info), num_workers=0)
    sums = torch.zeros(3, dtype=torch.float64)
    for images, labels in loader:
        images = images.to(info.device)
        labels = labels.to(info.device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels, reduction="sum")
        sums += torch.tensor([float(loss), float((logits.argmax(1) == labels).sum()), labels.numel()],
                             dtype=torch.float64)
    total = all_reduce_sum(sums, info)
    return float(total[0] / total[2]), float(total[1] / total[2]), int(total[2])


def _progress(total: int, initial: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    # disable=None: tqdm shows the bar only when stderr is a terminal (clean logs otherwise).
    return tqdm(total=total, initial=initial, desc=desc, disable=None, leave=False, file=sys.stderr,
                dynamic_ncols=True)
