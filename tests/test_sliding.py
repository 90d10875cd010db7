"""Sliding-window layers in the cost model: a sliding layer holds and reads the window, not the context; its
events match a step-by-step walk of the rule BMCCache's sliding layer follows; a mixed model is its full
layers plus its sliding layers; a window the generation never passes changes nothing, bit for bit."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_model_laws import PROF, close, profiles, simulate

from bmc_model import Policy, predict, recommend
from bmc_model.core.breakdown import breakdown, memory
from bmc_model.core.events import policy_events
from bmc_model.core.sliding import kept_rows, sliding_policy
from bmc_model.core.specs import get_spec
from bmc_model.core.sweep import sweep_r
from bmc_model.core.workload import Geometry, Workload

MISTRAL = get_spec("mistral-7b")
GEMMA = get_spec("gemma3-270m")
POLICIES = ("dynamic", "static", "geometric", "mlx", "llamacpp", "reserve", "bmc:64", "fixed:32:exact",
            "fixed:200:pad-256", "fixed:7:padded")


def all_sliding(spec, window: int):
    return dataclasses.replace(spec, sliding_window=window, sliding_layers=None)


def walk(policy: Policy, prompt: int, seq: int, window: int, geo: Geometry, prof):
    """Plain decoding through BMCSlidingLayer's rule (hf/sliding.py) row by row: (events, alloc, copy, width,
    final capacity, capacity before the last event) — the ground truth for the closed forms."""
    rule, cap = sliding_policy(policy, window), seq
    end = kept_rows(prompt, window)  # the prefill leaves the window's last W - 1 rows at the front
    c = end + rule.initial_capacity(prompt, cap) - prompt
    prev, events, alloc, copy, width = 0, 0, 0.0, 0.0, 0
    for n in range(prompt, seq):
        kept = kept_rows(n, window)
        if end + 1 > c:  # no room: the kept rows move to a fresh buffer
            new = kept + rule.grown_capacity(n, 1, c, cap) - n
            events += 1
            if "cat" in prof.terms:  # exact width: the copy first-touches, the room is touched by writes
                alloc += prof.alloc.segment(geo.rho * new)[1] * geo.rho * (new - kept)
                copy += float(prof.cat(geo.rho * kept))
            else:
                alloc += float(prof.alloc(geo.rho * new))
                copy += float(prof.copy(geo.rho * kept))
            prev, c, end = c, new, kept
        width += kept + 1
        end += 1
    return events, alloc, copy, width, c, prev


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 400), st.integers(2, 600), st.integers(2, 300), st.integers(1, 700),
       st.sampled_from(["exact", "padded", "geometric", "static"]), profiles())
def test_sliding_events_match_step_by_step_walk(prompt, gen, window, r, kind, prof):
    seq = prompt + gen
    other = {"geometric": Policy("geometric", factor=1.7), "static": Policy("static", width="padded")}
    pol = other[kind] if kind in other else Policy("fixed", r, width=kind)
    geo = Geometry.of(all_sliding(get_spec("llama-7b"), window), 1, "float32")
    w = Workload(prompt, seq)
    ev = policy_events(pol, w, geo, prof)
    k, alloc, copy, width, final, prev = walk(pol, prompt, seq, window, geo, prof)
    if seq <= window:  # never past the window: a full-attention layer (BMCCache's follows the cache's rule)
        assert ev.count == simulate(pol, prompt, seq, geo, prof)[0]
        return
    assert ev.count == k
    assert close(float(ev.alloc_rows_sum_s), alloc, 1e-9)
    assert close(float(ev.copy_rows_sum_s), copy, 1e-9)
    assert float(ev.width_sum) == width
    assert float(ev.final_capacity) == final
    assert float(ev.prev_capacity) == (prev if k else 0)


def test_mistral_at_16k_holds_the_window_not_the_context():
    """The issue's target: Mistral-7B (sliding_window 4096) at --seq 16384 holds 4096 rows a layer, not 16384."""
    e = 4  # the embedded profile's dtype
    rho = MISTRAL.kv_heads * MISTRAL.head_dim * e
    p = predict("mistral-7b", 16384, dtype="float32")  # DynamicCache: torch.cat of the window every token
    assert p.memory_bytes == 2 * MISTRAL.layers * rho * 4096
    full = predict(dataclasses.replace(MISTRAL, sliding_window=None), 16384, dtype="float32")
    assert full.memory_bytes == 2 * MISTRAL.layers * rho * 16384
    for pol in POLICIES:  # every policy: at most the kept W - 1 rows and its room (r, or W without an r)
        q = predict("mistral-7b", 16384, policy=pol, dtype="float32")
        most = 4095 + sliding_policy(q.policy, 4096).r  # rows a sliding buffer ever holds
        assert q.memory_bytes <= 2 * MISTRAL.layers * rho * most < full.memory_bytes
        assert q.memory_bytes <= q.reserved_bytes <= (2 * MISTRAL.layers + 1) * rho * most
        # attention reads the window: the sliding model's useful attention is that of a 4096-row cache
        assert q.breakdown["attention_useful"] < 0.5 * predict(dataclasses.replace(MISTRAL, sliding_window=None),
                                                               16384, policy=pol).breakdown["attention_useful"]
        assert q.breakdown["attention_redundant"] == 0.0


