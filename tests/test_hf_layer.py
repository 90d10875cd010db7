"""BMCLayer on its own: growth rule, returned views, crop / reset / beam operations against a torch.cat reference."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import WIDTHS  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bmc_model.core.errors import BMCError  # noqa: E402
from bmc_model.core.policy import Policy  # noqa: E402
from bmc_model.hf import BMCCache, BMCLayer  # noqa: E402

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
