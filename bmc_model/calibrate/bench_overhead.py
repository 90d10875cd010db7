"""Fixed framework costs: the runtime's decode step at a tiny geometry, and SD bookkeeping.

step_s and layer_s come from the runtime's own decoder (bmc_model.runtime) decoding with the
"reserve" policy (one lazily backed buffer, exact views: no growth events) at hidden 64, 2 heads of 32, ffn 128,
vocab 256, at several layer counts: what is left of a step once weights, attention and writes are
accounted for is per-step and per-layer framework overhead (the fit is in calibrate.overhead).
The tiny geometry itself is assemble.tiny_spec.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from bmc_model.calibrate.assemble import tiny_spec
from bmc_model.calibrate.runner import Case
from bmc_model.core.policy import NAMED
from bmc_model.core.specs import ModelSpec

TINY_PROMPT = 32
WARMUP_STEPS = 2  # first steps of a run pay one-off costs (RoPE table, allocator): dropped


def _decoder(spec: ModelSpec, dtype: torch.dtype, device: str):  # -> bmc_model.runtime Decoder
    from bmc_model.runtime.decoder import Decoder, LayerWeights, Weights, random_weights

    if device == "cpu":
        return Decoder(spec, seed=0, dtype=dtype)
    w = random_weights(spec, seed=0, dtype=dtype)

    def mv(t: torch.Tensor) -> torch.Tensor:
        return t.to(device)

    layers = [LayerWeights(*(mv(getattr(lw, f)) for f in ("attn_norm", "wqkv", "wo", "mlp_norm", "w_in", "w_down")))
              for lw in w.layers]
    embed = mv(w.embed)
    head = embed if w.lm_head is w.embed else mv(w.lm_head)
    return Decoder(spec, Weights(embed, layers, mv(w.norm), head), dtype=dtype)


def _own_loop(dec, tokens: int, sync: Callable[[], None]) -> list[float]:
    """Greedy decode with per-step wall times: used where decode_run is unavailable (or on CUDA)."""
    dev = dec.w.embed.device
    cache = dec.new_cache(NAMED["reserve"], batch=1, max_len=TINY_PROMPT + tokens + 1)
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, dec.spec.vocab, (1, TINY_PROMPT), generator=gen).to(dev)
    tok = dec.prefill(prompt, cache, last_only=True)[:, -1].argmax(-1, keepdim=True)  # [1, 1]
    out = []
    for _ in range(tokens):
        sync()
        t0 = time.perf_counter()
        tok = dec.forward(tok, cache)[:, -1].argmax(-1, keepdim=True)
        sync()
        out.append(time.perf_counter() - t0)
    return out


def step_times(layers: int, tokens: int, dtype_name: str, dtype: torch.dtype, device: str) -> tuple[list[float], str]:
    """Per-step seconds of one decode run at the tiny geometry; and which loop timed it."""
    spec = tiny_spec(layers, dtype_name)
    dec = _decoder(spec, dtype, device)
    if device == "cpu":
        try:
            from bmc_model.runtime import decode_run
        except ImportError:
            decode_run = None
        if decode_run is not None:
            res = decode_run(dec, NAMED["reserve"], prompt=TINY_PROMPT, new_tokens=tokens, batch=1, synth_prompt=True)
            return [float(s) for s in res.step_s], "runtime.decode_run"
        return _own_loop(dec, tokens, lambda: None), "runtime.Decoder.forward"
    return _own_loop(dec, tokens, torch.cuda.synchronize), "runtime.Decoder.forward"


def interleaved_medians(layer_counts: tuple[int, ...], repeats: int, tokens: int,
                        times_of: Callable[[int, int], list[float]], rng: np.random.Generator,
                        step: Callable[[], None] = lambda: None) -> list[tuple[int, float]]:
    """(layers, median step seconds) per run of times_of(layers, steps); runs interleave layer counts
    in random order, and each run's first WARMUP_STEPS steps are dropped."""
    pts = []
    for _ in range(repeats):
        for i in rng.permutation(len(layer_counts)):
            L = layer_counts[int(i)]
            times = times_of(L, tokens + WARMUP_STEPS)
            pts.append((L, float(np.median(times[WARMUP_STEPS:]))))
            step()
    return pts


def overhead_points(layer_counts: tuple[int, ...], repeats: int, tokens: int, dtype_name: str, dtype: torch.dtype,
                    device: str, rng: np.random.Generator, step: Callable[[], None] = lambda: None
                    ) -> tuple[list[tuple[int, float]], str]:
    """The runtime decoder's points (interleaved_medians) and which loop timed them."""
    how = [""]

    def times_of(layers: int, steps: int) -> list[float]:
        times, how[0] = step_times(layers, steps, dtype_name, dtype, device)
        return times

    return interleaved_medians(layer_counts, repeats, tokens, times_of, rng, step), how[0]


def sd_iter_case(vocab: int, gamma: int, device: str) -> Case:
    """Greedy verification bookkeeping of one SD iteration: argmax of gamma + 1 target rows,
    compare with the draft, accepted prefix length, move the length pointer (rollback)."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn((1, gamma + 1, vocab), generator=gen).to(device)  # [batch, gamma + 1, vocab]
    target = logits.argmax(-1)
    draft = target[:, :gamma].clone()
    draft[0, gamma // 2] += 1  # a rejection midway: the usual partial acceptance
    state = {"n": 0}

    def op() -> None:
        tgt = logits.argmax(-1)  # [1, gamma + 1]
        accepted = int((tgt[:, :gamma] == draft).cumprod(-1).sum())
        kept = tgt[0, :accepted + 1].tolist()  # accepted draft tokens + the bonus token
        state["n"] += gamma + 1  # the verify pass wrote gamma + 1 rows ...
        state["n"] -= gamma - accepted  # ... roll back the rejected ones
        del kept

    return Case.simple(("sd", gamma, vocab), float(gamma), op)
