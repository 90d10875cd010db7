"""`calibrate --refresh`: the refresh section (factors stored beside the calibrated terms), its checks on load,
refresh_profile's factors, the CLI and `profile show`. Measurements are faked except one tiny, budgeted run."""

from __future__ import annotations

import json
import math

import pytest
from conftest import tiny_spec
from typer.testing import CliRunner

from bmc_model.calibrate import refresh as refresh_mod
from bmc_model.cli import app
from bmc_model.core.curves import term_at, weights_row_factor
from bmc_model.core.errors import BMCError
from bmc_model.core.predict import predict
from bmc_model.core.profile import Profile, default_profile_path, embedded_profile, read_profile, write_profile
from bmc_model.core.refresh import Refresh, refreshed, registered_refresher
from bmc_model.core.workload import Geometry

runner = CliRunner()
FACTORS = {"weights": 1.07, "cat": 0.8, "alloc": 1.5, "attn_exact": 1.2, "attn_masked": 0.9}
TINY = tiny_spec(name="tiny-refresh")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """No test reads or writes ~/.cache/bmc-tune/profile.json."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def section(**changes) -> Refresh:
    base = {"at": "2026-01-01T12:00:00+00:00", "model": "llama-7b", "seq": 2048, "seconds": 8.0,
            "factors": dict(FACTORS)}
    return Refresh(**{**base, **changes})


@pytest.fixture
def fake_measure(monkeypatch):
    """refresh_profile's measurement replaced: these factors (and row ratios), what was asked recorded."""
    asked: list = []

    def fake(plan, calibrated, threads=None):
        asked.append((plan, calibrated))
        ratios = {"layers": {1: 1.0, 4: 2.0}, "head": {1: 1.0, 4: 3.0}} if len(plan.rows) > 1 else {}
        return dict(FACTORS), ratios

    monkeypatch.setattr(refresh_mod, "measure", fake)
    return asked


def test_round_trip_keeps_calibrated_terms_and_factors(tmp_path):
    base = embedded_profile()
    prof = refreshed(base, section())
    assert prof.calibrated is base and base.calibrated is base
    for name, f in FACTORS.items():
        for x in (1e4, 3e7, 2e9):
            assert term_at(prof.terms[name], x) == pytest.approx(f * term_at(base.terms[name], x))
    assert prof.copy is base.copy and prof.write is base.write  # untimed terms stay
    assert prof.gemv_row_s == pytest.approx(1.07 * base.gemv_row_s) and prof.step_s == base.step_s
    path = write_profile(prof, tmp_path / "p.json")
    d = json.loads(path.read_text())
    assert d["terms"] == {n: t.to_dict() for n, t in base.terms.items()}  # calibrated, never scaled
    assert d["scalars"] == base.scalars and d["refresh"]["factors"] == FACTORS
    back = read_profile(path)
    assert back.terms == prof.terms and back.scalars == prof.scalars and back.refresh == prof.refresh
    assert back.calibrated.terms == base.terms
    again = json.loads(write_profile(back, tmp_path / "q.json").read_text())
    assert {**again, "source": ""} == {**d, "source": ""}  # rewritten as read: no compounding
    assert "refreshed 2026-01-01T12:00" in back.describe()


def test_refreshing_twice_replaces_the_factors(fake_measure, tmp_path):
    base = embedded_profile()
    once = refresh_mod.refresh_profile(base, model=TINY, seq=64)
    twice = refresh_mod.refresh_profile(once, model=TINY, seq=64)
    assert fake_measure[1][1] is base  # measured against the calibration, not the first refresh
    assert twice.refresh.factors == FACTORS and twice.calibrated is base
    assert term_at(twice.weights, 1e8) == pytest.approx(1.07 * term_at(base.weights, 1e8))  # not 1.07 ** 2
    again = read_profile(write_profile(twice, tmp_path / "p.json"))
    assert again.refresh.factors == FACTORS and again.calibrated.terms == base.terms
    plan = fake_measure[0][0]
    row = TINY.kv_heads * TINY.head_dim * 4
    assert plan.width == 48 and plan.alloc_sizes == (33 * row, 48 * row, 63 * row)  # P + 1, middle, N - 1 rows
    assert twice.refresh.model == "tiny-refresh" and twice.refresh.seq == 64


