"""A flat, touched buffer that benchmarks carve their tensors from, so timed data comes from DRAM.

In a real decode step every layer's weights and KV rows were last touched a whole step ago, with
the rest of the model streamed through the caches since: they are cold. A benchmark that reran an
operation on the same small tensors would time them hot in the cache. So a timed call walks
through enough distinct copies (consecutive views into this pool) to stream at least `stream_bytes`,
and the time is divided by the number of copies (Case.per_call).
"""

from __future__ import annotations

import torch


class Pool:
    def __init__(self, nbytes: int, dtype: torch.dtype, device: str) -> None:
        self.elem = torch.empty((), dtype=dtype).element_size()
        self.numel = max(1, nbytes // self.elem)
        self.nbytes = self.numel * self.elem
        self.dtype, self.device = dtype, device
        self.flat: torch.Tensor | None = None

    def __enter__(self) -> Pool:
        # Constant values: the kernels' speed does not depend on them (no denormals); fill_ is fast
        # and touches every page once, outside any timing.
        self.flat = torch.empty(self.numel, dtype=self.dtype, device=self.device).fill_(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.flat = None

    def copies(self, numel_per_copy: int, stream_bytes: int) -> int:
        """Copies of a numel_per_copy-element group to stream >= stream_bytes, as many as fit."""
        want = -(-stream_bytes // (numel_per_copy * self.elem))
        return max(1, min(want, self.numel // numel_per_copy))

    def views(self, shapes: list[tuple[int, ...]], copies: int) -> list[list[torch.Tensor]]:
        """`copies` groups of consecutive views with the given shapes."""
        if self.flat is None:
            raise RuntimeError("Pool used outside its `with` block")
        out, off = [], 0
        for _ in range(copies):
            group = []
            for shape in shapes:
                n = 1
                for s in shape:
                    n *= s
                if off + n > self.numel:
                    raise ValueError(f"pool of {self.nbytes} bytes too small for {copies} copies of {shapes}")
                group.append(self.flat[off:off + n].view(shape))
                off += n
            out.append(group)
        return out
