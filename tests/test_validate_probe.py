"""MatmulProbe (validate --sd's verify matmuls timed alongside the runs) and with_row_ratios."""

import dataclasses

import pytest

from bmc_model.calibrate.probe import MatmulProbe, probed_profile, weights_drift, with_row_ratios
from bmc_model.core.breakdown import attention_s
from bmc_model.core.curves import term_at, weights_row_factor
from bmc_model.core.errors import BMCError
from bmc_model.core.predict import get_profile
from bmc_model.core.specs import get_spec
from bmc_model.core.workload import Geometry
from bmc_model.runtime.decoder import Decoder
from bmc_model.validate.interleave import run_interleaved

TINY = dataclasses.replace(get_spec("llama-7b"), name="tiny-llama", hidden=64, heads=4, kv_heads=2, head_dim=16,
                           ffn=96, vocab=128, layers=2)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_probe_steps_and_samples():
    probe = MatmulProbe(Decoder.random(TINY), (1, 5), steps=3)
    assert probe.progress == 0
    order = run_interleaved([probe])
    assert len(order) == 3 and probe.progress == 1
    assert all(len(v) == 3 for v in probe.samples.values())
    probe.restart()  # a second repeat adds to the same samples
    run_interleaved([probe])
    assert all(len(v) == 6 for v in probe.samples.values())
    ratios = probe.ratios()
    assert set(ratios) == {"layers", "head"}
    assert ratios["layers"][1] == ratios["head"][1] == 1.0
    assert ratios["layers"][5] > 0 and ratios["head"][5] > 0


@pytest.mark.parametrize("rows, steps", [((), 2), ((2, 4), 2), ((1, 0), 2), ((1, 4), 0)])
def test_probe_bad_arguments(rows, steps):
    with pytest.raises(BMCError):
        MatmulProbe(Decoder.random(TINY), rows, steps=steps)


def test_with_row_ratios_replaces_every_sized_curve():
    prof = get_profile(None)
    ratios = {"layers": {1: 1.0, 8: 2.5}, "head": {1: 1.0, 8: 3.75}}
    probed = with_row_ratios(prof, ratios)
    for nbytes in (1e6, 2e8, 5e9):  # every matrix size reads the probe's point
        assert weights_row_factor(probed, 8, nbytes) == pytest.approx(2.5)
        assert weights_row_factor(probed, 8, nbytes, "head_rows") == pytest.approx(3.75)
        assert weights_row_factor(probed, 1, nbytes) == 1.0
    assert weights_row_factor(prof, 8, 2e8) != pytest.approx(2.5)  # the stored profile is left as it was
    kept = {k for k in prof.curves if not k.startswith(("weights_rows@", "head_rows@"))}
    assert kept <= set(probed.curves) and probed.terms is prof.terms


def test_weights_drift_is_measured_over_charged():
    prof = get_profile(None)
    geo = Geometry.of(TINY, 1, "float32")
    g_row = prof.scalars.get("gemv_row_s", 0.0)
    charged = 1e3 * (geo.layers * (term_at(prof.weights, geo.layer_weight_bytes) + g_row * geo.layer_out_rows)
                     + term_at(prof.weights, geo.head_weight_bytes) + g_row * geo.head_out_rows)
    assert weights_drift(prof, geo, {"layers": 0.75 * charged, "head": 0.75 * charged}) == pytest.approx(1.5)


def test_probed_profile_scales_the_weights_term_by_the_drift():
    probe = MatmulProbe(Decoder.random(TINY), (1, 3), steps=2)
    run_interleaved([probe])
    prof = get_profile(None)
    geo = Geometry.of(TINY, 1, "float32")
    probed, factors = probed_profile(prof, probe, geo)
    f = factors["weights"]
    assert set(factors) == {"weights"}  # no cat_rows: the cat term stays
    assert probed.terms["cat"] is prof.terms["cat"]
    med = probe.medians_ms()
    assert f == pytest.approx(weights_drift(prof, geo, {"layers": med["layers"][1], "head": med["head"][1]}))
    for nbytes in (1e5, 3e7, 2e9):  # every size moves by the same factor
        assert term_at(probed.weights, nbytes) == pytest.approx(f * term_at(prof.weights, nbytes))
    assert probed.gemv_row_s == pytest.approx(f * prof.gemv_row_s)
    # the probed profile now charges this model's one-row weights what the probe measured
    assert weights_drift(probed, geo, {"layers": med["layers"][1], "head": med["head"][1]}) == pytest.approx(1.0)
    assert weights_row_factor(probed, 3, geo.layer_weight_bytes) == pytest.approx(probe.ratios()["layers"][3])
    assert prof.weights is get_profile(None).weights  # the stored profile is left as it was


