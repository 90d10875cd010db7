"""BMCCache: a drop-in `transformers.Cache` whose layers grow by r rows (BMC) instead of torch.cat's one.

    out = model.generate(**inputs, max_new_tokens=256, past_key_values=BMCCache(r=64, width="padded"))
    out = model.generate(**inputs, max_new_tokens=256, past_key_values=BMCCache.tuned(model, seq=1024))

Every layer obeys bmc_model.core.policy.Policy exactly (capacity after prefill P + r, growth to n + max(r, q)
when n + q > capacity, attention width n + q or the whole capacity), and every sliding-window layer the rule
of bmc_model.core.sliding (hf/sliding.py), so the cost model's predictions and this runtime describe the same
thing.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from transformers.cache_utils import Cache, get_layer_types_and_kwargs

from bmc_model.core.configs import LAYER_TYPES
from bmc_model.core.errors import BMCError
from bmc_model.core.host import release_heap
from bmc_model.core.policy import Policy, parse_policy
from bmc_model.core.refresh import Refresher, registered_refresher
from bmc_model.core.request import get_profile
from bmc_model.hf.layer import BMCLayer, check_cap, masked
from bmc_model.hf.sliding import BMCSlidingLayer
from bmc_model.runtime.arena import Arena

log = logging.getLogger("bmc_model.hf")


def _width(width: str) -> tuple[str, int]:
    """'exact' | 'padded' | 'pad-P' -> (Policy width, pad)."""
    w = str(width).strip().lower()
    if w in ("exact", "padded"):
        return w, 256
    if w.startswith("pad-") and w[4:].isdigit() and int(w[4:]) >= 1:
        return "pad", int(w[4:])
    raise BMCError(f"unknown width {width!r} (exact, padded or pad-P)")


def make_policy(r: int | None, width: str | None, policy: Policy | str | None) -> Policy:
    if policy is not None:
        if width is not None:
            raise BMCError("give either policy= or width=, not both")
        return policy if isinstance(policy, Policy) else parse_policy(policy, r)
    if r is None:
        raise BMCError("BMCCache needs r (rows added per growth), e.g. BMCCache(r=64), "
                       "or BMCCache.tuned(model, seq=...) to pick it")
    w, pad = _width(width or "exact")
    return Policy("fixed", r, width=w, pad=pad)  # type: ignore[arg-type]  # Policy checks r itself


def layer_windows(config: Any) -> list[int | None]:
    """Each decoder layer's sliding window as transformers builds its cache (None: full attention); BMCError
    naming any other kind of layer (linear attention, chunked, shared KV, ...)."""
    text = config.get_text_config(decoder=True)
    if getattr(config, "is_encoder_decoder", False):
        raise BMCError("BMCCache supports decoder-only models; this config is encoder-decoder")
    types, kwargs = get_layer_types_and_kwargs(text)
    other = sorted({t for t in types if t not in LAYER_TYPES})
    if other:
        raise BMCError(f"BMCCache supports full-attention and sliding-window layers; this {text.model_type} "
                       f"model has {', '.join(other)} layers: use transformers' DynamicCache for it")
    return [kw["sliding_window"] if t == "sliding_attention" else None for t, kw in zip(types, kwargs)]


class BMCCache(Cache):
    """A KV cache growing by `r` rows at a time, attending over `width` rows ("exact" n + q, "padded" the whole
    capacity, or "pad-P" rounded up to a multiple of P); or any `policy` (bmc_model Policy or its text).

    `max_cache_len` caps the rows (required by static and reserve growth, which allocate it once); `config`
    (the model's config) builds the layers up front, a BMCSlidingLayer for each sliding-window layer (it keeps
    the window's rows only, as DynamicCache's does), and refuses other kinds of layer. Without it layers appear
    on first use, all full attention: a sliding model then keeps every row, and transformers' mask still limits
    attention to the window.
    `trim`: on the CPU, hand the freed old buffers back to the kernel after each growth event (glibc
    malloc_trim, host.release_heap). Buffers of a few MB come from the heap, glibc keeps freed heap pages
    resident, and the next, larger buffers seldom fit there, so without trim the resident size can grow by
    as much again as the cache. The pages handed back are faulted in again when reused, which costs a few
    percent of the step, hence opt-in (figures: docs/results.md#bmccache).
    """

    def __init__(self, r: int | None = None, width: str | None = None, max_cache_len: int | None = None,
                 config: Any = None, policy: Policy | str | None = None, offloading: bool = False,
                 trim: bool = False) -> None:
        pol = make_policy(r, width, policy)
        if max_cache_len is not None and (isinstance(max_cache_len, bool) or not isinstance(max_cache_len, int)
                                          or max_cache_len < 1):
            raise BMCError(f"max_cache_len must be a positive integer, got {max_cache_len!r}")
        check_cap(pol, max_cache_len)
        self.policy = pol
        self.max_cache_len = max_cache_len
        self.recommendation = None  # set by tuned()
        self.heap_trims = 0
        on_grow = self._after_growth if trim else None
        factory = functools.partial(BMCLayer, pol, max_cache_len, on_grow)
        if config is not None:
            windows = layer_windows(config)
            if pol.growth == "reserve":  # every full layer's K and V in one allocation (runtime/arena.py)
                factory = functools.partial(factory, arena=Arena(2 * sum(w is None for w in windows)))
            layers = [factory() if window is None else BMCSlidingLayer(pol, window, max_cache_len, on_grow)
                      for window in windows]
            super().__init__(layers=layers, offloading=offloading)
        else:
            super().__init__(layer_class_to_replicate=factory, offloading=offloading)

    def _after_growth(self) -> None:
        self.heap_trims += release_heap()

    def __repr__(self) -> str:
        return f"BMCCache({self.policy.label}, layers={len(self.layers)}, seq={self.get_seq_length()})"

    @property
    def r(self) -> int:
        return self.policy.r

    @property
    def width(self) -> str:
        return self.policy.width_label

    # HF reads this to decide whether a q == 1 step may skip its mask (see BMCLayer.is_compileable).
    # It must hold before the first forward too, when a config-less cache has no layers yet.
    @property
    def is_compileable(self) -> bool:  # type: ignore[override]
        return masked(self.policy)

    def _ensure_layers(self, layer_idx: int) -> None:
        if self.layer_class_to_replicate is not None:
            while len(self.layers) <= layer_idx:
                self.layers.append(self.layer_class_to_replicate())

    def get_mask_sizes(self, query_length: int, layer_idx: int) -> tuple[int, int]:
        # HF asks before the first update; a padded width is wider than the query, so answer from the rule
        self._ensure_layers(layer_idx)
        return self.layers[layer_idx].get_mask_sizes(query_length)

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1 if self.max_cache_len is None else self.max_cache_len

    def get_max_cache_shape(self, layer_idx: int = 0) -> int:
        return self.get_max_length(layer_idx)

    def stats(self) -> dict:
        """Growth events, KV bytes held now and the largest held at once by one layer's growth (all layers)."""
        layers = [la for la in self.layers if isinstance(la, BMCLayer)]
        held = sum(la.kv_bytes() for la in layers)
        # The transient of a growth event sits on top of the other layers' steady buffers.
        peak_transient = max((la.peak_bytes - la.kv_bytes() for la in layers), default=0)
        return {"policy": self.policy.label, "r": self.policy.r, "width": self.width,
                "seq": self.get_seq_length(), "capacity": max((la.capacity for la in layers), default=0),
                "grow_events": sum(la.grow_events for la in layers), "kv_bytes": held, "heap_trims": self.heap_trims,
                "peak_kv_bytes_estimate": held + max(peak_transient, 0)}

    @classmethod
    def tuned(cls, model: Any, seq: int, prompt: int | None = None, profile: Any = None, batch: int = 1,
              max_cache_len: int | None = None, refresh: bool | Refresher = False, trim: bool | None = None,
              **recommend_kwargs: Any) -> BMCCache:
        """A cache configured by bmc_model.recommend() for `model` decoding to `seq` tokens from `prompt`
        (default seq // 2) with `batch` sequences, on the host described by `profile` (default: calibrated
        profile, else the embedded one). Extra keywords (gamma, alpha, draft_cost, max_mem, widths, ...) go to
        recommend(). The Recommendation is kept on `cache.recommendation`.
        refresh: first re-time the profile's drifting terms for this model at seq, prompt and batch (about 8 s, in
        process; no file is written): True uses calibrate's refresher (found through the bmc_model.refreshers entry
        point: this layer may not import calibrate), or pass a refresher (profile, spec, seq, prompt, batch) ->
        Profile.
        trim: as BMCCache's; None trims where the pick grows (not static or reserve). The cost model holds a
        growth event's old buffers resident only until the copy is done and charges the new buffer's first
        touch, which is what trim makes true on glibc; without it the freed buffers can stay resident and the
        peak outgrow the prediction (docs/results.md#bmccache)."""
        from bmc_model.hf.tune import spec_for_model, tuned_policy

        config = getattr(model, "config", None)
        if config is None:
            raise BMCError("BMCCache.tuned needs a transformers model (with .config)")
        layer_windows(config)  # refuses what it cannot hold before recommend() runs
        if refresh:
            fn = registered_refresher() if refresh is True else refresh
            if not callable(fn):
                raise BMCError("refresh must be True, False or a refresher (profile, spec, seq, prompt, batch) -> "
                               f"Profile, got {refresh!r:.40}")
            profile = fn(get_profile(profile), spec_for_model(model), seq, prompt, batch)
        pol, rec, cap = tuned_policy(model, seq=seq, prompt=prompt, profile=profile, batch=batch,
                                     max_cache_len=max_cache_len, **recommend_kwargs)
        cache = cls(policy=pol, max_cache_len=cap, config=config,
                    trim=not pol.preallocated if trim is None else bool(trim))
        cache.recommendation = rec
        return cache
