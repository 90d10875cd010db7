"""Greedy speculative decoding on the KVCache's spare rows, with per-iteration timing.

One iteration at target cache length n, pending token x[n] (known, not yet written):
    drafts d_1..d_g = drafter.propose(...)                      g <= gamma
    logits = target.forward([x[n], d_1..d_g])                   q = g + 1 rows at positions n..n+g,
                                                                written in place into spare rows
    y_i = argmax logits row i (the target's token for x[n+1+i])
    k = longest prefix with d_{i+1} == y_i;  keep d_1..d_k and the bonus y_k
    cache.rollback(g - k)                                       rejected rows: a pointer move
The cache grows only when fewer than q spare rows remain (KVCache's policy rule), so with BMC's
spare rows the verify pass writes in place and a rejection costs nothing.

Step-for-step the same code path as generate.decode_run (same prompt tokens or synthetic K/V
rows from `seed`, same prefill), so the tokens equal a plain greedy run's, except where the q-row
verify and the 1-row step round a near-tie differently.

Cache length: the last iteration may write gamma rows past the N - 1 that plain decoding reaches,
so the caches are sized P + new_tokens + gamma (the cost model's cap = N + gamma). gamma stays
constant to the end (as the cost model assumes); tokens produced past new_tokens are dropped.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from bmc_model.core.errors import BMCError
from bmc_model.core.policy import Policy
from bmc_model.runtime.cache import CacheStats
from bmc_model.runtime.decoder import Decoder
from bmc_model.runtime.drafters import Drafter
from bmc_model.runtime.generate import gc_paused, prompt_ids, write_synthetic_prompt

ALPHA_MAX = 0.999  # the cost model needs acceptance < 1: measured 1.0 (every draft taken) is clipped to this


@dataclass
class SDStats:
    """Acceptance accounting over one run (the last, overshooting iteration included).

    Position i (1-based) is *reached* in an iteration when drafts 1..i-1 were all accepted;
    acceptance_i = accepted_i / reached_i = P(draft i accepted | drafts < i accepted). A position
    reached without a proposal (a drafter that proposed fewer than gamma) counts as rejected.
    With these rates the cost model's E = 1 + sum_k prod_{i<=k} a_i equals tokens / iterations
    exactly (reached_{i+1} = accepted_i, so the products telescope).
    """

    gamma: int
    iterations: int = 0
    tokens: int = 0  # accepted drafts + bonus tokens
    reached: list[int] = field(default_factory=list)  # [gamma]
    accepted: list[int] = field(default_factory=list)  # [gamma]
    proposed: list[int] = field(default_factory=list)  # [gamma]: reached with a draft there

    def __post_init__(self) -> None:
        for name in ("reached", "accepted", "proposed"):
            if not getattr(self, name):
                setattr(self, name, [0] * self.gamma)

    def record(self, proposed: int, k: int) -> None:
        """One iteration: `proposed` drafts verified, the first k accepted."""
        self.iterations += 1
        self.tokens += k + 1
        for i in range(min(k + 1, self.gamma)):  # positions 1..k+1 reached (k+1 only if it exists)
            self.reached[i] += 1
            if i < proposed:
                self.proposed[i] += 1
            if i < k:
                self.accepted[i] += 1

    def per_position(self) -> list[float | None]:
        """Conditional acceptance per draft position; None where a position was never reached."""
        return [a / r if r else None for a, r in zip(self.accepted, self.reached)]

    def alpha_list(self, smooth: bool = False) -> list[float]:
        """Per-position rates for the cost model, clipped to [0, ALPHA_MAX]. A position never
        reached (every earlier draft rejected somewhere) takes the previous position's rate: its
        value cannot change E at this gamma, and carrying the last rate forward is what the cost
        model does past the list's end when the tuner tries a larger gamma.

        smooth: Laplace estimates (accepted + 1) / (reached + 2) instead of the raw ratios, for
        choosing gamma from a short probe: the deepest positions are reached only a few times and a
        raw 3/3 = 1.0 there, carried forward, would make every larger gamma look free. The raw
        rates (smooth=False) are what reproduce the measured advance E exactly.
        """
        out: list[float] = []
        for a, r in zip(self.accepted, self.reached):
            if r == 0:
                out.append(out[-1] if out else 0.0)
            else:
                out.append(min(ALPHA_MAX, (a + 1) / (r + 2) if smooth else a / r))
        return out

    @property
    def overall(self) -> float:
        """Accepted drafts / draft slots (gamma per iteration)."""
        slots = self.iterations * self.gamma
        return sum(self.accepted) / slots if slots else math.nan

    @property
    def advance(self) -> float:
        """Tokens kept per target pass (E, bonus included)."""
        return self.tokens / self.iterations if self.iterations else math.nan

    @property
    def alpha_equivalent(self) -> float:
        """The scalar alpha whose Leviathan advance (1 - alpha^(gamma+1)) / (1 - alpha) equals the
        measured advance at this gamma (bisection; the sum is increasing in alpha)."""
        e = self.advance
        if math.isnan(e):
            return math.nan
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if sum(mid ** i for i in range(self.gamma + 1)) < e:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    def to_dict(self) -> dict:
        return {"gamma": self.gamma, "iterations": self.iterations, "tokens": self.tokens,
                "overall": self.overall, "per_position": self.per_position(), "advance": self.advance,
                "alpha_equivalent": self.alpha_equivalent,
                "reached": list(self.reached), "accepted": list(self.accepted), "proposed": list(self.proposed)}


@dataclass
class SDResult:
    tokens: torch.Tensor  # [1, new_tokens]: x[P+1..N], as DecodeResult.tokens
    first_token: torch.Tensor  # [1]: x[P] from the prefill
    iter_s: list[float]  # seconds per iteration (draft + verify + accept + rollback)
    accepted_per_iter: list[int]  # k per iteration
    total_s: float  # seconds of the timed iterations, summed
    prefill_s: float
    gamma: int
    new_tokens: int
    prompt_len: int
    synthetic_prompt: bool
    stats: SDStats
    cache_stats: CacheStats
    final_capacity: int
    drafter: str
    draft_cache_stats: CacheStats | None = None
    logits: torch.Tensor | None = None  # [1, new_tokens, vocab] when keep_logits

    @property
    def ms_per_token(self) -> float:
        """ms of the timed iterations per token delivered (overshoot tokens not counted)."""
        return 1e3 * self.total_s / self.new_tokens

    @property
    def growth_events(self) -> int:
        return self.cache_stats.growth_events

    @property
    def all_tokens(self) -> torch.Tensor:
        """[1, new_tokens + 1]: x[P..N]."""
        return torch.cat([self.first_token[:, None], self.tokens], dim=1)

    def to_dict(self) -> dict:
        d = {"gamma": self.gamma, "new_tokens": self.new_tokens, "prompt_len": self.prompt_len,
             "ms_per_token": self.ms_per_token, "total_s": self.total_s, "prefill_s": self.prefill_s,
             "iterations": len(self.iter_s), "growth_events": self.growth_events,
             "final_capacity": self.final_capacity, "drafter": self.drafter, "acceptance": self.stats.to_dict()}
        if self.draft_cache_stats is not None:
            d["draft_growth_events"] = self.draft_cache_stats.growth_events
        return d


class SDRun:
    """One speculative decode, a timed iteration at a time (as generate.DecodeRun): speculative_decode
    drives one alone, interleave.run_interleaved several side by side. Set-up here is untimed."""

    def __init__(self, decoder: Decoder, policy: Policy, drafter: Drafter, *, gamma: int,
                 prompt: int | torch.Tensor, new_tokens: int, synth_prompt: bool = False, seed: int = 0,
                 warmup: int = 2, max_len: int | None = None, keep_logits: bool = False) -> None:
        if isinstance(gamma, bool) or not isinstance(gamma, int) or gamma < 1:
            raise BMCError(f"gamma must be a positive integer for speculative decoding, got {gamma!r}")
        if new_tokens < 1:
            raise BMCError(f"new_tokens must be >= 1, got {new_tokens}")
        vocab = decoder.spec.vocab
        check = getattr(drafter, "check_vocab", None)
        if check is not None:
            check(vocab)
        gen = torch.Generator().manual_seed(seed)  # the same draws, in the same order, as decode_run
        if isinstance(prompt, torch.Tensor) and prompt.dim() == 2 and prompt.shape[0] != 1:
            raise BMCError(f"speculative decoding takes one sequence: prompt ids [P] or [1, P], got "
                           f"{list(prompt.shape)}")
        ids, plen = prompt_ids(prompt, batch=1, vocab=vocab, synth_prompt=synth_prompt, gen=gen)
        if ids is None and drafter.needs_prompt_tokens:
            raise BMCError(f"drafter {drafter.name} needs the prompt's token ids, not a synthetic prompt")
        need = plen + new_tokens + gamma
        max_len = need if max_len is None else max_len
        if max_len < need:
            raise BMCError(f"max_len {max_len} < prompt {plen} + new_tokens {new_tokens} + gamma {gamma}")

        if warmup > 0:
            _warm_up(decoder, policy, gamma + 1, warmup)
            dw = getattr(drafter, "warmup", None)
            if dw is not None:
                dw(warmup)

        self.decoder, self.drafter, self.gamma = decoder, drafter, gamma
        self.new_tokens, self.prompt_len = new_tokens, plen
        self.stats = SDStats(gamma)
        with torch.inference_mode():
            self.cache = decoder.new_cache(policy, batch=1, max_len=max_len)
            t0 = time.perf_counter()
            if ids is None:
                write_synthetic_prompt(self.cache, plen, gen)
                first = torch.randint(0, vocab, (1,), generator=gen)
            else:
                first = decoder.prefill(ids, self.cache, last_only=True)[:, -1].argmax(-1).cpu()  # [1]
            self.prefill_s = time.perf_counter() - t0
        self.synthetic_prompt = ids is None
        self.first = first
        self.history = ([] if ids is None else ids[0].tolist()) + [int(first)]
        self.offset = plen + 1 - len(self.history)  # absolute position of history[0]
        drafter.start(self.history, plen, max_len=max_len, policy=policy)
        self.out: list[int] = []
        self.kept_logits: list[torch.Tensor] | None = [] if keep_logits else None
        self.iter_s: list[float] = []
        self.ks: list[int] = []

    @property
    def progress(self) -> float:
        """Share of the tokens produced so far."""
        return min(1.0, len(self.out) / self.new_tokens)

    def step(self) -> bool:
        """One timed iteration (draft, verify, accept, roll back); False once every token is out."""
        if len(self.out) >= self.new_tokens:
            return False
        cache, history = self.cache, self.history
        with torch.inference_mode():
            t = time.perf_counter()
            n = cache.length  # == offset + len(history) - 1: history[-1] is x[n]
            drafts = self.drafter.propose(history, n, self.gamma)[:self.gamma]
            logits = self.decoder.forward(torch.tensor([[history[-1], *drafts]]), cache)  # [1, q, vocab]
            y = logits[0].argmax(-1).tolist()  # [q]: the target's x[n+1 .. n+q]
            k = 0
            while k < len(drafts) and drafts[k] == y[k]:
                k += 1
            new = y[:k + 1]  # accepted drafts (equal to y) + the bonus token
            cache.rollback(len(drafts) - k)
            history.extend(new)
            self.drafter.commit(cache.length)
            self.iter_s.append(time.perf_counter() - t)
        self.out.extend(new)
        self.ks.append(k)
        self.stats.record(len(drafts), k)
        if self.kept_logits is not None:
            self.kept_logits.append(logits[0, :k + 1].float())
        assert cache.length == self.offset + len(history) - 1
        return len(self.out) < self.new_tokens

    def result(self) -> SDResult:
        dstats = getattr(self.drafter, "cache_stats", None)
        lg = torch.cat(self.kept_logits)[None, :self.new_tokens] if self.kept_logits is not None else None
        return SDResult(tokens=torch.tensor([self.out[:self.new_tokens]]), first_token=self.first, iter_s=self.iter_s,
                        accepted_per_iter=self.ks, total_s=sum(self.iter_s), prefill_s=self.prefill_s,
                        gamma=self.gamma, new_tokens=self.new_tokens, prompt_len=self.prompt_len,
                        synthetic_prompt=self.synthetic_prompt, stats=self.stats, cache_stats=self.cache.stats,
                        final_capacity=self.cache.capacity, drafter=self.drafter.name, draft_cache_stats=dstats,
                        logits=lg)


def speculative_decode(decoder: Decoder, policy: Policy, drafter: Drafter, *, gamma: int,
                       prompt: int | torch.Tensor, new_tokens: int, synth_prompt: bool = False, seed: int = 0,
                       warmup: int = 2, max_len: int | None = None, keep_logits: bool = False) -> SDResult:
    """Greedy SD of new_tokens tokens after a prompt (a length: random tokens from `seed`, or ids
    [P] / [1, P]); batch 1. Timed like decode_run: the iterations only, gc off, prefill apart."""
    run = SDRun(decoder, policy, drafter, gamma=gamma, prompt=prompt, new_tokens=new_tokens,
                synth_prompt=synth_prompt, seed=seed, warmup=warmup, max_len=max_len, keep_logits=keep_logits)
    with gc_paused():
        while run.step():
            pass
    return run.result()


def _warm_up(decoder: Decoder, policy: Policy, q: int, steps: int) -> None:
    """Untimed verify passes of q rows and single steps on a throwaway cache of the same policy."""
    plen = 16
    with torch.inference_mode():
        cache = decoder.new_cache(policy, batch=1, max_len=plen + steps * (q + 1))
        decoder.prefill(torch.zeros((1, plen), dtype=torch.long), cache, last_only=True)
        for _ in range(steps):
            decoder.forward(torch.zeros((1, q), dtype=torch.long), cache)
            cache.rollback(q - 1)
            decoder.forward(torch.zeros((1, 1), dtype=torch.long), cache)
