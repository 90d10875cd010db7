"""transformers' own terms: measured in place (bench_hf_layers), fitted (hf_layers), and read only by runtime "hf"."""

import dataclasses

import numpy as np
import pytest

from bmc_model.calibrate.hf_layers import fit_hf_layers
from bmc_model.calibrate.layers import through
from bmc_model.core.breakdown import attention_s, breakdown, write_s
from bmc_model.core.curves import term_at
from bmc_model.core.errors import BMCError
from bmc_model.core.policy import NAMED
from bmc_model.core.predict import predict
from bmc_model.core.profile import Profile, Term, embedded_profile
from bmc_model.core.specs import get_spec
from bmc_model.core.workload import Geometry, Workload

SMOL, QWEN = get_spec("smollm2-135m"), get_spec("qwen2.5-coder-1.5b")


def _with_hf(**terms: Term) -> Profile:
    d = embedded_profile().to_dict()
    d["terms"].update({k: t.to_dict() for k, t in terms.items()})
    return Profile.from_dict(d, source="t")


def test_the_hf_view_reads_transformers_terms_and_the_bmc_view_ignores_them():
    fixed, row, ratio = Term(c0=(2e-3,), slope=(0.0,)), Term(c0=(1e-4,), slope=(0.0,)), Term(c0=(1.5,), slope=(0.0,))
    gqa = Term(c0=(1e-5,), slope=(4e-10,))
    prof = _with_hf(hf_layer_fixed=fixed, hf_layer_row=row, hf_matmul_ratio=ratio, hf_attn_gqa=gqa)
    hf = prof.for_runtime("hf")
    assert hf.layer_fixed == fixed and hf.layer_row == row
    assert hf.terms["matmul_ratio"] == ratio and hf.terms["attn_exact_grouped"] == gqa
    assert not any(name.startswith("hf_") for name in hf.terms)
    base = embedded_profile()
    for model in (SMOL, QWEN):  # bmc-tune's decoder: the hf terms change nothing
        args = dict(model=model, seq=4096, prompt=2048, policy="dynamic", dtype="float32")
        assert predict(**args, profile=prof).ms_per_token == predict(**args, profile=base).ms_per_token


def test_matmul_ratio_scales_the_layers_weights_and_grouped_attention_only_exact_gqa_widths():
    ratio = Term(c0=(1.5,), slope=(0.0,))
    slow = Term(c0=(1e-5,), slope=(3 * embedded_profile().attn_exact.slope[-1],))
    hf = _with_hf(hf_matmul_ratio=ratio, hf_attn_gqa=slow).for_runtime("hf")
    plain = embedded_profile().for_runtime("hf")
    w = Workload(prompt=2048, seq=2304)
    for spec in (SMOL, get_spec("llama-7b")):
        geo = Geometry.of(spec, 1, "float32")
        a, b = (breakdown(NAMED["dynamic"], w, geo, p) for p in (hf, plain))
        head = w.tokens * (term_at(plain.weights, geo.head_weight_bytes) + plain.gemv_row_s * geo.head_out_rows)
        assert a["weights"] - head == pytest.approx(1.5 * (b["weights"] - head), rel=1e-12)
        grouped = spec.heads > spec.kv_heads
        assert (a["attention_useful"] > 1.5 * b["attention_useful"]) == grouped  # only GQA runs enable_gqa
        masked = [breakdown(NAMED["static"], w, geo, p)["attention_useful"] for p in (hf, plain)]
        assert masked[0] == masked[1]  # a mask: transformers packs GQA as the runtime folds it


@pytest.mark.parametrize("spec", [SMOL, get_spec("llama-7b")])
def test_predict_under_transformers_prices_a_gqa_model_s_exact_width_with_its_grouped_attention(spec):
    """Through predict(runtime="hf"), whose geometry is unfolded (group 1): the grouped term is the model's, not
    the fold's (it once read geo.group and was never used)."""
    slow = Term(c0=(1e-5,), slope=(3 * embedded_profile().attn_exact.slope[-1],))
    with_gqa = _with_hf(hf_attn_gqa=slow)
    args = dict(model=spec, seq=4096, prompt=3840, dtype="float32", runtime="hf")
    gqa = spec.heads > spec.kv_heads
    for policy, exact in (("fixed:256:exact", True), ("static", False)):
        a, b = (predict(**args, policy=policy, profile=p) for p in (with_gqa, embedded_profile()))
        slower = a.breakdown["attention_useful"] > 2 * b.breakdown["attention_useful"]
        assert slower == (gqa and exact), policy
        assert a.breakdown["weights"] == pytest.approx(b.breakdown["weights"])
    # bmc-tune's own decoder folds the group into query rows: never the grouped term
    bmc = {k: v for k, v in args.items() if k != "runtime"}
    assert predict(**bmc, policy="fixed:256:exact", profile=with_gqa).ms_per_token == pytest.approx(
        predict(**bmc, policy="fixed:256:exact", profile=embedded_profile()).ms_per_token)


