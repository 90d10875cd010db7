"""One lazily backed allocation for every K and V buffer of a reserve cache.

Per-layer buffers of a few MB come from glibc's heap once its mmap threshold has risen (every freed mapping up
to 32 MiB raises it, as a prefill's activations do), and a heap block recycled from freed activations is
resident already, written or not. One allocation of every layer's rows together is past that ceiling for any
cache worth tuning, so glibc maps it fresh from the OS: only the pages written become resident.
"""

from __future__ import annotations

import torch


class Arena:
    def __init__(self, tensors: int) -> None:
        self.tensors = tensors  # 2 per layer: K and V
        self.buf: torch.Tensor | None = None  # [tensors, *shape]
        self.taken = 0

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised buffer of `shape`: the arena's next slot, or a buffer of its own where the arena is
        used up or holds another shape (a layer unlike the first)."""
        if self.buf is None:
            self.buf = torch.empty((self.tensors, *shape), dtype=dtype, device=device)
        if self.taken >= self.tensors or tuple(self.buf.shape[1:]) != tuple(shape) or self.buf.dtype != dtype \
                or self.buf.device != device:
            return torch.empty(shape, dtype=dtype, device=device)
        self.taken += 1
        return self.buf[self.taken - 1]