def test_probe_times_cat_as_calibration_does_and_rescales_the_cat_term():
    probe = MatmulProbe(Decoder.random(TINY), (1, 3), steps=3, cat_rows=40, stream_bytes=2**20, cat_calls=2)
    run_interleaved([probe])
    got = probe.samples[("cat", 40)]
    assert len(got) == 6 and probe.cat_ms() > 0
    assert probe.cat_ms() == pytest.approx(1e3 * sum(got) / 6)  # a mean: slow page faults count
    row = TINY.kv_heads * TINY.head_dim * 4
    assert 40 * row <= probe.cat_x < 60 * row  # the case's mean size: rows .. rows + CAT_SPAN
    prof = get_profile(None)
    probed, factors = probed_profile(prof, probe, Geometry.of(TINY, 1, "float32"))
    assert factors["cat"] == pytest.approx(probe.cat_ms() / (1e3 * term_at(prof.cat, probe.cat_x)))
    for x in (1e4, 1e6, 1e8):
        assert term_at(probed.cat, x) == pytest.approx(factors["cat"] * term_at(prof.cat, x))
    probe.close()
    assert probe._cat_op is None


def test_probe_times_attention_in_the_decoders_form_and_rescales_the_attention_terms():
    probe = MatmulProbe(Decoder.random(TINY), (1, 4), steps=3, attn_width=40, stream_bytes=0)  # pool: one K/V
    run_interleaved([probe])
    att = probe.attn_ms()  # default forms: one row exact, the verify pass's 4 rows masked
    assert att.keys() == {"attn_exact", "attn_masked"} and set(att["attn_exact"]) == {1}
    assert set(att["attn_masked"]) == {4} and len(probe.samples[("attn_masked", 4)]) == 3
    prof = get_profile(None)
    geo = Geometry.of(TINY, 1, "float32")
    probed, f = probed_profile(prof, probe, geo)
    ex, ma = att["attn_exact"][1], att["attn_masked"][4]
    assert f["attn_exact"] == pytest.approx(ex / (1e3 * attention_s(prof, geo.rho, 40, 1, False, geo.group)))
    assert f["attn_masked"] == pytest.approx(ma / (1e3 * attention_s(prof, geo.rho, 40, 4, True, geo.group)))
    # the probed profile charges exactly what the probe measured at its width, and scales every width alike
    assert 1e3 * attention_s(probed, geo.rho, 40, 1, False, geo.group) == pytest.approx(ex)
    assert 1e3 * attention_s(probed, geo.rho, 40, 4, True, geo.group) == pytest.approx(ma)
    assert attention_s(probed, geo.rho, 9000, 4, True, geo.group) == pytest.approx(
        f["attn_masked"] * attention_s(prof, geo.rho, 9000, 4, True, geo.group))
    probe.close()
    assert probe._attn_ops == {}
    # plain decoding's forms: one row, exact and masked (padded widths)
    plain = MatmulProbe(Decoder.random(TINY), (1,), steps=2, attn_width=40, attn_forms=((1, False), (1, True)))
    run_interleaved([plain])
    assert {k: set(v) for k, v in plain.attn_ms().items()} == {"attn_exact": {1}, "attn_masked": {1}}
    plain.close()


def test_probe_bytes_counts_the_cat_chain_and_the_attention_pool():
    from bmc_model.calibrate.bench_attention import VIEW_SLACK
    from bmc_model.calibrate.bench_memory import CAT_SPAN
    from bmc_model.validate.memory import probe_bytes

    spec, row, mib = get_spec("llama-7b"), 32 * 128 * 4, 2**20
    got = probe_bytes(spec, cat_rows=16384, attn_width=16384, stream_bytes=64 * mib)
    # cat: its source plus a tensor being replaced and its successor (grown up to CAT_SPAN rows); attention: K and
    # V with the exact view's slack. memory.py repeats those two numbers to stay free of torch: checked here
    assert got == 16384 * row + 2 * (16384 + CAT_SPAN) * row + 2 * (16384 + VIEW_SLACK) * row
    assert probe_bytes(spec, cat_rows=0, attn_width=0, stream_bytes=64 * mib) == 0
    assert probe_bytes(spec, cat_rows=16, attn_width=16, stream_bytes=64 * mib) >= 2 * 64 * mib  # cold: a stream each
