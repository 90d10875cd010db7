"""A KV cache that obeys a Policy: growth by allocate + copy, in-place writes, masked padded rows.

Protocol for one forward pass of q rows at valid length n (all layers advance together):

    for layer in range(layers):
        K, V, mask = cache.update(layer, k, v)   # k, v: [batch, kv_heads, q, head_dim]
        ...attention over K, V: [batch, kv_heads, W, head_dim], mask: [q, W] additive or None
    cache.advance()                              # n <- n + q

Capacity follows bmc_model.core.policy exactly (the analytical model assumes these rules):
- the first write of P rows into an empty cache allocates initial_capacity(P, max_len) rows;
- before writing q rows at length n, if n + q > capacity: capacity <- grown_capacity(n, q, ...);
- attention reads width_rows(n, q, capacity) rows; rows beyond n + q are masked.

The cat policy (Policy.is_cat: fixed r=1, exact width) is HF DynamicCache: no preallocation, every
write after the first is a real torch.cat of the valid rows and the new rows. Its capacity is the
number of rows it holds (initial_capacity(P) = P for it), so every write is a growth event.

Preallocated policies (static, reserve) allocate max_len rows once, at the prefill, and never grow;
a rollback only moves the valid length. Buffers are zero-filled only when the width reads rows past
n + q (Policy.zero_filled): reserve's torch.empty buffer is backed by the OS page by page as rows
are written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bmc_model.core.errors import BMCError
from bmc_model.core.policy import Policy
from bmc_model.runtime.arena import Arena


@dataclass
class GrowthEvent:
    n: int  # valid length when the write of q rows triggered the growth
    q: int
    old_capacity: int
    new_capacity: int


@dataclass
class CacheStats:
    """Counters over the cache's life; bytes are K + V over all layers."""

    growth_events: int = 0  # capacity changes after the first allocation (one per forward, all layers)
    allocations: int = 0  # buffers allocated (K and V of one layer count as one)
    bytes_allocated: int = 0
    bytes_copied: int = 0  # valid rows moved into a new buffer at growth events
    bytes_written: int = 0  # new rows written by update()
    rows_attended: int = 0  # sum over forwards of W (rows attention reads, per layer)
    peak_bytes: int = 0  # most bytes held at once, counting old + new buffer during a growth
    events: list[GrowthEvent] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "events"}
        d["events"] = [e.__dict__.copy() for e in self.events]
        return d


