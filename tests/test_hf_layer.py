"""BMCLayer on its own: growth rule, returned views, crop / reset / beam operations against a torch.cat reference;
BMCSlidingLayer against transformers' own sliding layer and the cost model's rule."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import WIDTHS, policies  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from transformers.cache_utils import DynamicSlidingWindowLayer  # noqa: E402

from bmc_model.core.errors import BMCError  # noqa: E402
from bmc_model.core.policy import Policy, parse_policy  # noqa: E402
from bmc_model.hf import BMCCache, BMCLayer, BMCSlidingLayer  # noqa: E402

B, H, D = 2, 3, 4  # [batch, kv_heads, rows, head_dim]


def rows(q: int, start: int) -> torch.Tensor:
    """q distinct rows, values encoding their position, so a misplaced row is visible."""
    base = torch.arange(start, start + q, dtype=torch.float32).view(1, 1, q, 1)
    return base + torch.arange(B * H * D, dtype=torch.float32).view(B, H, 1, D) * 1000.0


def layer(r: int, width: str = "exact", pad: int = 256, cap: int | None = None) -> BMCLayer:
    return BMCLayer(Policy("fixed", r, width=width, pad=pad), cap)


ops = st.lists(st.tuples(st.sampled_from(["update", "crop"]), st.integers(1, 7)), min_size=1, max_size=25)


@settings(max_examples=100, deadline=None)
@given(r=st.integers(1, 9), width=WIDTHS, pad=st.integers(1, 6), ops=ops)
def test_layer_follows_the_growth_rule_and_matches_a_cat_reference(r, width, pad, ops):
    la = layer(r, width, pad)
    ref = torch.empty(B, H, 0, D)  # what torch.cat (DynamicCache) would hold
    first = True
    for op, k in ops:
        if op == "crop":
            k = min(k, ref.shape[2])
            la.crop(-k)
            ref = ref[:, :, :ref.shape[2] - k]
            assert la.get_seq_length() == ref.shape[2]
            continue
        n, cap_before = la.length, la.capacity
        kv_len, kv_off = la.get_mask_sizes(k)
        new = rows(k, n)
        keys, values = la.update(new, -new)
        ref = torch.cat([ref, new], dim=2)
        c = la.capacity
        # capacity: P + r after the first write (P for r = 1 exact, which is torch.cat), n + max(r, q)
        # whenever n + q exceeded it, else unchanged
        if first:
            assert c == (k if (r, width) == (1, "exact") else k + r)
        elif n + k > cap_before:
            assert c == n + max(r, k)
        else:
            assert c == cap_before
        first = False
        # width: exactly what get_mask_sizes announced before the write
        assert (kv_len, kv_off) == (keys.shape[2], 0)
        expect = {"exact": n + k, "padded": c, "pad": min(c, -(-(n + k) // pad) * pad)}[width]
        assert keys.shape == (B, H, expect, D) and values.shape == keys.shape
        assert torch.equal(keys[:, :, :n + k], ref) and torch.equal(values[:, :, :n + k], -ref)
        assert torch.isfinite(keys).all() and torch.isfinite(values).all()  # masked rows must not hold NaN
        assert la.get_seq_length() == n + k


def test_crop_semantics():
    la = layer(4)
    la.update(rows(10, 0), rows(10, 0))
    cap = la.capacity
    la.crop(0)
    assert la.get_seq_length() == 10
    la.crop(-3)
    assert la.get_seq_length() == 7 and la.capacity == cap  # the buffer is kept, only the count moves
    keys, _ = la.update(rows(2, 100), rows(2, 100))  # overwrites the cropped rows
    assert torch.equal(keys, torch.cat([rows(7, 0), rows(2, 100)], dim=2))
    with pytest.raises(BMCError, match="negative"):
        la.crop(2)  # transformers 5.x: positive counts are refused
    with pytest.raises(BMCError, match="holds only 9"):
        la.crop(-10)
    la.crop(-9)
    assert la.get_seq_length() == 0


def test_reset_forgets_everything():
    la = layer(4, "padded")
    la.update(rows(5, 0), rows(5, 0))
    la.reset()
    assert la.get_seq_length() == 0 and la.keys is None and not la.is_initialized
    keys, _ = la.update(rows(3, 0), rows(3, 0))
    assert la.capacity == 3 + 4 and keys.shape[2] == 7  # a prefill again: P + r


def test_beam_and_batch_operations():
    la = layer(5)
    k = rows(6, 0)
    la.update(k, k)
    la.reorder_cache(torch.tensor([1, 1]))
    assert torch.equal(la.keys[:, :, :6], k[[1, 1]])
    la.batch_select_indices(torch.tensor([0]))
    assert la.keys.shape[0] == 1 and la.batch_size == 1
    la.batch_repeat_interleave(3)
    assert la.keys.shape[0] == 3 and la.batch_size == 3
    assert torch.equal(la.keys[2, :, :6], k[1])


PREALLOCATED = st.sampled_from([Policy("reserve"), Policy("static", width="padded"),
                                 Policy("static", width="pad", pad=4)])
beam_ops = st.lists(st.tuples(st.sampled_from(["update", "update", "crop", "reorder"]), st.integers(1, 7),
                              st.lists(st.integers(0, B - 1), min_size=B, max_size=B)), min_size=1, max_size=25)


@settings(max_examples=100, deadline=None)
@given(policy=PREALLOCATED, ops=beam_ops)
def test_preallocated_layer_allocates_once_and_matches_a_cat_reference(policy, ops):
    """Static and reserve: max_cache_len rows at the first update, then in place through updates, crops and
    beam reorders (the same buffer throughout), with the views a torch.cat reference holds."""
    cap = 7 * 25
    la, ref, ptr = BMCLayer(policy, cap), torch.empty(B, H, 0, D), None
    for op, k, beams in ops:
        if op == "crop":
            k = min(k, ref.shape[2])
            la.crop(-k)
            ref = ref[:, :, :ref.shape[2] - k]
        elif op == "reorder":
            la.reorder_cache(torch.tensor(beams))
            ref = ref[beams]
        else:
            n, new = la.length, rows(k, la.length)
            assert la.get_mask_sizes(k) == (policy.width_rows(n, k, cap), 0)
            keys, values = la.update(new, -new)
            ref = torch.cat([ref, new], dim=2)
            assert keys.shape[2] == policy.width_rows(n, k, cap)
            assert torch.isfinite(keys).all() and torch.isfinite(values).all()
        if la.keys is not None and la.capacity:
            ptr = ptr or la.keys.data_ptr()
            assert la.capacity == cap and la.grow_events == 1 and la.keys.data_ptr() == ptr
            assert torch.equal(la.keys[:, :, :la.length], ref) and torch.equal(la.values[:, :, :la.length], -ref)


@pytest.mark.parametrize("policy", [Policy("reserve"), Policy("static", width="padded")])
def test_beam_reorder_of_a_preallocated_buffer_moves_only_the_valid_rows(policy):
    """The rows past the valid length (reserve: never written, not yet backed by the OS) are not touched, and
    the buffer is reordered in place, never reallocated."""
    la = BMCLayer(policy, 16)
    la.update(rows(6, 0), -rows(6, 0))
    la.crop(-2)  # rows 4, 5 were written and are now past the valid length
    for buf in (la.keys, la.values):
        buf[:, :, 4:] = torch.arange(B, dtype=torch.float32).view(B, 1, 1, 1) - 1e6  # a sentinel per batch entry
    spare_k, spare_v = la.keys[:, :, 4:].clone(), la.values[:, :, 4:].clone()
    ptrs = (la.keys.data_ptr(), la.values.data_ptr())
    la.reorder_cache(torch.tensor([1, 0]))
    assert (la.keys.data_ptr(), la.values.data_ptr()) == ptrs and la.capacity == 16
    assert torch.equal(la.keys[:, :, :4], rows(4, 0)[[1, 0]]) and torch.equal(la.values[:, :, :4], -rows(4, 0)[[1, 0]])
    assert torch.equal(la.keys[:, :, 4:], spare_k) and torch.equal(la.values[:, :, 4:], spare_v)  # did not move


def test_reserve_batch_operations_copy_only_the_valid_rows():
    la = BMCLayer(Policy("reserve"), 16)
    k = rows(5, 0)
    la.update(k, k)
    la.keys[:, :, 5:] = float("nan")  # what an unbacked, uninitialised row may hold: must not be copied
    la.batch_select_indices(torch.tensor([1]))
    assert la.keys.shape == (1, H, 16, D) and la.batch_size == 1 and torch.equal(la.keys[:, :, :5], k[[1]])
    la.batch_repeat_interleave(2)
    assert la.keys.shape == (2, H, 16, D) and torch.equal(la.keys[:, :, :5], k[[1, 1]])
    keys, _ = la.update(rows(1, 5), rows(1, 5)[[1, 1]])
    assert keys.shape[2] == 6 and torch.isfinite(keys).all()


@pytest.mark.parametrize("policy", ["reserve", "static:padded", Policy("static", width="exact")])
def test_preallocated_growth_needs_max_cache_len(policy):
    with pytest.raises(BMCError, match="max_cache_len"):
        BMCLayer(parse_policy(policy) if isinstance(policy, str) else policy)
    with pytest.raises(BMCError, match="max_cache_len"):
        BMCCache(policy=policy)
    assert BMCCache(policy=policy, max_cache_len=8).policy.preallocated


def test_max_cache_len_is_enforced():
    la = layer(8, cap=12)
    la.update(rows(6, 0), rows(6, 0))
    assert la.capacity == 12  # P + r clipped to the cap
    la.update(rows(6, 6), rows(6, 6))
    with pytest.raises(BMCError, match="exceeds"):
        la.update(rows(1, 12), rows(1, 12))


def test_cache_answers_mask_sizes_before_its_layers_exist():
    cache = BMCCache(r=16, width="padded")
    assert len(cache) == 0
    assert cache.get_mask_sizes(5, 1) == (5 + 16, 0)  # the prefill's padded width, announced up front
    assert cache.is_compileable  # so HF builds the decode mask over the padding
    assert not BMCCache(r=16, width="exact").is_compileable
    assert cache.get_seq_length() == 0 and cache.get_max_length() == -1 and cache.get_max_cache_shape() == -1


# -- BMCSlidingLayer: a window buffer that returns what transformers' DynamicSlidingWindowLayer returns --------


def sliding(policy: Policy | str, window: int, cap: int | None = None) -> BMCSlidingLayer:
    return BMCSlidingLayer(parse_policy(policy) if isinstance(policy, str) else policy, window, cap)


sliding_ops = st.lists(st.tuples(st.sampled_from(["update", "update", "crop"]), st.integers(1, 9)), min_size=1,
                       max_size=30)


@settings(max_examples=150, deadline=None)
@given(window=st.integers(2, 9), policy=policies(), record=st.booleans(), ops=sliding_ops)
def test_sliding_layer_returns_what_hf_sliding_layer_returns(window, policy, record, ops):
    """Same K and V (values and order), same mask sizes, same length, after every update and crop; without
    past recording (plain generate) it holds only the window's W - 1 rows, as HF's does."""
    la, ref = sliding(policy, window), DynamicSlidingWindowLayer(sliding_window=window)
    if record:
        la.activate_past_recording()
        ref.activate_past_recording()
    budget = 0  # rows a crop may remove: some of the last update's, once, as assisted generation does (HF's
    for op, k in ops:  # layer mis-crops a second time, and fails on a crop before its first update)
        n = la.get_seq_length()
        if op == "crop":
            k = min(k, budget)
            if k == 0 or (not record and n >= window):  # HF cannot crop there without past recording
                continue
            la.crop(-k)
            ref.crop(-k)
            budget = 0
        else:
            sizes = same_mask_sizes(la, ref, k, policy)
            new = rows(k, n)
            keys, values = la.update(new, -new)
            ref_keys, ref_values = ref.update(new, -new)
            assert keys.shape[2] == values.shape[2] == sizes[0]
            assert torch.equal(keys[:, :, :ref_keys.shape[2]], ref_keys)
            assert torch.equal(values[:, :, :ref_keys.shape[2]], ref_values)
            budget = k
            if not record:
                assert la.end - la.start == ref.keys.shape[2] == min(n + k, window - 1)
        assert la.get_seq_length() == ref.get_seq_length()
        same_mask_sizes(la, ref, 1, policy)


def same_mask_sizes(la: BMCSlidingLayer, ref, q: int, policy: Policy) -> tuple[int, int]:
    """HF's (kv_length, kv_offset), but for a padded width while no row has left the window: wider, from 0."""
    sizes, ref_sizes = la.get_mask_sizes(q), ref.get_mask_sizes(q)
    if sizes != ref_sizes:
        assert policy.width != "exact" and not la.windowed and sizes[1] == ref_sizes[1] == 0
        assert sizes[0] > ref_sizes[0]
    return sizes


