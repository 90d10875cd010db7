"""Per-token timestamps from a transformers generate() streamer: how calibration and validate time HF decoding."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from transformers.generation.streamers import BaseStreamer


class TokenClock(BaseStreamer):
    """Records perf_counter() at each generated token. generate() first puts the prompt (ignored); the first
    generated token comes out of the prefill, so decode time is measured from it: prefill is excluded."""

    def __init__(self, on_first_token: Callable[[], None] | None = None) -> None:
        self.times: list[float] = []
        self.seen_prompt = False
        self.on_first_token = on_first_token

    def put(self, value: Any) -> None:
        if not self.seen_prompt:
            self.seen_prompt = True
            return
        self.times.append(time.perf_counter())
        if len(self.times) == 1 and self.on_first_token is not None:
            self.on_first_token()

    def end(self) -> None:
        pass

    def decode_ms_per_token(self) -> float:
        """Mean wall ms per decode step (the whole batch advances one token per step)."""
        if len(self.times) < 2:
            return float("nan")
        return (self.times[-1] - self.times[0]) * 1000.0 / (len(self.times) - 1)
