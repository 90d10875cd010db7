"""The torch runtime: a KV cache per Policy, a Llama-style decoder, greedy decoding with timing.

Submodules import torch; this package file does not (names resolve lazily).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "KVCache": "cache", "CacheStats": "cache", "GrowthEvent": "cache",
    "Decoder": "decoder", "Weights": "decoder", "LayerWeights": "decoder", "random_weights": "decoder",
    "DecodeResult": "generate", "decode_run": "generate", "set_threads": "generate",
    "write_synthetic_prompt": "generate",
    "load_smollm2": "weights", "smollm2_available": "weights", "RealModel": "weights",
    "speculative_decode": "speculative", "SDResult": "speculative", "SDStats": "speculative",
    "PromptLookup": "drafters", "DraftModel": "drafters", "OracleDrafter": "drafters",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'bmc_model.runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(f"bmc_model.runtime.{mod}"), name)
