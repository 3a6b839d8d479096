"""The clustering autoencoder: a 1-D sigmoid latent and a cosine reconstruction loss.

As in the paper behind DESIGN.md section 1: an MLP encoder maps a normalised filter (zero mean,
unit L2, flattened to K = kh*kw taps) to one number z in (0, 1); an MLP decoder maps z back to a
filter; the loss is ``1 - cos(filter, reconstruction)``, so only the shape matters. With one
latent dimension the decoder is a curve through filter space; trained filters that lie close to
the curve are "classified", and stretches of the curve (intervals of z) are the clusters.

A 1-D autoencoder trained from random weights often settles in a poor curve: it visits one
kind of filter twice, or squeezes two kinds into one stretch. So training starts warm:
spherical k-means over-clusters the filters (``WARM_START_CLUSTERS`` centres), the centres are
ordered along a short path (nearest neighbour, then 2-opt, on the cosine distance), and each
centre gets a latent position spaced by the angle travelled along that path. A short phase
teaches the encoder those positions and the decoder the filters at them; then the whole
autoencoder trains on the cosine loss alone, as in the paper. Similar shapes thus start next to
each other on the curve, and the loss refines the curve instead of having to untangle it.

Training is seeded and bounded: a fixed number of Adam steps on mini-batches drawn from (a
seeded subsample of) the filters being analysed, so its cost does not grow with N; encoding
all N filters afterwards is one batched forward pass.
"""

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
from torch import nn

from .clustering import assign_to_centroids, spherical_kmeans

DEFAULT_STEPS = 6000
WARM_START_CLUSTERS = 32
WARM_START_FILTERS = 20_000
# Share of the training steps spent on the warm start (encoder and decoder taught the path).
WARM_START_FRACTION = 0.2
WARM_START_POSITION_WEIGHT = 100.0
# The path's latent positions span [LATENT_MARGIN, 1 - LATENT_MARGIN], off the sigmoid's flat ends.
LATENT_MARGIN = 0.05


class LatentAutoencoder(nn.Module):
    """``[n, K]`` filters -> latent ``[n]`` in (0, 1) -> reconstructions ``[n, K]``."""

    def __init__(self, num_taps: int, hidden: Tuple[int, int] = (128, 32)):
        super().__init__()
        wide, narrow = hidden
        self.num_taps = num_taps
        self.encoder = nn.Sequential(
            nn.Linear(num_taps, wide), nn.GELU(), nn.Linear(wide, narrow), nn.GELU(), nn.Linear(narrow, 1)
        )
        self.decoder = nn.Sequential(
            nn.Linear(1, narrow), nn.GELU(), nn.Linear(narrow, wide), nn.GELU(), nn.Linear(wide, num_taps)
        )

    def encode(self, filters: torch.Tensor) -> torch.Tensor:
        """``[n, K]`` -> latent ``[n]`` in (0, 1)."""
        return torch.sigmoid(self.encoder(filters))[:, 0]

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent ``[n]`` -> reconstructions ``[n, K]`` (unnormalised: only the shape counts)."""
        return self.decoder(latent[:, None])

    def forward(self, filters: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(filters))


def cosine_dissimilarity(filters: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` per row of ``[n, K]`` tensors -> ``[n]`` (0 = same shape, 2 = opposite)."""
    dot = (filters * reconstructions).sum(1)
    norms = filters.norm(dim=1) * reconstructions.norm(dim=1)
    return 1 - dot / norms.clamp_min(1e-12)


@dataclass
class TrainingSummary:
    """What training did: ``train_filters`` drawn, ``steps`` taken, the mean loss of the last
    10% of steps, ``seconds`` of wall time."""

    train_filters: int
    steps: int
    final_loss: float
    seconds: float


def _path_length(order, distance) -> float:
    """Total length of the open path visiting ``order`` (``distance``: nested lists)."""
    return float(sum(distance[a][b] for a, b in zip(order[:-1], order[1:])))


def short_path(distance: torch.Tensor) -> list:
    """An open path through all points with a short total length: nearest neighbour from
    every start, the shortest kept, then 2-opt reversals until none helps.
    ``distance [M, M]`` symmetric -> visiting order (list of M indices)."""
    count = distance.shape[0]
    if count <= 2:
        return list(range(count))
    dist = distance.tolist()
    best = None
    for start in range(count):
        order, left = [start], set(range(count)) - {start}
        while left:
            here = order[-1]
            nearest = min(left, key=lambda j: (dist[here][j], j))
            order.append(nearest)
            left.remove(nearest)
        length = _path_length(order, dist)
        if best is None or length < best[0] - 1e-12:
            best = (length, order)
    order = best[1]
    improved = True
    while improved:
        improved = False
        for i in range(count - 1):
            for j in range(i + 2, count + 1):
                # Reverse order[i:j]: changes the edges (i-1, i) and (j-1, j).
                before = (dist[order[i - 1]][order[i]] if i > 0 else 0.0) + (
                    dist[order[j - 1]][order[j]] if j < count else 0.0
                )
                after = (dist[order[i - 1]][order[j - 1]] if i > 0 else 0.0) + (
                    dist[order[i]][order[j]] if j < count else 0.0
                )
                if after < before - 1e-12:
                    order[i:j] = order[i:j][::-1]
                    improved = True
    return order


