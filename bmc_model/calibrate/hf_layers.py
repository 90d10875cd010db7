"""hf_layer_fixed, hf_layer_row and hf_matmul_ratio: transformers' decoder layer, from bench_hf_layers' points.

A point is the median decode step of an L-layer LlamaForCausalLM at batch b over a StaticCache of W rows, with
its layers' and its head's nn.Linear seconds. The seven per-layer linears against what the cost model charges for
the layer's four fused matrices at one token row give
    hf_matmul_ratio = (layers' linears / L) / (weights(B) + gemv_row_s * R_layer)
and the rest of the step, as layers.py does for bmc-tune's decoder:
    (step - linears - head linears - hf_step_s) / L - attention(b, W) - writes(b) = fixed + (b - 1) * row
with attention masked (StaticCache hands SDPA a mask: transformers packs GQA into query rows, the runtime's fold)
over W rows. fixed is the median at b = 1, row the slope to the largest batch (floored at 0: a line through
medians, not a fit whose relative residuals a near-zero net would upset); each becomes a Term over the layer's
weight bytes through the geometries' values (layers.through).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from bmc_model.calibrate.layers import through
from bmc_model.core.errors import BMCError
from bmc_model.core.profile import Profile, Term
from bmc_model.core.specs import ModelSpec


def fit_hf_layers(points: list, prof: Profile, spec_of: Callable[[str], ModelSpec], dtype: str
                  ) -> tuple[Term, Term, Term, dict]:
    """points: bench_hf_layers.HFLayerPoint; prof: the profile fitted so far (terms, curves, hf_step_s)."""
    from bmc_model.core.breakdown import attention_s, matmul_s, write_s
    from bmc_model.core.curves import weights_row_factor
    from bmc_model.core.workload import Geometry

    if prof.hf_step_s is None:
        raise BMCError("calibration: the in-place transformers layer cost needs hf_step_s (hf_overhead) first")
    by: dict[str, list] = {}
    for p in points:
        by.setdefault(p.model, []).append(p)
    xs, fixed, row, ratio, raw = [], [], [], [], {}
    for name, pts in by.items():
        geo = Geometry.of(spec_of(name), 1, dtype)
        fused = matmul_s(prof, geo.layer_weight_bytes, geo.layer_out_rows)
        batches = sorted({p.batch for p in pts})
        if batches[0] != 1 or len(batches) < 2:
            raise BMCError(f"calibration: the transformers layer points of {name} need batch 1 and a larger one")

        def net(p, geo: Geometry = geo) -> float:
            rho = geo.rho * p.batch
            rest = p.step_s - p.layers_mm_s - p.head_mm_s - prof.hf_step_s
            return (rest / p.layers - attention_s(prof, rho, p.width, 1, masked=True, group=geo.group)
                    - write_s(prof, rho, 1))

        nets = {b: statistics.median(net(p) for p in pts if p.batch == b) for b in batches}
        mm = {b: statistics.median(p.layers_mm_s / p.layers for p in pts if p.batch == b) for b in batches}
        top = batches[-1]
        xs.append(float(geo.layer_weight_bytes))
        fixed.append(max(nets[1], 0.0))
        row.append(max((nets[top] - nets[1]) / (top - 1), 0.0))
        ratio.append(mm[1] / fused)
        raw[name] = {"layer_bytes": xs[-1], "layers": pts[0].layers, "width": pts[0].width, "batches": batches,
                     "net_per_layer_s": [nets[b] for b in batches], "linears_per_layer_s": [mm[b] for b in batches],
                     "fused_charge_s": [fused * weights_row_factor(prof, b, geo.layer_weight_bytes) for b in batches],
                     "fixed_s": fixed[-1], "row_s": row[-1], "matmul_ratio": ratio[-1]}
    if not xs:
        raise BMCError("calibration: no transformers layer points to fit")
    return through(xs, fixed), through(xs, row), through(xs, ratio), raw
