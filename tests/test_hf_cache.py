"""BMCCache inside HF generate(): token-identical to DynamicCache in every generate mode, on a tiny random Llama
and on tiny sliding-window models (Mistral-style, Gemma-3-style mixed)."""

from __future__ import annotations

import copy
import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers import (  # noqa: E402
    DynamicCache,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
)

from bmc_model.core.errors import BMCError  # noqa: E402
from bmc_model.hf import BMCCache, BMCLayer, BMCSlidingLayer  # noqa: E402

NEW = 20
RS = (1, 5, 64)
WIDTHS = ("exact", "padded")
MODES = ["greedy", "sample", "batch_left_pad", "beam", "assisted", "prompt_lookup"]
PREALLOCATED = ("reserve", "static:padded", "llamacpp")  # one buffer of max_cache_len rows per layer
ROOM = 128  # max_cache_len for them: the longest generate below (prompt 44 + NEW + drafts) fits


def tiny_config(**kw) -> LlamaConfig:
    base = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=None,
                eos_token_id=None)
    return LlamaConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_config()).eval()


@pytest.fixture(scope="module")
def assistant(model):
    # A perturbed copy: agrees with the target on some drafts and not on others, so both paths run.
    torch.manual_seed(1)
    a = copy.deepcopy(model)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(torch.randn_like(p) * 0.002)
    return a


@pytest.fixture(scope="module")
def prompt(model):
    # P0, the model's own continuation of P0, then P0 again: prompt lookup then drafts from the first
    # occurrence, and the model often (not always) continues the same way, so drafts are accepted and rejected.
    g = torch.Generator().manual_seed(2)
    p0 = torch.randint(1, 96, (1, 12), generator=g)
    with torch.no_grad():
        cont = model.generate(p0, max_new_tokens=20, do_sample=False)
    return torch.cat([cont, p0], dim=1)


def batch_inputs():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 96, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding of different lengths
    mask[2, :7] = 0
    return ids.masked_fill(mask == 0, 0), mask


def mode_kwargs(mode, prompt, assistant):
    if mode == "greedy":
        return dict(inputs=prompt)
    if mode == "sample":
        return dict(inputs=prompt, do_sample=True, top_k=0, top_p=1.0, temperature=1.0)
    if mode == "batch_left_pad":
        ids, mask = batch_inputs()
        return dict(inputs=ids, attention_mask=mask)
    if mode == "beam":
        return dict(inputs=prompt, num_beams=3)
    if mode == "assisted":
        return dict(inputs=prompt, assistant_model=assistant)
    if mode == "prompt_lookup":
        return dict(inputs=prompt, prompt_lookup_num_tokens=3)
    raise AssertionError(mode)


