"""Greedy decoding with per-step timing.

Step i (i = 0..new_tokens-1) feeds token x[P+i] at cache length n = P+i, writes row n and yields
x[P+i+1]; x[P] comes from the prefill. So the timed steps are exactly the cost model's steps at
lengths P..N-1 with N = P + new_tokens, and the cache ends holding N rows.

Warm-up: before the measured run, `warmup` decode steps run on a small throwaway cache of the same
policy (16-row prompt). It spins up the thread pool, the allocator and the kernels' per-shape
set-up (the GEMV shapes are those of the measured steps); it is not timed and it leaves the
measured run's cache untouched, so every measured step keeps its real growth cost.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from bmc_model.core.errors import BMCError
from bmc_model.core.policy import Policy
from bmc_model.runtime.cache import CacheStats, KVCache
from bmc_model.runtime.decoder import Decoder


@dataclass
class DecodeResult:
    tokens: torch.Tensor  # [batch, new_tokens]: x[P+1..N], the outputs of the timed steps
    first_token: torch.Tensor  # [batch]: x[P], from the prefill (random when synthetic)
    step_s: list[float]  # seconds per decode step (forward + argmax), len new_tokens
    total_s: float  # seconds of the timed steps, summed (other runs' steps between them excluded)
    prefill_s: float
    synthetic_prompt: bool  # True: the prompt's K/V rows were random, not computed by a prefill
    prompt_len: int
    batch: int
    cache_stats: CacheStats
    final_capacity: int
    logits: torch.Tensor | None = None  # [batch, new_tokens, vocab] when keep_logits

    @property
    def ms_per_token(self) -> float:
        """Mean ms per decode step (per step of `batch` sequences, as the cost model counts)."""
        return 1e3 * sum(self.step_s) / max(1, len(self.step_s))

    @property
    def all_tokens(self) -> torch.Tensor:
        """[batch, new_tokens + 1]: x[P..N]."""
        return torch.cat([self.first_token[:, None], self.tokens], dim=1)


def set_threads(n: int | None) -> int:
    """Set torch's intra-op threads (None: leave as is); returns the number in use."""
    if n is not None:
        if n < 1:
            raise BMCError(f"threads must be a positive integer, got {n}")
        torch.set_num_threads(n)
    return torch.get_num_threads()


def prompt_ids(prompt: int | torch.Tensor, *, batch: int, vocab: int, synth_prompt: bool,
               gen: torch.Generator) -> tuple[torch.Tensor | None, int]:
    """(token ids [batch, P], or None when the prompt's K/V rows are synthesized; P) from a length P or
    ids [P] (every sequence the same) / [batch, P]. A length draws random ids from gen."""
    if isinstance(prompt, torch.Tensor):
        ids = prompt.reshape(1, -1).expand(batch, -1) if prompt.dim() == 1 else prompt
        if ids.dim() != 2 or ids.shape[0] != batch or ids.shape[1] < 1:
            raise BMCError(f"prompt tokens must be [P] or [batch={batch}, P], got {list(prompt.shape)}")
        if synth_prompt:
            raise BMCError("synth_prompt needs a prompt length, not token ids")
        if int(ids.min()) < 0 or int(ids.max()) >= vocab:
            raise BMCError(f"prompt token ids must be in 0..{vocab - 1}")
        return ids, int(ids.shape[1])
    plen = int(prompt)
    if plen < 1:
        raise BMCError(f"prompt must be >= 1, got {plen}")
    return (None if synth_prompt else torch.randint(0, vocab, (batch, plen), generator=gen)), plen


def write_synthetic_prompt(cache: KVCache, prompt: int, generator: torch.Generator) -> None:
    """Write `prompt` random K/V rows [batch, kv_heads, prompt, head_dim] into every layer (timing only)."""
    shape = (cache.batch, cache.kv_heads, prompt, cache.head_dim)
    for layer in range(cache.layers):
        k = torch.randn(shape, generator=generator).to(cache.dtype).to(cache.device)
        v = torch.randn(shape, generator=generator).to(cache.dtype).to(cache.device)
        cache.update(layer, k, v)
    cache.advance()


