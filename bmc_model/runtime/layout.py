"""Our fused weight layout, and its names in a GGUF file and in a transformers Llama / Qwen2 state dict.

A flat state dict ("embed", "norm", optional "lm_head", "{i}.<LayerWeights field>") is what the weights
cache stores. Fused tensors are the parts' rows concatenated in the order listed below.
"""

from __future__ import annotations

from dataclasses import fields

import torch

from bmc_model.core.errors import BMCError
from bmc_model.core.specs import ModelSpec
from bmc_model.runtime.decoder import LayerWeights, Weights
from bmc_model.runtime.gguf import GGUFHeader

# our name -> (GGUF names under "blk.{i}.", transformers names under "model.layers.{i}.")
LAYER = {
    "attn_norm": (("attn_norm.weight",), ("input_layernorm.weight",)),
    "wqkv": (("attn_q.weight", "attn_k.weight", "attn_v.weight"),
             ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight")),
    "bqkv": (("attn_q.bias", "attn_k.bias", "attn_v.bias"),
             ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias")),
    "wo": (("attn_output.weight",), ("self_attn.o_proj.weight",)),
    "mlp_norm": (("ffn_norm.weight",), ("post_attention_layernorm.weight",)),
    "w_in": (("ffn_gate.weight", "ffn_up.weight"), ("mlp.gate_proj.weight", "mlp.up_proj.weight")),
    "w_down": (("ffn_down.weight",), ("mlp.down_proj.weight",)),
}
OPTIONAL = {"bqkv"}  # Qwen2 has q/k/v biases, Llama none
TOP = {"embed": ("token_embd.weight", "model.embed_tokens.weight"), "norm": ("output_norm.weight", "model.norm.weight"),
       "lm_head": ("output.weight", "lm_head.weight")}
PERMUTED = {"llama"}  # llama.cpp's converter permutes these archs' q/k rows for its RoPE


def from_gguf(raw: dict[str, torch.Tensor], h: GGUFHeader) -> dict[str, torch.Tensor]:
    """De-quantized GGUF tensors (consumed) -> our flat fused state; q/k rows un-permuted as transformers does."""
    out = {ours: raw.pop(gg) for ours, (gg, _) in TOP.items() if gg in raw}
    if "lm_head" in out and torch.equal(out["lm_head"], out["embed"]):
        del out["lm_head"]
    heads = {"attn_q.weight": h.heads, "attn_k.weight": h.kv_heads} if h.arch in PERMUTED else {}
    for i in range(h.layers):
        for ours, (gg, _) in LAYER.items():
            if ours in OPTIONAL and f"blk.{i}.{gg[0]}" not in raw:
                continue
            parts = [_unpermute(raw.pop(f"blk.{i}.{n}"), heads[n]) if n in heads else raw.pop(f"blk.{i}.{n}")
                     for n in gg]
            out[f"{i}.{ours}"] = parts[0] if len(parts) == 1 else torch.cat(parts)
    if raw:  # a tensor this layout has no place for: the model would silently run without it
        raise BMCError(f"GGUF tensors the runtime does not model: {', '.join(sorted(raw)[:5])}")
    return out


def _unpermute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation (transformers' LlamaTensorProcessor._reverse_permute_weights)."""
    d = w.shape[0] // n_head // 2
    return w.reshape(n_head, d, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def to_weights(state: dict[str, torch.Tensor], spec: ModelSpec, dtype: torch.dtype) -> Weights:
    """The flat state as the decoder's Weights in `dtype` (a tied head is the embedding tensor itself)."""
    want_qkv = ((spec.heads + 2 * spec.kv_heads) * spec.head_dim, spec.hidden)
    layers = []
    for i in range(spec.layers):
        got = tuple(state[f"{i}.wqkv"].shape)
        if got != want_qkv:
            raise BMCError(f"weights do not match spec {spec.name}: layer {i} wqkv {list(got)}, want {list(want_qkv)}")
        lw = {f.name: state[f"{i}.{f.name}"].to(dtype) for f in fields(LayerWeights) if f"{i}.{f.name}" in state}
        layers.append(LayerWeights(**lw))
    embed = state["embed"].to(dtype)
    head = state["lm_head"].to(dtype) if "lm_head" in state else embed
    return Weights(embed, layers, state["norm"].to(dtype), head)


def hf_state_dict(w: Weights, spec: ModelSpec) -> dict[str, torch.Tensor]:
    """Weights under transformers' Llama / Qwen2 names, fused tensors split back into views of their rows."""
    q, kv = spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    rows = {"wqkv": [q, kv, kv], "bqkv": [q, kv, kv], "w_in": [spec.ffn, spec.ffn]}
    out = {TOP["embed"][1]: w.embed, TOP["norm"][1]: w.norm, TOP["lm_head"][1]: w.lm_head}
    for i, lw in enumerate(w.layers):
        for ours, (_, hf) in LAYER.items():
            t = getattr(lw, ours)
            if t is None:
                continue
            for name, part in zip(hf, t.split(rows[ours]) if ours in rows else (t,)):
                out[f"model.layers.{i}.{name}"] = part
    return out
