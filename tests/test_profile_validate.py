"""Profile validation (core/profile_check.py), run on every load: what calibration produces passes, anything
unphysical is one BMCError naming the entry, in the API and as exit 2 with one line from the CLI; a bad cached
default profile says how to fix it instead of breaking every command or being silently replaced."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
from test_calibrate_run import synthetic_measurements
from test_profile_io import fitted_profile
from typer.testing import CliRunner

from bmc_model.calibrate.assemble import build_profile
from bmc_model.calibrate.plan import make_plan
from bmc_model.cli import app
from bmc_model.core.errors import BMCError
from bmc_model.core.profile import Profile, embedded_profile, load_profile, read_profile, write_profile
from bmc_model.core.profile_check import first_problem
from bmc_model.core.request import get_profile

runner = CliRunner()
ROOT = Path(__file__).parent.parent
BASE = embedded_profile().to_dict()


def parsed(d: dict) -> Profile:
    return Profile.from_dict(json.loads(json.dumps(d)), source="p.json")


def _plan(quick: bool):
    return make_plan(quick=quick, device="cpu", dtype="float32", threads=2, specs=[], available_ram=16 * 2**30,
                     llc_bytes=2**25)


# ---- what must pass


@pytest.mark.parametrize("path", ["bmc_model/data/default_profile.json",
                                  "benchmarks/results/profile_2026-11-26T1108.json",
                                  "benchmarks/results/cuda/profile_cuda_fp32.json"])
def test_the_embedded_and_recorded_real_profiles_pass(path):
    if not (ROOT / path).exists():
        pytest.skip(f"{path} not in this checkout")
    prof = read_profile(ROOT / path)
    assert first_problem(prof) is None
    if "default_profile" in path:
        assert prof.alloc.c0[1] < -0.01  # a negative c0 past the knee, where t(x) > 0 still


@pytest.mark.parametrize("quick,seed", [(True, 0), (True, 1), (False, 2)])
def test_synthetic_calibrations_pass_and_survive_a_round_trip(quick, seed, tmp_path):
    plan = _plan(quick)
    prof = build_profile(plan, synthetic_measurements(plan, seed), {"cpu": "synthetic", "threads": 2}, "2026-01-01")
    assert first_problem(prof) is None
    assert read_profile(write_profile(prof, tmp_path / "p.json")).terms == prof.terms
    assert first_problem(fitted_profile(seed)) is None


def test_row_costs_that_do_not_grow_are_clamped_at_zero_not_rejected():
    # on a GPU extra rows can cost nothing; a noisy fit then lands just below 0
    plan = _plan(True)
    m = synthetic_measurements(plan)
    one_q = {p.key[1]: p.median for p in m.attn_q if p.key[0] == 1}  # keys (q rows, width)
    m.attn_q = [dataclasses.replace(p, median=one_q[p.key[1]] * (0.97 if p.key[0] > 1 else 1.0)) for p in m.attn_q]
    one_m = {p.key[0]: p.median for p in m.weights_rows if p.key[1] == 1}  # keys (model, m rows)
    m.weights_rows = [dataclasses.replace(p, median=one_m[p.key[0]] * (0.98 if p.key[1] > 1 else 1.0))
                      for p in m.weights_rows]
    prof = build_profile(plan, m, {}, "")
    assert prof.attn_q_slope == 0.0 and prof.weights_row_slope == 0.0
    assert first_problem(prof) is None


def test_zero_overheads_and_flat_in_place_terms_pass():
    d = copy.deepcopy(BASE)
    d["scalars"].update(step_s=0.0, layer_s=0.0, gemv_row_s=0.0)  # fit_overhead floors at 0
    d["terms"]["layer_row"] = {"c0": [0.0, 0.0, 3e-5], "slope": [0.0, 1e-13, 0.0], "knots": [1e7, 2e8]}
    d["terms"]["layer_fixed"] = {"c0": [2e-4, 4e-4, 1e-4], "slope": [0.0, -1e-12, 0.0], "knots": [1e7, 2e8]}
    prof = parsed(d)  # between geometries an in-place line may fall, staying >= 0
    assert prof.step_s == 0.0 and prof.layer_fixed(1e8) > 0


# ---- what must fail, naming the entry


def _set(path: tuple, value):
    def mutate(d):
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return mutate


def _del(path: tuple):
    def mutate(d):
        for k in path[:-1]:
            d = d[k]
        del d[path[-1]]
    return mutate


BAD = [
    (_set(("terms", "copy", "slope", 0), -1e-11), ["'copy'", "slope", "negative"]),
    (_set(("terms", "copy", "c0", 0), -1e-5), ["'copy'", "t(1 B)", "> 0"]),
    (_set(("terms", "weights"), {"c0": [0.0], "slope": [0.0], "knots": []}), ["'weights'", "t(1 B) = 0"]),
    (_set(("terms", "alloc", "c0", 1), -0.02), ["'alloc'", "segment 1", "> 0"]),
    (_set(("terms", "attn_exact", "c0", 0), math.nan), ["'attn_exact'", "c0[0]", "finite"]),
    (_set(("terms", "attn_exact", "slope", 0), math.inf), ["'attn_exact'", "finite"]),
    (_set(("terms", "attn_exact", "slope", 0), 1e300), ["'attn_exact'", "s a byte"]),
    (_set(("terms", "write", "c0", 0), "2e-6"), ["'write'", "c0[0] must be a number", "'2e-6'"]),
    (_set(("terms", "write", "c0", 0), True), ["'write'", "must be a number"]),
    (_set(("terms", "write", "c0", 0), None), ["'write'", "must be a number"]),
    (_set(("terms", "write", "c0", 0), 10**400), ["'write'", "out of range"]),
    (_set(("terms", "write", "knots"), []), ["'write'", "len(knots) + 1"]),
    (_set(("terms", "write", "knots", 0), -5.0), ["'write'", "knots must be > 0"]),
    (_set(("terms", "alloc", "r2"), math.nan), ["'alloc'", "r2"]),
    (_set(("terms", "alloc", "ci95"), [[1, 2]]), ["'alloc'", "ci95"]),
    (_set(("terms", "alloc", "ci95"), "wide"), ["'alloc'", "ci95"]),
    (_set(("terms", "alloc"), [1, 2]), ["'alloc'", "object"]),
    (_del(("terms", "alloc", "slope")), ["'alloc'", "missing 'slope'"]),
    (_del(("terms", "alloc")), ["missing term 'alloc'"]),
    (_set(("terms", "layer_fixed", "slope", 3), -1e-12), ["'layer_fixed'", "below 0 for large x"]),
    (_set(("terms", "layer_fixed", "slope", 1), -1e-10), ["'layer_fixed'", "segment 1", ">= 0"]),
    (_set(("terms", "cat", "c0", 0), -1.0), ["'cat'"]),
    (_set(("scalars", "step_s"), -1e-5), ["scalar 'step_s'", ">= 0"]),
    (_set(("scalars", "layer_s"), math.inf), ["scalar 'layer_s'", "finite"]),
    (_set(("scalars", "sd_iter_s"), math.nan), ["scalar 'sd_iter_s'"]),
    (_set(("scalars", "step_s"), 1e300), ["scalar 'step_s'", "not a cost"]),
    (_set(("scalars", "attn_q_slope"), -0.1), ["scalar 'attn_q_slope'"]),
    (_set(("scalars", "hf_step_s"), "fast"), ["scalar 'hf_step_s'", "must be a number"]),
    (_set(("scalars", "gemv_row_s"), None), ["scalar 'gemv_row_s'"]),
    (_set(("scalars", "lazy_backing"), 1.5), ["scalar 'lazy_backing'", "within [0, 1]"]),
    (_set(("scalars", "lazy_backing"), -0.1), ["scalar 'lazy_backing'", ">= 0"]),
    (_set(("scalars", "lazy_backing"), math.nan), ["scalar 'lazy_backing'", "finite"]),
    (_set(("scalars", "lazy_backing"), math.inf), ["scalar 'lazy_backing'", "finite"]),
    (_set(("scalars", "lazy_backing"), "lazy"), ["scalar 'lazy_backing'", "must be a number"]),
    (_del(("scalars", "step_s")), ["missing scalar 'step_s'"]),
    (_set(("scalars",), [1.0]), ["'scalars' must be an object"]),
    (_set(("curves", "attn_q", "ratio", 1), 0.0), ["curve 'attn_q'", "ratio[1]"]),
    (_set(("curves", "attn_q", "ratio", 1), math.inf), ["curve 'attn_q'", "ratio[1]"]),
    (_set(("curves", "attn_q", "x", 0), 0.5), ["curve 'attn_q'", "ascend from 1"]),
    (_set(("curves", "attn_q", "x", 2), 1.5), ["curve 'attn_q'", "ascend from 1"]),
    (_set(("curves", "attn_q", "x", 1), math.nan), ["curve 'attn_q'", "ascend from 1"]),
    (_set(("curves", "attn_q", "x"), [1.0, 2.0]), ["curve 'attn_q'", "x has 2 points, ratio 4"]),
    (_set(("curves", "attn_q"), {"x": [1.0], "ratio": [1.0]}), ["curve 'attn_q'", "at least 2"]),
    (_set(("curves", "weights_rows@bogus"), {"x": [1, 2], "ratio": [1, 2]}), ["'weights_rows@bogus'", "B"]),
    (_set(("curves", "head_rows@-4096"), {"x": [1, 2], "ratio": [1, 2]}), ["'head_rows@-4096'", "> 0"]),
    (_set(("curves", "head_rows@inf"), {"x": [1, 2], "ratio": [1, 2]}), ["'head_rows@inf'"]),
    (_set(("host", "dtype"), "int4"), ["host dtype 'int4'"]),
    (_set(("host", "dtype"), ["float32"]), ["host dtype"]),
    (_set(("host", "threads"), 0), ["host threads"]),
    (_set(("host", "cores"), 2.5), ["host cores"]),
    (_set(("host", "overcommit_mode"), 3), ["host overcommit_mode"]),
    (_set(("host", "overcommit_mode"), True), ["host overcommit_mode"]),
    (_set(("host", "reserve_limit_bytes"), -1.0), ["host reserve_limit_bytes"]),
    (_set(("host", "reserve_limit_bytes"), math.nan), ["host reserve_limit_bytes"]),
    (_set(("host", "reserve_limit_bytes"), "24G"), ["host reserve_limit_bytes"]),
    (_set(("host",), "a laptop"), ["'host' must be an object"]),
    (_set(("raw",), None), ["'raw' must be an object"]),
]


@pytest.mark.parametrize("mutate,words", BAD)
def test_unphysical_or_malformed_entries_are_one_error_naming_them(mutate, words):
    d = copy.deepcopy(BASE)
    mutate(d)
    with pytest.raises(BMCError) as err:
        parsed(d)
    msg = str(err.value)
    assert msg.startswith("profile p.json: ") and "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_schema_true_is_not_schema_1_and_a_byte_order_mark_is_fine(tmp_path):
    d = copy.deepcopy(BASE)
    d["schema"] = True  # True == 1 in Python
    with pytest.raises(BMCError, match="schema version True"):
        parsed(d)
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(BASE).encode())
    assert read_profile(path).terms == embedded_profile().terms


def test_unknown_curves_are_ignored_not_refused():
    d = copy.deepcopy(BASE)
    d["curves"]["attn_rows_v2"] = {"x": "anything"}
    assert "attn_rows_v2" not in parsed(d).curves


# ---- the CLI: one line, exit 2, for every command that reads the profile


def _write(tmp_path: Path, mutate, name="p.json") -> Path:
    d = copy.deepcopy(BASE)
    mutate(d)
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(d))
    return path


def one_line_exit_2(res, *words):
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in res.output
    assert res.stdout == ""  # nothing printed before the error: the check runs on load
    for w in words:
        assert w in err, (w, err)


CLI_BAD = [(_set(("terms", "copy", "slope", 0), -1e-11), ["'copy'", "negative"]),
           (_set(("terms", "attn_exact", "c0", 0), math.nan), ["'attn_exact'", "finite"]),
           (_set(("scalars", "step_s"), -1e-5), ["scalar 'step_s'"]),
           (_set(("scalars", "layer_s"), math.inf), ["scalar 'layer_s'"]),
           (_set(("curves", "attn_q", "ratio", 1), 0.0), ["curve 'attn_q'"]),
           (_set(("host", "threads"), 0), ["host threads"])]


@pytest.mark.parametrize("mutate,words", CLI_BAD)
def test_profile_show_and_recommend_refuse_a_bad_profile(tmp_path, mutate, words):
    path = _write(tmp_path, mutate)
    for args in (["profile", "show", str(path)], ["profile", "show", str(path), "--json"],
                 ["recommend", "--profile", str(path)], ["recommend", "--profile", str(path), "--json"]):
        one_line_exit_2(runner.invoke(app, args), str(path), *words)


def test_a_bad_cached_default_names_the_fix_everywhere_and_is_not_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached = tmp_path / "bmc-tune" / "profile.json"
    cached.parent.mkdir()
    cached.write_bytes(b"\xff\xfe{ not text")
    for args in (["recommend"], ["recommend", "--json"], ["profile", "show"], ["profile", "show", "--json"]):
        one_line_exit_2(runner.invoke(app, args), str(cached), "not UTF-8", "cached default profile",
                        "bmc-tune calibrate", "delete")
    for call in (load_profile, get_profile):
        with pytest.raises(BMCError, match="cached default profile.*bmc-tune calibrate.*delete"):
            call(None)
    _write(tmp_path, _set(("scalars", "step_s"), -1.0), "bmc-tune/profile.json")
    with pytest.raises(BMCError, match="scalar 'step_s'.*cached default profile"):
        get_profile(None)
    # named explicitly, another file is not "the cached default": no such hint
    other = _write(tmp_path, _set(("scalars", "step_s"), -1.0), "other.json")
    with pytest.raises(BMCError) as err:
        load_profile(other)
    assert "cached default" not in str(err.value)


def test_a_cache_home_that_is_a_file_means_no_calibration(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert load_profile(None).source == get_profile(None).source == "embedded default"
    res = runner.invoke(app, ["recommend", "--json", "--seq", "512"])
    assert res.exit_code == 0, res.output


def test_calibrate_refuses_to_write_an_unphysical_result(tmp_path, monkeypatch):
    from test_calibrate_cli import fake_result

    from bmc_model.calibrate import run as run_mod

    good = fake_result()
    bad = dataclasses.replace(good.profile, scalars={**good.profile.scalars, "step_s": -1e-4})
    monkeypatch.setattr(run_mod, "calibrate", lambda **kw: dataclasses.replace(good, profile=bad))
    out = tmp_path / "p.json"
    write_profile(good.profile, out)
    before = out.read_bytes()
    res = runner.invoke(app, ["calibrate", "--quick", "--out", str(out)])
    assert res.exit_code == 2 and "unphysical" in res.stderr and "scalar 'step_s'" in res.stderr, res.output
    assert out.read_bytes() == before