def test_the_fit_recovers_known_per_layer_costs():
    from bmc_model.calibrate.bench_hf_layers import HFLayerPoint

    prof = dataclasses.replace(embedded_profile(), scalars={**embedded_profile().scalars, "hf_step_s": 4e-3})
    truth = {SMOL.name: (6e-4, 5e-5, 1.3), QWEN.name: (1.2e-3, 1e-4, 1.1)}
    pts = []
    for spec in (SMOL, QWEN):
        geo = Geometry.of(spec, 1, "float32")
        fixed, row, ratio = truth[spec.name]
        fused = term_at(prof.weights, geo.layer_weight_bytes) + prof.gemv_row_s * geo.layer_out_rows
        for b in (1, 4):
            rho = geo.rho * b
            per_layer = (attention_s(prof, rho, 70, 1, True, geo.group) + write_s(prof, rho, 1)
                         + fixed + (b - 1) * row)
            mm = ratio * fused * (1 + 0.4 * (b - 1))
            layers = 3
            for noise in (0.98, 1.0, 1.02):
                pts.append(HFLayerPoint(spec.name, layers, b, 70, noise * (4e-3 + layers * (per_layer + mm)) + 2e-5,
                                        noise * layers * mm, 2e-5))
    by = {s.name: s for s in (SMOL, QWEN)}
    f, r, q, raw = fit_hf_layers(pts, prof, by.__getitem__, "float32")
    for spec in (SMOL, QWEN):
        x = Geometry.of(spec, 1, "float32").layer_weight_bytes
        fixed, row, ratio = truth[spec.name]
        assert term_at(q, x) == pytest.approx(ratio, rel=1e-9)
        assert term_at(f, x) == pytest.approx(fixed, rel=0.05)
        assert term_at(r, x) == pytest.approx(row, rel=0.05)
        assert raw[spec.name]["batches"] == [1, 4]
    with pytest.raises(BMCError, match="batch 1 and a larger"):
        fit_hf_layers([p for p in pts if p.batch == 1], prof, by.__getitem__, "float32")
    with pytest.raises(BMCError, match="hf_step_s"):
        fit_hf_layers(pts, dataclasses.replace(prof, scalars={k: v for k, v in prof.scalars.items()
                                                               if k != "hf_step_s"}), by.__getitem__, "float32")


def test_a_matmul_ratio_that_is_not_positive_is_refused():
    bad = through([1e7, 1e8], [1.2, 0.0])
    with pytest.raises(BMCError, match="hf_matmul_ratio.*> 0"):
        _with_hf(hf_matmul_ratio=bad)
    _with_hf(hf_matmul_ratio=through([1e7, 1e8], [1.2, 0.9]))  # positive: fine


@pytest.mark.heavy  # the miniature calibration (test_calibrate_run.py) runs this bench in the default suite
def test_transformers_decoder_timed_in_place_on_a_tiny_geometry():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from bmc_model.calibrate import bench_hf_layers as bh

    spec = dataclasses.replace(SMOL, name="tiny", hidden=64, ffn=128, heads=4, kv_heads=2, head_dim=16, layers=2)
    pts = bh.hf_layer_points((spec,), 1, torch.float32, 4, 2**20, 2**30, np.random.default_rng(0), steps=2)
    assert sorted(p.batch for p in pts) == list(bh.BATCHES)
    assert all(0 < p.layers_mm_s < p.step_s and 0 < p.head_mm_s < p.step_s for p in pts)
    assert bh.hf_layer_points((spec,), 1, torch.float32, 4, 2**20, 1, np.random.default_rng(0)) == []
