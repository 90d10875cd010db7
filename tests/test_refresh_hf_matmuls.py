"""The refresh times transformers' own matrices (seven unfused a layer) beside the fused four, for a profile that
prices transformers: one-row (hf_matmul_ratio's factor) and m-row (hf_weights_rows, read by the hf view only)."""

from __future__ import annotations

import pytest
from conftest import tiny_spec
from hypothesis import given
from hypothesis import strategies as st

from bmc_model.calibrate import refresh as refresh_mod
from bmc_model.core.breakdown import matmul_ratio, matmul_s
from bmc_model.core.curves import weights_row_factor
from bmc_model.core.errors import BMCError
from bmc_model.core.predict import predict
from bmc_model.core.profile import Profile, Term, embedded_profile, read_profile, write_profile
from bmc_model.core.refresh import Refresh, refreshed
from bmc_model.core.specs import get_spec
from bmc_model.core.workload import Geometry

RATIOS = {"layers": {1: 1.0, 4: 3.0}, "head": {1: 1.0, 4: 2.0}, "hf_layers": {1: 1.0, 4: 2.4}}


def hf_profile(ratio: float = 0.88) -> Profile:
    """The embedded profile with transformers' terms, its matmul ratio `ratio` at every size."""
    d = embedded_profile().to_dict()
    d["terms"]["hf_layer_fixed"] = d["terms"]["layer_fixed"]
    d["terms"]["hf_layer_row"] = d["terms"]["layer_row"]
    d["terms"]["hf_matmul_ratio"] = Term(c0=(ratio,), slope=(0.0,)).to_dict()
    return Profile.from_dict(d, source="t")


def section(factors: dict, ratios: dict | None = None) -> Refresh:
    return Refresh(at="2026-01-01T12:00:00+00:00", model="llama-7b", seq=2048, seconds=8.0, factors=factors,
                   row_ratios=ratios or {})


class FakeProbe:
    """What probe_factors reads: one-row medians of the three weight parts (ms), nothing else timed."""

    rows, cat_x, attn_width, rho = (1,), 0.0, 0, 0.0

    def __init__(self, layers_ms: float, head_ms: float, hf_layers_ms: float | None):
        self._med = {"layers": {1: layers_ms}, "head": {1: head_ms}}
        if hf_layers_ms is not None:
            self._med["hf_layers"] = {1: hf_layers_ms}

    def medians_ms(self):
        return self._med

    def cat_ms(self):
        return None

    def alloc_ms(self):
        return {}

    def attn_ms(self):
        return {}


@given(layers_ms=st.floats(5, 500), head_ms=st.floats(1, 100), hf_over_fused=st.floats(0.5, 2.0),
       ratio=st.floats(0.6, 1.5))
def test_the_refreshed_hf_view_charges_transformers_layers_what_was_measured(layers_ms, head_ms, hf_over_fused,
                                                                            ratio):
    from bmc_model.calibrate.probe import probe_factors

    prof, spec = hf_profile(ratio), get_spec("llama-7b")
    geo = Geometry.of(spec, 1, "float32")
    hf_ms = hf_over_fused * layers_ms
    f = probe_factors(prof, FakeProbe(layers_ms, head_ms, hf_ms), geo)
    view = refreshed(prof, section(f)).for_runtime("hf")
    charged_ms = 1e3 * geo.layers * matmul_ratio(view, geo) * matmul_s(view, geo.layer_weight_bytes,
                                                                        geo.layer_out_rows)
    assert charged_ms == pytest.approx(hf_ms, rel=1e-9)
    # without the factor, the weights factor alone would scale the fitted ratio: not what was measured
    plain = refreshed(prof, section({"weights": f["weights"]})).for_runtime("hf")
    assert matmul_ratio(plain, geo) == pytest.approx(ratio * 1.0)


def test_no_factor_without_the_term_or_without_the_timing():
    from bmc_model.calibrate.probe import probe_factors

    geo = Geometry.of(get_spec("llama-7b"), 1, "float32")
    assert "hf_matmul_ratio" not in probe_factors(embedded_profile(), FakeProbe(50.0, 5.0, 45.0), geo)
    assert "hf_matmul_ratio" not in probe_factors(hf_profile(), FakeProbe(50.0, 5.0, None), geo)


