r"""When a filter counts as *classified*: the cosine dissimilarity ``1 - cos`` between it and its
reconstruction (autoencoder) or cluster centroid (k-means) is below a threshold that depends on
the kernel size.

The paper's thresholds are 0.3 for 7x7 and 0.2 for 5x5 (DESIGN.md section 1); they are used as
they are. Other sizes need their own, because chance agreement grows as the number of taps
shrinks: a normalised k x k filter lives in ``d = kh*kw - 1`` dimensions (zero mean), and a
3x3 filter (d = 8) is close to *some* point of a curve far more easily than a 7x7 one (d = 48).

Both published thresholds keep the same **signal-to-noise ratio per remaining dimension**: with
``c = 1 - threshold`` the reconstructed part carries energy ``c^2`` and the residual
``1 - c^2`` spreads over the ``d - 1`` other dimensions, and

    SNR = c^2 / ((1 - c^2) / (d - 1))

is 45.2 at 7x7 (c = 0.7, d = 48) and 40.9 at 5x5 (c = 0.8, d = 24). One constant,
``SNR = 43`` (their geometric mean), reproduces both within 0.01 (0.309 and 0.193) and gives,
for any other size,

    threshold = 1 - sqrt(SNR / (SNR + d - 1)),

rounded to 0.01: **3x3 -> 0.07** (cos >= 0.93), 3x5 -> 0.12, 9x9 -> 0.41, 11x11 -> 0.48. The
3x3 value is strict on purpose: in 8 dimensions a cosine of 0.7 is what a filter gets by chance.
Measured on random-init models (the autoencoder trained on pure noise filters): noise 3x3 filters
are classified 40 % of the time at 0.3 and 0.6 % at 0.07; noise 5x5 and 7x7 filters at their
paper thresholds, under 0.1 %.
For large kernels the rule is capped at ``MAX_THRESHOLD = 0.5``: a filter is never classified
unless its reconstruction explains at least a quarter of its energy (cos >= 0.5).
"""

import math
from typing import Dict, Sequence, Tuple

PAPER_THRESHOLDS: Dict[Tuple[int, int], float] = {(7, 7): 0.3, (5, 5): 0.2}
SNR_PER_DIMENSION = 43.0
MAX_THRESHOLD = 0.5


def snr_threshold(kernel_size: Sequence[int]) -> float:
    """The constant-SNR rule (module docstring) for any kernel size, rounded to 0.01, capped."""
    kh, kw = kernel_size
    dims = kh * kw - 1
    if dims < 2:
        raise ValueError(f"kernel_size: need at least 2 taps per filter, got {tuple(kernel_size)}")
    cos = math.sqrt(SNR_PER_DIMENSION / (SNR_PER_DIMENSION + dims - 1))
    return min(MAX_THRESHOLD, round(1.0 - cos, 2))


def classification_threshold(kernel_size: Sequence[int]) -> float:
    """Dissimilarity threshold for ``kernel_size``: the paper's for 7x7 and 5x5, else the rule."""
    key = tuple(int(k) for k in kernel_size)
    return PAPER_THRESHOLDS.get(key, snr_threshold(key))


def size_key(kernel_size: Sequence[int]) -> str:
    """``(7, 7)`` -> ``"7x7"`` (the report's keys)."""
    kh, kw = kernel_size
    return f"{kh}x{kw}"
