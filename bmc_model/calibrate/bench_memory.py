"""KV-cache memory operations, in the runtime's layout [batch, kv_heads, rows, head_dim].

alloc   torch.empty of x bytes + zero_ (first touch of every page: where CPU page faults live);
        "call" is torch.empty alone (no touch), kept in raw to separate the call from the touch.
        On CUDA "touch" reuses the caching allocator's blocks and "cold" empties the cache first.
copy    new[:, :, :n, :] = old[:, :, :n, :], both buffers already touched. "strided": old holds n
        rows, new n + GROWTH_GAP (a growth event); "contig": equal capacities (one flat block).
write   buf[:, :, n:n+q, :] = new: q rows into a preallocated, cold buffer at random offsets n.
cat     torch.cat([old, row], dim=2): HF DynamicCache's growth, the cross-check of alloc + copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from bmc_model.calibrate.pool import Pool
from bmc_model.calibrate.runner import Buffers, Case, Op
from bmc_model.specs import ModelSpec

GROWTH_GAP = 64  # rows the new buffer has beyond the old one in the strided copy
WRITE_POSITIONS = 256  # random row offsets the write benchmark cycles through


def alloc_cases(sizes: tuple[int, ...], dtype: torch.dtype, device: str) -> list[Case]:
    elem = torch.empty((), dtype=dtype).element_size()
    cases = []
    for nbytes in sizes:
        n = max(1, nbytes // elem)
        x = float(n * elem)

        def touch(n: int = n) -> None:
            torch.empty(n, dtype=dtype, device=device).zero_()

        def call(n: int = n) -> None:
            torch.empty(n, dtype=dtype, device=device)

        cases.append(Case.simple(("touch", x), x, touch))
        cases.append(Case.simple(("call", x), x, call))
        if device == "cuda":  # cudaMalloc + memset: what a fresh block costs past the cache
            cases.append(Case(key=("cold", x), x=x, make=lambda op=touch: _yield(op), fresh=torch.cuda.empty_cache))
    return cases


@contextmanager
def _yield(op: Op) -> Iterator[Op]:
    yield op


def _kv(spec: ModelSpec, batch: int, rows: int, dtype: torch.dtype, device: str, fill: float) -> torch.Tensor:
    return torch.empty((batch, spec.kv_heads, rows, spec.head_dim), dtype=dtype, device=device).fill_(fill)


def copy_cases(spec: ModelSpec, rows_list: tuple[int, ...], dtype: torch.dtype, device: str,
               contiguous: bool = True) -> list[Case]:
    row = spec.kv_heads * spec.head_dim * torch.empty((), dtype=dtype).element_size()
    bufs = Buffers()
    cases = []
    for rows in rows_list:
        for kind, gap in (("strided", GROWTH_GAP), ("contig", 0))[:2 if contiguous else 1]:

            @contextmanager
            def make(rows: int = rows, gap: int = gap) -> Iterator[Op]:
                old, new = bufs.get((rows, gap), lambda rows=rows, gap=gap: (
                    _kv(spec, 1, rows, dtype, device, 1.0),  # [1, kv_heads, n, head_dim]
                    _kv(spec, 1, rows + gap, dtype, device, 0.0)),  # [1, kv_heads, n + gap, head_dim]
                    nbytes=(2 * rows + gap) * row)

                def op() -> None:
                    new[:, :, :rows, :] = old[:, :, :rows, :]

                yield op

            cases.append(Case(key=(kind, rows), x=float(rows * row), make=make))
    return cases


def write_cases(pool: Pool, spec: ModelSpec, shapes: tuple[tuple[int, int], ...]) -> list[Case]:
    """q rows at random row offsets of a buffer spanning the whole Pool: the destination is cold,
    as it is in decoding (the buffer was last touched a step ago, the model streamed since)."""
    cases = []
    for batch, q in shapes:

        @contextmanager
        def make(batch: int = batch, q: int = q) -> Iterator[Op]:
            assert pool.flat is not None
            cap = pool.numel // (batch * spec.kv_heads * spec.head_dim)  # rows: the buffer fills the pool
            buf = pool.flat[:batch * spec.kv_heads * cap * spec.head_dim].view(
                batch, spec.kv_heads, cap, spec.head_dim)  # [b, kv_heads, C, head_dim]
            new = _kv(spec, batch, q, pool.dtype, pool.device, 1.0)  # [b, kv_heads, q, head_dim]
            starts = np.random.default_rng(batch * 1000 + q).integers(0, cap - q, WRITE_POSITIONS).tolist()
            i = [0]

            def op() -> None:
                n = starts[i[0]]
                buf[:, :, n:n + q, :] = new
                i[0] = (i[0] + 1) % WRITE_POSITIONS

            yield op

        cases.append(Case(key=(batch, q), x=float(batch * spec.kv_heads * q * spec.head_dim * pool.elem), make=make))
    return cases


def cat_cases(spec: ModelSpec, rows_list: tuple[int, ...], dtype: torch.dtype, device: str) -> list[Case]:
    row = spec.kv_heads * spec.head_dim * torch.empty((), dtype=dtype).element_size()
    bufs = Buffers()
    cases = []
    for rows in rows_list:

        @contextmanager
        def make(rows: int = rows) -> Iterator[Op]:
            old, one = bufs.get(rows, lambda rows=rows: (
                _kv(spec, 1, rows, dtype, device, 1.0),  # [1, kv_heads, n, head_dim]
                _kv(spec, 1, 1, dtype, device, 2.0)), nbytes=rows * row)  # [1, kv_heads, 1, head_dim]

            def op() -> None:
                torch.cat([old, one], dim=2)  # [1, kv_heads, n + 1, head_dim], freed at once

            yield op

        cases.append(Case(key=rows, x=float(rows * row), make=make))
    return cases