class KVCache:
    def __init__(self, policy: Policy, *, layers: int, batch: int, kv_heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
        for name, v in (("layers", layers), ("batch", batch), ("kv_heads", kv_heads), ("head_dim", head_dim),
                        ("max_len", max_len)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise BMCError(f"KVCache: {name} must be a positive integer, got {v!r}")
        self.policy = policy
        self.layers, self.batch, self.kv_heads, self.head_dim = layers, batch, kv_heads, head_dim
        self.max_len = max_len
        self.dtype, self.device = dtype, torch.device(device)
        self.is_cat = policy.is_cat
        # Rows beyond n + q are read by padded/pad attention: they must be finite, hence zeros. Exact
        # widths (reserve) never read them, so torch.empty leaves their pages untouched.
        self._zero_fill = policy.zero_filled
        self._k: list[torch.Tensor | None] = [None] * layers  # [batch, kv_heads, rows, head_dim]
        self._v: list[torch.Tensor | None] = [None] * layers
        self._n = 0  # valid rows, shared by all layers
        self._capacity = 0  # target capacity of this forward (every layer reaches it in its update)
        self._q = 0  # rows being written by the forward in progress
        self._next_layer = 0
        self._width = 0
        self._mask: torch.Tensor | None = None
        self._arange = torch.arange(max_len, device=self.device)  # column / row indices for masks
        self._row_bytes = batch * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()
        self._held = 0  # bytes held by K and V buffers
        self._arena = Arena(2 * layers) if policy.growth == "reserve" else None  # one allocation for all
        self.stats = CacheStats()

    # --- state -------------------------------------------------------------------------------
    @property
    def length(self) -> int:
        """Valid rows n (positions 0..n-1), the same for every layer."""
        return self._n

    @property
    def capacity(self) -> int:
        """Rows allocated per layer (for the cat policy: rows held)."""
        t = self._k[self.layers - 1] if self._next_layer == 0 else self._k[0]
        return 0 if t is None else int(t.shape[2])

    @property
    def width(self) -> int:
        """Rows attention read in the latest forward."""
        return self._width

    def nbytes(self) -> int:
        """Bytes of the K and V buffers held now (all layers)."""
        return self._held

    def reset(self) -> None:
        """Forget the contents (length 0) but keep the buffers."""
        self._check_idle("reset")
        self._n = 0

    # --- writes ------------------------------------------------------------------------------
    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Write q new rows k, v [batch, kv_heads, q, head_dim] at rows n..n+q-1 of `layer`.

        Returns K, V [batch, kv_heads, W, head_dim] (views) and the additive mask [q, W] (0 where
        row i may attend column j <= n + i, -inf elsewhere); the mask is None for exact width with
        q == 1, where every row read is valid.
        """
        with torch.inference_mode():  # buffers are inference tensors wherever the caller runs
            return self._update(layer, k, v)

    def _update(self, layer: int, k: torch.Tensor, v: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if layer != self._next_layer:
            raise BMCError(f"KVCache.update: expected layer {self._next_layer}, got {layer}")
        q = int(k.shape[2])
        want = (self.batch, self.kv_heads, q, self.head_dim)
        if tuple(k.shape) != want or tuple(v.shape) != want:
            raise BMCError(f"KVCache.update: k, v must be {list(want)}, got {list(k.shape)} and {list(v.shape)}")
        if layer == 0:
            self._begin(q)
        elif q != self._q:
            raise BMCError(f"KVCache.update: layer {layer} writes {q} rows, layer 0 wrote {self._q}")
        n = self._n
        if self.is_cat:
            self._cat(layer, k, v)
        else:
            self._ensure(layer)
            self._k[layer][:, :, n:n + q] = k  # type: ignore[index]  # in place, no allocation
            self._v[layer][:, :, n:n + q] = v  # type: ignore[index]
        self.stats.bytes_written += 2 * q * self._row_bytes
        self.stats.rows_attended += self._width
        self._next_layer += 1
        kk, vv = self._k[layer], self._v[layer]
        assert kk is not None and vv is not None
        w = self._width
        return kk[:, :, :w], vv[:, :, :w], self._mask

    def advance(self) -> int:
        """After every layer's update: the q rows become valid. Returns the new length."""
        if self._next_layer != self.layers:
            raise BMCError(f"KVCache.advance: only {self._next_layer} of {self.layers} layers were updated")
        self._n += self._q
        self._next_layer, self._q, self._mask = 0, 0, None
        return self._n

    def rollback(self, n_rows: int) -> int:
        """Drop the last n_rows valid rows (speculative decoding rejection): only the valid length moves,
        buffers and their rows are kept (no copy, never a growth event)."""
        self._check_idle("rollback")
        if not isinstance(n_rows, int) or n_rows < 0 or n_rows > self._n:
            raise BMCError(f"KVCache.rollback: n_rows must be in 0..{self._n}, got {n_rows!r}")
        self._n -= n_rows
        return self._n

    # --- internals ---------------------------------------------------------------------------
    def _check_idle(self, what: str) -> None:
        if self._next_layer != 0:
            raise BMCError(f"KVCache.{what}: a forward is in progress ({self._next_layer} layers updated)")

    def _begin(self, q: int) -> None:
        """Layer 0 of a forward: decide this forward's capacity, width and mask once for all layers."""
        n, cap, pol = self._n, self.max_len, self.policy
        if n + q > cap:
            raise BMCError(f"writing {q} rows at length {n} exceeds the cache's maximum length {cap}")
        held = self.capacity
        if self.is_cat:
            new = n + q
            if n:  # every write after the first (onto valid rows) is a torch.cat growth
                self._event(n, q, held, new)
        elif held == 0:
            new = pol.initial_capacity(n + q, cap)
        elif n + q > held:
            new = pol.grown_capacity(n, q, held, cap)
            self._event(n, q, held, new)
        else:
            new = held
        self._capacity, self._q = new, q
        self._width = new if self.is_cat else pol.width_rows(n, q, new)
        self._mask = self._build_mask(n, q, self._width)

    def _event(self, n: int, q: int, old: int, new: int) -> None:
        self.stats.growth_events += 1
        self.stats.events.append(GrowthEvent(n, q, old, new))

    def _build_mask(self, n: int, q: int, w: int) -> torch.Tensor | None:
        # Built once per forward (shared by all layers), vectorised: O(q * W) element ops. Padded
        # and pad widths always get one (even when W happens to be n + q) so a policy always runs
        # the same SDPA path, as the cost model assumes (masked iff width != exact or q > 1).
        if q == 1 and not self._zero_fill:
            return None
        cols = self._arange[:w]  # [W]
        rows = n + self._arange[:q]  # [q] absolute positions of the new rows
        blocked = cols[None, :] > rows[:, None]  # [q, W] causal + padded rows
        return torch.zeros((q, w), dtype=self.dtype, device=self.device).masked_fill_(blocked, float("-inf"))

    def _alloc(self, rows: int) -> torch.Tensor:
        shape = (self.batch, self.kv_heads, rows, self.head_dim)
        if self._arena is not None:
            return self._arena.take(shape, self.dtype, self.device)
        make = torch.zeros if self._zero_fill else torch.empty
        return make(shape, dtype=self.dtype, device=self.device)

    def _account_alloc(self, rows: int, copied_rows: int, freed_rows: int, first: bool) -> None:
        """One tensor (K or V) replaced: its new buffer is allocated while the old one is alive."""
        nb = rows * self._row_bytes
        st = self.stats
        st.allocations += first  # K and V of one layer count as one
        st.bytes_allocated += nb
        st.bytes_copied += copied_rows * self._row_bytes
        st.peak_bytes = max(st.peak_bytes, self._held + nb)  # old and new coexist here
        self._held += nb - freed_rows * self._row_bytes

    def _ensure(self, layer: int) -> None:
        """Grow this layer's buffers to the forward's capacity: allocate, copy valid rows, drop old."""
        old_k, old_v = self._k[layer], self._v[layer]
        old_rows = 0 if old_k is None else int(old_k.shape[2])
        if old_rows >= self._capacity:
            return
        n, new_rows = self._n, self._capacity
        copied = n if old_k is not None else 0
        del old_k, old_v  # K then V, each old buffer freed right after its copy: one transient at a time
        for store in (self._k, self._v):
            old = store[layer]
            new = self._alloc(new_rows)
            if old is not None and n:
                new[:, :, :n] = old[:, :, :n]
            self._account_alloc(new_rows, copied, old_rows, first=store is self._k)
            store[layer] = new  # the old buffer is freed here
            del old, new

    def _cat(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        n = self._n
        old_rows = 0 if self._k[layer] is None else int(self._k[layer].shape[2])  # type: ignore[union-attr]
        # K then V, as DynamicCache's `self.keys = torch.cat(...)` then `self.values = ...`: one old buffer alive
        for store, rows in ((self._k, k), (self._v, v)):
            if n == 0:  # first write: keep the rows as they are (DynamicCache stores key_states)
                new = rows.contiguous()
            else:  # [batch, kv_heads, n + q, head_dim]: a fresh tensor and a copy of all valid rows
                new = torch.cat([store[layer][:, :, :n], rows], dim=2)  # type: ignore[index]
            self._account_alloc(n + int(k.shape[2]), n, old_rows, first=store is self._k)
            store[layer] = new
            del new
