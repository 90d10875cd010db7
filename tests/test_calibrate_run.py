"""Overhead scalars net of the terms, and one end-to-end pass over a miniature plan (no timing asserts)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import numpy as np
import pytest

from bmc_model.calibrate import bench_layers as bl
from bmc_model.calibrate.assemble import Measurements, build_profile, tiny_spec
from bmc_model.calibrate.overhead import fit_overhead, model_charge
from bmc_model.calibrate.plan import make_plan
from bmc_model.calibrate.runner import NullReporter, Point
from bmc_model.core.breakdown import attention_s, write_s
from bmc_model.core.profile import (
    SCALAR_NAMES,
    TERM_NAMES,
    Profile,
    Term,
    embedded_profile,
    read_profile,
    write_profile,
)
from bmc_model.core.specs import scaled_shapes

MiB = 2**20


def test_overhead_is_what_the_terms_do_not_charge():
    prof = embedded_profile()
    step, layer = 3e-5, 7e-5
    rng = np.random.default_rng(0)
    pts = []
    for L in (1, 2, 4, 6, 8) * 3:
        charge = model_charge(prof.terms, prof.scalars, tiny_spec(L, "float32"), 34, 16)
        pts.append((L, (charge + step + L * layer) * (1 + 0.01 * rng.standard_normal())))
    f = fit_overhead(pts, prof.terms, prof.scalars, lambda L: tiny_spec(L, "float32"), 34, 16)
    assert f.step_s == pytest.approx(step, rel=0.25)
    assert f.layer_s == pytest.approx(layer, rel=0.05)
    assert f.charge_per_layer > 0 and f.raw_slope == pytest.approx(layer + f.charge_per_layer, rel=0.05)
    assert f.note == ""


def test_overhead_floors_at_zero_and_says_so():
    prof = embedded_profile()
    pts = [(L, 1e-7 * L + 1e-7) for L in (1, 2, 4)]  # faster than the terms alone: impossible
    f = fit_overhead(pts, prof.terms, prof.scalars, lambda L: tiny_spec(L, "float32"), 34, 16)
    assert f.step_s == 0.0 and f.layer_s == 0.0 and "floored" in f.note


def tiny_plan():
    p = make_plan(quick=True, device="cpu", dtype="float32", threads=1, specs=[], available_ram=8 * 2**30,
                  llc_bytes=32 * MiB)
    from bmc_model.core.specs import get_spec

    small = (get_spec("smollm2-135m"),)
    return dataclasses.replace(
        p, specs=small, rounds=1, budgets={k: 0.003 for k in p.budgets},
        alloc_sizes=tuple(4096 * 2**i for i in range(8)), copy_rows=tuple(range(1, 40, 4)), cat_rows=(4, 16, 64),
        write_shapes=((1, 1), (1, 4), (2, 8)), attn_widths=(16, 32, 64, 128, 256), q_widths=(32, 64, 128),
        weight_sizes=tuple(2**18 * 2**i for i in range(5)), stream_bytes=4 * MiB, overhead_layers=(1, 2, 3),
        overhead_tokens=3)


def test_miniature_calibration_builds_a_complete_profile(tmp_path):
    import torch

    from bmc_model.calibrate import run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops on a shared machine: no thread-pool stalls
    try:
        with torch.inference_mode():
            prof = run._measure(tiny_plan(), NullReporter(), np.random.default_rng(0))
    finally:
        torch.set_num_threads(threads)
    hf = {"hf_step_s", "hf_layer_s"} if importlib.util.find_spec("transformers") else set()
    # three tiny cat sizes on a shared machine may fit poorly: then the term is left out, and said so
    cat_noted = any("torch.cat fit too poor" in n for n in prof.raw["meta"]["notes"])
    layers = {"layer_fixed", "layer_row"}  # the runtime decoder's layers in place (bench_layers.py)
    # transformers' decoder in place (bench_hf_layers.py) and its exact-width GQA attention (SmolLM2 is GQA)
    hf_terms = {"hf_layer_fixed", "hf_layer_row", "hf_matmul_ratio", "hf_attn_gqa"} if hf else set()
    assert set(prof.terms) == set(TERM_NAMES) | layers | hf_terms | ({"cat"} - ({"cat"} if cat_noted else set()))
    plan = tiny_plan()
    assert set(prof.raw["layers"]) == {"smollm2-135m"}
    assert prof.raw["layers"]["smollm2-135m"]["q"] == list(plan.layer_q_rows)
    if hf:
        assert prof.raw["hf_layers"]["smollm2-135m"]["batches"] == [1, 4] and 0 < prof.hf_matmul_ratio.c0[0]
    lazy = {"lazy_backing"} if os.path.exists("/proc/self/statm") else set()  # bench_lazy: resident size
    assert set(prof.scalars) == set(SCALAR_NAMES) | {"gemv_row_s"} | hf | lazy
    assert not lazy or 0.0 <= prof.lazy_backing <= 1.0 and "samples" in prof.raw["lazy_backing"]
    if os.path.exists("/proc/sys/vm/overcommit_memory"):
        assert prof.host["overcommit_mode"] in (0, 1, 2)
    if hf:
        assert prof.raw["hf_overhead"]["loop"].startswith("transformers") and prof.has_runtime("hf")
    heads = {f"head_rows@{x:.0f}" for x in (r["x"] for r in prof.raw["head_rows"].values())}  # those the pool held
    assert {"weights_rows", "attn_q", f"weights_rows@{prof.raw['weights_rows']['x']:.0f}"} | heads == set(prof.curves)
    assert prof.curves["weights_rows"][1][0] == 1.0
    for name in TERM_NAMES:
        t = prof.terms[name]
        assert t.r2 is not None and len(t.ci95) == len(t.slope)
        assert len(prof.raw[name]["x"]) == len(prof.raw[name]["t"]) >= 3
    assert prof.raw["overhead"]["loop"].startswith("runtime.")
    assert len(prof.raw["cat"]["rel_residual"]) == 3
    assert prof.host["torch_threads"] >= 1 and prof.host["device"] == "cpu"
    path = write_profile(prof, tmp_path / "p.json")
    back = read_profile(path)
    assert back.terms == prof.terms and back.scalars == prof.scalars


def test_calibrate_api_rejects_bad_input_before_measuring():
    from bmc_model.calibrate import calibrate
    from bmc_model.core.errors import BMCError

    with pytest.raises(BMCError, match="unknown device"):
        calibrate(device="gpu")
    with pytest.raises(BMCError, match="threads"):
        calibrate(threads=0)


def test_embedded_profile_loads_with_its_label():
    prof = embedded_profile()
    assert isinstance(prof, Profile) and prof.source == "embedded default"


# --- synthetic measurements with known coefficients through the whole assembly ------------------

TRUE = {
    "alloc": Term(c0=(1.5e-6, 2e-5), slope=(1.2e-11, 4e-10), knots=(24 * MiB,)),
    "copy": Term(c0=(3e-6,), slope=(2.4e-11,)),
    "write": Term(c0=(2.5e-6,), slope=(1.2e-10,)),
    "attn_exact": Term(c0=(8e-6,), slope=(1.4e-10,)),
    "attn_masked": Term(c0=(9e-6,), slope=(1.5e-10,)),
    "weights": Term(c0=(1.2e-5,), slope=(6e-11,)),
}
TRUE_SCALARS = {"attn_q_slope": 0.3, "weights_row_slope": 0.2, "step_s": 4e-5, "layer_s": 9e-5, "sd_iter_s": 1.5e-4,
                "gemv_row_s": 1e-7}
TRUE_HF = {"hf_step_s": 9e-4, "hf_layer_s": 3.5e-4}  # generate() costs more per step and per layer
TRUE_LAYERS = {"fixed": (1.5e-4, 9e-4), "row": (8e-6, 4e-5)}  # in place: at the smallest and largest geometry


def _out_rows(spec, x, elem):
    return sum(o for o, _ in scaled_shapes(spec, x, elem)[0])


def _pts(keys_x, cost, rng, outliers=2):
    t = np.array([cost(x) for _, x in keys_x]) * (1 + 0.02 * rng.standard_normal(len(keys_x)))
    t[rng.choice(len(t), size=min(outliers, len(t) // 8), replace=False)] *= 3.0  # preempted medians
    return [Point(key=k, x=float(x), median=float(v), mad=0.01 * float(v), kept=5, total=5, inner=1)
            for (k, x), v in zip(keys_x, t)]


def synthetic_measurements(plan, seed=0):
    rng = np.random.default_rng(seed)
    p = plan.primary
    row = p.kv_heads * p.head_dim * plan.elem
    alloc = _pts([(("touch", x), x) for x in plan.alloc_sizes], TRUE["alloc"], rng)
    alloc += _pts([(("call", x), x) for x in plan.alloc_sizes], lambda x: 2e-6, rng)
    copy = _pts([(("strided", n), n * row) for n in plan.copy_rows], TRUE["copy"], rng)
    cat = _pts([(n, n * row) for n in plan.cat_rows], lambda x: float(TRUE["alloc"](x + row)), rng, 0)
    write = _pts([((b, q), b * q * row) for b, q in plan.write_shapes], TRUE["write"], rng)
    kv = [((s.name, w), 2 * s.kv_heads * w * s.head_dim * plan.elem) for s in plan.specs for w in plan.attn_widths]
    exact, masked = _pts(kv, TRUE["attn_exact"], rng), _pts(kv, TRUE["attn_masked"], rng)
    sq = TRUE_SCALARS["attn_q_slope"]
    a = TRUE["attn_masked"]
    attn_q = _pts([((q, w), 2 * row * w) for w in plan.q_widths for q in plan.q_rows], lambda x: 0.0, rng, 0)
    attn_q = [Point(pt.key, pt.x, a.c0[0] + a.slope[0] * pt.x * (1 + sq * (pt.key[0] - 1)), 0, 5, 5, 1)
              for pt in attn_q]
    spec_of = {s.name: s for s in plan.specs}
    keys = [((plan.specs[j % len(plan.specs)].name, x), x) for j, x in enumerate(plan.weight_sizes)]
    g = TRUE_SCALARS["gemv_row_s"]
    weights = _pts(keys, TRUE["weights"], rng)  # noise and two outliers, then the per-row cost on top
    weights = [dataclasses.replace(pt, median=pt.median + g * _out_rows(spec_of[pt.key[0]], pt.x, plan.elem))
               for pt in weights]
    wrows = []
    for j, s in enumerate(plan.specs):  # one whole layer each; the primary has weights_row_slope
        x = float(s.layer_params() * plan.elem)
        slope = TRUE_SCALARS["weights_row_slope"] * (1 + j)
        wrows += [Point((s.name, m), x, float(TRUE["weights"](x)) * (1 + slope * (m - 1)), 0, 5, 5, 1)
                  for m in plan.row_counts]
    rows_x = float(plan.primary.layer_params() * plan.elem)
    hrows = []
    for j, s in enumerate(plan.specs):  # each LM head: twice its layer's extra cost per row
        x = float(s.head_params() * plan.elem)
        slope = 2 * TRUE_SCALARS["weights_row_slope"] * (1 + j)
        hrows += [Point((s.name, m), x, float(TRUE["weights"](x)) * (1 + slope * (m - 1)), 0, 5, 5, 1)
                  for m in plan.row_counts]
    true_terms = dict(TRUE)
    over, hf_over = [], []
    for L in plan.overhead_layers * 3:
        charge = model_charge(true_terms, TRUE_SCALARS, tiny_spec(L, plan.dtype), 34, plan.overhead_tokens)
        over.append((L, (charge + TRUE_SCALARS["step_s"] + L * TRUE_SCALARS["layer_s"])
                     * (1 + 0.01 * rng.standard_normal())))
        hf_over.append((L, (charge + TRUE_HF["hf_step_s"] + L * TRUE_HF["hf_layer_s"])
                        * (1 + 0.01 * rng.standard_normal())))
    sd = Point("sd", 4.0, TRUE_SCALARS["sd_iter_s"], 0.0, 5, 5, 100)
    true_prof = Profile(terms=true_terms, scalars=TRUE_SCALARS)
    by_bytes = sorted(plan.specs, key=lambda s: s.layer_params())
    layer_pts = []
    for j, s in enumerate(by_bytes):  # fixed and row cost rising with the layer's size, linearly in index
        f = j / max(1, len(by_bytes) - 1)
        fixed, per_row = (lo + f * (hi - lo) for lo, hi in TRUE_LAYERS.values())
        rho = float(s.kv_heads * s.head_dim * plan.elem)
        for q in bl.Q_ROWS:
            g = s.heads // s.kv_heads  # the decoder folds GQA query heads into rows
            per_layer = (attention_s(true_prof, rho, bl.PROMPT + q, q, masked=q > 1, group=g)
                         + write_s(true_prof, rho, q) + fixed + (q - 1) * per_row)
            rest = (TRUE_SCALARS["step_s"] + 2 * per_layer) * (1 + 0.005 * rng.standard_normal())
            layer_pts.append(bl.LayerPoint(s.name, 2, q, rest))
    return Measurements(alloc=alloc, copy=copy, cat=cat, write=write, attn_exact=exact, attn_masked=masked,
                        attn_q=attn_q, weights=weights, weights_rows=wrows, rows_x=rows_x, sd_iter=sd, overhead=over,
                        overhead_loop="synthetic", overhead_prompt=34, overhead_tokens=plan.overhead_tokens,
                        hf_overhead=hf_over, head_rows=hrows, layers=layer_pts, layers_prompt=bl.PROMPT)


@pytest.mark.parametrize("quick", [True, False])
def test_assembly_recovers_known_coefficients_from_synthetic_measurements(quick):
    plan = make_plan(quick=quick, device="cpu", dtype="float32", threads=2, specs=[], available_ram=16 * 2**30,
                     llc_bytes=32 * MiB)
    prof = build_profile(plan, synthetic_measurements(plan), {"cpu": "synthetic"}, "2026-01-01")
    for name, true in TRUE.items():
        if name == "weights":  # fitted with the per-row cost: check the whole weights time instead
            continue
        got = prof.terms[name]
        xs = np.asarray(prof.raw[name]["x"])
        err = np.abs(np.asarray(got(xs)) / np.asarray(true(xs)) - 1)
        assert np.median(err) < 0.03 and np.max(err) < 0.15, (name, err)
        assert len(got.knots) == len(true.knots), name
    spec_of, g = {s.name: s for s in plan.specs}, TRUE_SCALARS["gemv_row_s"]
    werr = [abs((prof.weights(x) + prof.gemv_row_s * _out_rows(spec_of[m], x, plan.elem))
                / (TRUE["weights"](x) + g * _out_rows(spec_of[m], x, plan.elem)) - 1)
            for x, m in zip(prof.raw["weights"]["x"], prof.raw["weights"]["model"])]
    assert np.median(werr) < 0.03 and np.max(werr) < 0.15, werr
    below = max(x for x in plan.alloc_sizes if x < 24 * MiB)
    above = min(x for x in plan.alloc_sizes if x >= 24 * MiB)
    assert below <= prof.alloc.knots[0] <= above
    for name, v in {**TRUE_SCALARS, **TRUE_HF}.items():
        rel = {"step_s": 0.3, "gemv_row_s": 0.25}.get(name, 0.1)  # the per-row cost shares the weights' noise
        assert prof.scalars[name] == pytest.approx(v, rel=rel), name
    for j, s in enumerate(plan.specs):  # a row curve per geometry, keyed by its layer bytes
        xs, ratio = prof.curves[f"weights_rows@{s.layer_params() * plan.elem}"]
        assert xs == tuple(float(m) for m in plan.row_counts)
        want = [1 + TRUE_SCALARS["weights_row_slope"] * (1 + j) * (m - 1) for m in plan.row_counts]
        assert ratio == pytest.approx(want, rel=1e-9)
        xs, ratio = prof.curves[f"head_rows@{s.head_params() * plan.elem}"]  # and one per LM head
        assert ratio == pytest.approx([2 * w - 1 for w in want], rel=1e-9)
    hf = prof.for_runtime("hf")
    assert (hf.step_s, hf.layer_s) == (prof.hf_step_s, prof.hf_layer_s) and prof.for_runtime("bmc") is prof
    assert "layer_fixed" not in hf.terms and "layer_row" not in hf.terms  # measured in bmc-tune's decoder only
    by_bytes = sorted(plan.specs, key=lambda s: s.layer_params())
    for j, s in enumerate(by_bytes):  # the in-place layer cost, each geometry's value recovered
        f = j / max(1, len(by_bytes) - 1)
        fixed, per_row = (lo + f * (hi - lo) for lo, hi in TRUE_LAYERS.values())
        x = s.layer_params() * plan.elem
        assert prof.layer_fixed(x) == pytest.approx(fixed, rel=0.05), s.name
        assert prof.layer_row(x) == pytest.approx(per_row, rel=0.1), s.name
    # torch.cat synthesised as one allocation of n + 1 rows: the model's alloc + copy over-predicts it
    assert all(r < 0 for r in prof.raw["cat"]["rel_residual"])
    assert prof.raw["meta"]["noisy_fraction"] == 0.0 and prof.raw["overhead"]["loop"] == "synthetic"
    assert prof.raw["meta"]["notes"] == []


def test_first_touch_terms_are_fitted_to_means_and_the_rest_to_medians():
    """cat and alloc pay slow page faults now and then, a decode step pays them too: their terms follow the
    mean of every sample. Preemption tails elsewhere (copy here) must not move the medians' fits."""
    plan = make_plan(quick=True, device="cpu", dtype="float32", threads=2, specs=[], available_ram=16 * 2**30,
                     llc_bytes=32 * MiB)
    m = synthetic_measurements(plan)
    base = build_profile(plan, m, {"cpu": "synthetic"}, "2026-01-01")
    tail = {"cat": 1.5, "alloc": 1.5, "copy": 3.0}
    for name, f in tail.items():
        setattr(m, name, [dataclasses.replace(p, mean=f * p.median) for p in getattr(m, name)])
    prof = build_profile(plan, m, {"cpu": "synthetic"}, "2026-01-01")
    for name in ("cat", "alloc"):
        xs = np.asarray(base.raw[name]["x"])
        assert np.asarray(prof.terms[name](xs)) == pytest.approx(1.5 * np.asarray(base.terms[name](xs)), rel=0.02)
    xs = np.asarray(base.raw["copy"]["x"])
    assert np.asarray(prof.copy(xs)) == pytest.approx(np.asarray(base.copy(xs)), rel=1e-9)


def test_busy_machine_and_cut_benchmarks_are_noted():
    plan = make_plan(quick=True, device="cpu", dtype="float32", threads=2, specs=[], available_ram=16 * 2**30,
                     llc_bytes=32 * MiB)
    m = synthetic_measurements(plan)
    m.others_cpu, m.notes = 0.4, ["alloc: stopped after 1 of 3 rounds"]
    notes = build_profile(plan, m, {}, "").raw["meta"]["notes"]
    assert notes[0].startswith("alloc: stopped") and "other processes used 40% of the CPU" in notes[1]