def test_row_ratios_replace_the_sized_curves(fake_measure, tmp_path):
    prof = refresh_mod.refresh_profile(embedded_profile(), model=TINY, seq=64, rows=(1, 4))
    back = read_profile(write_profile(prof, tmp_path / "p.json"))
    for nbytes in (1e6, 2e8, 5e9):
        assert weights_row_factor(back, 4, nbytes) == pytest.approx(2.0)
        assert weights_row_factor(back, 4, nbytes, "head_rows") == pytest.approx(3.0)
    assert "weights_rows@1" not in back.calibrated.curves
    assert json.loads((tmp_path / "p.json").read_text())["refresh"]["row_ratios"]["head"] == {"1": 1.0, "4": 3.0}


def test_a_factor_scales_predicts_part_by_it():
    base = embedded_profile()
    kw = {"model": "llama-7b", "seq": 2048, "policy": "bmc:64"}
    before, after = predict(**kw, profile=base), predict(**kw, profile=refreshed(base, section()))
    assert after.breakdown["weights"] == pytest.approx(1.07 * before.breakdown["weights"])
    assert after.breakdown["growth_alloc"] == pytest.approx(1.5 * before.breakdown["growth_alloc"])
    assert after.breakdown["growth_copy"] == pytest.approx(before.breakdown["growth_copy"])
    assert after.breakdown["overhead"] == pytest.approx(before.breakdown["overhead"])


class FakeProbe:
    """What probe_factors reads from a MatmulProbe, as ms."""

    rows = (1,)
    cat_x, attn_width = 3e5, 1536

    def __init__(self, layers_ms, head_ms, cat_ms, alloc_ms, attn_ms, rho):
        self.rho = rho  # K bytes a row of the batch timed
        self._med = {"layers": {1: layers_ms}, "head": {1: head_ms}}
        self._cat, self._alloc, self._attn = cat_ms, alloc_ms, attn_ms

    def medians_ms(self):
        return self._med

    def cat_ms(self):
        return self._cat

    def alloc_ms(self):
        return self._alloc

    def attn_ms(self):
        return self._attn


@pytest.mark.parametrize("batch", [1, 4])
def test_probe_factors_are_measured_over_charged(batch):
    from bmc_model.calibrate.probe import probe_factors, weights_drift
    from bmc_model.core.breakdown import attention_s
    from bmc_model.core.specs import get_spec

    prof = embedded_profile()
    geo = Geometry.of(get_spec("llama-7b"), 1, "float32")
    sizes = (2**20, 2**24)
    charged_alloc = 1e3 * sum(term_at(prof.alloc, x) for x in sizes)
    exact = 1e3 * attention_s(prof, batch * geo.rho, 1536, 1, False, geo.group)  # the batch's attention
    alloc_ms = {x: 3e3 * term_at(prof.alloc, x) for x in sizes}
    probe = FakeProbe(50.0, 20.0, 2e3 * term_at(prof.cat, 3e5), alloc_ms, {"attn_exact": {1: 0.5 * exact}},
                      batch * geo.rho)
    f = probe_factors(prof, probe, geo)
    assert f["weights"] == pytest.approx(weights_drift(prof, geo, {"layers": 50.0, "head": 20.0}))
    assert f["cat"] == pytest.approx(2.0) and f["alloc"] == pytest.approx(sum(alloc_ms.values()) / charged_alloc)
    assert f["alloc"] == pytest.approx(3.0)
    assert f["attn_exact"] == pytest.approx(0.5) and "attn_masked" not in f