def test_config_with_sliding_window_is_priced_at_the_window(tmp_path):
    import json

    cfg = {"model_type": "mistral", "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
           "hidden_size": 4096, "intermediate_size": 14336, "vocab_size": 32000, "sliding_window": 4096,
           "max_position_embeddings": 32768}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    via_config = predict(config=path, seq=16384, dtype="float32")
    assert via_config.memory_bytes == predict("mistral-7b", 16384, dtype="float32").memory_bytes


@pytest.mark.parametrize("seq,prompt", [(4096, None), (4096, 4000), (2048, 100), (700, 123)])
@pytest.mark.parametrize("sd", [{}, {"gamma": 4, "alpha": 0.8}, {"gamma": 7, "alpha": [0.9, 0.7], "draft_cost": 0.1}])
def test_window_never_passed_is_full_attention_bit_for_bit(seq, prompt, sd):
    full = dataclasses.replace(MISTRAL, sliding_window=None)
    for pol in POLICIES:
        a, b = predict(MISTRAL, seq, prompt, policy=pol, **sd), predict(full, seq, prompt, policy=pol, **sd)
        assert dataclasses.asdict(a) == dataclasses.asdict(b)


@pytest.mark.parametrize("sd", [{}, {"gamma": 4, "alpha": 0.8}])
@pytest.mark.parametrize("pol", POLICIES)
def test_mixed_model_is_its_full_layers_plus_its_sliding_layers(pol, sd):
    """Gemma-3-270M (15 of 18 layers sliding): every KV term is 3/18 of the all-full model's plus 15/18 of the
    all-sliding model's; weights, writes and overhead are every layer's either way."""
    mixed = predict(GEMMA, 8192, policy=pol, **sd)
    full = predict(dataclasses.replace(GEMMA, sliding_window=None, sliding_layers=None), 8192, policy=pol, **sd)
    slide = predict(all_sliding(GEMMA, 512), 8192, policy=pol, **sd)
    f, s = 3 / 18, 15 / 18
    for term in ("attention_useful", "attention_redundant", "growth_alloc", "growth_copy"):
        assert math.isclose(mixed.breakdown[term], f * full.breakdown[term] + s * slide.breakdown[term],
                            rel_tol=1e-12, abs_tol=1e-15)
    for term in ("weights", "kv_write", "overhead", "sd_iteration"):
        assert mixed.breakdown[term] == full.breakdown[term] == slide.breakdown[term]
    assert math.isclose(mixed.memory_bytes, f * full.memory_bytes + s * slide.memory_bytes, rel_tol=1e-12)
    assert slide.memory_bytes < mixed.memory_bytes < full.memory_bytes
    assert mixed.reserved_bytes >= mixed.memory_bytes


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3000), st.integers(16, 300), st.integers(2, 1200), st.integers(1, 8), st.floats(0.2, 0.95),
       st.floats(0.0, 1.0), st.integers(0, 10**6))
