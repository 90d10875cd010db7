"""The timed operations do what their terms say (run once each at small sizes; nothing is timed)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bmc_model.calibrate import bench_attention as ba
from bmc_model.calibrate import bench_layers as bl
from bmc_model.calibrate import bench_memory as bm
from bmc_model.calibrate import bench_weights as bw
from bmc_model.calibrate.assemble import tiny_spec
from bmc_model.calibrate.bench_overhead import sd_iter_case
from bmc_model.calibrate.pool import Pool
from bmc_model.core.specs import get_spec

F32 = torch.float32


def run_once(case):
    with case.make() as op:
        return op()


def test_alloc_cases_cover_touch_and_call():
    cases = bm.alloc_cases((4096, 65536), F32, "cpu")
    assert {c.key[0] for c in cases} == {"touch", "call"}
    assert {c.x for c in cases} == {4096.0, 65536.0}
    for c in cases:
        run_once(c)


def test_alloc_cases_without_the_raw_only_call():
    cases = bm.alloc_cases((4096, 65536), F32, "cpu", call=False)  # --quick: the alloc term's touch only
    assert [c.key[0] for c in cases] == ["touch", "touch"]


def test_copy_moves_the_valid_rows_in_kv_layout():
    spec = get_spec("smollm2-135m")
    cases = bm.copy_cases(spec, (5,), F32, "cpu")
    assert [c.key for c in cases] == [("strided", 5), ("contig", 5)]
    row = spec.kv_heads * spec.head_dim * 4
    assert all(c.x == 5 * row for c in cases)
    seen = {}
    orig = bm._kv

    def spy(spec_, batch, rows, dtype, device, fill):
        t = orig(spec_, batch, rows, dtype, device, fill)
        seen[(rows, fill)] = t
        return t

    bm._kv = spy
    try:
        run_once(cases[0])
    finally:
        bm._kv = orig
    new = seen[(5 + bm.GROWTH_GAP, 0.0)]
    assert new.shape == (1, spec.kv_heads, 5 + bm.GROWTH_GAP, spec.head_dim)
    assert torch.all(new[:, :, :5] == 1.0) and torch.all(new[:, :, 5:] == 0.0)
    assert len(bm.copy_cases(spec, (5,), F32, "cpu", contiguous=False)) == 1


def test_write_puts_q_rows_into_the_cold_buffer():
    spec = get_spec("smollm2-135m")
    with Pool(2**20, F32, "cpu") as pool:
        (case,) = bm.write_cases(pool, spec, ((2, 4),))
        assert case.x == 2 * spec.kv_heads * 4 * spec.head_dim * 4
        with case.make() as op:
            for _ in range(bm.WRITE_POSITIONS + 3):  # cycles through its offsets
                op()
        written = (pool.flat == 1.0).sum().item()
        assert 0 < written <= bm.WRITE_POSITIONS * 2 * spec.kv_heads * 4 * spec.head_dim
        assert written % (spec.head_dim * 4) == 0  # whole rows


def test_cat_case_appends_one_row_a_call_and_restarts_from_its_base(monkeypatch):
    spec = get_spec("smollm2-135m")
    (case,) = bm.cat_cases(spec, (7,), F32, "cpu")
    row = spec.kv_heads * spec.head_dim * 4
    assert case.key == 7 and case.per_call == 1
    assert case.x == (7 + (bm.CAT_SPAN - 1) / 2) * row  # the mean size over one span of growth
    outs, cat = [], torch.cat

    def spy(tensors, dim):
        outs.append(cat(tensors, dim=dim))
        return outs[-1]

    monkeypatch.setattr(torch, "cat", spy)
    with case.make() as op:
        for _ in range(bm.CAT_SPAN + 1):
            op()
    monkeypatch.undo()
    # 7 base rows grow to 7 + CAT_SPAN, then the next call starts again from the base
    assert [t.shape[2] for t in outs] == [*range(8, 8 + bm.CAT_SPAN), 8]
    for t in outs:
        assert t.shape[:2] == (1, spec.kv_heads) and t.shape[3] == spec.head_dim
        assert torch.all(t[:, :, :7] == 1.0) and torch.all(t[:, :, 7:] == 2.0)  # base rows, then the appended ones


def test_copy_and_cat_walk_enough_distinct_buffers_to_run_cold():
    spec = get_spec("smollm2-135m")
    row = spec.kv_heads * spec.head_dim * 4
    stream = 2**20
    for c in bm.copy_cases(spec, (5, 300), F32, "cpu", stream_bytes=stream):
        rows, gap = c.key[1], (bm.GROWTH_GAP if c.key[0] == "strided" else 0)
        assert c.per_call * (2 * rows + gap) * row >= stream
        assert (c.per_call - 1) * (2 * rows + gap) * row < stream  # no more than needed
        run_once(c)
    for c in bm.cat_cases(spec, (5, 300), F32, "cpu", stream_bytes=stream):
        assert c.per_call * 2 * c.key * row >= stream
        with c.make() as op:
            op()
            op()
    # a buffer past the stream is cold by itself: one copy
    assert [c.per_call for c in bm.cat_cases(spec, (5000,), F32, "cpu", stream_bytes=stream)] == [1]


@pytest.mark.parametrize("kind", ["exact", "masked"])
def test_attention_cases_run_with_gqa_folding_over_cold_copies(kind):
    specs = (get_spec("smollm2-135m"), get_spec("qwen2.5-coder-0.5b"))
    with Pool(4 * 2**20, F32, "cpu") as pool:
        cases = ba.attn_cases(pool, specs, (16, 40), kind, stream_bytes=2**20)
        assert len(cases) == 4
        for c in cases:
            run_once(c)
            spec = next(s for s in specs if s.name == c.key[0])
            assert c.x == 2 * spec.kv_heads * c.key[1] * spec.head_dim * 4
            rows = c.key[1] + (0 if kind == "masked" else ba.VIEW_SLACK)  # a copy's buffer
            assert c.per_call * 2 * spec.kv_heads * rows * spec.head_dim * 4 >= 2**20  # streams past the cache


def test_folded_attention_equals_gqa_attention():
    """The folded layout the runtime uses computes the same thing as enable_gqa."""
    spec = get_spec("smollm2-135m")  # 9 heads over 3 KV heads
    g, w, d = spec.heads // spec.kv_heads, 33, spec.head_dim
    torch.manual_seed(0)
    q = torch.randn(1, spec.heads, 1, d)
    k, v = torch.randn(1, spec.kv_heads, w, d), torch.randn(1, spec.kv_heads, w, d)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    folded = q.view(1, spec.kv_heads, g, d)  # query head kv * g + j -> row j of KV head kv
    out = torch.nn.functional.scaled_dot_product_attention(folded, k, v)
    assert torch.allclose(out.reshape(1, spec.heads, 1, d), ref, atol=1e-5)


def test_causal_mask_form():
    m = ba.causal_mask(n=3, q_rows=2, width=6, group=1, dtype=F32, device="cpu")
    assert m.shape == (2, 6)
    assert torch.isinf(m[0, 4:]).all() and (m[0, :4] == 0).all()  # row 0 (position 3) sees 0..3
    assert torch.isinf(m[1, 5:]).all() and (m[1, :5] == 0).all()
    assert ba.causal_mask(3, 2, 6, 3, F32, "cpu").shape == (6, 6)


def test_attention_q_cases_run():
    with Pool(2**20, F32, "cpu") as pool:
        cases = ba.attn_q_cases(pool, get_spec("smollm2-135m"), (32,), (1, 2, 4), stream_bytes=2**18)
        assert [c.key for c in cases] == [(1, 32), (2, 32), (4, 32)]
        for c in cases:
            run_once(c)


def test_weight_shapes_are_the_runtime_layer_and_scale_to_size():
    spec = get_spec("llama-7b")
    shapes = spec.layer_matrices()
    assert sum(o * i for o, i in shapes) == spec.layer_params()
    got, nbytes = bw.scaled_shapes(spec, 16 * 2**20, 4)
    assert nbytes == pytest.approx(16 * 2**20, rel=0.01)
    assert [i for _, i in got] == [i for _, i in shapes]


def test_weight_pool_streams_copies_and_divides_per_call():
    spec = get_spec("smollm2-135m")
    with Pool(8 * 2**20, F32, "cpu") as pool:
        (case,) = bw.size_cases(pool, (spec,), (2**20,), stream_bytes=4 * 2**20)
        assert case.per_call == 4 and case.x == pytest.approx(2**20, rel=0.02)
        run_once(case)
        tiny = dataclasses.replace(spec, name="tiny", hidden=64, heads=2, kv_heads=2, head_dim=32, ffn=128)
        rows = bw.row_cases(pool, (tiny, spec), (1, 4), stream_bytes=2**20)
        assert [c.key for c in rows] == [("tiny", 1), ("tiny", 4), (spec.name, 1), (spec.name, 4)]
        assert rows[0].x == tiny.layer_params() * 4  # a whole real layer ...
        assert rows[2].x <= 8 * 2**20 < spec.layer_params() * 4  # ... or as much of it as the pool holds
        for c in rows:
            run_once(c)
        (big,) = bw.size_cases(pool, (spec,), (9 * 2**20,), stream_bytes=2**20)  # shrunk to fit the pool
        assert big.x <= 8 * 2**20
        run_once(big)


def test_pool_views_are_disjoint_and_bounded():
    with Pool(1000 * 4, F32, "cpu") as pool:
        assert pool.copies(100, stream_bytes=2000) == 5 and pool.copies(100, stream_bytes=10**9) == 10
        groups = pool.views([(2, 5), (10,)], 3)
        ptrs = [t.data_ptr() for g in groups for t in g]
        assert len(set(ptrs)) == 6
        with pytest.raises(ValueError):
            pool.views([(1000,)], 2)
    with pytest.raises(RuntimeError):
        pool.views([(1,)], 1)


def test_sd_iteration_bookkeeping_runs():
    case = sd_iter_case(vocab=300, gamma=4, device="cpu")
    run_once(case)
    assert tiny_spec(3, "float32").layers == 3


def test_layer_points_time_the_rest_of_the_forward_per_geometry_and_q():
    import numpy as np

    specs = (dataclasses.replace(tiny_spec(1, "float32"), name="a"),
             dataclasses.replace(tiny_spec(1, "float32"), name="b", hidden=128, ffn=256))
    pts = bl.layer_points(specs, 1, F32, 4, 2**20, 2**30, np.random.default_rng(0))
    assert [(p.model, p.q) for p in pts] == [(s.name, q) for s in specs for q in bl.Q_ROWS]
    assert all(p.rest_s > 0 and p.layers == bl.layers_for(specs[0] if p.model == "a" else specs[1], 4, 2**20)
               for p in pts)
    assert bl.layer_points(specs, 1, F32, 4, 2**20, 1, np.random.default_rng(0)) == []  # nothing fits: skipped


def test_matmul_timed_decoder_gives_the_same_logits():
    from bmc_model.core.policy import NAMED
    from bmc_model.runtime.decoder import Decoder, random_weights

    spec = tiny_spec(2, "float32")
    w = random_weights(spec, seed=3)
    plain, timed = Decoder(spec, w), bl._timed_decoder_class()(spec, w)
    toks = torch.tensor([[1, 2, 3, 4]])
    outs = []
    for d in (plain, timed):
        cache = d.new_cache(NAMED["reserve"], batch=1, max_len=8)
        outs.append(d.forward(toks, cache))
    assert torch.equal(outs[0], outs[1]) and timed.mm_s > 0
