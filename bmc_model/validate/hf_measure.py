"""Resident-memory probes and one measured generate() run (its per-token clock: calibrate/token_clock.py)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import torch

from bmc_model.calibrate.token_clock import TokenClock
from bmc_model.core.errors import BMCError
from bmc_model.core.policy import Policy
from bmc_model.validate.workloads import make_cache, make_inputs, prefill_synthetic


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.M)
    return int(m.group(1)) * 1024 if m else 0


def peak_rss_bytes() -> int:
    """VmHWM: the process's resident high-water mark (resettable with reset_peak_rss)."""
    return _status_kb("VmHWM")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, `echo 5 > /proc/self/clear_refs`); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


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