@pytest.mark.parametrize("change, match", [
    ({"factors": {"weights": 0}}, "refresh factor 'weights' is 0"),
    ({"factors": {"cat": -1.0}}, "refresh factor 'cat' is -1"),
    ({"factors": {"alloc": 1e9}}, "refresh factor 'alloc' is 1e+09"),
    ({"factors": {"weights": "1.1"}}, "refresh factor 'weights' must be a number"),
    ({"factors": {"nosuch": 1.0}}, "refresh factor 'nosuch': this profile has no such term"),
    ({"factors": [1.0]}, "refresh 'factors' must be an object"),
    ({"seq": 1}, "refresh 'seq' is 1"),
    ({"seq": "2048"}, "refresh 'seq' must be an integer"),
    ({"batch": 0}, "refresh 'batch' is 0"),
    ({"batch": 4.0}, "refresh 'batch' must be an integer"),
    ({"at": "yesterday"}, "refresh 'at' is 'yesterday'"),
    ({"row_ratios": {"layers": {"1": 1.0, "4": 2.0}}}, "refresh row_ratios has parts ['layers']"),
    ({"row_ratios": {"layers": {"4": 2.0}, "head": {"1": 1.0, "4": 2.0}}}, "refresh row_ratios 'layers' has rows"),
    ({"row_ratios": {"layers": {"1": 1.0, "x": 2.0}, "head": {}}}, "rows must be positive integers"),
])
def test_a_bad_refresh_section_is_one_line_naming_it(tmp_path, change, match):
    d = embedded_profile().to_dict()
    d["refresh"] = {**section().to_dict(), **change}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(d))
    with pytest.raises(BMCError, match=None) as err:
        read_profile(path)
    assert match in str(err.value) and "\n" not in str(err.value) and str(path) in str(err.value)


def test_a_nan_factor_is_refused():
    d = embedded_profile().to_dict()
    d["refresh"] = {**section().to_dict(), "factors": {"weights": math.nan}}
    with pytest.raises(BMCError, match="refresh factor 'weights' is nan"):
        Profile.from_dict(d, "p")


def one_line_error(res, match):
    assert res.exit_code == 2, res.output
    assert match in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output


