"""Wall-clock timing for demos and benchmarks: warm-up, then the median of several runs."""

import random
import resource
import statistics
import time
from typing import Callable, Dict


def _sync():
    import torch

    return torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)


def median_ms(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds (CUDA work is synchronised)."""
    return interleaved_medians_ms({"fn": fn}, repeats, warmup)["fn"]


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def interleaved_medians_ms(fns: Dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                           faults: Dict[str, float] = None) -> Dict[str, float]:
    """Median wall time in ms of each function, timed in turns (one run of each per round), so
    that a slow spell of the machine (another tenant, the heap being trimmed and faulted back in)
    falls on all of them alike instead of on whichever ran then. The order is shuffled each
    round (with a fixed seed, so runs repeat it), so that what a function leaves in the caches
    (PyTorch's slow NCHW backward evicts everything) is not always charged to the same successor.
    ``faults``, when given, receives each function's minor page faults per call."""
    sync = _sync()
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    samples = {name: [] for name in fns}
    fault_counts = {name: 0 for name in fns}
    names, order = list(fns), random.Random(0)
    for _ in range(repeats):
        order.shuffle(names)
        for name in names:
            fn = fns[name]
            before = _minor_faults()
            start = time.perf_counter()
            fn()
            sync()
            samples[name].append((time.perf_counter() - start) * 1e3)
            fault_counts[name] += _minor_faults() - before
    if faults is not None:
        faults.update({name: count / repeats for name, count in fault_counts.items()})
    return {name: statistics.median(values) for name, values in samples.items()}
