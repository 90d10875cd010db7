"""One decoder layer's KV cache that grows by the rules of a bmc_model Policy (transformers 5.x layer API).

State: K and V buffers of `capacity` rows, shape [batch, kv_heads, capacity, head_dim], of which the first
`length` rows are valid. Rows are written in place; a growth event allocates a larger buffer and copies the
valid rows (once every r tokens for fixed growth, instead of torch.cat's once every token). `update` returns a
view of the first `width` rows, where width = Policy.width_rows(n, q, capacity): n + q (exact) or more
(padded / pad-P), and `get_mask_sizes` reports the same width so HF masks the rows past n + q.

Preallocated policies (static, reserve) allocate max_cache_len rows at the prefill and never grow. Buffers are
zero-filled only where the width reads rows past n + q (Policy.zero_filled); reserve's uninitialised buffer is
backed by the OS page by page as rows are written, so beam operations carry only the live rows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers.cache_utils import CacheLayerMixin

from bmc_model.core.errors import BMCError
from bmc_model.core.policy import Policy
from bmc_model.runtime.arena import Arena

UNBOUNDED = 1 << 62  # "no maximum length": Policy needs an integer cap


def check_cap(policy: Policy, max_cache_len: int | None) -> None:
    """Static and reserve allocate max_cache_len rows once: they cannot run without it."""
    if policy.preallocated and max_cache_len is None:
        raise BMCError(f"{policy.growth} growth allocates max_cache_len rows once: give max_cache_len")


def masked(policy: Policy) -> bool:
    """transformers builds a decode-step mask for this cache (Policy.hf_masked: the rule the cost model prices)."""
    return policy.hf_masked


class BMCLayer(CacheLayerMixin):
    is_sliding = False
    is_croppable = True  # crop only moves `length`: a rollback leaves no trace

    def __init__(self, policy: Policy, max_cache_len: int | None = None,
                 on_grow: Callable[[], None] | None = None, arena: Arena | None = None, **kwargs) -> None:
        super().__init__()
        self.arena = arena  # reserve: the cache's one allocation for every layer (runtime/arena.py)
        if not self.is_sliding:  # a sliding layer past its window follows the window's rule, which needs no cap
            check_cap(policy, max_cache_len)
        self.policy = policy
        self.max_cache_len = max_cache_len
        self.cap = max_cache_len if max_cache_len is not None else UNBOUNDED
        # HF skips the decode-step mask when the cache is not "compileable" and q == 1 (then SDPA would read
        # every returned row). Any width wider than n + q needs that mask, exactly as StaticLayer does; so does
        # reserve, for transformers' faster masked path for grouped K/V (docs/results.md#transformers-attention-paths)
        self.is_compileable = masked(policy)
        self.length = 0  # valid rows n: get_seq_length is this counter, never a scan of the buffer
        self.capacity = 0  # rows allocated C (0: nothing allocated yet)
        self.grow_events = 0
        self.peak_bytes = 0  # largest K+V bytes held at once by this layer, transient double buffer included
        self.on_grow = on_grow  # called after each growth event on the CPU (BMCCache's heap trim)

    def __repr__(self) -> str:
        return f"BMCLayer({self.policy.label}, length={self.length}, capacity={self.capacity})"

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.batch_size, self.num_heads = key_states.shape[:2]
        # Zero-row buffers: the first update allocates the post-prefill capacity (also serves early_initialization).
        self.keys = key_states.new_empty((*key_states.shape[:2], 0, key_states.shape[-1]))
        self.values = value_states.new_empty((*value_states.shape[:2], 0, value_states.shape[-1]))
        self.capacity = 0
        self.is_initialized = True

    # -- the growth rule -------------------------------------------------------------------------------
    def capacity_after(self, q: int) -> int:
        """Capacity once q more rows are written at the current length (pure: get_mask_sizes uses it too)."""
        n, c = self.length, self.capacity
        if n + q > self.cap:
            raise BMCError(f"writing {q} rows at length {n} exceeds BMCCache max_cache_len={self.cap}")
        if c == 0:
            return self.policy.initial_capacity(n + q, self.cap)
        if n + q > c:
            return self.policy.grown_capacity(n, q, c, self.cap)
        return c

    def width_after(self, q: int) -> int:
        return self.policy.width_rows(self.length, q, self.capacity_after(q))

    def _grow(self, capacity: int, n: int, q: int, src: int = 0, exact: bool = False) -> None:
        """Allocate `capacity` rows and copy the n valid rows (from row `src` of the old buffer: a sliding layer's
        kept rows), K then V, each old buffer freed right after its copy (as torch.cat does): the transient peak
        is old K + old V + one new buffer. exact: the views stay exact whatever the policy's width."""
        held = self.kv_bytes()
        for name in ("keys", "values"):
            old = getattr(self, name)
            shape = (*old.shape[:2], capacity, old.shape[-1])  # [batch, kv_heads, capacity, head_dim]
            take = self.arena is not None and self.policy.growth == "reserve" and not exact
            buf = self.arena.take(shape, old.dtype, old.device) if take else old.new_empty(shape)  # type: ignore
            if n:
                buf[:, :, :n].copy_(old[:, :, src:src + n])
            if self.policy.zero_filled and not exact and capacity > n + q:
                # Rows past n + q are read (then masked) by padded widths: they must hold finite numbers, as
                # 0 * NaN from uninitialised memory would poison the softmax. Exact widths never read them.
                buf[:, :, n + q:].zero_()
            self.peak_bytes = max(self.peak_bytes, held + buf.nbytes)
            held += buf.nbytes - old.nbytes
            setattr(self, name, buf)
        self.capacity = capacity
        self.grow_events += 1
        if self.on_grow is not None and self.device.type == "cpu":
            self.on_grow()

    # -- the HF layer API ---------------------------------------------------------------------------------
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write q new rows in place (growing first if needed); return K, V views [batch, kv_heads, width, head_dim]."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, q = self.length, key_states.shape[-2]
        capacity = self.capacity_after(q)
        if capacity != self.capacity:
            self._grow(capacity, n, q)
        self.keys[:, :, n:n + q].copy_(key_states)
        self.values[:, :, n:n + q].copy_(value_states)
        self.length = n + q
        width = self.policy.width_rows(n, q, capacity)
        return self.keys[:, :, :width], self.values[:, :, :width]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """(kv_length, kv_offset) of the views the next update returns: HF masks rows past n + q itself."""
        return self.width_after(query_length), 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1 if self.max_cache_len is None else self.max_cache_len

    def reset(self) -> None:
        """Forget everything: the next update is a prefill and allocates by the initial-capacity rule."""
        self.keys = self.values = None
        self.is_initialized = False
        self.length = self.capacity = 0

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last -tokens_to_remove rows (transformers 5.x: a negative count); the buffer is kept."""
        if tokens_to_remove > 0:
            raise BMCError(f"crop({tokens_to_remove}): pass a negative count of tokens to remove (transformers 5.x)")
        k = -tokens_to_remove
        if k > self.length:
            raise BMCError(f"crop({tokens_to_remove}): the cache holds only {self.length} tokens")
        self.length -= k

    # -- beams and batches: only the live rows move ---------------------------------------------------
    def live_rows(self) -> int:
        """Rows [0, live_rows) of the buffer that hold data a later view or crop may read."""
        return self.length

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search: reorder the batch entries in place over the live rows. index_select over the whole
        buffer would hold a second buffer of every row and touch every page (reserve's are not resident)."""
        if self.length == 0:
            return
        idx = beam_idx.to(self.keys.device)
        if idx.numel() != self.keys.shape[0]:  # not a permutation of the beams: the batch size changes
            self.batch_select_indices(idx)
            return
        n = self.live_rows()
        for buf in (self.keys, self.values):
            buf[:, :, :n] = buf[:, :, :n].index_select(0, idx)  # a copy of the live rows, then back in place

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self._rebatch(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self._rebatch(lambda t: t[indices, ...])

    def _rebatch(self, pick: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """New buffers of the same capacity holding pick()'s batch entries. Exact widths never read the rows
        past the live ones, so only those are copied into an uninitialised buffer; zero-filled widths read
        them (masked), so every row is copied, zeros included."""
        n = self.live_rows()
        for name in ("keys", "values"):
            old = getattr(self, name)
            if self.policy.zero_filled:
                buf = pick(old)
            else:
                live = pick(old[:, :, :n])
                buf = old.new_empty((live.shape[0], *old.shape[1:]))
                buf[:, :, :n].copy_(live)
            setattr(self, name, buf)
        self.batch_size = self.keys.shape[0]

    def kv_bytes(self) -> int:
        return 0 if self.keys is None else self.keys.nbytes + self.values.nbytes
