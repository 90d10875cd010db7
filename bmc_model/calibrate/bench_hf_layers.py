"""transformers' decoder in place: what its layers cost beyond their matmuls, and its seven matmuls against the
four fused ones the weights term times.

HF's decoder layer runs q, k, v, o, gate, up and down as seven nn.Linear calls where bmc-tune's decoder (and the
weights term) runs four fused matrices, and it does more Python per layer (RoPE, mask and cache plumbing) than the
runtime's. So a real LlamaForCausalLM at each calibration geometry (random weights, enough layers to stream past
the last-level cache) decodes here with greedy generate() over a StaticCache (in-place writes: no growth), every
nn.Linear timed where it runs and every step by the streamer. A step's wall time minus its layers' and its head's
matmuls is what the weights terms do not cover; calibrate/hf_layers.py takes off what the other terms charge.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bmc_model.calibrate.plan import layers_for
from bmc_model.core.specs import ModelSpec
from bmc_model.runtime.decoder import tile_

PROMPT = 64  # cached rows before decoding: attention stays a small share
BATCHES = (1, 4)  # token rows per matmul: the per-row cost is a line through them
STEPS = 4  # decode steps timed per (geometry, batch) and round, after one dropped
VOCAB = 256  # the head is timed apart; a small one keeps set-up cheap


@dataclass(frozen=True)
class HFLayerPoint:
    model: str
    layers: int
    batch: int
    width: int  # rows the StaticCache attends over (its capacity)
    step_s: float  # median seconds between two generated tokens
    layers_mm_s: float  # of which the decoder layers' nn.Linear calls (median over the same steps)
    head_mm_s: float  # and the LM head's


class _Clock:
    """A generate() streamer noting, at each generated token, the time and the matmul seconds so far."""

    def __init__(self, acc: dict[str, float]) -> None:
        self.acc, self.marks, self.seen_prompt = acc, [], False

    def put(self, value: Any) -> None:
        if not self.seen_prompt:  # generate() first puts the prompt
            self.seen_prompt = True
            return
        self.marks.append((time.perf_counter(), self.acc["layers"], self.acc["head"]))

    def end(self) -> None:
        pass


class _TimedLinear(nn.Linear):
    """An nn.Linear adding its seconds to acc[part] (its class is swapped in: no hooks, __call__'s fast path)."""

    acc: dict[str, float]
    part: str

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        t0 = time.perf_counter()
        y = F.linear(x, self.weight, self.bias)
        self.acc[self.part] += time.perf_counter() - t0
        return y


def _fill(model: nn.Module, seed: int) -> None:
    """Small random weights, cheaply: one random block tiled over every parameter (values do not change a
    matmul's speed; random init of a 7B layer's 200M weights would take seconds)."""
    block = torch.empty(2**20).uniform_(-0.02, 0.02, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for p in model.parameters():
            tile_(p, block)


def hf_model(spec: ModelSpec, layers: int, dtype: torch.dtype, seed: int = 0) -> Any:
    """A Llama (Qwen2 geometry too: its q/k/v biases are a rounding error) at the spec's geometry, timed."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=spec.hidden, intermediate_size=spec.ffn, num_attention_heads=spec.heads,
                      num_key_value_heads=spec.kv_heads, head_dim=spec.head_dim, vocab_size=VOCAB,
                      num_hidden_layers=layers, max_position_embeddings=PROMPT + 64, pad_token_id=0,
                      bos_token_id=None, eos_token_id=None, torch_dtype=dtype, attn_implementation="sdpa")
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    model = model.to_empty(device="cpu").to(dtype).eval()
    _fill(model, seed)
    model.model.rotary_emb = type(model.model.rotary_emb)(config=cfg)  # to_empty left its inv_freq unset
    acc = {"layers": 0.0, "head": 0.0}
    for part, root in (("layers", model.model.layers), ("head", model.lm_head)):
        for mod in (root.modules() if part == "layers" else [root]):
            if type(mod) is nn.Linear:
                mod.__class__ = _TimedLinear
                mod.acc, mod.part = acc, part
    model.bmc_acc = acc
    return model


def decode_steps(model: Any, batch: int, tokens: int, gen: torch.Generator, prompt: int = PROMPT
                 ) -> list[tuple[float, float, float]]:
    """(seconds, layers' matmul seconds, head's) of each decode step of one greedy generate()."""
    from transformers import StaticCache

    ids = torch.randint(1, VOCAB, (batch, prompt), generator=gen)
    cache = StaticCache(config=model.config, max_cache_len=prompt + tokens + 1)
    clock = _Clock(model.bmc_acc)
    model.generate(ids, attention_mask=torch.ones_like(ids), cache=cache, max_new_tokens=tokens,
                   min_new_tokens=tokens, do_sample=False, streamer=clock, pad_token_id=0)
    m = clock.marks
    return [(b[0] - a[0], b[1] - a[1], b[2] - a[2]) for a, b in zip(m, m[1:])]


def hf_layer_points(specs: tuple[ModelSpec, ...], rounds: int, dtype: torch.dtype, elem: int, stream_bytes: int,
                    max_bytes: int, rng: np.random.Generator, step: Callable[[], None] = lambda: None,
                    steps: int = STEPS) -> list[HFLayerPoint]:
    """Per (geometry, batch, round): the median step and its matmuls (CPU only). Geometries whose layers exceed
    max_bytes are left out; rounds visit the (geometry, batch) pairs in a new random order each."""
    models = []
    for s in specs:
        n = layers_for(s, elem, stream_bytes)
        if n * s.layer_params() * elem <= max_bytes:
            models.append((s, hf_model(s, n, dtype)))
    cases = [(s, m, b) for s, m in models for b in BATCHES]
    gen = torch.Generator().manual_seed(0)
    tokens = steps + 2  # the first step out of the prefill, then one dropped (its shapes warm)
    out = []
    with torch.inference_mode():
        # generate()'s first call on a model sets up lazily: once per model, with a short prompt (a prefill of
        # PROMPT rows costs more than the timed steps); each (geometry, batch)'s first timed step is dropped too
        for _, m in models:
            decode_steps(m, 1, 2, gen, prompt=4)
        for _ in range(rounds):
            for i in rng.permutation(len(cases)):
                s, m, b = cases[int(i)]
                got = decode_steps(m, b, tokens, gen)[1:]
                out.append(HFLayerPoint(s.name, m.config.num_hidden_layers, b, PROMPT + tokens + 1,
                                        statistics.median(g[0] for g in got), statistics.median(g[1] for g in got),
                                        statistics.median(g[2] for g in got)))
                step()
    return out


def point_count(specs: tuple[ModelSpec, ...], rounds: int) -> int:
    return rounds * len(specs) * len(BATCHES)

