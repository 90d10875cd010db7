"""`bmc-tune calibrate`: bad input is one line and exit 2; results are written atomically."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from bmc_model.calibrate import run as run_mod
from bmc_model.calibrate.plan import make_plan
from bmc_model.cli import app
from bmc_model.core.profile import read_profile, write_profile

runner = CliRunner()


def one_line_error(res, match):
    assert res.exit_code == 2, res.output
    assert match in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args,match", [
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--dtype", "float64"], "unknown dtype 'float64'"),
    (["--model", "nosuch-model"], "unknown model 'nosuch-model'"),
])
def test_bad_input_is_one_line_exit_2(args, match, tmp_path):
    one_line_error(runner.invoke(app, ["calibrate", "--quick", "--out", str(tmp_path / "p.json"), *args]), match)
    assert not (tmp_path / "p.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line_exit_2(tmp_path):
    one_line_error(runner.invoke(app, ["calibrate", "--device", "cuda", "--out", str(tmp_path / "p.json")]),
                   "no CUDA GPU")


def fake_result(**kw):
    from test_profile_io import fitted_profile

    plan = make_plan(quick=True, device="cpu", dtype="float32", threads=1, specs=[], available_ram=8 * 2**30,
                     llc_bytes=2**25)
    return run_mod.CalibrationResult(profile=fitted_profile(), plan=plan, notes=["a note"], elapsed_s=1.5)


def test_writes_the_profile_and_reports_it(tmp_path, monkeypatch):
    seen = {}

    def fake(**kw):
        seen.update(kw)
        return fake_result()

    monkeypatch.setattr(run_mod, "calibrate", fake)
    out = tmp_path / "deep" / "p.json"
    res = runner.invoke(app, ["calibrate", "--quick", "--threads", "1", "--model", "llama-7b", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert seen == {"quick": True, "device": "cpu", "threads": 1, "dtype": "float32", "model": "llama-7b",
                    "reporter": seen["reporter"]}
    assert read_profile(out).terms == fake_result().profile.terms
    assert "profile written to" in res.output and "alloc" in res.output
    res = runner.invoke(app, ["calibrate", "--quick", "--out", str(out), "--json"])
    assert res.exit_code == 0
    d = json.loads(res.stdout)
    assert d["path"] == str(out) and d["notes"] == ["a note"] and d["profile"]["schema"] == 1


def test_default_location_respects_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setattr(run_mod, "calibrate", lambda **kw: fake_result())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    res = runner.invoke(app, ["calibrate", "--quick"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "bmc-tune" / "profile.json").exists()


def test_ctrl_c_leaves_the_old_profile(tmp_path, monkeypatch):
    out = tmp_path / "p.json"
    write_profile(fake_result().profile, out)
    before = out.read_bytes()

    def interrupted(**kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_mod, "calibrate", interrupted)
    res = runner.invoke(app, ["calibrate", "--quick", "--out", str(out)])
    assert res.exit_code == 130 and "interrupted" in res.output
    assert out.read_bytes() == before


def test_unwritable_destination_fails_before_measuring(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(run_mod, "calibrate", lambda **kw: calls.append(1) or fake_result())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line_error(runner.invoke(app, ["calibrate", "--quick", "--out", str(blocker / "sub" / "p.json")]),
                   "is not a folder")
    one_line_error(runner.invoke(app, ["calibrate", "--quick", "--out", str(tmp_path)]), "it is a folder")
    assert calls == []


@pytest.mark.heavy
def test_real_quick_calibration_end_to_end(tmp_path):
    """Times the host for real (about 30 s): run with -m heavy."""
    out = tmp_path / "p.json"
    res = runner.invoke(app, ["calibrate", "--quick", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    prof = read_profile(out)
    for name, term in prof.terms.items():
        assert all(s >= 0 for s in term.slope), name
        assert term(2**20) > 0, name
    assert prof.scalars["sd_iter_s"] > 0
