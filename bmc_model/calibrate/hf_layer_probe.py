"""The refresh's in-place probe of transformers' framework cost: how far hf_layer_fixed (with hf_layer_row,
hf_step_s and hf_layer_s, core/refresh.py's followers) has moved since calibration.

A decode step of a real LlamaForCausalLM at the model's geometry (bench_hf_layers: random weights, enough
layers to stream past the last-level cache, every nn.Linear timed where it runs) minus its matmuls is the
framework's per-step and per-layer Python, plus attention and K/V writes, which are small at the probe's 64-odd
rows. The factor is that remainder, net of the attention and writes charged, over the framework cost the
calibrated profile charges for the same step:
    factor = (step - linears - head - L (attention + writes)) / (hf_step_s + L layer_overhead(batch))
one factor for the whole framework: per step and per layer it is the same interpreter on the same host.
"""

from __future__ import annotations

import statistics

from bmc_model.calibrate.plan import layers_for
from bmc_model.core.breakdown import attention_s, layer_overhead_s, write_s
from bmc_model.core.profile import Profile
from bmc_model.core.specs import DTYPE_BYTES, ModelSpec
from bmc_model.core.workload import Geometry

TOKENS = 8  # generated per run: the first comes out of the prefill, then one step dropped (its shapes warm)
TERM = "hf_layer_fixed"


def probe_layers(spec: ModelSpec, dtype: str, stream_bytes: int) -> int:
    """Layers the probe builds: bench_hf_layers' count, never more than the model has."""
    return min(spec.layers, layers_for(spec, DTYPE_BYTES[dtype], stream_bytes))


def can_probe(prof: Profile) -> bool:
    """The profile has transformers' in-place terms to scale (calibrated with the hf extra)."""
    return TERM in prof.terms and prof.hf_step_s is not None


def hf_framework_factor(prof: Profile, spec: ModelSpec, batch: int, layers: int) -> float:
    """Measured framework seconds per step of a `layers`-layer model (probe_layers) over what `prof` (as
    calibrated) charges for them."""
    import torch

    from bmc_model.calibrate import bench_hf_layers as bench

    model = bench.hf_model(spec, layers, getattr(torch, prof.dtype))
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        bench.decode_steps(model, batch, 2, gen)  # generate()'s first call sets up lazily
        got = bench.decode_steps(model, batch, TOKENS, gen)[1:]
    rest = statistics.median(step - layers_mm - head_mm for step, layers_mm, head_mm in got)
    view = prof.for_runtime("hf")
    geo = Geometry.of(spec, 1, prof.dtype)
    rho = geo.rho * batch
    width = bench.PROMPT + TOKENS + 1  # the StaticCache's rows: decode_steps attends over all of them, masked
    kernels = layers * (attention_s(view, rho, width, 1, masked=True, group=geo.group) + write_s(view, rho, 1))
    framework = view.step_s + layers * layer_overhead_s(view, geo, batch)
    return (rest - kernels) / framework
