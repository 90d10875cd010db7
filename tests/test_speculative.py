"""Greedy speculative decoding: the same tokens as plain torch.cat decoding whatever the cache policy,
gamma and drafter; rollback keeps target and draft caches right; acceptance accounting is exact."""

import math

import pytest
import torch
from conftest import assert_same_greedy, policies, tiny_spec, tiny_specs
from hypothesis import given, settings
from hypothesis import strategies as st

from bmc_model.core.errors import BMCError
from bmc_model.core.policy import NAMED, Policy
from bmc_model.runtime.decoder import Decoder
from bmc_model.runtime.drafters import DraftModel, OracleDrafter, PromptLookup
from bmc_model.runtime.generate import decode_run
from bmc_model.runtime.speculative import ALPHA_MAX, SDStats, speculative_decode

POLICIES = policies()
SPECS = tiny_specs(vocabs=(16, 64, 97))
DRAFTERS = st.sampled_from(["lookup", "lookup-none", "draft", "draft-bmc", "oracle"])
CAT = NAMED["dynamic"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest


def make_drafter(kind: str, dec: Decoder, base, prompt: int, alpha: float, seed: int):
    if kind == "lookup":
        return PromptLookup()
    if kind == "lookup-none":
        return PromptLookup(max_ngram=2, fallback="none")
    if kind == "draft":  # the target's first layer: a cheap, related draft with its own cache
        return DraftModel(dec.truncated(1))
    if kind == "draft-bmc":  # an unrelated random draft on its own padded BMC policy
        spec = tiny_spec(name="draft", layers=1, heads=2, kv_heads=1, hidden=16, ffn=32, vocab=dec.spec.vocab)
        return DraftModel(Decoder(spec, seed=seed + 1), Policy("fixed", 3, width="padded"))
    return OracleDrafter(base.all_tokens[0].tolist(), prompt, alpha, dec.spec.vocab, seed=seed)


@settings(max_examples=12, deadline=None)
@given(spec=SPECS, policy=POLICIES, kind=DRAFTERS, gamma=st.integers(1, 6), prompt=st.integers(1, 30),
       new=st.integers(1, 24), alpha=st.sampled_from([0.0, 0.5, 0.9, 1.0]), seed=st.integers(0, 2**16))
def test_sd_tokens_identical_to_plain_cat(spec, policy, kind, gamma, prompt, new, alpha, seed):
    dec = Decoder(spec, seed=seed)
    base = decode_run(dec, CAT, prompt=prompt, new_tokens=new, seed=seed, warmup=0, keep_logits=True)
    drafter = make_drafter(kind, dec, base, prompt, alpha, seed)
    res = speculative_decode(dec, policy, drafter, gamma=gamma, prompt=prompt, new_tokens=new, seed=seed, warmup=0)
    assert torch.equal(res.first_token, base.first_token)
    assert res.tokens.shape == base.tokens.shape
    assert_same_greedy(res.tokens, base.tokens, base.logits)
    st_ = res.stats
    assert st_.iterations == len(res.iter_s) == len(res.accepted_per_iter)
    assert st_.tokens == sum(res.accepted_per_iter) + st_.iterations >= new
    assert st_.tokens - max(res.accepted_per_iter[-1] + 1, 0) < new  # only the last iteration may overshoot
    if policy.preallocated:  # static and reserve: one buffer of every row, never grown, rolled back in place
        assert res.growth_events == 0 and res.final_capacity == prompt + new + gamma


@settings(max_examples=14, deadline=None)
@given(spec=SPECS, policy=POLICIES, gamma=st.integers(1, 6), prompt=st.integers(1, 30), new=st.integers(1, 24),
       seed=st.integers(0, 2**16))
def test_synthetic_prompt_sd_matches_plain(spec, policy, gamma, prompt, new, seed):
    """Synthetic K/V prompt rows (as validate uses): the same random rows and first token as decode_run."""
    dec = Decoder(spec, seed=seed)
    base = decode_run(dec, CAT, prompt=prompt, new_tokens=new, seed=seed, warmup=0, keep_logits=True,
                      synth_prompt=True)
    oracle = OracleDrafter(base.all_tokens[0].tolist(), prompt, 0.7, spec.vocab, seed=seed)
    res = speculative_decode(dec, policy, oracle, gamma=gamma, prompt=prompt, new_tokens=new, seed=seed, warmup=0,
                             synth_prompt=True)
    assert res.synthetic_prompt and torch.equal(res.first_token, base.first_token)
    assert_same_greedy(res.tokens, base.tokens, base.logits)


@pytest.mark.parametrize("policy", [CAT, Policy("fixed", 4, width="padded"), NAMED["static"], NAMED["reserve"]])
def test_rejections_roll_back_target_and_draft(policy):
    """An always-wrong oracle (every draft rejected) and an always-right one give the plain tokens;
    the draft model's cache, rolled back after rejections, equals a fresh prefill of the confirmed text."""
    dec = Decoder(tiny_spec(), seed=3)
    base = decode_run(dec, CAT, prompt=12, new_tokens=30, seed=5, warmup=0, keep_logits=True)
    ref = base.all_tokens[0].tolist()
    wrong = speculative_decode(dec, policy, OracleDrafter(ref, 12, 0.0, 64), gamma=4, prompt=12, new_tokens=30,
                               seed=5, warmup=0)
    assert_same_greedy(wrong.tokens, base.tokens, base.logits)
    assert wrong.accepted_per_iter == [0] * 30 and wrong.stats.advance == 1.0
    right = speculative_decode(dec, policy, OracleDrafter(ref, 12, 1.0, 64), gamma=4, prompt=12, new_tokens=30,
                               seed=5, warmup=0)
    assert_same_greedy(right.tokens, base.tokens, base.logits)
    if torch.equal(right.tokens, base.tokens):
        assert right.stats.iterations == math.ceil(30 / 5) and right.stats.per_position() == [1.0] * 4

    draft_dec = Decoder(tiny_spec(layers=1), seed=11)  # unrelated: mostly rejected, so its cache is rolled back a lot
    drafter = DraftModel(draft_dec)
    res = speculative_decode(dec, policy, drafter, gamma=3, prompt=12, new_tokens=30, seed=5, warmup=0)
    assert_same_greedy(res.tokens, base.tokens, base.logits)
    assert sum(res.accepted_per_iter) < 3 * res.stats.iterations  # some rejections happened
    # rows the draft holds must be those of the confirmed text x[0..N]: feed what it lacks up to x[N]
    confirmed = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(5))[0].tolist()
    confirmed += res.all_tokens[0].tolist()  # x[0..P-1] (decode_run's prompt draws) + x[P..N]
    cache = drafter.cache
    assert cache is not None and cache.length >= 12
    if cache.length > len(confirmed) - 1:
        cache.rollback(cache.length - (len(confirmed) - 1))  # overshoot rows past x[N - 1]
    with torch.inference_mode():
        tail = draft_dec.forward(torch.tensor([confirmed[cache.length:]]), cache)[0, -1]
        fresh_cache = draft_dec.new_cache(CAT, batch=1, max_len=len(confirmed))
        fresh = draft_dec.prefill(torch.tensor([confirmed]), fresh_cache)[0, -1]
    torch.testing.assert_close(tail, fresh, rtol=1e-4, atol=1e-4)


