"""scaled_dot_product_attention in the runtime's form (bmc_model/runtime/decoder.py).

The runtime folds the g = heads / kv_heads query heads sharing a KV head into query rows,
q [batch, kv_heads, g * q_rows, head_dim] against K, V [batch, kv_heads, W, head_dim], so each
cached row is read once (no enable_gqa copy); for MHA (g = 1) this is plain SDPA. Masks are the
runtime's: additive float in the compute dtype, [q_rows, W] (0 = visible, -inf = blocked),
repeated g times for folded rows; None for an exact-width single-row step.

exact   K, V = views k[:, :, :W], v[:, :, :W] of a larger buffer, no mask, one query row
masked  the whole buffer of W rows with an additive mask hiding the padded eighth
q       q_rows = 1, 2, 4, 8 new rows with a causal mask over W rows (speculative verification)
gqa     GQA geometries only: transformers' exact-width path. With no mask it hands SDPA the unfolded query
        [batch, heads, 1, head_dim] and grouped K/V with enable_gqa, which runs slower on the CPU than the fold
        (docs/results.md#transformers-attention-paths); the hf_attn_gqa term
x is the K + V bytes read: 2 * batch * kv_heads * W * head_dim * elem. K and V are views into a
Pool, cold as in decoding (pool.py): a timed call attends over enough copies to leave the caches.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from bmc_model.calibrate.pool import Pool
from bmc_model.calibrate.runner import Case, Op
from bmc_model.core.specs import ModelSpec

VIEW_SLACK = 64  # rows the buffer holds beyond the exact view


def _query(spec: ModelSpec, q_rows: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    g = spec.heads // spec.kv_heads
    # [batch, kv_heads, g * q_rows, head_dim]: the folded GQA query
    return torch.empty((1, spec.kv_heads, g * q_rows, spec.head_dim), dtype=dtype, device=device).uniform_(-1.0, 1.0)


def causal_mask(n: int, q_rows: int, width: int, group: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    """[group * q_rows, width] additive: new row i (position n + i) sees columns <= n + i."""
    cols = torch.arange(width, device=device)
    rows = n + torch.arange(q_rows, device=device)
    blocked = cols[None, :] > rows[:, None]  # [q_rows, width]
    m = torch.zeros((q_rows, width), dtype=dtype, device=device).masked_fill_(blocked, float("-inf"))
    return m.repeat(group, 1) if group > 1 and q_rows > 1 else m


def kv_bytes(spec: ModelSpec, width: int, elem: int) -> float:
    return float(2 * spec.kv_heads * width * spec.head_dim * elem)


def attn_case(pool: Pool, key: object, spec: ModelSpec, width: int, q_rows: int, masked: bool,
          stream_bytes: int, grouped: bool = False) -> Case:
    cap = width if masked else width + VIEW_SLACK
    shape = (1, spec.kv_heads, cap, spec.head_dim)  # [batch, kv_heads, capacity, head_dim]
    copies = pool.copies(2 * spec.kv_heads * cap * spec.head_dim, stream_bytes)
    g = spec.heads // spec.kv_heads

    @contextmanager
    def make() -> Iterator[Op]:
        q = _query(spec, q_rows, pool.dtype, pool.device)
        kvs = [(k[:, :, :width], v[:, :, :width]) for k, v in pool.views([shape, shape], copies)]
        if grouped:
            q = q.reshape(1, spec.heads, q_rows, spec.head_dim)  # [batch, heads, q_rows, head_dim]: unfolded

            def op() -> None:
                for k, v in kvs:
                    F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        elif masked:
            n = max(0, width - q_rows - width // 8)  # valid rows before the new ones; the rest is padding
            mask = causal_mask(n, q_rows, width, g, pool.dtype, pool.device)

            def op() -> None:
                for k, v in kvs:
                    F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:

            def op() -> None:
                for k, v in kvs:
                    F.scaled_dot_product_attention(q, k, v)

        yield op

    return Case(key=key, x=kv_bytes(spec, width, pool.elem), make=make, per_call=copies)


def attn_cases(pool: Pool, specs: tuple[ModelSpec, ...], widths: tuple[int, ...], kind: str,
               stream_bytes: int) -> list[Case]:
    """kind "exact": one row over views, no mask; "masked": the padded buffer, an eighth masked; "gqa": exact views
    through enable_gqa, for the GQA geometries only."""
    if kind == "gqa":
        return [attn_case(pool, (s.name, w), s, w, 1, False, stream_bytes, grouped=True)
                for s in specs if s.heads > s.kv_heads for w in widths]
    return [attn_case(pool, (s.name, w), s, w, 1, kind == "masked", stream_bytes) for s in specs for w in widths]


def attn_q_cases(pool: Pool, spec: ModelSpec, widths: tuple[int, ...], q_rows: tuple[int, ...],
                 stream_bytes: int) -> list[Case]:
    """q new rows with a causal mask over a buffer of W rows (an eighth of it padding)."""
    return [attn_case(pool, (qr, w), spec, w, qr, True, stream_bytes) for w in widths for qr in q_rows]
