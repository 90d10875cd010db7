"""From measured medians to a Profile: fit every term and scalar, cross-check, record raw data.

No torch here: tests push synthetic Measurements with known coefficients through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bmc_model.calibrate.fit import PiecewiseFit, fit_affine, fit_piecewise, fit_plane, fit_ratio_slope
from bmc_model.calibrate.hf_layers import fit_hf_layers
from bmc_model.calibrate.layers import fit_layers
from bmc_model.calibrate.overhead import fit_overhead
from bmc_model.calibrate.plan import Plan
from bmc_model.calibrate.runner import Point, points_raw
from bmc_model.core.errors import BMCError
from bmc_model.core.profile import RUNTIMES, Profile, Term
from bmc_model.core.specs import ModelSpec, scaled_shapes

NOISY_SPREAD = 0.1  # a size whose repeats have MAD / median above this is noisy ...
NOISY_FRACTION = 0.25  # ... and a run with more noisy sizes than this says so
CAT_MIN_R2 = 0.95  # below this the torch.cat term is left out of the profile
BUSY_OTHERS = 0.15  # other processes using more of the CPU than this while we measured: a warning
TINY = dict(heads=2, kv_heads=2, head_dim=32, hidden=64, ffn=128, vocab=256)  # the overhead decoder


def tiny_spec(layers: int, dtype: str) -> ModelSpec:
    return ModelSpec(name=f"calib-tiny-{layers}L", layers=layers, dtype=dtype, **TINY)  # type: ignore[arg-type]


@dataclass
class Measurements:
    """What run.py measured: Points keyed as the bench_* modules key them."""

    alloc: list[Point]  # keys ("touch" | "call" | "cold", x)
    copy: list[Point]  # keys ("strided" | "contig", rows)
    cat: list[Point]  # keys rows
    write: list[Point]
    attn_exact: list[Point]  # keys (model, width)
    attn_masked: list[Point]
    attn_q: list[Point]  # keys (q rows, width)
    weights: list[Point]  # keys (model, x)
    weights_rows: list[Point]  # keys (model, m rows): one whole layer of each geometry
    rows_x: float  # layer bytes the primary geometry's row sweep used
    sd_iter: Point
    overhead: list[tuple[int, float]]  # (layers, median seconds per step) of the tiny decoder
    overhead_loop: str = ""
    overhead_prompt: int = 34
    overhead_tokens: int = 16
    hf_overhead: list[tuple[int, float]] = field(default_factory=list)  # the same, transformers generate()
    layers: list = field(default_factory=list)  # bench_layers.LayerPoint: non-matmul work per forward in place
    layers_prompt: int = 64
    hf_layers: list = field(default_factory=list)  # bench_hf_layers.HFLayerPoint: transformers' decoder in place
    attn_gqa: list[Point] = field(default_factory=list)  # keys (model, width): enable_gqa, GQA geometries only
    head_rows: list[Point] = field(default_factory=list)  # keys (model, m rows): each geometry's LM head
    lazy_backing: float | None = None  # bench_lazy.py; None: not measured, the profile reads 0
    lazy_raw: dict = field(default_factory=dict)
    bench_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # from the measuring (benchmarks cut short)
    others_cpu: float | None = None  # share of all cores other processes used meanwhile (load.py)


def _fit(name: str, pts: list[Point], knee: bool = True, first_touch: bool = False) -> tuple[PiecewiseFit, dict]:
    """first_touch: fit the means, every sample kept. A first touch of fresh pages is slow now and then
    (on a VM, pages the host must map in again, several times the usual rate: docs/results.md#slow-first-touches);
    those calls are work that decoding pays too, and a decode step's time is a mean."""
    try:
        f = fit_piecewise([p.x for p in pts], [p.expected if first_touch else p.median for p in pts], knee=knee)
    except ValueError as e:
        raise BMCError(f"calibration: cannot fit {name} ({e})") from None
    raw = points_raw(pts)
    raw["c0_ci95"] = [list(s.c0_ci) for s in f.segments]
    return f, raw


def _kind(points: list[Point], kind: str) -> list[Point]:
    return [p for p in points if p.key[0] == kind]  # type: ignore[index]


def _attn_q_slope(pts: list[Point], q_rows: tuple[int, ...]) -> tuple[float, dict]:
    """The cost model scales attention's width-dependent part by 1 + s (q - 1): so s comes from the
    slope over widths at each q, relative to the slope at q = 1."""
    slopes = {}
    try:
        for qr in q_rows:
            sel = [p for p in pts if p.key[0] == qr]  # type: ignore[index]
            slopes[qr] = fit_affine([p.x for p in sel], [p.median for p in sel]).slope
        if slopes[1] <= 0:
            raise ValueError("no growth with width at q = 1")
        qs = [qr for qr in q_rows if qr > 1]
        f = fit_ratio_slope([qr - 1 for qr in qs], [slopes[qr] / slopes[1] for qr in qs])
    except ValueError as e:
        raise BMCError(f"calibration: cannot fit attn_q_slope ({e})") from None
    srt = sorted(pts, key=lambda p: p.x)
    # more query rows never cost less: a noisy fit just below 0 is 0 (profile_check refuses a negative one)
    return max(f.slope, 0.0), {**points_raw(pts), "q": [int(p.key[0]) for p in srt],  # type: ignore[index]
                     "slope_by_q": {str(k): v for k, v in slopes.items()}, "ci95": list(f.ci95)}


def _row_slope(pts: list[Point], rows_x: float) -> tuple[float, dict]:
    t = {int(p.key): p.median for p in pts}  # type: ignore[call-overload]
    ms = sorted(t)
    try:
        f = fit_ratio_slope([m - 1 for m in ms], [t[m] / t[1] for m in ms])
    except (ValueError, KeyError) as e:
        raise BMCError(f"calibration: cannot fit weights_row_slope ({e})") from None
    return max(f.slope, 0.0), {"m": ms, "t": [t[m] for m in ms], "x": rows_x, "ci95": list(f.ci95)}


def _row_curves(pts: list[Point], family: str = "weights_rows") -> tuple[dict[str, tuple], dict]:
    """FAMILY@B curves, one per geometry (B the bytes of its layer, or of its head), and their raw data."""
    curves, raw = {}, {}
    for name in sorted({str(p.key[0]) for p in pts}):  # type: ignore[index]
        sel = {int(p.key[1]): p for p in pts if p.key[0] == name}  # type: ignore[index]
        if 1 not in sel or len(sel) < 2:
            continue
        ms = sorted(sel)
        x = sel[1].x
        curves[f"{family}@{x:.0f}"] = (tuple(float(m) for m in ms),
                                           tuple(sel[m].median / sel[1].median for m in ms))
        raw[name] = {"x": x, "m": ms, "t": [sel[m].median for m in ms]}
    return curves, raw


def _weights_plane(pts: list[Point], plan: Plan) -> tuple[Term, float]:
    """weights(x) = c0 + slope x, plus a cost per output row (scalar gemv_row_s): fitted together
    over every geometry, since matrices with short rows stream slower per byte."""
    specs = {s.name: s for s in plan.specs}
    if len({specs[str(p.key[0])].hidden for p in pts}) < 2:  # type: ignore[index]
        f1, _ = _fit("weights", pts, knee=False)  # one inner dimension: bytes and rows are collinear
        return f1.term(), 0.0
    x = [p.x for p in pts]
    z = [sum(o for o, _ in scaled_shapes(specs[str(p.key[0])], p.x, plan.elem)[0]) for p in pts]  # type: ignore[index]
    try:
        f = fit_plane(x, z, [p.median for p in pts])
    except ValueError as e:
        raise BMCError(f"calibration: cannot fit weights ({e})") from None
    return Term(c0=(f.c0,), slope=(f.slope,), r2=f.r2, ci95=(f.slope_ci,)), f.per_z


def build_profile(plan: Plan, m: Measurements, host: dict, date: str) -> Profile:
    notes = list(plan.notes) + list(m.notes)
    if m.others_cpu is not None and m.others_cpu > BUSY_OTHERS:
        notes.append(f"other processes used {m.others_cpu:.0%} of the CPU while calibrating: timings are likely "
                     "inflated; calibrate again on a quiet machine")
    raw: dict = {}
    fits: dict[str, PiecewiseFit] = {}
    fits["alloc"], raw["alloc"] = _fit("alloc", _kind(m.alloc, "touch"), first_touch=True)
    if _kind(m.alloc, "call"):
        _, raw["alloc_call"] = _fit("alloc_call", _kind(m.alloc, "call"), knee=False)
    if _kind(m.alloc, "cold"):  # CUDA: cudaMalloc past the caching allocator, for reference
        _, raw["alloc_cold"] = _fit("alloc_cold", _kind(m.alloc, "cold"))
    fits["copy"], raw["copy"] = _fit("copy", _kind(m.copy, "strided"))
    if _kind(m.copy, "contig"):
        _, raw["copy_contiguous"] = _fit("copy_contiguous", _kind(m.copy, "contig"))
    for name, pts in (("write", m.write), ("attn_exact", m.attn_exact), ("attn_masked", m.attn_masked),
                      ("weights", m.weights)):
        fits[name], raw[name] = _fit(name, pts)
    if len(m.attn_gqa) >= 3:  # transformers' exact-width GQA path
        fits["hf_attn_gqa"], raw["hf_attn_gqa"] = _fit("hf_attn_gqa", m.attn_gqa)
    if len(m.cat) >= 3:  # exact-width growth: a fresh buffer first touched by the copy itself
        cat_fit, _ = _fit("cat", m.cat, first_touch=True)
        if cat_fit.term().r2 is not None and cat_fit.term().r2 >= CAT_MIN_R2:
            fits["cat"] = cat_fit
        else:  # the model falls back to alloc + copy for exact-width growth
            notes.append(f"torch.cat fit too poor (R^2 {cat_fit.term().r2:.2f}): not used")
    for name, pts in (("attn_exact", m.attn_exact), ("attn_masked", m.attn_masked), ("weights", m.weights)):
        raw[name]["model"] = [str(p.key[0]) for p in sorted(pts, key=lambda p: p.x)]  # type: ignore[index]
    terms: dict[str, Term] = {k: f.term() for k, f in fits.items()}
    terms["weights"], gemv_row_s = _weights_plane(m.weights, plan)
    raw["weights"]["gemv_row_s"] = gemv_row_s

    scalars: dict[str, float] = {"gemv_row_s": gemv_row_s}
    scalars["attn_q_slope"], raw["attn_q"] = _attn_q_slope(m.attn_q, plan.q_rows)
    primary_rows = [Point(p.key[1], p.x, p.median, p.mad, p.kept, p.total, p.inner)  # type: ignore[index]
                    for p in m.weights_rows if p.key[0] == plan.primary.name]  # type: ignore[index]
    scalars["weights_row_slope"], raw["weights_rows"] = _row_slope(primary_rows, m.rows_x)
    sized, raw["weights_rows"]["by_model"] = _row_curves(m.weights_rows)
    head_sized, raw["head_rows"] = _row_curves(m.head_rows, "head_rows")
    sized.update(head_sized)
    scalars["sd_iter_s"] = m.sd_iter.median
    if m.lazy_backing is not None:
        scalars["lazy_backing"] = m.lazy_backing
    if m.lazy_raw:
        raw["lazy_backing"] = dict(m.lazy_raw)
    # the measured ratios themselves: one row is a GEMV, several a GEMM, a step no line fits
    wr = raw["weights_rows"]
    curves = {"weights_rows": (tuple(float(x) for x in wr["m"]), tuple(t / wr["t"][0] for t in wr["t"])), **sized}
    sq = {int(k): v for k, v in raw["attn_q"]["slope_by_q"].items()}
    if 1 in sq and sq[1] > 0 and len(sq) >= 2:
        qs = sorted(sq)
        curves["attn_q"] = (tuple(float(q) for q in qs), tuple(max(sq[q], 1e-12) / sq[1] for q in qs))
    raw["sd_iter"] = {"t": m.sd_iter.median, "mad": m.sd_iter.mad, "gamma": plan.sd_gamma, "vocab": plan.primary.vocab}

    # framework overhead: the tiny decoder's steps, net of what the fitted terms charge for them; the
    # runtime's own (bmc) and, when measured, transformers' generate() at the same geometry (hf)
    runs = (("bmc", "overhead", m.overhead, m.overhead_loop),
            ("hf", "hf_overhead", m.hf_overhead, "transformers generate(), DynamicCache"))
    for runtime, key, pts, loop in runs:
        if runtime == "hf" and not pts:  # transformers not installed: HF predictions fall back
            continue
        of = fit_overhead(pts, terms, scalars, lambda L: tiny_spec(L, plan.dtype), m.overhead_prompt,
                          m.overhead_tokens)
        step_name, layer_name = RUNTIMES[runtime]
        scalars[step_name], scalars[layer_name] = of.step_s, of.layer_s
        raw[key] = {"layers": [q[0] for q in pts], "t": [q[1] for q in pts], "loop": loop, **of.to_raw()}
        if of.note:
            notes.append(f"{key.replace('_', ' ')}: {of.note}")

    # the runtime decoder's layers in place, beyond what the terms and step_s charge (layers.py)
    if m.layers:
        by_name = {s.name: s for s in plan.specs}
        so_far = Profile(terms=terms, scalars=scalars, curves=curves, source="calibration (layer charge)")
        terms["layer_fixed"], terms["layer_row"], raw["layers"] = fit_layers(
            m.layers, so_far, by_name.__getitem__, m.layers_prompt, plan.dtype)

    # transformers' decoder layers in place, beyond what the terms and hf_step_s charge (hf_layers.py)
    if m.hf_layers and "hf_step_s" in scalars:
        by_name = {s.name: s for s in plan.specs}
        so_far = Profile(terms=terms, scalars=scalars, curves=curves, source="calibration (hf layer charge)")
        (terms["hf_layer_fixed"], terms["hf_layer_row"], terms["hf_matmul_ratio"],
         raw["hf_layers"]) = fit_hf_layers(m.hf_layers, so_far, by_name.__getitem__, plan.dtype)

    # cross-check: torch.cat of n rows + 1 against the model's alloc(n + 1 rows) + copy(n rows)
    p = plan.primary
    row = p.kv_heads * p.head_dim * plan.elem
    cat = sorted(m.cat, key=lambda q: q.x)
    pred = [float(terms["alloc"](q.x + row) + terms["copy"](q.x)) for q in cat]
    resid = [q.expected / pr - 1.0 for q, pr in zip(cat, pred)]
    raw["cat"] = {**points_raw(cat), "predicted": pred, "rel_residual": resid,
                  "median_abs_rel_residual": float(np.median(np.abs(resid))) if resid else None}

    spread = [q.mad / q.median for pts in (m.alloc, m.copy, m.cat, m.write, m.attn_exact, m.attn_masked, m.attn_q,
                                           m.weights, m.weights_rows, m.head_rows, m.attn_gqa) for q in pts
              if q.kept > 1]
    noisy = float(np.mean(np.asarray(spread) > NOISY_SPREAD)) if spread else 0.0
    if noisy > NOISY_FRACTION:
        notes.append(f"timings were noisy: {noisy:.0%} of the sizes varied by more than {NOISY_SPREAD:.0%} "
                     "between repeats (other processes running?); calibrate again on a quiet machine")
    meta = plan.describe()
    meta.update({"notes": notes, "bench_s": dict(m.bench_s), "noisy_fraction": noisy, "others_cpu": m.others_cpu,
                 "timer": "cuda events" if plan.device == "cuda" else "time.perf_counter",
                 "attention_form": "SDPA, GQA folded into query rows, additive float mask (runtime form)",
                 "weights_form": "F.linear over fused wqkv, wo, w_in, w_down (runtime form), streamed",
                 "r2_scale": "log time", "residuals": "relative, soft-L1"})
    raw["meta"] = meta
    return Profile(terms=terms, scalars=scalars, host=host, source="bmc-tune calibrate", date=date, raw=raw,
                   curves=curves)