def test_sliding_layer_refuses_a_crop_past_the_rows_it_dropped():
    la = sliding("bmc:8", 4)
    la.update(rows(10, 0), rows(10, 0))  # a prefill past the window: only its last 3 rows are kept
    assert la.capacity == 3 + 8 and la.end - la.start == 3
    with pytest.raises(BMCError, match="no longer holds"):
        la.crop(-1)
    keys, _ = la.update(rows(2, 10), rows(2, 10))  # a verify of 2 rows can always be cropped back
    assert torch.equal(keys, rows(5, 7))
    la.crop(-2)
    assert la.get_seq_length() == 10 and torch.equal(la.keys[:, :, la.start:la.end], rows(3, 7))
    with pytest.raises(BMCError, match="negative"):
        la.crop(1)
    recording = sliding("bmc:8", 4)
    recording.activate_past_recording()  # assisted generation: the whole prefill is kept until its crop
    recording.update(rows(10, 0), rows(10, 0))
    recording.crop(-4)
    assert recording.get_seq_length() == 6 and torch.equal(recording.keys[:, :, recording.start:recording.end],
                                                           rows(3, 3))


@pytest.mark.parametrize("policy", ["dynamic", "bmc:5", "fixed:3:exact", "mlx", "geometric", "static", "reserve",
                                    "fixed:200:pad-16"])
