"""Weight streaming: one decoder layer's matmuls (F.linear of an [m, in] activation) over x bytes.

The shapes are the runtime's fused ones (bmc_model/runtime/decoder.py): wqkv [(heads + 2 kv_heads)
* head_dim, hidden], wo [hidden, heads * head_dim], w_in [(2 if gated) * ffn, hidden], w_down
[hidden, ffn]: four calls per layer, so the fitted intercept is four calls' overhead. A size x
other than the real layer scales every matrix's output rows by the same factor. The LM head is timed
on its own as well (head_row_cases). Matrices are views into a Pool, cold as in decoding (see pool.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from bmc_model.calibrate.pool import Pool
from bmc_model.calibrate.runner import Case, Op
from bmc_model.core.specs import ModelSpec, scaled_shapes


def _case(pool: Pool, key: object, spec: ModelSpec, nbytes: float, rows: int, stream_bytes: int) -> Case:
    shapes, actual = scaled_shapes(spec, nbytes, pool.elem)
    while actual > pool.nbytes:  # rounding rows up can overshoot the pool: shrink a little
        nbytes *= 0.99
        shapes, actual = scaled_shapes(spec, nbytes, pool.elem)
    return _linear_case(pool, key, list(shapes), rows, stream_bytes)


def _linear_case(pool: Pool, key: object, shapes: list[tuple[int, int]], rows: int, stream_bytes: int) -> Case:
    """F.linear of an [m, in] activation through each [out, in] matrix in turn."""
    actual = sum(o * i for o, i in shapes) * pool.elem
    copies = pool.copies(actual // pool.elem, stream_bytes)

    @contextmanager
    def make() -> Iterator[Op]:
        mats = [w for group in pool.views(list(shapes), copies) for w in group]  # [out, in] each
        acts = {i: torch.full((rows, i), 0.5, dtype=pool.dtype, device=pool.device) for _, i in shapes}
        pairs = [(acts[w.shape[1]], w) for w in mats]  # activation [m, in] for each matrix

        def op() -> None:
            for a, w in pairs:
                F.linear(a, w)  # [m, out]

        yield op

    return Case(key=key, x=float(actual), make=make, per_call=copies)


def size_cases(pool: Pool, specs: tuple[ModelSpec, ...], sizes: tuple[int, ...], stream_bytes: int) -> list[Case]:
    """One row (m = 1) at each size; geometries take turns along the sizes."""
    return [_case(pool, (specs[j % len(specs)].name, x), specs[j % len(specs)], x, 1, stream_bytes)
            for j, x in enumerate(sizes)]


def row_cases(pool: Pool, specs: tuple[ModelSpec, ...], rows: tuple[int, ...], stream_bytes: int) -> list[Case]:
    """m token rows through one whole layer of each geometry (as large as the pool allows): how much
    more m rows cost than one depends on the matrix shapes, so each geometry gets its own curve."""
    return [_case(pool, (s.name, m), s, float(s.layer_params() * pool.elem), m, stream_bytes)
            for s in specs for m in rows]


def head_row_cases(pool: Pool, specs: tuple[ModelSpec, ...], rows: tuple[int, ...], stream_bytes: int) -> list[Case]:
    """m token rows through each geometry's LM head [vocab, hidden]: one wide matrix, whose m-row
    ratio differs from a layer's of the same bytes. Heads larger than the pool are left out."""
    return [_linear_case(pool, (s.name, m), [(s.vocab, s.hidden)], m, stream_bytes)
            for s in specs if s.head_params() * pool.elem <= pool.nbytes for m in rows]