def warm_start_targets(filters: torch.Tensor, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Latent positions for the warm start.

    Args:
        filters: ``[n, K]`` normalised training filters.
    Returns:
        ``(target_latent [n], centres [M, K])``: the latent position of each filter's k-means
        centre along the ordered path, and the centres in path order.
    """
    # Over-clustering needs no restarts, and 20k filters place 32 centres well enough.
    count = min(WARM_START_CLUSTERS, max(2, filters.shape[0] // 20))
    centres = spherical_kmeans(filters, count, seed=seed, restarts=1, max_fit_filters=WARM_START_FILTERS)
    angle = (centres @ centres.t()).clamp(-1, 1).arccos().to(torch.float64)
    order = short_path(angle)
    centres = centres[order]
    hops = torch.stack([angle[a, b] for a, b in zip(order[:-1], order[1:])]) if len(order) > 1 else angle.new_zeros(0)
    travelled = torch.cat([angle.new_zeros(1), hops.cumsum(0)])
    span = float(travelled[-1]) if float(travelled[-1]) > 0 else 1.0
    positions = (LATENT_MARGIN + (1 - 2 * LATENT_MARGIN) * travelled / span).to(torch.float32)
    assignment, _ = assign_to_centroids(filters, centres)
    return positions[assignment], centres


def train_autoencoder(
    filters: torch.Tensor,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    batch_size: int = 512,
    max_train_filters: int = 200_000,
    learning_rate: float = 1e-2,
    progress: Optional[Callable[[int], None]] = None,
) -> Tuple[LatentAutoencoder, TrainingSummary]:
    """Train a ``LatentAutoencoder`` on normalised ``filters [N, K]`` (float32).

    Seeded: the subsample, the warm start, the initial weights and every mini-batch come from
    ``seed``, and training runs on one thread, so the same filters and seed give the same
    model. The learning rate decays along a cosine to zero, which lets the curve settle.

    Args:
        steps: Adam steps (the training cost, independent of N).
        max_train_filters: at most this many filters (a seeded subsample) are trained on.
        progress: optional ``progress(steps_done)``, called every 100 steps.
    """
    with _one_thread():
        return _train(filters, seed, steps, batch_size, max_train_filters, learning_rate, progress)


@contextlib.contextmanager
def _one_thread():
    """Run on one CPU thread, then restore the caller's setting. Each training step is a few
    small matrix products, where waking a second thread costs more than it saves (several
    times more on a busy machine); it also makes the trained model independent of the thread
    count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train(filters, seed, steps, batch_size, max_train_filters, learning_rate, progress):
    start_time = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    if filters.shape[0] > max_train_filters:
        chosen = torch.randperm(filters.shape[0], generator=generator)[:max_train_filters]
        train = filters[chosen]
    else:
        train = filters
    train = train.to(torch.float32).contiguous()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LatentAutoencoder(train.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    )
    batch_size = min(batch_size, train.shape[0])
    target_latent, _ = warm_start_targets(train, seed)
    warm_steps = int(WARM_START_FRACTION * steps)
    tail_losses = []
    with torch.enable_grad():
        for step in range(steps):
            index = torch.randint(train.shape[0], (batch_size,), generator=generator)
            batch = train[index]
            if step < warm_steps:
                # Encoder: reach the filter's path position; decoder: the filter from there.
                # Position errors of ~0.01 (a cluster's width on the path) must weigh as much
                # as shape errors of ~0.01 in 1 - cos: hence the factor on the squared error.
                latent = model.encode(batch)
                loss = WARM_START_POSITION_WEIGHT * (latent - target_latent[index]).square().mean() + (
                    cosine_dissimilarity(batch, model.decode(target_latent[index])).mean()
                )
            else:
                loss = cosine_dissimilarity(batch, model(batch)).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if step >= steps - max(1, steps // 10):
                tail_losses.append(loss.item())
            if progress is not None and (step + 1) % 100 == 0:
                progress(step + 1)
    model.eval()
    summary = TrainingSummary(
        train_filters=int(train.shape[0]),
        steps=steps,
        final_loss=float(sum(tail_losses) / max(1, len(tail_losses))),
        seconds=time.perf_counter() - start_time,
    )
    return model, summary


@torch.no_grad()
def encode_filters(
    model: LatentAutoencoder, filters: torch.Tensor, chunk: int = 65536
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``filters [N, K]`` -> ``(latent [N], dissimilarity [N])``: each filter's latent and the
    cosine dissimilarity between it and its reconstruction."""
    latents, dissimilarities = [], []
    for start in range(0, filters.shape[0], chunk):
        batch = filters[start : start + chunk].to(torch.float32)
        latent = model.encode(batch)
        latents.append(latent)
        dissimilarities.append(cosine_dissimilarity(batch, model.decode(latent)))
    return torch.cat(latents), torch.cat(dissimilarities)


@torch.no_grad()
def decode_curve(model: LatentAutoencoder, points: int = 256) -> Tuple[torch.Tensor, torch.Tensor]:
    """The decoder's curve: ``(latent [points] evenly in [0, 1], unit-norm filters [points, K])``."""
    latent = torch.linspace(0, 1, points)
    decoded = model.decode(latent)
    decoded = decoded - decoded.mean(1, keepdim=True)
    return latent, decoded / decoded.norm(dim=1, keepdim=True).clamp_min(1e-12)
