"""Drafters for greedy speculative decoding: prompt lookup, a draft model, a synthetic oracle.

Protocol (see speculative.speculative_decode). `history` is the list of tokens known so far, the
last one being the pending token x[pos] (sampled but not yet written to the target's cache,
whose length is pos); with a real prompt history[i] = x[i], with a synthetic prompt (random K/V
rows, no token ids) history starts at x[P]. Only confirmed tokens ever enter `history`.

    drafter.start(history, pos, max_len=..., policy=...)   # once, after the target's prefill
    drafts = drafter.propose(history, pos, gamma)          # <= gamma guesses for x[pos+1 ..]
    drafter.commit(pos)                                    # after verification: x[0..pos] confirmed

Which drafter is fair where:
- PromptLookup costs a dict lookup per iteration (the cost model's draft=None, draft_cost=None).
- DraftModel is a real second model with its own KVCache and policy (the model's draft=spec).
- OracleDrafter is SYNTHETIC: it proposes the target's own greedy continuation, taken from a
  plain reference run, each draft corrupted with probability 1 - alpha_i. It gives a controlled
  acceptance at no drafting cost on random weights; it measures the verify / growth / rollback
  mechanics, not how well any real drafter predicts text.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal, Protocol

import torch

from bmc_model.core.errors import BMCError
from bmc_model.core.policy import NAMED, Policy
from bmc_model.runtime.cache import CacheStats, KVCache
from bmc_model.runtime.decoder import Decoder

Fallback = Literal["repeat", "none"]


class Drafter(Protocol):
    name: str
    needs_prompt_tokens: bool  # False: works with a synthetic prompt (no token ids)

    def start(self, history: list[int], pos: int, *, max_len: int, policy: Policy) -> None: ...

    def propose(self, history: list[int], pos: int, gamma: int) -> list[int]: ...

    def commit(self, pos: int) -> None: ...


class PromptLookup:
    """N-gram drafting over the context (no model), as HF `prompt_lookup_num_tokens`.

    The trailing n-gram (n = max_ngram down to min_ngram) is looked up among the earlier
    positions of the context; the tokens that followed its most recent earlier occurrence are
    the drafts (HF takes the earliest occurrence; the most recent one follows local repetition,
    which is what code and structured text show). The index is a dict per n, updated with the
    confirmed tokens only, so one lookup is O(max_ngram) whatever the context length.

    fallback, when the match yields fewer than gamma tokens (or nothing matched):
    - "repeat" (default): pad with the last drafted (or the pending) token. The verify pass then
      always has q = gamma + 1 rows, as the cost model assumes; the padding is an honest draft
      (accepted when the target repeats the token) and its acceptance is measured like any other.
    - "none": propose only what matched (possibly nothing: the iteration is then a plain decode
      step). Cheaper iterations without a match, but q varies, which the cost model does not
      describe; missing drafts count as rejected in the acceptance statistics.
    """

    needs_prompt_tokens = False

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1, fallback: Fallback = "repeat") -> None:
        if not 1 <= min_ngram <= max_ngram:
            raise BMCError(f"prompt lookup needs 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        if fallback not in ("repeat", "none"):
            raise BMCError(f"prompt lookup fallback must be 'repeat' or 'none', got {fallback!r}")
        self.max_ngram, self.min_ngram, self.fallback = max_ngram, min_ngram, fallback
        self.name = f"prompt-lookup(n={max_ngram}..{min_ngram}, fallback={fallback})"
        self._index: dict[int, dict[tuple[int, ...], int]] = {}
        self._indexed = 0
        self.matches = 0  # iterations with an n-gram match (for reports)
        self.lookups = 0

    def start(self, history: list[int], pos: int, *, max_len: int, policy: Policy) -> None:
        self._index = {n: {} for n in range(self.min_ngram, self.max_ngram + 1)}
        self._indexed = 0
        self.matches = self.lookups = 0

    def _index_until(self, history: list[int], end: int) -> None:
        """Record every n-gram ending at positions < end (its last position, latest wins)."""
        for j in range(self._indexed, end):
            for n, table in self._index.items():
                if j + 1 >= n:
                    table[tuple(history[j + 1 - n:j + 1])] = j
        self._indexed = max(self._indexed, end)

    def propose(self, history: list[int], pos: int, gamma: int) -> list[int]:
        length = len(history)
        self._index_until(history, length - 1)  # all but the trailing position: earlier occurrences only
        self.lookups += 1
        drafts: list[int] = []
        for n in range(min(self.max_ngram, length - 1), self.min_ngram - 1, -1):
            j = self._index[n].get(tuple(history[length - n:]))
            if j is not None:
                drafts = history[j + 1:j + 1 + gamma]
                self.matches += 1
                break
        if self.fallback == "repeat" and len(drafts) < gamma:
            drafts = drafts + [drafts[-1] if drafts else history[-1]] * (gamma - len(drafts))
        return drafts

    def commit(self, pos: int) -> None:
        pass  # history only ever grows by confirmed tokens: the index stays valid


class DraftModel:
    """A smaller Decoder with its own KVCache that drafts gamma greedy tokens per iteration.

    Sync rule: its cache holds rows for confirmed positions only after commit(). propose() feeds
    the positions it lacks (the pending token, plus the last accepted draft when every draft was
    accepted, whose row it never wrote) in one forward, then gamma - 1 single steps; commit(pos)
    rolls its cache back to pos rows (the rejected drafts' rows) by moving the pointer.
    """

    needs_prompt_tokens = True

    def __init__(self, decoder: Decoder, policy: Policy | None = None, *, name: str | None = None) -> None:
        self.decoder = decoder
        self.policy = policy  # None: the target's policy (as predict() assumes)
        self.name = name or f"draft-model({decoder.spec.name})"
        self.cache: KVCache | None = None
        self.steps = 0  # draft forwards run (for reports)

    def check_vocab(self, target_vocab: int) -> None:
        if self.decoder.spec.vocab != target_vocab:
            raise BMCError(f"draft {self.decoder.spec.name} has vocabulary {self.decoder.spec.vocab}, "
                           f"the target has {target_vocab}: they must match")

    @property
    def cache_stats(self) -> CacheStats | None:
        return None if self.cache is None else self.cache.stats

    def start(self, history: list[int], pos: int, *, max_len: int, policy: Policy) -> None:
        if len(history) != pos + 1:
            raise BMCError("a draft model needs the prompt's token ids (not a synthetic prompt)")
        self.cache = self.decoder.new_cache(self.policy or policy, batch=1, max_len=max_len)
        self.steps = 0
        if pos:
            self.decoder.prefill(torch.tensor([history[:pos]]), self.cache, last_only=True)

    def propose(self, history: list[int], pos: int, gamma: int) -> list[int]:
        cache = self.cache
        assert cache is not None, "start() first"
        if gamma < 1:
            return []
        feed = history[cache.length:pos + 1]  # positions the draft cache lacks, pending token last
        tok = int(self.decoder.forward(torch.tensor([feed]), cache, last_only=True)[0, -1].argmax())
        drafts = [tok]
        for _ in range(gamma - 1):
            tok = int(self.decoder.forward(torch.tensor([[tok]]), cache)[0, -1].argmax())
            drafts.append(tok)
        self.steps += gamma
        return drafts

    def commit(self, pos: int) -> None:
        cache = self.cache
        assert cache is not None
        if cache.length > pos:
            cache.rollback(cache.length - pos)  # rows of rejected drafts (the first one is wrong at pos)

    def warmup(self, steps: int) -> None:
        """A few untimed steps on a throwaway cache (thread pool, allocator, kernel set-up)."""
        if steps <= 0:
            return
        # one buffer that never grows: the warm-up is about kernels, not about this cache's growth
        cache = self.decoder.new_cache(NAMED["reserve"], batch=1, max_len=16 + steps)
        tok = self.decoder.prefill(torch.zeros((1, 16), dtype=torch.long), cache, last_only=True)[0, -1].argmax()
        for _ in range(steps):
            tok = self.decoder.forward(tok.view(1, 1), cache)[0, -1].argmax()


class OracleDrafter:
    """SYNTHETIC acceptance: drafts are the target's own greedy tokens, corrupted at random.

    reference[j] is the target's greedy token at absolute position start + j (a plain run's
    x[P..N]). Draft i (1-based) at pending position pos is reference[pos + i - start], replaced
    by a different token with probability 1 - alpha_i, so P(draft i accepted | drafts < i
    accepted) = alpha_i as long as the speculative run reproduces the reference (it does: same
    greedy tokens). The random stream restarts at start(), so every run sees the same drafts.
    """

    needs_prompt_tokens = False

    def __init__(self, reference: Sequence[int], start: int, alpha: float | Sequence[float], vocab: int,
                 seed: int = 0) -> None:
        self.alpha = [float(alpha)] if isinstance(alpha, (int, float)) else [float(a) for a in alpha]
        if not self.alpha or any(not 0.0 <= a <= 1.0 for a in self.alpha):
            raise BMCError(f"oracle acceptance must be in [0, 1], got {alpha!r}")
        if not reference:
            raise BMCError("oracle drafter needs a non-empty reference continuation")
        self.reference, self.start_pos, self.vocab, self.seed = list(reference), start, vocab, seed
        self.name = f"oracle(alpha={','.join(f'{a:g}' for a in self.alpha)}, synthetic)"
        self._rng = random.Random(seed)

    def start(self, history: list[int], pos: int, *, max_len: int, policy: Policy) -> None:
        self._rng = random.Random(self.seed)

    def propose(self, history: list[int], pos: int, gamma: int) -> list[int]:
        ref, last = self.reference, len(self.reference) - 1
        drafts = []
        for i in range(1, gamma + 1):
            tok = ref[min(pos + i - self.start_pos, last)]  # past the reference: overshoot rows, any token
            if self._rng.random() >= self.alpha[min(i - 1, len(self.alpha) - 1)]:
                tok = (tok + 1) % self.vocab  # a different token: certainly rejected
            drafts.append(tok)
        return drafts

    def commit(self, pos: int) -> None:
        pass
