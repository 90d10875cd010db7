"""What a decoder layer costs beyond its weight matmuls, measured in place at real geometries.

The tiny decoder (bench_overhead.py) gives the per-layer framework cost with everything hot in the
caches. In a real decode every layer first streams megabytes of weights, so the norms, RoPE, attention
set-up and cache writes that follow start from cold caches, and a verification pass of q rows does q
times their elementwise work. So the runtime's own Decoder runs here at each calibration geometry
(random weights tiled from one block, as cheap to make as a copy; enough layers to stream past the last-level
cache; a short context), every weight matmul timed where it runs (Decoder._linear): a forward's time minus its
matmuls' is the work the weights terms do not cover, at q = 1 and at the row counts of verification.
calibrate/layers.py takes off what the attention and write terms already charge and fits what is left.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bmc_model.calibrate.plan import layers_for
from bmc_model.core.policy import NAMED
from bmc_model.core.specs import ModelSpec

PROMPT = 64  # cached rows: attention stays a small share, as in the tiny decoder
Q_ROWS = (1, 4, 8, 16)
STEPS = 5  # forwards per (geometry, q) and round; the median is kept
VOCAB = 256  # the head is a matmul (timed apart); a small one keeps set-up cheap


@dataclass(frozen=True)
class LayerPoint:
    model: str
    layers: int
    q: int
    rest_s: float  # median seconds of one forward outside its weight matmuls


def _timed_decoder_class():
    from bmc_model.runtime.decoder import Decoder

    class MatmulTimed(Decoder):
        """The runtime decoder with its weight matmuls' seconds added up in mm_s."""

        mm_s = 0.0

        def _linear(self, x: torch.Tensor, w: torch.Tensor,  # type: ignore[override]
                    b: torch.Tensor | None = None) -> torch.Tensor:
            t0 = time.perf_counter()
            y = F.linear(x, w, b)
            self.mm_s += time.perf_counter() - t0
            return y

    return MatmulTimed


def layer_points(specs: tuple[ModelSpec, ...], rounds: int, dtype: torch.dtype, elem: int, stream_bytes: int,
                 max_bytes: int, rng: np.random.Generator, step: Callable[[], None] = lambda: None,
                 q_rows: tuple[int, ...] = Q_ROWS, steps: int = STEPS) -> list[LayerPoint]:
    """Median non-matmul seconds per forward for every geometry and q in Q_ROWS (CPU only: timing each
    matmul on a GPU would need a synchronize around it). Geometries whose layers exceed max_bytes are left
    out. Rounds visit the (geometry, q) pairs in a new random order each."""
    from bmc_model.runtime.decoder import random_weights

    timed = _timed_decoder_class()
    decs = []
    for s in specs:
        n = layers_for(s, elem, stream_bytes)
        if n * s.layer_params() * elem > max_bytes:
            continue
        small = dataclasses.replace(s, vocab=VOCAB, layers=n)
        decs.append(timed(small, random_weights(small, dtype=dtype, tiled=True), dtype=dtype))
    cases = [(d, q) for d in decs for q in q_rows]
    samples: dict[tuple[str, int], list[float]] = {(d.spec.name, q): [] for d, q in cases}
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        caches = {}
        for d in decs:
            cache = d.new_cache(NAMED["reserve"], batch=1, max_len=PROMPT + max(q_rows))
            d.prefill(torch.randint(0, VOCAB, (1, PROMPT), generator=gen), cache, last_only=True)
            caches[d.spec.name] = cache
        for _ in range(rounds):
            for i in rng.permutation(len(cases)):
                d, q = cases[int(i)]
                cache = caches[d.spec.name]
                rest = []
                for k in range(steps + 1):  # the first forward of a visit warms its shapes: dropped
                    tok = torch.randint(0, VOCAB, (1, q), generator=gen)
                    d.mm_s = 0.0
                    t0 = time.perf_counter()
                    d.forward(tok, cache)
                    t = time.perf_counter() - t0
                    cache.rollback(q)
                    if k:
                        rest.append(t - d.mm_s)
                samples[(d.spec.name, q)].append(statistics.median(rest))
                step()
    return [LayerPoint(d.spec.name, d.spec.layers, q, statistics.median(samples[(d.spec.name, q)]))
            for d, q in cases]
