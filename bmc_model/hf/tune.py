"""From a transformers model to the cost model's ModelSpec, and recommend()'s policy for it."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from bmc_model.core.errors import BMCError
from bmc_model.core.policy import Policy
from bmc_model.core.specs import ModelSpec, spec_from_config_dict

log = logging.getLogger("bmc_model.hf")

TORCH_DTYPES = {"torch.float32": "float32", "torch.bfloat16": "bfloat16", "torch.float16": "float16"}


def model_dtype(model: Any) -> str:
    """The dtype the weights (hence the KV rows) are computed in: 'float32', 'bfloat16' or 'float16'."""
    try:
        dt = str(next(model.parameters()).dtype)
    except (AttributeError, StopIteration, TypeError):
        dt = str(getattr(model, "dtype", "torch.float32"))
    if dt not in TORCH_DTYPES:
        raise BMCError(f"model dtype {dt} is not modelled (float32, bfloat16, float16)")
    return TORCH_DTYPES[dt]


def spec_for_model(model: Any, name: str | None = None) -> ModelSpec:
    """ModelSpec of a loaded model (its decoder text config), with the dtype it really runs in."""
    config = model.config.get_text_config(decoder=True)
    label = name or getattr(config, "_name_or_path", "") or type(model).__name__
    spec = spec_from_config_dict(config.to_dict(), name=label)
    return replace(spec, dtype=model_dtype(model))


def tuned_policy(model: Any, seq: int, prompt: int | None = None, profile: Any = None, batch: int = 1,
                 max_cache_len: int | None = None, **recommend_kwargs: Any) -> tuple[Policy, Any, int | None]:
    """(policy, Recommendation, max_cache_len for the cache) recommended for this model and workload.

    Every Policy recommend() can return (fixed / geometric / static / reserve growth, exact / padded / pad-P
    width) is implemented by BMCLayer, so nothing is mapped; preallocated growth (static, reserve) gets
    max_cache_len = seq + gamma.
    """
    from bmc_model.core.decide import recommend

    spec = spec_for_model(model)
    recommend_kwargs.setdefault("dtype", spec.dtype)
    recommend_kwargs.setdefault("runtime", "hf")  # generate()'s own overhead, where the profile measured it
    if spec.kv_heads < spec.heads and recommend_kwargs["runtime"] == "hf":
        # An exact width gives transformers no mask, and with no mask it hands grouped K/V to SDPA with
        # enable_gqa, a slower path on the CPU than its masked one: a profile with hf_attn_gqa prices its time,
        # none prices its higher resident peak, and the embedded profile prices neither
        # (docs/results.md#transformers-attention-paths). Masked widths only, then, and reserve, which BMCCache
        # gives a mask (Policy.hf_masked).
        recommend_kwargs.setdefault("widths", ("padded", "pad"))
        recommend_kwargs.setdefault("named", ("static", "llamacpp", "reserve"))
    rec = recommend(model=spec, seq=seq, prompt=prompt, batch=batch, profile=profile, **recommend_kwargs)
    pol = rec.policy
    cap = max_cache_len
    if pol.preallocated and cap is None:
        cap = seq + (rec.gamma or 0)
    log.info("BMCCache.tuned: %s for %s at seq %d (batch %d): predicted %.2f ms/token", pol.label, spec.name, seq,
             batch, rec.prediction.ms_per_token)
    return pol, rec, cap