def test_draft_model_sync_when_every_draft_is_accepted():
    """A draft identical to the target accepts every draft; its cache then lacks the last draft's row,
    which the next proposal feeds together with the bonus token (a 2-row forward)."""
    dec = Decoder(tiny_spec(), seed=4)
    base = decode_run(dec, CAT, prompt=10, new_tokens=25, seed=1, warmup=0, keep_logits=True)
    for policy in (CAT, Policy("fixed", 5, width="padded")):
        res = speculative_decode(dec, policy, DraftModel(dec), gamma=4, prompt=10, new_tokens=25, seed=1, warmup=0)
        assert_same_greedy(res.tokens, base.tokens, base.logits)
        if torch.equal(res.tokens, base.tokens):
            assert res.stats.overall == 1.0 and res.stats.iterations == 5


def test_acceptance_accounting_by_hand():
    s = SDStats(3)
    s.record(3, 0)  # first draft rejected
    s.record(3, 2)  # two accepted, third rejected
    s.record(3, 3)  # all accepted
    s.record(1, 1)  # only one draft proposed, accepted; position 2 reached without a proposal
    assert s.reached == [4, 3, 2] and s.accepted == [3, 2, 1] and s.proposed == [4, 2, 2]
    assert s.tokens == 1 + 3 + 4 + 2 and s.iterations == 4
    assert s.per_position() == [3 / 4, 2 / 3, 1 / 2]
    assert s.overall == 6 / 12
    # the cost model's E from these rates equals the measured advance (the products telescope)
    e, run = 1.0, 1.0
    for a in s.per_position():
        run *= a
        e += run
    assert e == pytest.approx(s.advance)
    a = s.alpha_equivalent
    assert (1 - a ** 4) / (1 - a) == pytest.approx(s.advance)


