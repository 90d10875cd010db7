"""step_s and layer_s from tiny-decoder step times, net of what the cost model already charges.

At the tiny geometry a step still streams a few weights, attends and writes a row per layer; the
cost model (bmc_model.core.breakdown) charges those through the fitted terms, so the overhead
scalars are the measured step time minus that charge. The charge is affine in the layer count L
(head weights once, per-layer terms L times), so with the measured fit t(L) = a + b L:
    step_s = a - charge(0),  layer_s = b - (charge(1) - charge(0))    (each floored at 0)
so that the model reproduces the tiny decoder's measured steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from bmc_model.calibrate.fit import fit_affine
from bmc_model.core.policy import NAMED
from bmc_model.core.profile import SCALAR_NAMES, Profile, Term
from bmc_model.core.specs import ModelSpec


@dataclass(frozen=True)
class OverheadFit:
    step_s: float
    layer_s: float
    step_ci95: tuple[float, float]
    layer_ci95: tuple[float, float]
    raw_intercept: float  # a: measured seconds per step at L = 0 (extrapolated)
    raw_slope: float  # b: measured seconds per extra layer
    charge0: float  # what the terms charge per step at L = 0
    charge_per_layer: float
    note: str = ""

    def to_raw(self) -> dict:
        return dict(self.__dict__)


def model_charge(terms: dict[str, Term], scalars: dict[str, float], spec: ModelSpec, prompt: int, tokens: int) -> float:
    """Seconds per step the cost model charges a `spec` decoder for everything but step_s / layer_s."""
    from bmc_model.core.breakdown import breakdown
    from bmc_model.core.workload import Geometry, Workload

    sc = {k: 0.0 for k in SCALAR_NAMES}
    sc.update({k: scalars.get(k, 0.0) for k in ("attn_q_slope", "weights_row_slope")})
    prof = Profile(terms=terms, scalars=sc, source="calibration (overhead charge)")
    w = Workload(prompt=prompt, seq=prompt + tokens, batch=1)
    parts = breakdown(NAMED["reserve"], w, Geometry.of(spec, 1, spec.dtype), prof)
    return float(sum(v for k, v in parts.items() if k not in ("overhead", "sd_iteration", "draft"))) / tokens


def fit_overhead(points: list[tuple[int, float]], terms: dict[str, Term], scalars: dict[str, float],
                 spec_of_layers, prompt: int, tokens: int) -> OverheadFit:
    """points: (layers, median seconds per step); spec_of_layers(L) -> the tiny ModelSpec."""
    f = fit_affine([p[0] for p in points], [p[1] for p in points])
    note = ""
    try:
        c1 = model_charge(terms, scalars, spec_of_layers(1), prompt, tokens)
        c2 = model_charge(terms, scalars, spec_of_layers(2), prompt, tokens)
        per_layer, c0 = c2 - c1, 2 * c1 - c2
    except (ImportError, AttributeError, TypeError) as e:  # the cost model moved: keep the raw fit, say so
        per_layer = c0 = 0.0
        note = f"cost model charge unavailable ({e.__class__.__name__}: {e}); step_s/layer_s are raw"
    step_s, layer_s = f.c0 - c0, f.slope - per_layer
    if step_s < 0 or layer_s < 0:
        note = (note + "; " if note else "") + "terms over-charge the tiny decoder; negative overhead floored at 0"
    return OverheadFit(step_s=max(step_s, 0.0), layer_s=max(layer_s, 0.0),
                       step_ci95=(f.c0_ci[0] - c0, f.c0_ci[1] - c0),
                       layer_ci95=(f.slope_ci[0] - per_layer, f.slope_ci[1] - per_layer),
                       raw_intercept=f.c0, raw_slope=f.slope, charge0=c0, charge_per_layer=per_layer, note=note)
