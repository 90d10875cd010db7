"""Profile files: round trip of a fitted profile, atomic writes, and `bmc-tune profile show`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

import bmc_model.core.profile as profile_mod
from bmc_model.calibrate.fit import fit_piecewise
from bmc_model.cli import app
from bmc_model.core.profile import Profile, Term, embedded_profile, read_profile, write_profile
from bmc_model.core.specs import get_spec

runner = CliRunner()


def fitted_profile(seed: int = 0) -> Profile:
    """A profile the way calibrate builds one: terms from fits of synthetic medians, raw kept."""
    rng = np.random.default_rng(seed)
    x = np.geomspace(4096, 2**30, 25)
    base = embedded_profile()
    terms, raw = {}, {}
    for name, term in base.terms.items():
        t = np.asarray(term(x)) * (1 + 0.02 * rng.standard_normal(x.size))
        terms[name] = fit_piecewise(x, t).term()
        raw[name] = {"x": [float(v) for v in x], "t": [float(v) for v in t]}
    raw["meta"] = {"notes": ["allocation sizes capped at 256 MiB (asked 1024 MiB): only 1024 MiB of RAM is free"]}
    raw["cat"] = {"x": [1.0, 2.0], "t": [1.0, 2.0], "median_abs_rel_residual": 0.12}
    return Profile(terms=terms, scalars=dict(base.scalars), host={"cpu": "test cpu", "threads": 2, "device": "cpu",
                                                                   "dtype": "float32"},
                   date="2026-01-01T00:00:00+00:00", source="bmc-tune calibrate", raw=raw)


def test_round_trip_keeps_terms_scalars_and_raw(tmp_path):
    prof = fitted_profile()
    path = write_profile(prof, tmp_path / "sub" / "profile.json")
    back = read_profile(path)
    assert back.terms == prof.terms
    assert back.scalars == prof.scalars
    assert back.raw == json.loads(json.dumps(prof.raw))
    assert back.host == prof.host and back.date == prof.date
    assert back.source == str(path)
    assert len(back.alloc.knots) == 1  # the embedded alloc term has a knee; the fit found it


def test_interrupted_write_leaves_the_old_profile(tmp_path, monkeypatch):
    path = tmp_path / "profile.json"
    write_profile(fitted_profile(0), path)
    before = path.read_bytes()

    def dump_then_die(obj, f, **kw):
        f.write(json.dumps(obj)[:500])  # half a file reaches the disk ...
        raise KeyboardInterrupt  # ... then Ctrl-C

    monkeypatch.setattr(profile_mod.json, "dump", dump_then_die)
    with pytest.raises(KeyboardInterrupt):
        write_profile(fitted_profile(1), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["profile.json"]  # no temporary file left behind
    monkeypatch.undo()
    assert read_profile(path).terms == fitted_profile(0).terms


def test_embedded_label_when_written_to_package_data_and_loaded_as_embedded(tmp_path):
    # the lead writes the embedded default with --out bmc_model/data/default_profile.json; whatever
    # source the file says, embedded_profile() labels it "embedded default"
    path = write_profile(fitted_profile(), tmp_path / "default_profile.json")
    prof = Profile.from_dict(json.loads(path.read_text()), source="embedded default")
    assert prof.source == "embedded default" and prof.terms == fitted_profile().terms


def test_profile_show_prints_tables_and_charts(tmp_path):
    path = write_profile(fitted_profile(), tmp_path / "p.json")
    res = runner.invoke(app, ["profile", "show", str(path)])
    assert res.exit_code == 0, res.output
    for word in ("alloc", "attn_masked", "weights", "attn_q_slope", "sd_iter_s", "test cpu", "R^2", "knee",
                 "another host", "o raw median", "capped", "12.0%"):
        assert word in res.output, word
    res = runner.invoke(app, ["profile", "show", str(path), "--no-charts"])
    assert res.exit_code == 0 and "o raw median" not in res.output
    res = runner.invoke(app, ["profile", "show", str(path), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["terms"]["copy"]["slope"]  # the warning: on stderr


def test_profile_show_default_is_the_cached_or_embedded_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    res = runner.invoke(app, ["profile", "show", "--no-charts"])
    assert res.exit_code == 0 and "embedded default" in res.output
    write_profile(fitted_profile(), tmp_path / "bmc-tune" / "profile.json")
    res = runner.invoke(app, ["profile", "show", "--no-charts"])
    assert res.exit_code == 0 and "test cpu" in res.output


@pytest.mark.parametrize("content,match", [(None, "profile not found"), (b"{not json", "corrupt JSON"),
                                           (b'{"schema": 99}', "schema version"), (b"\xff\xfe{", "not UTF-8"),
                                           (b"[" * 100_000, "nested too deeply")])
def test_profile_show_bad_files_are_one_line_errors(tmp_path, content, match):
    path = tmp_path / "p.json"
    if content is not None:
        path.write_bytes(content)
    res = runner.invoke(app, ["profile", "show", str(path)])
    assert res.exit_code == 2
    assert match in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_chart_marks_raw_points_fit_and_knee():
    from bmc_model.calibrate.chart import loglog_chart

    term = Term(c0=(1e-6, 1e-5), slope=(1e-11, 4e-10), knots=(2**25,))
    x = list(np.geomspace(4096, 2**30, 12))
    out = loglog_chart(term, x, [float(term(v)) * 1.3 for v in x], term.knots, width=40, height=8)
    lines = out.splitlines()
    assert "^" in lines[-3] and "o" in out and "." in out
    assert "4 KiB" in lines[-2] and "1 GiB" in lines[-2]
    assert loglog_chart(term, [], []) == "(no raw data to chart)"


def test_hf_runtime_swaps_only_the_overhead_scalars(tmp_path):
    from bmc_model.core.errors import BMCError
    from bmc_model.core.predict import predict

    base = embedded_profile().to_dict()
    base["scalars"].pop("hf_step_s", None)
    base["scalars"].pop("hf_layer_s", None)
    plain = Profile.from_dict(json.loads(json.dumps(base)), "no-hf")
    hf = plain.for_runtime("hf")  # absent: step_s / layer_s stand, and transformers' masking rule applies
    assert not plain.has_runtime("hf") and hf.scalars is plain.scalars and hf.terms is plain.terms
    assert hf.runtime == "hf" and plain.runtime == "bmc"
    base["scalars"].update(hf_step_s=plain.step_s + 2e-3, hf_layer_s=plain.layer_s + 5e-4)
    path = write_profile(Profile.from_dict(base, "x"), tmp_path / "hf.json")
    prof = read_profile(path)
    assert prof.has_runtime("hf")
    hf = prof.for_runtime("hf")
    # the in-place layer terms describe bmc-tune's decoder: transformers' layers keep hf_layer_s
    assert {"layer_fixed", "layer_row"} <= set(prof.terms)
    assert hf.terms == {k: t for k, t in prof.terms.items() if k not in ("layer_fixed", "layer_row")}
    assert hf.scalars["step_s"] == prof.hf_step_s and hf.layer_s == prof.hf_layer_s
    kw = dict(model="smollm2-135m", seq=1024, prompt=960, policy="bmc:32", profile=prof)
    a, b = predict(**kw), predict(runtime="hf", **kw)
    # one decode step per token: the difference is 2 ms per step + per layer hf_layer_s against layer_fixed
    per_layer = prof.layer_s + 5e-4 - prof.layer_fixed(get_spec("smollm2-135m").layer_params() * 4)
    assert b.ms_per_token - a.ms_per_token == pytest.approx(2.0 + 30 * 1e3 * per_layer, rel=1e-9)
    assert {k for k in a.breakdown if a.breakdown[k] != b.breakdown[k]} == {"overhead"}
    with pytest.raises(BMCError, match="unknown runtime"):
        prof.for_runtime("vllm")


def test_sized_row_curves_interpolate_in_log_bytes_and_clamp(tmp_path):
    from bmc_model.core.curves import weights_row_factor

    d = embedded_profile().to_dict()
    d["curves"] = {k: v for k, v in d["curves"].items() if "@" not in k}
    d["curves"]["weights_rows@1000000"] = {"x": [1, 8], "ratio": [1.0, 1.5]}
    d["curves"]["weights_rows@100000000"] = {"x": [1, 8], "ratio": [1.0, 3.5]}
    d["curves"]["weights_rows_unknown"] = {"x": [1, 8], "ratio": [1.0, 9.0]}  # no family's: ignored
    prof = read_profile(write_profile(Profile.from_dict(d, "x"), tmp_path / "p.json"))
    assert "weights_rows_unknown" not in prof.curves
    assert [b for b, _ in prof.sized_curves()] == [1e6, 1e8]
    assert weights_row_factor(prof, 1, 5e6) == 1.0
    assert weights_row_factor(prof, 8, 1e6) == pytest.approx(1.5)
    assert weights_row_factor(prof, 8, 1e7) == pytest.approx(2.5)  # halfway in log bytes
    assert weights_row_factor(prof, 4.5, 1e7) == pytest.approx(1.75)  # halfway in m too
    assert weights_row_factor(prof, 8, 1e3) == pytest.approx(1.5) and weights_row_factor(prof, 8, 1e12) == 3.5


def test_the_lm_head_reads_its_own_row_curves_else_the_layers(tmp_path):
    from bmc_model.core.curves import weights_row_factor
    from bmc_model.core.predict import predict
    from bmc_model.core.specs import get_spec
    from bmc_model.core.workload import Geometry

    d = embedded_profile().to_dict()
    d["curves"] = {k: v for k, v in d["curves"].items() if "@" not in k}
    d["curves"]["weights_rows@1000000"] = {"x": [1, 8], "ratio": [1.0, 2.0]}
    no_head = Profile.from_dict(d, "x")
    d["curves"]["head_rows@1000000"] = {"x": [1, 8], "ratio": [1.0, 4.0]}
    prof = read_profile(write_profile(Profile.from_dict(d, "x"), tmp_path / "p.json"))
    assert [b for b, _ in prof.sized_curves("head_rows")] == [1e6] and len(prof.sized_curves()) == 1
    assert weights_row_factor(prof, 8, 1e6, "head_rows") == 4.0 and weights_row_factor(prof, 8, 1e6) == 2.0
    assert weights_row_factor(no_head, 8, 1e6, "head_rows") == 2.0  # no head curve: the layers' serves
    # in the model: an 8-row verify costs the head's extra (4 - 2) x its one-row time more, nothing else
    spec = get_spec("smollm2-135m")
    kw = dict(model=spec, seq=1024, prompt=960, policy="bmc:32", gamma=7, alpha=0.7)
    a, b = predict(profile=no_head, **kw), predict(profile=prof, **kw)
    geo = Geometry.of(spec, 1, prof.dtype)
    head_1 = no_head.weights(geo.head_weight_bytes) + no_head.scalars["gemv_row_s"] * geo.head_out_rows
    iters = (1024 - 960) / a.advance
    assert b.breakdown["weights"] - a.breakdown["weights"] == pytest.approx(1e3 * iters * 2.0 * head_1 / 64, rel=1e-6)
    assert {k for k in a.breakdown if a.breakdown[k] != b.breakdown[k]} == {"weights"}
