"""lazy_backing: the fraction of an allocation's never-written bytes the OS does not hold resident.

On Linux CPU a large torch.empty is an mmap whose pages become resident when first written; on CUDA the
caching allocator's cudaMalloc commits at allocation. Measured, not assumed: trim the heap, read the
resident size, torch.empty SIZE bytes, write the first WRITTEN_FRACTION of them, read it again. Memory
only, no timing: well under a second.
"""

from __future__ import annotations

import gc
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from bmc_model.core.host import release_heap, rss_bytes

SIZE = 64 * 2**20  # past glibc's largest mmap threshold (32 MiB): its own mapping, unmapped when freed
WRITTEN_FRACTION = 1 / 8
REPEATS = 3
CUDA_NOTE = "lazy_backing 0 on CUDA: the caching allocator commits device memory at allocation"
NO_RSS_NOTE = "lazy_backing not measured: no /proc/self/statm (not Linux); the model counts allocations resident"


@dataclass
class LazyResult:
    value: float | None  # None: not measured (the profile then leaves the scalar out)
    raw: dict = field(default_factory=dict)
    note: str = ""


RESOLUTION_DIGITS = 2


def lazy_fraction(delta: int, size: int, written: int) -> float:
    """1 - (resident growth beyond the written bytes) / (bytes never written), clipped to [0, 1]."""
    if size <= written:
        return 0.0
    return min(1.0, max(0.0, 1.0 - max(0, delta - written) / (size - written)))


def _one(size: int, written: int, rss: Callable[[], int | None]) -> int | None:
    """Resident growth across torch.empty(size) with its first `written` bytes filled."""
    gc.collect()
    release_heap()
    before = rss()
    buf = torch.empty(size, dtype=torch.uint8)
    buf[:written].fill_(1)
    after = rss()
    del buf
    return None if before is None or after is None else after - before


def measure(device: str = "cpu", size: int = SIZE, repeats: int = REPEATS,
            rss: Callable[[], int | None] = rss_bytes, step: Callable[[], None] = lambda: None) -> LazyResult:
    """The median over `repeats` of lazy_fraction; on CUDA 0.0 (see CUDA_NOTE)."""
    if device == "cuda":
        return LazyResult(0.0, {"lazy_backing": 0.0, "device": "cuda", "how": "assumed: cudaMalloc commits"},
                          CUDA_NOTE)
    written = int(size * WRITTEN_FRACTION)
    deltas = []
    for _ in range(repeats):
        delta = _one(size, written, rss)
        step()
        if delta is None:
            return LazyResult(None, {"device": device, "how": "no /proc/self/statm"}, NO_RSS_NOTE)
        deltas.append(delta)
    gc.collect()
    release_heap()
    samples = [lazy_fraction(d, size, written) for d in deltas]
    # the bench resolves about 1%: a page at the written range's edge, and whatever torch allocates meanwhile
    # (2.5 MiB on a first call), sit on top of the 56 MiB never written
    value = round(float(statistics.median(samples)), RESOLUTION_DIGITS)
    return LazyResult(value, {"lazy_backing": value, "samples": samples, "rss_delta_bytes": deltas,
                              "size_bytes": size, "written_bytes": written, "device": device,
                              "how": "resident growth over torch.empty + fill_ of the first 1/8 (/proc/self/statm)"})