def test_the_hf_view_reads_transformers_row_ratios_and_the_bmc_view_its_own(tmp_path):
    prof = refreshed(hf_profile(), section({"weights": 1.0}, RATIOS))
    back = read_profile(write_profile(prof, tmp_path / "p.json"))
    for p in (prof, back):
        hf = p.for_runtime("hf")
        for nbytes in (1e6, 2e8, 5e9):
            assert weights_row_factor(p, 4, nbytes) == pytest.approx(3.0)
            assert weights_row_factor(hf, 4, nbytes) == pytest.approx(2.4)
            assert weights_row_factor(p, 4, nbytes, "head_rows") == weights_row_factor(hf, 4, nbytes, "head_rows")
    kw = {"model": "llama-7b", "seq": 2048, "policy": "reserve"}
    one, four = (predict(**kw, batch=b, profile=prof, runtime="hf").breakdown["weights"] for b in (1, 4))
    bmc1, bmc4 = (predict(**kw, batch=b, profile=prof).breakdown["weights"] for b in (1, 4))
    assert 2.0 < four / one < 2.4 < 2.9 < bmc4 / bmc1 < 3.0  # the layers at their part's ratio, the head at 2.0
    without = refreshed(hf_profile(), section({"weights": 1.0}, {k: RATIOS[k] for k in ("layers", "head")}))
    assert weights_row_factor(without.for_runtime("hf"), 4, 2e8) == pytest.approx(3.0)  # none timed: the fused


@pytest.mark.parametrize("parts, ok", [
    (("layers", "head"), True), (("layers", "head", "hf_layers"), True),
    (("layers", "hf_layers"), False), (("layers", "head", "nosuch"), False)])
def test_a_refresh_section_s_row_parts(parts, ok):
    d = section({"weights": 1.0}, {p: {1: 1.0, 4: 2.0} for p in parts}).to_dict()
    if ok:
        assert set(Profile.from_dict({**hf_profile().to_dict(), "refresh": d}, "t").refresh.row_ratios) == set(parts)
    else:
        with pytest.raises(BMCError, match="refresh row_ratios has parts"):
            Profile.from_dict({**hf_profile().to_dict(), "refresh": d}, "t")


@pytest.mark.parametrize("gated", [True, False])
def test_transformers_matrices_hold_the_layer_s_parameters(gated):
    spec = tiny_spec(gated_mlp=gated)
    hf = spec.hf_layer_matrices()
    assert len(hf) == (7 if gated else 6) and sum(o * i for o, i in hf) == spec.layer_params()
    assert sum(o for o, _ in hf) == spec.layer_out_rows()


def test_the_plan_times_transformers_matrices_where_the_profile_prices_them():
    plain = refresh_mod.plan_refresh(embedded_profile(), "llama-7b", 2048, 8.0)
    hf = refresh_mod.plan_refresh(hf_profile(), "llama-7b", 2048, 8.0)
    assert not plain.hf_matrices and hf.hf_matrices
    assert hf.nbytes() - plain.nbytes() >= get_spec("llama-7b").layer_params() * 4


def test_a_real_refresh_times_the_seven_and_stores_their_row_ratios(one_thread, monkeypatch):
    from bmc_model.calibrate.probe import MatmulProbe

    monkeypatch.setattr(refresh_mod, "stream_bytes", lambda llc: 2**20)
    spec = tiny_spec(name="tiny-hf-mm")
    probe = MatmulProbe(spec, (1, 2), steps=2, stream_bytes=2**18, hf_matrices=True)
    assert probe.parts == ("layers", "head", "hf_layers")
    assert [tuple(w.shape) for w in probe._weights["hf_layers"].groups[0]] == spec.hf_layer_matrices()
    while probe.step():
        pass
    assert set(probe.ratios()) == {"layers", "head", "hf_layers"} and len(probe.samples[("hf_layers", 2)]) == 2
    probe.close()
    r = refresh_mod.refresh_profile(hf_profile(), model=spec, seq=64, budget_s=0.3, batch=2).refresh
    assert 0 < r.factors["hf_matmul_ratio"] < 100 and set(r.row_ratios) == {"layers", "head", "hf_layers"}
    plain = refresh_mod.refresh_profile(embedded_profile(), model=spec, seq=64, budget_s=0.2, batch=2).refresh
    assert "hf_matmul_ratio" not in plain.factors and set(plain.row_ratios) == {"layers", "head"}
