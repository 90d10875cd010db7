"""transformers' own per-step and per-layer framework cost: the hf_step_s and hf_layer_s scalars.

generate() does more Python per step than bmc_model's runtime (logits processors, stopping criteria,
mask construction, the streamer) and HF's decoder layer is more modules per layer. The model charges
the same weights, attention and growth terms for both; only these two scalars differ. They are measured
as calibrate.bench_overhead measures step_s and layer_s: greedy generate() at the tiny geometry
(calibrate.assemble.TINY) with several layer counts, per-token timestamps from a streamer, interleaved by
calibrate.bench_overhead.interleaved_medians, then the same fit net of what the terms charge
(calibrate.overhead.fit_overhead).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from bmc_model.calibrate.assemble import TINY
from bmc_model.calibrate.bench_overhead import TINY_PROMPT
from bmc_model.calibrate.token_clock import TokenClock


def tiny_model(layers: int, seed: int = 0) -> LlamaForCausalLM:
    cfg = LlamaConfig(hidden_size=TINY["hidden"], intermediate_size=TINY["ffn"],
                      num_attention_heads=TINY["heads"], num_key_value_heads=TINY["kv_heads"],
                      head_dim=TINY["head_dim"], vocab_size=TINY["vocab"], num_hidden_layers=layers,
                      max_position_embeddings=1024, pad_token_id=0, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def step_times(layers: int, tokens: int) -> list[float]:
    """Seconds between consecutive generated tokens of one greedy generate() with a DynamicCache."""
    model = tiny_model(layers)
    ids = torch.randint(1, TINY["vocab"], (1, TINY_PROMPT), generator=torch.Generator().manual_seed(0))
    clock = TokenClock()
    with torch.inference_mode():
        model.generate(ids, attention_mask=torch.ones_like(ids), cache=DynamicCache(config=model.config),
                       max_new_tokens=tokens + 1, min_new_tokens=tokens + 1, do_sample=False, streamer=clock,
                       pad_token_id=0)
    return [float(b - a) for a, b in zip(clock.times, clock.times[1:])]

