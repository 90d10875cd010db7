"""GGUF tensor names -> our fused layout: llama.cpp's q/k row permutation undone (Llama only), biases kept
(Qwen2), and a tensor the layout has no place for refused. No real weights needed."""

import dataclasses

import pytest
import torch
from conftest import tiny_spec

from bmc_model.core.errors import BMCError
from bmc_model.runtime.decoder import random_weights
from bmc_model.runtime.gguf import GGUFHeader
from bmc_model.runtime.layout import from_gguf, to_weights

SPEC = tiny_spec(heads=4, kv_heads=2, tied_embeddings=True)


def header(arch: str) -> GGUFHeader:
    s = SPEC
    return GGUFHeader(arch, s.layers, s.hidden, s.ffn, s.heads, s.kv_heads, s.head_dim, s.vocab, 256, 1e4, 1e-6, True)


def permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's convert_hf_to_gguf LlamaModel.permute (HF rotate-half rows -> interleaved pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def gguf_tensors(w, permuted: bool) -> dict[str, torch.Tensor]:
    s = SPEC
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    raw = {"token_embd.weight": w.embed, "output_norm.weight": w.norm}
    for i, lw in enumerate(w.layers):
        wq, wk, wv = lw.wqkv.split([q, kv, kv])
        if permuted:
            wq, wk = permute(wq, s.heads), permute(wk, s.kv_heads)
        gate, up = lw.w_in.chunk(2)
        raw |= {f"blk.{i}.{k}": v for k, v in {
            "attn_norm.weight": lw.attn_norm, "attn_q.weight": wq, "attn_k.weight": wk, "attn_v.weight": wv,
            "attn_output.weight": lw.wo, "ffn_norm.weight": lw.mlp_norm, "ffn_gate.weight": gate,
            "ffn_up.weight": up, "ffn_down.weight": lw.w_down}.items()}
        if lw.bqkv is not None:
            bq, bk, bv = lw.bqkv.split([q, kv, kv])
            raw |= {f"blk.{i}.attn_q.bias": bq, f"blk.{i}.attn_k.bias": bk, f"blk.{i}.attn_v.bias": bv}
    return raw


def assert_same(a, b) -> None:
    for la, lb in zip(a.layers, b.layers):
        for f in dataclasses.fields(la):
            x, y = getattr(la, f.name), getattr(lb, f.name)
            assert (x is None and y is None) or torch.equal(x, y), f.name
    assert torch.equal(a.embed, b.embed) and torch.equal(a.norm, b.norm) and b.lm_head is b.embed


def test_llama_qk_rows_are_unpermuted():
    w = random_weights(SPEC, seed=1)
    got = to_weights(from_gguf(gguf_tensors(w, permuted=True), header("llama")), SPEC, torch.float32)
    assert_same(w, got)
    # the permutation is not the identity here: reading it as Qwen2 (no un-permute) gives other q/k rows
    other = to_weights(from_gguf(gguf_tensors(w, permuted=True), header("qwen2")), SPEC, torch.float32)
    assert not torch.equal(other.layers[0].wqkv, w.layers[0].wqkv)


def test_qwen2_biases_kept_and_unknown_tensors_refused():
    w = random_weights(SPEC, seed=2)
    rows = (SPEC.heads + 2 * SPEC.kv_heads) * SPEC.head_dim
    w = dataclasses.replace(w, layers=[dataclasses.replace(lw, bqkv=torch.randn(rows)) for lw in w.layers])
    assert_same(w, to_weights(from_gguf(gguf_tensors(w, permuted=False), header("qwen2")), SPEC, torch.float32))
    raw = gguf_tensors(w, permuted=False) | {"blk.0.post_ffw_norm.weight": torch.ones(SPEC.hidden)}
    with pytest.raises(BMCError, match="post_ffw_norm"):
        from_gguf(raw, header("qwen2"))