@pytest.mark.parametrize("args, match", [
    (["--refresh", "--quick"], "--quick does not go with it"),
    (["--refresh", "--device", "cpu"], "--device does not go with it"),
    (["--refresh", "--model", "nosuch-model"], "nosuch-model"),
    (["--refresh", "--seq", "1"], "seq must be an integer of at least 2"),
    (["--refresh", "--threads", "0"], "--threads must be at least 1"),
    (["--refresh", "--profile", "missing.json"], "profile not found"),
    (["--seq", "512"], "--seq goes with --refresh"),
    (["--batch", "4"], "--batch goes with --refresh"),
    (["--refresh", "--batch", "0"], "batch must be a positive integer"),
    (["--profile", "p.json", "--quick"], "--profile goes with --refresh"),
    (["--runtime", "hf"], "--runtime goes with --refresh"),
    (["--refresh", "--runtime", "vllm"], "runtime must be 'bmc' or 'hf'"),
])
def test_cli_bad_input_is_one_line_exit_2(args, match, fake_measure, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(runner.invoke(app, ["calibrate", *args]), match)
    assert fake_measure == [] and not default_profile_path().exists()


def test_cli_corrupt_profile_is_one_line_exit_2(fake_measure, tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text("{not json")
    one_line_error(runner.invoke(app, ["calibrate", "--refresh", "--profile", str(bad)]), "corrupt JSON")
    assert bad.read_text() == "{not json" and fake_measure == []


def test_cli_refreshes_a_file_and_prints_the_factors(fake_measure, tmp_path):
    path = write_profile(embedded_profile(), tmp_path / "p.json")
    res = runner.invoke(app, ["calibrate", "--refresh", "--profile", str(path), "--model", "smollm2-135m",
                              "--seq", "512"])
    assert res.exit_code == 0, res.output
    assert "weights" in res.output and "x1.07" in res.output and "x1.50" in res.output
    assert "refreshed profile written to" in res.output
    prof = read_profile(path)
    assert prof.refresh.model == "smollm2-135m" and prof.refresh.seq == 512
    assert prof.calibrated.terms == embedded_profile().terms
    res = runner.invoke(app, ["calibrate", "--refresh", "--profile", str(path), "--json", "--out",
                              str(tmp_path / "o.json")])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["path"] == str(tmp_path / "o.json") and d["refresh"]["factors"] == FACTORS
    assert d["refresh"]["model"] == "llama-7b" and d["refresh"]["seq"] == 2048  # the defaults
    assert d["refresh"]["batch"] == 1
    res = runner.invoke(app, ["calibrate", "--refresh", "--profile", str(path), "--batch", "4"])
    assert res.exit_code == 0, res.output
    assert "batch 4" in res.output and read_profile(path).refresh.batch == 4
    plan = fake_measure[-1][0]
    assert plan.batch == 4 and plan.rows == (1, 4)  # a batch of four multiplies four token rows


def test_cli_without_a_cached_profile_refreshes_the_embedded_one_there(fake_measure):
    res = runner.invoke(app, ["calibrate", "--refresh"])
    assert res.exit_code == 0, res.output
    assert "refreshing the embedded default" in res.output
    prof = read_profile(default_profile_path())
    assert prof.refresh.factors == FACTORS and prof.calibrated.terms == embedded_profile().terms


def test_profile_show_prints_the_refresh(tmp_path):
    path = write_profile(refreshed(embedded_profile(), section()), tmp_path / "p.json")
    res = runner.invoke(app, ["profile", "show", "--no-charts", str(path)])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "Refresh: 2026-01-01T12:00:00+00:00, llama-7b at seq 2048" in out
    assert "x1.07" in out and "+7%" in out and "x0.80" in out and "-20%" in out
    assert "as calibrated" in out
    res = runner.invoke(app, ["profile", "show", "--json", str(path)])
    assert json.loads(res.stdout)["refresh"]["factors"] == FACTORS


def test_a_tiny_real_refresh_within_its_budget(one_thread, monkeypatch):
    """Times for real, briefly: a tiny model, small cold streams, a fraction of a second."""
    monkeypatch.setattr(refresh_mod, "stream_bytes", lambda llc: 2**20)
    prof = refresh_mod.refresh_profile(embedded_profile(), model=TINY, seq=64, budget_s=0.3, rows=(1, 3))
    r = prof.refresh
    assert set(r.factors) == {"weights", "cat", "alloc", "attn_exact", "attn_masked"}
    assert all(0 < f < 100 for f in r.factors.values())
    assert r.seconds < 5 and set(r.row_ratios) == {"layers", "head"} and r.row_ratios["layers"][1] == 1.0


def test_the_hf_refresher_is_registered_and_tuned_uses_it():
    assert registered_refresher() is refresh_mod.refresh_for
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from bmc_model.hf import BMCCache

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = transformers.LlamaForCausalLM(cfg).eval()
    seen = []

    def refresher(profile, spec, seq, prompt, batch):
        seen.append((profile, spec, seq, prompt, batch))
        return refreshed(profile.calibrated, section(model=spec.name, seq=seq, batch=batch))

    cache = BMCCache.tuned(model, seq=128, prompt=100, batch=2, profile=embedded_profile(), refresh=refresher)
    (profile, spec, seq, prompt, batch), = seen
    assert (seq, prompt, batch) == (128, 100, 2) and spec.hidden == 64 and profile.refresh is None
    assert "refreshed 2026-01-01" in cache.recommendation.prediction.profile
    with pytest.raises(BMCError, match="refresh must be True, False or a refresher"):
        BMCCache.tuned(model, seq=128, refresh="yes")


def test_a_spec_probe_cycles_one_layer_over_cold_copies_and_scales_to_every_layer(one_thread):
    from bmc_model.calibrate.probe import MatmulProbe

    spec = tiny_spec(layers=6)
    probe = MatmulProbe(spec, (1,), steps=2, stream_bytes=2**18, alloc_sizes=(4096, 2**16))
    layers, head = probe._weights["layers"], probe._weights["head"]
    copies = -(-2**18 // (spec.layer_params() * 4))
    assert len(layers.groups) == copies > 1 and layers.scale == pytest.approx(6 / copies)
    assert [tuple(w.shape) for w in layers.groups[0]] == spec.layer_matrices()
    assert len({w.data_ptr() for g in layers.groups for w in g}) == 4 * copies  # distinct: cold
    assert head.scale == pytest.approx(1 / len(head.groups)) and tuple(head.groups[0][0].shape) == (64, 32)
    while probe.step():
        pass
    assert set(probe.alloc_ms()) == {4096, 2**16} and all(v > 0 for v in probe.alloc_ms().values())
    assert len(probe.samples[("layers", 1)]) == 2 and probe.cat_ms() is None and probe.attn_ms() == {}
    probe.close()
    assert probe._alloc_ops == [] and probe._weights["layers"].groups == []
    with pytest.raises(BMCError, match="probe dtype"):
        MatmulProbe(spec, (1,), steps=1, dtype="float64")


def test_validate_reports_what_the_errors_were_without_the_refresh():
    from bmc_model.validate.compare import error_pct, refresh_report

    base = embedded_profile()
    prof = refreshed(base, section())
    kw = {"model": "llama-7b", "seq": 2048, "prompt": 1024, "policy": "dynamic", "dtype": "float32"}
    measured = predict(**kw, profile=prof).ms_per_token  # as if the refreshed profile were exact
    got = refresh_report(prof, {"dynamic": (measured, kw)})
    assert got["at"] == section().at and got["factors"] == FACTORS
    want = error_pct(predict(**kw, profile=base).ms_per_token, measured)
    assert got["errors_pct_unrefreshed"] == {"dynamic": want} and got["max_abs_error_pct_unrefreshed"] == abs(want)
    assert want != 0.0 and refresh_report(base, {"dynamic": (measured, kw)}) is None


def test_the_gqa_attention_of_transformers_moves_with_attn_exact():
    d = embedded_profile().to_dict()
    d["terms"]["hf_attn_gqa"] = d["terms"]["attn_exact"]
    base = Profile.from_dict(d, source="t")
    prof = refreshed(base, section())
    assert prof.hf_attn_gqa.slope[-1] == pytest.approx(FACTORS["attn_exact"] * base.hf_attn_gqa.slope[-1])


def test_a_gqa_path_timed_by_the_refresh_wins_over_its_twin():
    d = embedded_profile().to_dict()
    d["terms"]["hf_attn_gqa"] = d["terms"]["attn_exact"]
    base = Profile.from_dict(d, source="t")
    prof = refreshed(base, section(factors={**FACTORS, "hf_attn_gqa": 0.5}))
    assert prof.hf_attn_gqa.slope[-1] == pytest.approx(0.5 * base.hf_attn_gqa.slope[-1])
    assert prof.attn_exact.slope[-1] == pytest.approx(FACTORS["attn_exact"] * base.attn_exact.slope[-1])


@pytest.mark.parametrize("kv_heads", [2, 4])  # TINY has 4 heads: GQA, then MHA
def test_a_real_refresh_times_transformers_gqa_path_for_a_gqa_model_that_profile_has(one_thread, monkeypatch,
                                                                                      kv_heads):
    monkeypatch.setattr(refresh_mod, "stream_bytes", lambda llc: 2**20)
    d = embedded_profile().to_dict()
    d["terms"]["hf_attn_gqa"] = d["terms"]["attn_exact"]
    base = Profile.from_dict(d, source="t")
    spec = tiny_spec(name="tiny-gqa", kv_heads=kv_heads)
    assert spec.heads == 4
    r = refresh_mod.refresh_profile(base, model=spec, seq=64, budget_s=0.2).refresh
    assert ("hf_attn_gqa" in r.factors) == (kv_heads < spec.heads)
    assert all(0 < f < 100 for f in r.factors.values())
    without = refresh_mod.refresh_profile(embedded_profile(), model=spec, seq=64, budget_s=0.2).refresh
    assert "hf_attn_gqa" not in without.factors  # a profile without the term: nothing to scale


def test_a_first_touch_mean_drops_one_burst_but_keeps_the_usual_slow_share():
    pytest.importorskip("torch")
    from bmc_model.calibrate.probe import WINDOWS, burst_robust_mean

    usual = [1.0, 1.0, 1.0, 3.0] * (2 * WINDOWS)  # a slow touch in four, every window alike
    assert burst_robust_mean(usual) == pytest.approx(1.5)
    burst = usual[:4 * WINDOWS] + [20.0] * 8 + usual[4 * WINDOWS + 8:]  # one window's worth of slow faults
    assert burst_robust_mean(burst) == pytest.approx(1.5) and sum(burst) / len(burst) > 3
    assert burst_robust_mean([1.0, 5.0]) == 3.0  # too few for windows: the plain mean


def test_a_batch_refresh_times_the_batch_s_kv_sizes_and_its_rows():
    one = refresh_mod.plan_refresh(embedded_profile(), "llama-7b", 2048, 8.0, prompt=1792)
    four = refresh_mod.plan_refresh(embedded_profile(), "llama-7b", 2048, 8.0, prompt=1792, batch=4)
    assert one.rows == (1,) and four.rows == (1, 4) and four.width == one.width == 1920
    assert four.alloc_sizes == tuple(4 * x for x in one.alloc_sizes)  # one K tensor of the batch
    assert four.nbytes() > one.nbytes()
    for bad in (0, True, 2.0):
        with pytest.raises(BMCError, match="batch must be a positive integer"):
            refresh_mod.plan_refresh(embedded_profile(), "llama-7b", 2048, 8.0, batch=bad)


def test_an_older_refresh_section_without_a_batch_reads_as_batch_one():
    d = section().to_dict()
    del d["batch"]
    assert Refresh.from_dict(d).batch == 1 and Refresh.from_dict({**d, "batch": 4}).batch == 4


def test_a_batched_probe_times_the_batch_s_kv_as_one_tensor(one_thread):
    from bmc_model.calibrate.probe import MatmulProbe, batched

    spec = tiny_spec(layers=2)
    assert batched(spec, 1) is spec
    b4 = batched(spec, 4)
    assert b4.kv_heads == 4 * spec.kv_heads and b4.heads // b4.kv_heads == spec.heads // spec.kv_heads
    probes = {b: MatmulProbe(spec, (1,), steps=1, cat_rows=64, stream_bytes=2**16, attn_width=64, batch=b)
              for b in (1, 4)}
    assert probes[4].rho == 4 * probes[1].rho and probes[4].cat_x == pytest.approx(4 * probes[1].cat_x)
    # the matmuls are the model's own, whatever the batch
    assert [tuple(w.shape) for w in probes[4]._weights["layers"].groups[0]] == spec.layer_matrices()
    for p in probes.values():
        p.step()
        assert p.cat_ms() > 0 and set(p.attn_ms()) == {"attn_exact", "attn_masked"}
        p.close()
    with pytest.raises(BMCError, match="probe batch"):
        MatmulProbe(spec, (1,), steps=1, batch=0)


def hf_profile() -> Profile:
    """The embedded profile with transformers' in-place terms (calibrated with the hf extra): its own layer terms."""
    d = embedded_profile().to_dict()
    d["terms"]["hf_layer_fixed"] = d["terms"]["layer_fixed"]
    d["terms"]["hf_layer_row"] = d["terms"]["layer_row"]
    return Profile.from_dict(d, source="t")


def test_the_transformers_framework_factor_scales_its_terms_and_scalars_only():
    base = hf_profile()
    prof = refreshed(base, section(factors={"hf_layer_fixed": 1.3}))
    for name in ("hf_layer_fixed", "hf_layer_row"):
        assert prof.terms[name].c0 == pytest.approx(tuple(1.3 * c for c in base.terms[name].c0))
    for name in ("hf_step_s", "hf_layer_s"):
        assert prof.scalars[name] == pytest.approx(1.3 * base.scalars[name])
    assert prof.step_s == base.step_s and prof.layer_fixed is base.layer_fixed and prof.weights is base.weights
    kw = {"model": "smollm2-135m", "seq": 1024, "prompt": 512, "policy": "reserve", "batch": 2}
    hf, hf0 = (predict(**kw, profile=p, runtime="hf").breakdown for p in (prof, base))
    assert hf["overhead"] == pytest.approx(1.3 * hf0["overhead"]) and hf["weights"] == pytest.approx(hf0["weights"])
    bmc, bmc0 = (predict(**kw, profile=p).breakdown for p in (prof, base))
    assert bmc == pytest.approx(bmc0)  # bmc-tune's own decoder: other code, not scaled


def test_the_framework_factor_is_the_step_s_remainder_over_its_charge(monkeypatch):
    pytest.importorskip("transformers")
    from bmc_model.calibrate import bench_hf_layers, hf_layer_probe
    from bmc_model.core.breakdown import attention_s, layer_overhead_s, write_s

    steps = [(0.050, 0.020, 0.004), (0.040, 0.020, 0.004), (0.045, 0.021, 0.004)]  # first one dropped
    monkeypatch.setattr(bench_hf_layers, "hf_model", lambda spec, layers, dtype: layers)
    monkeypatch.setattr(bench_hf_layers, "decode_steps", lambda model, batch, tokens, gen: steps)
    prof, spec = hf_profile(), tiny_spec(layers=30)
    layers = hf_layer_probe.probe_layers(spec, "float32", 2**20)
    assert 1 < layers <= 30
    got = hf_layer_probe.hf_framework_factor(prof, spec, 2, layers)
    view, geo = prof.for_runtime("hf"), Geometry.of(spec, 1, "float32")
    rest = 0.5 * ((0.040 - 0.024) + (0.045 - 0.025))  # the median of the two kept steps
    kernels = attention_s(view, 2 * geo.rho, 64 + 8 + 1, 1, True, geo.group) + write_s(view, 2 * geo.rho, 1)
    want = (rest - layers * kernels) / (prof.hf_step_s + layers * layer_overhead_s(view, geo, 2))
    assert got == pytest.approx(want)
    assert hf_layer_probe.probe_layers(tiny_spec(layers=2), "float32", 2**30) == 2  # never more than it has


def test_a_real_refresh_for_transformers_times_its_framework_in_place(one_thread, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setattr(refresh_mod, "stream_bytes", lambda llc: 2**20)
    spec = tiny_spec(name="tiny-hf")
    r = refresh_mod.refresh_profile(hf_profile(), model=spec, seq=64, budget_s=0.3, runtime="hf").refresh
    assert "hf_layer_fixed" in r.factors and all(0 < f < 100 for f in r.factors.values())
    assert r.seconds < 10
    plain = refresh_mod.refresh_profile(hf_profile(), model=spec, seq=64, budget_s=0.2).refresh
    assert "hf_layer_fixed" not in plain.factors  # runtime "bmc": transformers is not timed
    without = refresh_mod.refresh_profile(embedded_profile(), model=spec, seq=64, budget_s=0.2, runtime="hf")
    assert "hf_layer_fixed" not in without.refresh.factors  # no in-place terms to scale
