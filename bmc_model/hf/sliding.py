"""One sliding-window decoder layer's KV cache (Mistral's sliding_window, Gemma-3's sliding layers), by the rule
of bmc_model.core.sliding, returning exactly what transformers' DynamicSlidingWindowLayer returns.

HF's layer keeps the last S - 1 rows and, each pass, concatenates the new q rows to them (a copy of the window
every token). Until a pass reaches past the window nothing is dropped, and this layer is a plain BMCLayer under
the cache's policy (so a generation that stays within the window is the full-attention one, as the cost model
prices it), unless that policy's buffer would outgrow the window's. From the first pass past the window on it
keeps the rows at [start, end) of a buffer with room behind them: a pass writes its q rows in place at `end`
and returns the view [start, end + q), the same rows in the same order as HF's concatenation, and rows that
leave the window are dropped by moving `start`. When the room runs out the kept rows are copied to the front of
a fresh buffer with room again (a growth event of BMCLayer's kind), once every r tokens instead of every token.
Those views are exact (no padded rows).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bmc_model.core.errors import BMCError
from bmc_model.core.policy import Policy
from bmc_model.core.sliding import kept_rows, sliding_policy
from bmc_model.hf.layer import BMCLayer


class BMCSlidingLayer(BMCLayer):
    is_sliding = True

    def __init__(self, policy: Policy, sliding_window: int, max_cache_len: int | None = None,
                 on_grow: Callable[[], None] | None = None, **kwargs) -> None:
        if isinstance(sliding_window, bool) or not isinstance(sliding_window, int) or sliding_window < 1:
            raise BMCError(f"sliding_window must be a positive integer, got {sliding_window!r}")
        super().__init__(policy, max_cache_len, on_grow)
        self.sliding_window = sliding_window
        self.rule = sliding_policy(policy, sliding_window)  # the buffer's rule once past the window
        self.windowed = False  # a pass has reached past the window: rows are being dropped
        self.start = self.end = 0  # the kept rows sit at [start, end) of the buffer
        self.floor = 0  # rows [floor, end) are intact since the last update: a crop can reach back to floor
        self.record_past = False  # HF's flag: keep a whole prefill until the crop that follows it (assisted)

    def __repr__(self) -> str:
        return (f"BMCSlidingLayer(window={self.sliding_window}, {self.policy.label}, length={self.length}, "
                f"capacity={self.capacity})")

    def activate_past_recording(self) -> None:
        """Assisted generation crops right after the prefill, which may reach past the window's last S - 1 rows:
        keep every prefill row until then (as HF's sliding layer does)."""
        self.record_past = True

    def _within(self, q: int) -> bool:
        """No row has left the window before this pass of q rows (and a first pass fits in it), and the buffer
        stays no larger than the window's would be: the plain BMCLayer rule applies. (Preallocated growth,
        static or reserve, to a max_cache_len past the window goes windowed at once.)"""
        n, keep = self.length, self.sliding_window - 1
        if self.windowed or n > keep or (n == 0 and q > keep):
            return False
        return self.capacity_after(q) <= keep + max(self.rule.r, q)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the q new rows; return the kept rows and them, [batch, kv_heads, min(n, S - 1) + q, head_dim]
        (wider, masked, while within the window under a padded width)."""
        q = key_states.shape[-2]
        if self._within(q):
            keys, values = super().update(key_states, value_states)
            self.floor, self.end = 0, self.length
            self.start = self.end - kept_rows(self.length, self.sliding_window)
            return keys, values
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = self.length
        if n + q > self.cap:
            raise BMCError(f"writing {q} rows at length {n} exceeds BMCCache max_cache_len={self.cap}")
        self.windowed, self.length = True, n + q
        if self.capacity == 0:
            return self._prefill(key_states, value_states)
        kept = self.end - self.start
        if self.end + q > self.capacity:  # no room: the kept rows move to the front of a fresh buffer
            room = self.rule.grown_capacity(n, q, self.capacity, self.cap) - n
            self._grow(kept + room, kept, q, src=self.start, exact=True)
            self.start, self.end = 0, kept
        self.keys[:, :, self.end:self.end + q].copy_(key_states)
        self.values[:, :, self.end:self.end + q].copy_(value_states)
        self.floor, self.end = self.start, self.end + q
        keys, values = self.keys[:, :, self.floor:self.end], self.values[:, :, self.floor:self.end]
        self.start = self.end - kept_rows(self.length, self.sliding_window)
        return keys, values

    def _prefill(self, key_states: torch.Tensor, value_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A first pass longer than the window attends over all its rows (returned as given); the buffer keeps
        the window's last S - 1 of them (all of them while recording) and the rule's room."""
        q = key_states.shape[-2]
        hold = q if self.record_past else kept_rows(q, self.sliding_window)
        self._grow(hold + self.rule.initial_capacity(q, self.cap) - q, 0, q, exact=True)
        self.keys[:, :, :hold].copy_(key_states[:, :, q - hold:])
        self.values[:, :, :hold].copy_(value_states[:, :, q - hold:])
        self.floor, self.end = 0, hold
        self.start = hold - kept_rows(q, self.sliding_window)
        return key_states, value_states

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """(kv_length, kv_offset) of the next update's views: as DynamicSlidingWindowLayer reports them, the kept
        rows plus the query's, from position max(n - S + 1, 0); BMCLayer's while within the window."""
        if self._within(query_length):
            return super().get_mask_sizes(query_length)
        n = self.length
        return kept_rows(n, self.sliding_window) + query_length, max(n - self.sliding_window + 1, 0)

    def get_max_length(self) -> int:
        return self.sliding_window

    def live_rows(self) -> int:
        """The kept rows end at `end`; rows before `start` may still be cropped back to (down to `floor`)."""
        return self.end

    def reset(self) -> None:
        super().reset()
        self.start = self.end = self.floor = 0
        self.windowed = False

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last -tokens_to_remove rows (transformers 5.x: a negative count): the window moves back,
        which needs the rows before it still held (always so for the rows of the last update)."""
        if tokens_to_remove > 0:
            raise BMCError(f"crop({tokens_to_remove}): pass a negative count of tokens to remove (transformers 5.x)")
        k = -tokens_to_remove
        if k > self.length:
            raise BMCError(f"crop({tokens_to_remove}): the cache holds only {self.length} tokens")
        end = self.end - k
        start = end - kept_rows(self.length - k, self.sliding_window)
        if start < self.floor:
            raise BMCError(f"crop({tokens_to_remove}): this sliding layer no longer holds the rows the window "
                           f"would move back to (it keeps the last {self.sliding_window - 1} and the last update's)")
        self.length, self.start, self.end = self.length - k, start, end