class DecodeRun:
    """One greedy decode, a timed step at a time: decode_run drives one alone, interleave.run_interleaved
    several side by side. Set-up (validation, warm-up, cache, prefill) happens here, untimed."""

    def __init__(self, decoder: Decoder, policy: Policy, *, prompt: int | torch.Tensor, new_tokens: int,
                 batch: int = 1, synth_prompt: bool = False, seed: int = 0, warmup: int = 2,
                 max_len: int | None = None, keep_logits: bool = False) -> None:
        vocab = decoder.spec.vocab
        gen = torch.Generator().manual_seed(seed)
        if new_tokens < 1 or batch < 1:
            raise BMCError(f"need new_tokens >= 1 and batch >= 1 (got {new_tokens}, {batch})")
        ids, plen = prompt_ids(prompt, batch=batch, vocab=vocab, synth_prompt=synth_prompt, gen=gen)
        max_len = plen + new_tokens if max_len is None else max_len
        if max_len < plen + new_tokens:
            raise BMCError(f"max_len {max_len} < prompt {plen} + new_tokens {new_tokens}")

        self.decoder, self.new_tokens, self.batch, self.prompt_len = decoder, new_tokens, batch, plen
        dev = decoder.device
        self._sync = torch.cuda.synchronize if dev.type == "cuda" else _no_sync  # time finished work only
        if ids is not None:
            ids = ids.to(dev)
        if warmup > 0:
            _warm_up(decoder, policy, batch, warmup)
        with torch.inference_mode():
            self.cache = decoder.new_cache(policy, batch=batch, max_len=max_len)
            t0 = time.perf_counter()
            if ids is None:
                write_synthetic_prompt(self.cache, plen, gen)
                tok = torch.randint(0, vocab, (batch,), generator=gen).to(dev)
            else:
                tok = decoder.prefill(ids, self.cache, last_only=True)[:, -1].argmax(-1)  # [b]
            self._sync()
            self.prefill_s = time.perf_counter() - t0
        self.synthetic_prompt = ids is None
        self.first, self._tok = tok, tok
        self.out = torch.empty((batch, new_tokens), dtype=torch.long)
        self.logits = torch.empty((batch, new_tokens, vocab), dtype=torch.float32) if keep_logits else None
        self.step_s: list[float] = []

    @property
    def progress(self) -> float:
        """Share of the tokens produced so far."""
        return len(self.step_s) / self.new_tokens

    def step(self) -> bool:
        """One timed decode step; False once every token is out."""
        i = len(self.step_s)
        if i >= self.new_tokens:
            return False
        with torch.inference_mode():
            t = time.perf_counter()
            logits = self.decoder.forward(self._tok[:, None], self.cache)[:, -1]  # [b, vocab]
            self._tok = logits.argmax(-1)
            self._sync()
            self.step_s.append(time.perf_counter() - t)
            self.out[:, i] = self._tok
            if self.logits is not None:
                self.logits[:, i] = logits.float()
        return i + 1 < self.new_tokens

    def result(self) -> DecodeResult:
        return DecodeResult(tokens=self.out, first_token=self.first.cpu(), step_s=self.step_s,
                            total_s=sum(self.step_s), prefill_s=self.prefill_s, synthetic_prompt=self.synthetic_prompt,
                            prompt_len=self.prompt_len, batch=self.batch, cache_stats=self.cache.stats,
                            final_capacity=self.cache.capacity, logits=self.logits)


def decode_run(decoder: Decoder, policy: Policy, *, prompt: int | torch.Tensor, new_tokens: int, batch: int = 1,
               synth_prompt: bool = False, seed: int = 0, warmup: int = 2, max_len: int | None = None,
               keep_logits: bool = False) -> DecodeResult:
    """Prefill (or synthesize) a prompt, then greedy-decode new_tokens steps, timing each step.

    prompt: a length (random tokens from `seed`) or token ids [P] / [batch, P].
    max_len: the cache's maximum length, default P + new_tokens (add gamma rows for SD).
    """
    run = DecodeRun(decoder, policy, prompt=prompt, new_tokens=new_tokens, batch=batch, synth_prompt=synth_prompt,
                    seed=seed, warmup=warmup, max_len=max_len, keep_logits=keep_logits)
    with gc_paused():
        while run.step():
            pass
    return run.result()


@contextmanager
def gc_paused() -> Iterator[None]:
    """No collector pauses inside timed steps (tensors are freed by refcount anyway)."""
    gc.collect()
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _no_sync() -> None:
    pass


def _warm_up(decoder: Decoder, policy: Policy, batch: int, steps: int) -> None:
    plen = 16
    with torch.inference_mode():
        cache = decoder.new_cache(policy, batch=batch, max_len=plen + steps)
        ids = torch.zeros((batch, plen), dtype=torch.long, device=decoder.device)
        tok = decoder.prefill(ids, cache, last_only=True)[:, -1].argmax(-1)
        for _ in range(steps):
            tok = decoder.forward(tok[:, None], cache)[:, -1].argmax(-1)