@pytest.mark.parametrize("prompt,seq,window", [(37, 160, 16), (3, 90, 40), (100, 130, 64), (20, 50, 64), (40, 41, 40)])
def test_sliding_layer_events_are_the_cost_models(policy, prompt, seq, window):
    """The layer's growth events and final buffer, decoding token by token, are core.events' for a sliding
    layer: the runtime and the model follow one rule (core/sliding.py). (Static and geometric growth with the
    prompt inside the window and the generation past it: the layer follows the cache's own rule until the
    window fills, the model the window's rule from the start; there only the bound is checked.)"""
    from bmc_model.core.events import policy_events
    from bmc_model.core.profile import embedded_profile
    from bmc_model.core.specs import ModelSpec
    from bmc_model.core.workload import Geometry, Workload

    pol = parse_policy(policy)
    la = sliding(pol, window, seq)
    la.update(rows(prompt, 0), rows(prompt, 0))
    for n in range(prompt, seq):
        la.update(rows(1, n), rows(1, n))
    spec = ModelSpec(name="t", layers=1, heads=H, kv_heads=H, head_dim=D, hidden=H * D, ffn=8, vocab=8,
                     dtype="float32", sliding_window=window)
    ev = policy_events(pol, Workload(prompt, seq), Geometry.of(spec, B), embedded_profile())
    if pol.growth != "fixed" and prompt <= window < seq:
        assert la.capacity <= window - 1 + la.rule.r and la.end - la.start == window - 1
        return
    assert la.grow_events - 1 == ev.count  # (the first is the prefill's buffer)
    assert la.capacity == ev.final_capacity
    assert la.kv_bytes() == 2 * B * H * D * 4 * ev.final_capacity
