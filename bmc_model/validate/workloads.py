"""The two HF validation workloads, and the caches compared on them.

kv       random weights at Llama-2-7b attention geometry (32 heads x 128, hidden 4096), 2 layers, with the
         parts the cache never sees cut down: vocabulary 4096 (the 32000-row LM head would add the same ~30 ms
         to every cache's step) and FFN 4096 (Llama-2-7b's 11008 would add the same ~50 ms). KV-heavy, as the
         workload is meant to be: at N=4096, B=1 torch.cat's allocation and copy are a large part of the step
         (figures: docs/results.md, "HF kv workload"). kv_ffn=11008 builds Llama-2-7b's full-FFN layer.
smollm2  real SmolLM2-135M-Instruct weights (30 layers, 3 KV heads x 64): small KV rows, modest gains.

The caches: DynamicCache, StaticCache, BMCCache with the case's policy ("bmc") and BMCCache with policy
reserve ("reserve": the largest length once, torch.empty, exact views).

Prefill is "synthetic" by default: random K/V rows for the P prompt positions are written through
cache.update for the first P - 1 positions (one call per layer, as a real prefill writes), then generate()
continues from the cache with the last prompt token. Decode steps then run the real model over a P-row cache, while the
minutes-long prefill of a 4096-token prompt (excluded from the timing anyway) is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, StaticCache

from bmc_model.core.errors import BMCError
from bmc_model.core.policy import NAMED, Policy
from bmc_model.core.specs import ModelSpec
from bmc_model.hf.cache import BMCCache
from bmc_model.hf.tune import spec_for_model
from bmc_model.validate import smollm2

KV_GEOMETRY = {"hidden_size": 4096, "intermediate_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 32,
               "head_dim": 128, "num_hidden_layers": 2, "vocab_size": 4096}
# --quick: the same attention geometry (32 x 128) with cheap projections, so a smoke run builds in a second.
KV_QUICK = {**KV_GEOMETRY, "hidden_size": 1024, "intermediate_size": 2048, "vocab_size": 1024}

WORKLOADS = ("kv", "smollm2")
CACHES = ("dynamic", "static", "bmc", "reserve")  # reserve: BMCCache(policy="reserve"), max_cache_len rows once


@dataclass
class Loaded:
    name: str
    model: Any
    spec: ModelSpec
    note: str


def build(name: str, quick: bool = False, seed: int = 0, kv_ffn: int | None = None) -> Loaded:
    """The model of one workload, fp32, eval mode; deterministic for a given seed. kv_ffn: the kv
    workload's FFN width (default KV_GEOMETRY's)."""
    if kv_ffn is not None and (isinstance(kv_ffn, bool) or not isinstance(kv_ffn, int) or kv_ffn < 1):
        raise BMCError(f"kv_ffn must be a positive integer, got {kv_ffn!r}")
    if name == "kv":
        geo = KV_QUICK if quick else KV_GEOMETRY
        if kv_ffn is not None:
            geo = {**geo, "intermediate_size": kv_ffn}
        cfg = LlamaConfig(**geo, max_position_embeddings=16384, pad_token_id=0, bos_token_id=None,
                          eos_token_id=None, tie_word_embeddings=False)
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg).eval()
        label = "llama2-7b-attn-2L" + ("-quick" if quick else "") + (f"-ffn{kv_ffn}" if kv_ffn else "")
        note = (f"random weights, 2 layers, 32 heads x 128, hidden {geo['hidden_size']}, FFN "
                f"{geo['intermediate_size']}, vocabulary reduced to {geo['vocab_size']}")
        return Loaded(name, model, spec_for_model(model, name=label), note)
    if name == "smollm2":
        smollm2.require()
        model, _ = smollm2.load()
        return Loaded(name, model, spec_for_model(model, name="smollm2-135m"), "real SmolLM2-135M-Instruct, fp32")
    raise BMCError(f"unknown workload {name!r} ({', '.join(WORKLOADS)})")


def make_cache(kind: str, model: Any, seq: int, policy: Policy | None, trim: bool = False) -> Any:
    """A fresh cache: DynamicCache, StaticCache (what cache_implementation='static' builds), BMCCache with
    `policy` ("bmc") or BMCCache(policy="reserve"): `seq` rows reserved once, lazily backed ("reserve")."""
    if kind == "dynamic":
        return DynamicCache(config=model.config)
    if kind == "static":
        return StaticCache(config=model.config, max_cache_len=seq)
    if kind == "reserve":
        return BMCCache(policy=NAMED["reserve"], max_cache_len=seq, config=model.config, trim=trim)
    if kind == "bmc":
        if policy is None:
            raise BMCError("the bmc cache needs a policy")
        cap = seq if policy.preallocated else None
        return BMCCache(policy=policy, max_cache_len=cap, config=model.config, trim=trim)
    raise BMCError(f"unknown cache {kind!r} ({', '.join(CACHES)})")


def make_inputs(model: Any, prompt: int, batch: int, seed: int = 0) -> torch.Tensor:
    """[batch, prompt] random token ids (the content does not change a step's cost)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, model.config.vocab_size, (batch, prompt), generator=g)


@torch.no_grad()
def prefill_synthetic(cache: Any, model: Any, prompt: int, batch: int, seed: int = 0) -> None:
    """Write `prompt` random K/V rows into every layer through cache.update, as a real prefill would."""
    cfg = model.config.get_text_config(decoder=True)
    kv_heads = cfg.num_key_value_heads or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    g = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    for layer in range(cfg.num_hidden_layers):
        k = torch.randn(batch, kv_heads, prompt, head_dim, generator=g, dtype=dtype)  # [batch, kv_heads, P, head_dim]
        v = torch.randn(batch, kv_heads, prompt, head_dim, generator=g, dtype=dtype)
        cache.update(k, v, layer)


def kv_bytes(cache: Any) -> int:
    """Bytes of K and V tensors the cache holds now (whole buffers, spare rows included)."""
    total = 0
    for layer in getattr(cache, "layers", []):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(t, torch.Tensor):
                total += t.nbytes
    return total