@settings(max_examples=50, deadline=None)
@given(gamma=st.integers(1, 8), ks=st.lists(st.integers(0, 8), min_size=1, max_size=40))
def test_measured_advance_equals_model_advance(gamma, ks):
    s = SDStats(gamma)
    for k in ks:
        s.record(gamma, min(k, gamma))
    e, run = 1.0, 1.0
    for a in s.per_position():
        run *= a or 0.0
        e += run
    assert e == pytest.approx(s.advance)
    alphas = s.alpha_list()
    assert len(alphas) == gamma and all(0.0 <= a <= ALPHA_MAX for a in alphas)


def test_prompt_lookup_rules():
    pl = PromptLookup(max_ngram=3, fallback="none")
    pl.start([], 0, max_len=100, policy=CAT)
    # the trailing 2-gram (1, 2) occurs twice before: the most recent occurrence wins
    h = [1, 2, 5, 6, 1, 2, 7, 8, 9, 1, 2]
    assert pl.propose(h, len(h) - 1, 3) == [7, 8, 9]
    # a longer n-gram match has priority over a more recent shorter one
    h2 = [4, 1, 2, 3, 9, 9, 1, 2, 5, 4, 1, 2]
    pl.start([], 0, max_len=100, policy=CAT)
    assert pl.propose(h2, len(h2) - 1, 2) == [3, 9]
    # continuation cut short by the end of the context; nothing found -> nothing proposed
    h3 = [1, 2, 3, 1, 2]
    pl.start([], 0, max_len=100, policy=CAT)
    assert pl.propose(h3, 4, 4) == [3, 1, 2]
    pl.start([], 0, max_len=100, policy=CAT)
    assert pl.propose([7, 8, 9], 2, 3) == []
    # incremental: extending the context indexes the new positions
    h4 = [5, 6]
    pl.start([], 0, max_len=100, policy=CAT)
    assert pl.propose(h4, 1, 2) == []
    h4 += [7, 5, 6]
    assert pl.propose(h4, 4, 2) == [7, 5]
    rep = PromptLookup(fallback="repeat")
    rep.start([], 0, max_len=100, policy=CAT)
    assert rep.propose([7, 8, 9], 2, 3) == [9, 9, 9]
    rep.start([], 0, max_len=100, policy=CAT)
    assert rep.propose(h3, 4, 5) == [3, 1, 2, 2, 2]


def test_oracle_acceptance_is_close_to_alpha():
    """Conditional per-position acceptance of the oracle tracks its alpha (binomial noise only)."""
    dec = Decoder(tiny_spec(vocab=97), seed=2)
    base = decode_run(dec, CAT, prompt=8, new_tokens=400, seed=2, warmup=0, synth_prompt=True)
    res = speculative_decode(dec, Policy("fixed", 16, width="padded"),
                             OracleDrafter(base.all_tokens[0].tolist(), 8, [0.9, 0.6], 97, seed=7), gamma=3,
                             prompt=8, new_tokens=400, seed=2, warmup=0, synth_prompt=True)
    if torch.equal(res.tokens, base.tokens):
        a1, a2, a3 = res.stats.per_position()
        n1, n2, n3 = res.stats.reached
        for a, p, n in ((a1, 0.9, n1), (a2, 0.6, n2), (a3, 0.6, n3)):
            assert abs(a - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-9, (a, p, n)


def test_bad_input():
    dec = Decoder(tiny_spec(), seed=0)
    with pytest.raises(BMCError, match="gamma"):
        speculative_decode(dec, CAT, PromptLookup(), gamma=0, prompt=4, new_tokens=4)
    with pytest.raises(BMCError, match="vocabulary"):
        speculative_decode(dec, CAT, DraftModel(Decoder(tiny_spec(vocab=65), seed=0)), gamma=2, prompt=4, new_tokens=4)
    with pytest.raises(BMCError, match="token ids"):
        speculative_decode(dec, CAT, DraftModel(dec), gamma=2, prompt=4, new_tokens=4, synth_prompt=True)
    with pytest.raises(BMCError, match="max_len"):
        speculative_decode(dec, CAT, PromptLookup(), gamma=2, prompt=4, new_tokens=4, max_len=9)
    with pytest.raises(BMCError, match="one sequence"):
        speculative_decode(dec, CAT, PromptLookup(), gamma=2, prompt=torch.zeros((2, 4), dtype=torch.long),
                           new_tokens=4)
    with pytest.raises(BMCError, match="token ids must be in"):  # as decode_run: an error, not an IndexError
        speculative_decode(dec, CAT, PromptLookup(), gamma=2, prompt=torch.tensor([1, 2, 64]), new_tokens=4)
    with pytest.raises(BMCError, match="prompt must be"):
        speculative_decode(dec, CAT, PromptLookup(), gamma=2, prompt=0, new_tokens=4)
    with pytest.raises(BMCError):
        PromptLookup(max_ngram=0)
    with pytest.raises(BMCError):
        OracleDrafter([1, 2], 0, 1.5, 64)