def test_sd_sliding_events_match_random_walk(prompt, gen, window, gamma, alpha, where, seed):
    """Speculative decoding: a sliding layer's events come when a full layer's would (the room left is the
    same), each copying the kept rows; expected copy cost against the rule run with random acceptance."""
    r = 1 + int(where * (gen + gamma + 1))
    w = Workload(prompt, prompt + gen, gamma=gamma, accept=(alpha,))
    if w.seq <= window:
        window = max(2, w.seq // 2)
    geo = Geometry.of(all_sliding(get_spec("llama-7b"), window), 1, "float32")
    pol = Policy("fixed", r, width="exact")
    ev = policy_events(pol, w, geo, PROF)
    full = policy_events(pol, w, dataclasses.replace(geo, sliding_layers=0), PROF)
    assert float(ev.count) == float(full.count)
    rng = np.random.default_rng(seed)
    copies = []
    for _ in range(400):
        n, out, end, cost = w.prompt, 0, kept_rows(w.prompt, window), 0.0
        c = end + pol.initial_capacity(w.prompt, w.cap) - w.prompt
        while out < w.tokens:
            if end + w.q > c:
                kept = kept_rows(n, window)
                c, end = kept + pol.grown_capacity(n, w.q, c, w.cap) - n, kept
                cost += float(PROF.cat(geo.rho * kept))
            adv = 1
            while adv < w.q and rng.random() < alpha:
                adv += 1
            n, out, end = n + adv, out + adv, end + adv
        copies.append(cost)
    mean, err = float(np.mean(copies)), float(np.std(copies) / math.sqrt(len(copies)))
    assert abs(float(ev.copy_rows_sum_s) - mean) <= 4 * err + 0.02 * mean + float(PROF.cat(geo.rho * window))


def test_sliding_sweep_matches_scalar_calls():
    """recommend()'s sweep prices every r at once; for a sliding model it must equal scalar calls."""
    for spec, w in ((MISTRAL, Workload(5000, 6000)), (GEMMA, Workload(700, 2100, 2)),
                    (GEMMA, Workload(700, 900, gamma=5, accept=(0.8, 0.7, 0.6)))):
        geo = Geometry.of(spec, w.batch, "float32")
        for width in ("padded", "exact", "pad"):
            sw = sweep_r(width, w, geo, PROF)
            for r in (r for r in (1, 2, 7, 64, 255, 511, 512, 1399, 1400, 1401) if r <= w.seq):
                pol = Policy("fixed", r, width=width)
                s = sum(breakdown(pol, w, geo, PROF).values())
                i = min(r, len(sw.r)) - 1  # past T + gamma every r costs the same
                assert close(float(sw.seconds[i]), s, 1e-9)
                assert close(float(sw.reserved_bytes[i]), float(memory(pol, w, geo, PROF)[1]), 1e-12)


def test_recommend_on_sliding_models():
    rec = recommend("mistral-7b", 16384)
    assert rec.prediction.memory_bytes < 0.3 * predict(dataclasses.replace(MISTRAL, sliding_window=None), 16384,
                                                       policy=rec.policy).memory_bytes
    sd = recommend("gemma3-270m", 4096, gamma="auto", alpha=0.7)
    assert sd.prediction.ms_per_token > 0 and sd.prediction.memory_bytes > 0


def test_with_layers_keeps_the_share_of_sliding_layers():
    assert GEMMA.with_layers(6).sliding_layers == 5 and GEMMA.with_layers(2).sliding_layers == 2
    assert MISTRAL.with_layers(2).sliding_count == 2  # every layer slides
    assert get_spec("llama-7b").sliding_count == 0