def generate(model, cache, **kw):
    torch.manual_seed(1234)  # sampling: the same seed for both caches
    kw = dict(kw)
    kw.setdefault("do_sample", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.generate(kw.pop("inputs"), max_new_tokens=NEW, min_new_tokens=NEW, cache=cache, **kw)


_REFERENCE: dict[str, torch.Tensor] = {}


def reference(mode, model, prompt, assistant):
    if mode not in _REFERENCE:
        _REFERENCE[mode] = generate(model, DynamicCache(), **mode_kwargs(mode, prompt, assistant))
    return _REFERENCE[mode]


class Spy:
    """Counts the calls generate() makes on the cache: crops (assisted) and beam reorders (and whether each
    kept its layer's buffers: a reorder is in place)."""

    def __init__(self, cache, monkeypatch):
        self.crops: list[int] = []
        self.reorders: list[list[int]] = []
        self.moved = 0  # reorders that replaced a layer's buffer
        crop = cache.crop

        def spy_crop(n):
            self.crops.append(n)
            return crop(n)

        cache.crop = spy_crop
        orig = BMCLayer.reorder_cache
        spy = self

        def spy_reorder(layer, idx):
            spy.reorders.append(idx.tolist())
            before = (layer.keys.data_ptr(), layer.values.data_ptr())
            orig(layer, idx)
            spy.moved += before != (layer.keys.data_ptr(), layer.values.data_ptr())

        monkeypatch.setattr(BMCLayer, "reorder_cache", spy_reorder)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("r", RS)
@pytest.mark.parametrize("mode", MODES)
def test_generate_matches_dynamic_cache(mode, r, width, model, prompt, assistant, monkeypatch):
    ref = reference(mode, model, prompt, assistant)
    cache = BMCCache(r=r, width=width)
    spy = Spy(cache, monkeypatch)
    out = generate(model, cache, **mode_kwargs(mode, prompt, assistant))
    assert torch.equal(out, ref)
    stats = cache.stats()
    if r < NEW // 2:
        assert stats["grow_events"] > len(cache.layers)  # grew during decoding, not only at prefill
    if mode == "beam":
        assert any(idx != sorted(idx) or len(set(idx)) < len(idx) for idx in spy.reorders)
        assert spy.moved == 0  # reordered in place
    if mode in ("assisted", "prompt_lookup"):
        assert any(n < 0 for n in spy.crops), "no draft was ever rejected: crop untested"
        assert len(spy.crops) < NEW, "no draft was ever accepted: multi-row verification untested"


@pytest.mark.parametrize("policy", PREALLOCATED)
@pytest.mark.parametrize("mode", MODES)
def test_preallocated_policies_match_dynamic_cache(mode, policy, model, prompt, assistant, monkeypatch):
    """Static and reserve growth in every generate mode: DynamicCache's tokens from one buffer per layer, never
    grown (crops move the length, beam reorders stay in place)."""
    ref = reference(mode, model, prompt, assistant)
    cache = BMCCache(policy=policy, max_cache_len=ROOM)
    spy = Spy(cache, monkeypatch)
    assert torch.equal(generate(model, cache, **mode_kwargs(mode, prompt, assistant)), ref)
    assert cache.stats()["grow_events"] == len(cache.layers)  # the prefill's allocation, nothing after
    assert all(la.capacity == ROOM for la in cache.layers)
    if mode == "beam":
        assert spy.reorders and spy.moved == 0
    if mode in ("assisted", "prompt_lookup"):
        assert any(n < 0 for n in spy.crops), "no draft was ever rejected: crop untested"


def test_pad_width_and_config_built_layers_match(model, prompt, assistant):
    ref = reference("greedy", model, prompt, assistant)
    cache = BMCCache(r=7, width="pad-4", config=model.config)
    assert len(cache) == model.config.num_hidden_layers  # built up front from the config
    assert torch.equal(generate(model, cache, inputs=prompt), ref)


@pytest.mark.parametrize("mode", ["greedy", "assisted"])
def test_trim_hands_back_the_heap_at_each_growth_and_changes_nothing_else(mode, model, prompt, assistant):
    from bmc_model.core.host import release_heap

    ref = reference(mode, model, prompt, assistant)
    cache = BMCCache(r=3, width="exact", config=model.config, trim=True)
    assert torch.equal(generate(model, cache, **mode_kwargs(mode, prompt, assistant)), ref)
    st = cache.stats()
    assert st["grow_events"] > 2 and st["heap_trims"] == (st["grow_events"] if release_heap() else 0)
    assert BMCCache(r=3).stats()["heap_trims"] == 0  # off unless asked


@pytest.mark.parametrize("policy", ["geometric:exact", "geometric:1.5:padded", "mlx", "bmc:3"])
def test_other_growth_policies_match(policy, model, prompt, assistant):
    ref = reference("greedy", model, prompt, assistant)
    assert torch.equal(generate(model, BMCCache(policy=policy), inputs=prompt), ref)


@pytest.mark.parametrize("policy", PREALLOCATED)
def test_preallocated_growth_needs_and_obeys_max_cache_len(policy, model, prompt, assistant):
    ref = reference("greedy", model, prompt, assistant)
    n = prompt.shape[1] + NEW
    cache = BMCCache(policy=policy, max_cache_len=n)
    assert torch.equal(generate(model, cache, inputs=prompt), ref)
    assert cache.stats()["grow_events"] == len(cache.layers)  # one allocation per layer, never grown
    assert cache.get_max_length() == n
    with pytest.raises(BMCError, match="max_cache_len"):
        BMCCache(policy=policy)
    with pytest.raises(BMCError, match="max_cache_len"):
        BMCCache(policy=policy, config=model.config)
    with pytest.raises(BMCError, match="exceeds"):
        generate(model, BMCCache(r=4, max_cache_len=n - 5), inputs=prompt)


def test_past_key_values_keyword_still_works(model, prompt, assistant):
    ref = reference("greedy", model, prompt, assistant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.generate(prompt, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                             past_key_values=BMCCache(r=4, width="padded"))
    assert torch.equal(out, ref)


@pytest.mark.parametrize("width", WIDTHS)
def test_views_are_as_wide_as_the_mask_hf_builds(width, model, prompt, monkeypatch):
    """update() returns exactly get_mask_sizes()'s width: n + q (exact) or the capacity (padded)."""
    seen = []
    orig_update = BMCLayer.update

    def update(layer, k, v, *a, **kw):
        predicted = layer.get_mask_sizes(k.shape[-2])[0]
        n = layer.length
        keys, values = orig_update(layer, k, v, *a, **kw)
        seen.append((predicted, keys.shape[-2], n + k.shape[-2], layer.capacity))
        return keys, values

    monkeypatch.setattr(BMCLayer, "update", update)
    generate(model, BMCCache(r=6, width=width), inputs=prompt)
    assert seen
    for predicted, got, valid, capacity in seen:
        assert predicted == got
        assert got == (valid if width == "exact" else capacity)
    if width == "padded":
        assert any(got > valid for _, got, valid, _ in seen)  # masked padding rows really were attended


def test_continuation_and_reset(model, prompt):
    def twice(cache_factory):
        cache = cache_factory()
        first = generate(model, cache, inputs=prompt)
        second = generate(model, cache, inputs=first)  # continue from the cache
        return first, second, cache

    ref1, ref2, _ = twice(DynamicCache)
    out1, out2, cache = twice(lambda: BMCCache(r=3, width="padded"))
    assert torch.equal(out1, ref1) and torch.equal(out2, ref2)
    assert cache.get_seq_length() == out2.shape[1] - 1
    cache.reset()
    assert cache.get_seq_length() == 0 and all(la.keys is None and la.capacity == 0 for la in cache.layers)
    assert torch.equal(generate(model, cache, inputs=prompt), ref1)  # reused after reset like a new one


@pytest.mark.parametrize("kwargs, match", [
    (dict(r=0), "r must be"),
    (dict(r=-3), "r must be"),
    (dict(r=2.5), "r must be"),
    (dict(r=True), "r must be"),
    (dict(r=8, width="wide"), "unknown width"),
    (dict(r=8, width="pad-0"), "unknown width"),
    (dict(), "needs r"),
    (dict(r=8, max_cache_len=0), "max_cache_len"),
    (dict(policy="bmc:8", width="exact"), "not both"),
    (dict(policy="sometimes"), "unknown policy"),
])
def test_bad_arguments_raise_bmc_error(kwargs, match):
    with pytest.raises(BMCError, match=match):
        BMCCache(**kwargs)


def sliding_configs():
    common = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=256, sliding_window=6, pad_token_id=0, bos_token_id=None, eos_token_id=None)
    return {"mistral": MistralConfig(num_hidden_layers=2, **common),  # every layer slides
            "gemma3": Gemma3TextConfig(num_hidden_layers=7, head_dim=16, **common)}  # 5 sliding, 1 full, 1 sliding


@pytest.fixture(scope="module")
def sliding_models():
    """Tiny random sliding-window models, each with a perturbed copy of itself as assistant; prompts (the
    `prompt` fixture, 44 tokens, and the batch's 10) are longer than their window of 6."""
    out = {}
    for i, (name, config) in enumerate(sliding_configs().items()):
        torch.manual_seed(10 + i)
        model = transformers.AutoModelForCausalLM.from_config(config).eval()
        a = copy.deepcopy(model)
        with torch.no_grad():
            for p in a.parameters():
                p.add_(torch.randn_like(p) * 0.002)
        out[name] = (model, a)
    return out


# r = 1 is torch.cat's rule on the sliding layers (a copy of the window each token); 64 never runs out of room
SLIDING_POLICIES = ("bmc:1", "fixed:4:exact", "bmc:5", "fixed:64:pad-8", "geometric:exact", "reserve", "static:padded")
_SLIDING_REFERENCE: dict[tuple[str, str], torch.Tensor] = {}


@pytest.mark.parametrize("policy", SLIDING_POLICIES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["mistral", "gemma3"])
def test_sliding_window_models_match_dynamic_cache(name, mode, policy, sliding_models, prompt, monkeypatch,
                                                   one_thread):
    """Built from the config, BMCCache holds each sliding layer in a window buffer: tokens identical to
    DynamicCache's (whose sliding layers keep the last W - 1 rows), in every generate mode."""
    model, assistant = sliding_models[name]
    kw = mode_kwargs(mode, prompt, assistant)
    if (name, mode) not in _SLIDING_REFERENCE:
        _SLIDING_REFERENCE[name, mode] = generate(model, DynamicCache(config=model.config), **kw)
    ref = _SLIDING_REFERENCE[name, mode]
    room = ROOM if policy in PREALLOCATED else None
    cache = BMCCache(policy=policy, config=model.config, max_cache_len=room)
    spy = Spy(cache, monkeypatch)
    assert torch.equal(generate(model, cache, **kw), ref)
    window = model.config.sliding_window
    kinds = [type(la).__name__ for la in cache.layers]
    assert kinds == [type(la).__name__.replace("DynamicSlidingWindowLayer", "BMCSlidingLayer").replace(
        "DynamicLayer", "BMCLayer") for la in DynamicCache(config=model.config).layers]
    speculative = mode in ("assisted", "prompt_lookup")
    for la in cache.layers:
        if isinstance(la, BMCSlidingLayer):
            assert la.end - la.start == window - 1  # holds the window's rows, not the context
            if not speculative:  # (assisted generation keeps its whole prefill until the next event)
                assert la.capacity <= window - 1 + la.rule.r
    if speculative:
        assert any(n < 0 for n in spy.crops), "no draft was ever rejected: crop untested"


@pytest.mark.parametrize("name", ["mistral", "gemma3"])
def test_sliding_layers_hold_the_window_and_grow_every_r_tokens(name, sliding_models, prompt):
    model, _ = sliding_models[name]
    long = torch.cat([prompt, prompt], dim=1)  # 88 tokens: far past the window
    ref = generate(model, DynamicCache(config=model.config), inputs=long)
    static = BMCCache(policy="static:padded", max_cache_len=long.shape[1] + NEW, config=model.config)
    assert torch.equal(generate(model, static, inputs=long), ref)
    cache = BMCCache(r=4, width="exact", config=model.config)
    assert torch.equal(generate(model, cache, inputs=long), ref)
    sliding = [la for la in cache.layers if isinstance(la, BMCSlidingLayer)]
    full = [la for la in cache.layers if not isinstance(la, BMCSlidingLayer)]
    assert sliding and all(la.capacity == 5 + 4 for la in sliding)  # W - 1 kept rows and r of room
    assert all(la.grow_events == 1 + (NEW - 1) // 4 for la in sliding)  # the prefill's buffer, then every r
    assert all(la.capacity >= long.shape[1] + NEW - 1 for la in full)  # full layers hold the context
    assert cache.get_seq_length() == long.shape[1] + NEW - 1
    # K and V of 9 rows, 2 KV heads of 16, fp32
    assert cache.stats()["kv_bytes"] == sum(la.kv_bytes() for la in full) + len(sliding) * 2 * 9 * 2 * 16 * 4


def test_unsupported_layer_kinds_are_refused_by_name(model):
    config = copy.deepcopy(sliding_configs()["mistral"])
    config.layer_types = ["full_attention", "linear_attention"]
    with pytest.raises(BMCError, match="linear_attention"):
        BMCCache(r=8, config=config)

    class Fake:
        pass

    fake = Fake()
    fake.config = config
    with pytest.raises(BMCError, match="linear_attention"):
        BMCCache.tuned(fake, seq=64)


def test_tuned_on_a_sliding_model(sliding_models, prompt):
    from bmc_model.hf.tune import spec_for_model

    model, _ = sliding_models["gemma3"]
    spec = spec_for_model(model)
    assert (spec.sliding_window, spec.sliding_count, spec.layers) == (6, 6, 7)
    cache = BMCCache.tuned(model, seq=prompt.shape[1] + NEW)
    assert sum(isinstance(la, BMCSlidingLayer) for la in cache.layers) == 6
    ref = generate(model, DynamicCache(config=model.config), inputs=prompt)
    assert torch.equal(generate(model, cache, inputs=prompt), ref)


@pytest.mark.parametrize("width", WIDTHS)
def test_sliding_model_without_config_keeps_full_history_and_stays_exact(width, prompt, sliding_models):
    """Without a config BMCCache cannot see layer types: it keeps every row, and HF's sliding mask does
    the windowing, so the tokens are still DynamicCache's (which windows its own sliding layers)."""
    mistral, _ = sliding_models["mistral"]
    ref = generate(mistral, DynamicCache(config=mistral.config), inputs=prompt)
    assert torch.equal(generate(mistral, BMCCache(r=4, width=width), inputs=prompt), ref)


def test_tuned_uses_recommend(model, prompt, assistant):
    from bmc_model import recommend
    from bmc_model.hf.layer import masked
    from bmc_model.hf.tune import spec_for_model

    cache = BMCCache.tuned(model, seq=256, batch=1)
    # a GQA model under transformers: masked widths only, and reserve, which BMCCache masks (hf/tune.py)
    rec = recommend(model=spec_for_model(model), seq=256, batch=1, dtype="float32", runtime="hf",
                    widths=("padded", "pad"), named=("static", "llamacpp", "reserve"))
    assert cache.policy == rec.policy and masked(cache.policy)
    assert cache.recommendation.policy == rec.policy
    assert len(cache) == model.config.num_hidden_layers
    assert torch.equal(generate(model, cache, inputs=prompt), reference("greedy", model, prompt, assistant))


def test_tuned_gives_a_preallocated_policy_seq_plus_gamma_rows(model, prompt, assistant, monkeypatch):
    from types import SimpleNamespace

    import bmc_model.core.decide as decide
    from bmc_model.core.policy import NAMED

    rec = SimpleNamespace(policy=NAMED["reserve"], gamma=3, prediction=SimpleNamespace(ms_per_token=1.0))
    monkeypatch.setattr(decide, "recommend", lambda **kw: rec)  # whatever recommend() picks, reserve here
    seq = prompt.shape[1] + NEW
    cache = BMCCache.tuned(model, seq=seq)
    assert cache.policy == NAMED["reserve"] and cache.max_cache_len == seq + 3 and cache.recommendation is rec
    assert torch.equal(generate(model, cache, inputs=prompt), reference("greedy", model, prompt, assistant))
    assert BMCCache.tuned(model, seq=seq, max_cache_len=200).max_cache_len == 200  # a given one is kept


@pytest.mark.parametrize("label, trims", [("reserve", False), ("fixed-r3-exact", True)])
def test_tuned_trims_the_heap_where_the_pick_grows(label, trims, model, prompt, assistant, monkeypatch):
    """The cost model frees a growth event's old buffers: tuned() trims (on glibc) exactly where the pick grows."""
    from types import SimpleNamespace

    import bmc_model.core.decide as decide
    from bmc_model.core.host import release_heap
    from bmc_model.core.policy import NAMED, Policy

    pol = NAMED["reserve"] if label == "reserve" else Policy("fixed", 3, width="exact")
    rec = SimpleNamespace(policy=pol, gamma=0, prediction=SimpleNamespace(ms_per_token=1.0))
    monkeypatch.setattr(decide, "recommend", lambda **kw: rec)
    cache = BMCCache.tuned(model, seq=prompt.shape[1] + NEW)
    assert torch.equal(generate(model, cache, inputs=prompt), reference("greedy", model, prompt, assistant))
    st = cache.stats()
    assert st["heap_trims"] == (st["grow_events"] if trims and release_heap() else 0)
    assert not trims or st["grow_events"] > 2
    assert BMCCache.tuned(model, seq=prompt.shape[1] + NEW, trim=False).heap_trims == 0


def test_tuned_leaves_every_width_to_recommend_without_gqa():
    from bmc_model import recommend
    from bmc_model.hf.tune import spec_for_model, tuned_policy

    torch.manual_seed(0)
    mha = LlamaForCausalLM(tiny_config(num_key_value_heads=4)).eval()
    pol, _, _ = tuned_policy(mha, seq=256, batch=1)
    assert pol == recommend(model=spec_for_model(mha), seq=256, batch=1, dtype="float32", runtime="hf").policy


def test_spec_for_model_reads_the_config(model):
    from bmc_model.hf.tune import spec_for_model

    spec = spec_for_model(model, name="tiny")
    cfg = model.config
    assert (spec.layers, spec.heads, spec.kv_heads, spec.head_dim, spec.hidden, spec.ffn, spec.vocab) == (
        cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
        cfg.hidden_size // cfg.num_attention_heads, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size)
    assert spec.dtype == "float32" and spec.name == "tiny"


def test_spec_from_config_dict_matches_the_file_reader(tmp_path):
    import json

    from bmc_model.core.specs import spec_from_config, spec_from_config_dict

    d = {"model_type": "llama", "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2,
         "hidden_size": 256, "intermediate_size": 512, "vocab_size": 1000, "_name_or_path": "x/y"}
    p = tmp_path / "config.json"
    p.write_text(json.dumps(d))
    assert spec_from_config_dict(d) == spec_from_config(p)
    with pytest.raises(BMCError, match="missing field 'vocab_size'"):
        spec_from_config_dict({k: v for k, v in d.items() if k != "vocab_size"}, name="cfg")
