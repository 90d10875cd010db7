import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from bmc_model.cli import app
from bmc_model.core.profile import embedded_profile, write_profile
from bmc_model.validate.report import show

runner = CliRunner()


@pytest.fixture()
def prof(tmp_path):
    return str(write_profile(embedded_profile(), tmp_path / "p.json"))


@pytest.mark.parametrize("args,needle", [
    (["--r-grid", "0,4"], "r-grid"),
    (["--r-grid", "a"], "r-grid"),
    (["--policies", "dynamic,nosuch"], "unknown policy"),
    (["--seq", "100", "--prompt", "100"], "prompt"),
    (["--threads", "0"], "threads"),
    (["--model", "llama-70"], "did you mean"),
    (["--model", "llama-70b", "--layers", "80", "--seq", "100000"], "GiB"),
    (["--batch", "0"], "batch"),
    (["--device", "tpu"], "cpu or cuda"),
    (["--device", "cuda", "--sd"], "plain decoding only"),
])
def test_validate_bad_input(prof, args, needle):
    res = runner.invoke(app, ["validate", "--profile", prof, *args])
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.startswith("error:") and "\n" not in err and needle in err


def test_validate_cuda_needs_its_own_profile():
    res = runner.invoke(app, ["validate", "--device", "cuda"])
    assert res.exit_code == 2 and "--profile" in res.stderr and "\n" not in res.stderr.strip()


def test_validate_cuda_without_a_gpu_is_one_line(prof):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    res = runner.invoke(app, ["validate", "--device", "cuda", "--profile", prof, "--seq", "64", "--layers", "1"])
    assert res.exit_code == 2 and "no CUDA GPU" in res.stderr and "\n" not in res.stderr.strip()


# the JSON validate --json prints and --out writes, key for key and in order (benchmarks and result files read it)
KEYS = ["model", "layers", "seq", "prompt", "batch", "dtype", "device", "synthetic_prompt", "threads", "repeats",
        "wall_s", "interleave", "rows", "median_abs_error_pct", "max_abs_error_pct", "median_abs_error_pct_probed",
        "max_abs_error_pct_probed", "probe", "median_abs_resident_error_pct", "max_abs_resident_error_pct",
        "memory_probe", "refresh", "recommended", "recommended_r", "recommended_width", "best_measured",
        "best_measured_r", "regret_pct", "speedup_vs_dynamic", "speedup_vs_static", "speedup_vs_mlx_256",
        "speedup_vs_geometric", "overhead_vs_reserve", "token_mismatch", "host", "profile", "geometry_rho_bytes"]
ROW_KEYS = ["name", "policy", "growth", "r", "width", "measured_ms", "measured_runs_ms", "predicted_ms", "error_pct",
            "growth_events_measured", "growth_events_predicted", "predicted_breakdown_ms", "predicted_reserved_bytes",
            "predicted_peak_resident_bytes", "predicted_ms_probed", "error_pct_probed"]
MEMORY_ROW_KEYS = [*ROW_KEYS, "measured_peak_resident_bytes", "resident_error_pct"]  # with the memory probes


def test_validate_tiny_run_reports_every_field(prof, tmp_path):
    out = tmp_path / "v.json"
    args = ["--model", "smollm2-135m", "--layers", "1", "--seq", "48", "--prompt", "32", "--r-grid", "4",
            "--repeats", "1", "--policies", "dynamic,static,reserve,mlx", "--no-memory", "--json", "--out", str(out)]
    res = runner.invoke(app, ["validate", "--profile", prof, *args])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert json.loads(out.read_text()) == d
    assert list(d) == KEYS and list(d["recommended"]) == ["policy", "r", "width"]
    assert d["recommended_r"] == d["recommended"]["r"] and d["speedup_vs_geometric"] is None  # geometric not run
    for row in d["rows"]:
        assert list(row) == ROW_KEYS  # --no-memory: no measured resident figures
        assert row["measured_ms"] > 0 and row["predicted_ms"] > 0
        assert row["growth_events_measured"] == row["growth_events_predicted"]
        assert 0 < row["predicted_peak_resident_bytes"] <= row["predicted_reserved_bytes"]
    assert d["memory_probe"] is None and d["median_abs_resident_error_pct"] is None
    assert d["max_abs_resident_error_pct"] is None
    assert d["token_mismatch"] == []  # every policy decoded the same tokens as torch.cat
    assert d["regret_pct"] >= 0
    assert d["interleave"] == "step"  # tiny caches fit side by side
    # the probe's second prediction: only the weights, torch.cat and attention terms move, each by its factor
    f = d["probe"]["factors"]
    assert set(f) == {"weights", "cat", "attn_exact", "attn_masked"} and all(v > 0 for v in f.values())
    for row in d["rows"]:
        b, exact = row["predicted_breakdown_ms"], row["width"] == "exact"
        attn = b["attention_useful"] + b["attention_redundant"]
        moved = ((f["weights"] - 1) * b["weights"] + ((f["cat"] - 1) * b["growth_copy"] if exact else 0.0)
                 + (f["attn_exact" if exact else "attn_masked"] - 1) * attn)
        assert row["predicted_ms_probed"] - row["predicted_ms"] == pytest.approx(moved, rel=1e-6, abs=1e-9)
        assert row["error_pct_probed"] == pytest.approx(
            100 * (row["predicted_ms_probed"] - row["measured_ms"]) / row["measured_ms"])
    assert d["median_abs_error_pct_probed"] <= d["max_abs_error_pct_probed"]


def test_validate_takes_turns_by_run_when_the_caches_do_not_fit_together(monkeypatch, small_probe):
    import bmc_model.validate.plain as v
    from bmc_model.core.specs import get_spec

    monkeypatch.setattr(v, "fits", lambda est, **kw: False)  # room for one configuration's run, not for all at once
    spec = get_spec("smollm2-135m").with_layers(1)
    res = v.run_validate(spec, seq=40, prompt=32, batch=1, profile=embedded_profile(), names=["dynamic"],
                         r_grid=[4], repeats=2, memory=False)
    assert res.interleave == "run" and res.token_mismatch == []
    assert all(len(r.measured_runs_ms) == 2 for r in res.rows)
    d = res.to_dict()
    assert list(d) == KEYS and d["interleave"] == "run"
    assert d["regret_pct"] == pytest.approx(100 * (res.row("recommended").measured_ms / res.best.measured_ms - 1))
    con = Console(record=True, width=200)
    show(res, con)
    text = con.export_text()
    assert "probed: median / max |error|" in text and "runs interleaved (caches too big together)" in text
    assert all(r.name in text for r in res.rows) and "target" not in text
