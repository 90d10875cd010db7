"""KV-cache memory operations, in the runtime's layout [batch, kv_heads, rows, head_dim].

alloc   torch.empty of x bytes + zero_ (first touch of every page: where CPU page faults live);
        "call" is torch.empty alone (no touch), kept in raw to separate the call from the touch.
        On CUDA "touch" reuses the caching allocator's blocks and "cold" empties the cache first.
copy    new[:, :, :n, :] = old[:, :, :n, :], both buffers already touched. "strided": old holds n
        rows, new n + GROWTH_GAP (a growth event); "contig": equal capacities (one flat block).
write   buf[:, :, n:n+q, :] = new: q rows into a preallocated, cold buffer at random offsets n.
cat     torch.cat([old, row], dim=2): HF DynamicCache's growth, the cross-check of alloc + copy.

copy and cat run cold, as growth does in decoding: a layer's cache was last touched a step ago and
the whole model has streamed through the caches since. A timed call walks `copies` distinct buffer
sets, together at least `stream_bytes` (twice the LLC), and the time is divided by `copies`. Timing
one small buffer again and again would read it from L3 at several times DRAM speed.
cat replays DynamicCache's pattern: each of `copies` tensors (think layers' K and V) is replaced by
its torch.cat with one more row, the old one freed, so the allocator sees a block one row larger
than the one just freed, every call: below the mmap threshold glibc can seldom reuse the freed
block and extends (page-faults) the heap instead. Timing torch.cat of one fixed tensor would hand
back the block freed by the previous call, resident and cached: several times too cheap. A tensor
that has grown CAT_SPAN rows starts again from its base, so x stays near n.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from bmc_model.calibrate.pool import Pool
from bmc_model.calibrate.runner import Buffers, Case, Op
from bmc_model.core.specs import ModelSpec

GROWTH_GAP = 64  # rows the new buffer has beyond the old one in the strided copy
WRITE_POSITIONS = 256  # random row offsets the write benchmark cycles through
CAT_SPAN = 16  # rows a cat tensor grows before it is put back to its base size


def alloc_cases(sizes: tuple[int, ...], dtype: torch.dtype, device: str, call: bool = True) -> list[Case]:
    """touch (the alloc term) at every size; call (torch.empty alone, a raw-only cross-check) too where asked."""
    elem = torch.empty((), dtype=dtype).element_size()
    cases = []
    for nbytes in sizes:
        n = max(1, nbytes // elem)
        x = float(n * elem)

        def touch(n: int = n) -> None:
            torch.empty(n, dtype=dtype, device=device).zero_()

        def untouched(n: int = n) -> None:
            torch.empty(n, dtype=dtype, device=device)

        cases.append(Case.simple(("touch", x), x, touch))
        if call:
            cases.append(Case.simple(("call", x), x, untouched))
        if device == "cuda":  # cudaMalloc + memset: what a fresh block costs past the cache
            cases.append(Case(key=("cold", x), x=x, make=lambda op=touch: _yield(op), fresh=torch.cuda.empty_cache))
    return cases


@contextmanager
def _yield(op: Op) -> Iterator[Op]:
    yield op


def _kv(spec: ModelSpec, batch: int, rows: int, dtype: torch.dtype, device: str, fill: float) -> torch.Tensor:
    return torch.empty((batch, spec.kv_heads, rows, spec.head_dim), dtype=dtype, device=device).fill_(fill)


def _copies(nbytes: int, stream_bytes: int) -> int:
    """Distinct buffer sets of nbytes each that together stream at least stream_bytes."""
    return max(1, -(-stream_bytes // max(nbytes, 1)))


def copy_cases(spec: ModelSpec, rows_list: tuple[int, ...], dtype: torch.dtype, device: str,
               contiguous: bool = True, stream_bytes: int = 0) -> list[Case]:
    row = spec.kv_heads * spec.head_dim * torch.empty((), dtype=dtype).element_size()
    bufs = Buffers()
    cases = []
    for rows in rows_list:
        for kind, gap in (("strided", GROWTH_GAP), ("contig", 0))[:2 if contiguous else 1]:
            copies = _copies((2 * rows + gap) * row, stream_bytes)

            @contextmanager
            def make(rows: int = rows, gap: int = gap, copies: int = copies) -> Iterator[Op]:
                pairs = bufs.get((rows, gap), lambda rows=rows, gap=gap, copies=copies: tuple(
                    (_kv(spec, 1, rows, dtype, device, 1.0),  # [1, kv_heads, n, head_dim]
                     _kv(spec, 1, rows + gap, dtype, device, 0.0))  # [1, kv_heads, n + gap, head_dim]
                    for _ in range(copies)), nbytes=copies * (2 * rows + gap) * row)

                def op() -> None:
                    for old, new in pairs:
                        new[:, :, :rows, :] = old[:, :, :rows, :]

                yield op

            cases.append(Case(key=(kind, rows), x=float(rows * row), make=make, per_call=copies))
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


def cat_cases(spec: ModelSpec, rows_list: tuple[int, ...], dtype: torch.dtype, device: str,
              stream_bytes: int = 0) -> list[Case]:
    row = spec.kv_heads * spec.head_dim * torch.empty((), dtype=dtype).element_size()
    bufs = Buffers()
    cases = []
    for rows in rows_list:
        copies = _copies(rows * row, stream_bytes)

        @contextmanager
        def make(rows: int = rows, copies: int = copies) -> Iterator[Op]:
            bases = bufs.get(rows, lambda rows=rows, copies=copies: tuple(
                _kv(spec, 1, rows, dtype, device, 1.0) for _ in range(copies)),  # [1, kv_heads, n, head_dim]
                nbytes=copies * rows * row)
            one = _kv(spec, 1, 1, dtype, device, 2.0)  # [1, kv_heads, 1, head_dim]
            cur = list(bases)

            def op() -> None:
                for j, t in enumerate(cur):
                    # [1, kv_heads, m + 1, head_dim] replaces [1, kv_heads, m, head_dim], which is freed
                    cur[j] = torch.cat([bases[j] if t.shape[2] >= rows + CAT_SPAN else t, one], dim=2)

            yield op
            cur.clear()

        # every call cats each tensor once, at rows .. rows + CAT_SPAN - 1 rows: x is the mean
        x = (rows + (CAT_SPAN - 1) / 2) * row
        cases.append(Case(key=rows, x=float(x), make=make, per_call=copies))
    return cases
