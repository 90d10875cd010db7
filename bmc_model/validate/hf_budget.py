"""How long a `validate --hf` case will take, from the cost model's own per-token predictions, so the progress
line can say so before minutes of measuring start.

A case is `reps` lockstep repetitions of every cache (each decodes new_tokens tokens: their times add up, as
the caches take turns), then `memory_reps` fresh-process memory probes of each probed cache, each paying a
process start (import torch and transformers, build the model, a warm-up run) before its decode.
"""

from __future__ import annotations

from collections.abc import Iterable

PROBE_START_S = 7.0  # a memory probe's start-up (imports 2.2 s, model, warm-up): 6-7 s for SmolLM2 on a 2-core host


def case_seconds(ms_per_token: dict[str, float], new_tokens: int, reps: int, probed: Iterable[str] = (),
                 memory_reps: int = 0, probe_start_s: float = PROBE_START_S) -> float:
    """Estimated wall seconds of one case: ms_per_token is each cache's predicted ms per decode step; probed
    names the caches that get memory probes."""
    run_s = {k: new_tokens * ms / 1000.0 for k, ms in ms_per_token.items()}
    timed = reps * sum(run_s.values())
    memory = memory_reps * sum(run_s[k] + probe_start_s for k in probed)
    return timed + memory


def remaining_seconds(rep_s: float, reps_left: int, probed_ms_per_token: dict[str, float], new_tokens: int,
                      memory_reps: int, probe_start_s: float = PROBE_START_S) -> float:
    """What is left of a case after a repetition that took rep_s: the repetitions to come at that pace, then
    the memory probes of the caches in probed_ms_per_token (their measured ms per token)."""
    memory = case_seconds(probed_ms_per_token, new_tokens, 0, probed_ms_per_token, memory_reps, probe_start_s)
    return reps_left * rep_s + memory


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"
