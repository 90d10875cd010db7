"""One measured generate() run (its per-token clock: calibrate/token_clock.py; resident-memory probes: rss.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from bmc_model.calibrate.token_clock import TokenClock
from bmc_model.core.errors import BMCError
from bmc_model.core.policy import Policy
from bmc_model.validate.workloads import make_cache, make_inputs, prefill_synthetic


def run_generate(model: Any, kind: str, policy: Policy | None, seq: int, prompt: int, batch: int,
                 new_tokens: int, prefill: str = "synthetic", seed: int = 0,
                 on_first_token: Callable[[], None] | None = None, trim: bool = False,
                 streamer: Any = None) -> tuple[Any, Any, torch.Tensor]:
    """One generate() of `new_tokens` tokens after a `prompt`-token prefill, with a fresh cache of `kind`.

    Returns the clock (a TokenClock, or `streamer` when given: lockstep.StepClock), the cache (for its byte
    count) and the generated ids [batch, new_tokens]. Greedy, EOS suppressed (min_new_tokens), so every cache
    runs exactly the same number of steps.
    """
    if prompt < 1 or prompt + new_tokens > seq:
        raise BMCError(f"prompt {prompt} + {new_tokens} new tokens must fit in seq {seq}")
    ids = make_inputs(model, prompt, batch, seed)  # [batch, prompt]
    cache = make_cache(kind, model, seq, policy, trim)
    if prefill == "synthetic":
        # rows for all but the last prompt token: generate() then runs a one-token "prefill" over the cache
        prefill_synthetic(cache, model, prompt - 1, batch, seed)
    clock = streamer if streamer is not None else TokenClock(on_first_token)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), cache=cache, max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, streamer=clock,
                         pad_token_id=model.config.pad_token_id or 0)
    return clock, cache, out[:, ids.shape[1]:]
