"""The HF validation measurement (bmc-tune validate --hf): structure, streamer timing, bad input."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from bmc_model.calibrate import token_clock  # noqa: E402
from bmc_model.core.errors import BMCError  # noqa: E402
from bmc_model.validate.hf_generate import validate_hf  # noqa: E402
from bmc_model.validate.memprobe import median_probe  # noqa: E402
from bmc_model.validate.report import hf_table  # noqa: E402

# the JSON validate --hf prints and benchmarks/hf_generate.py writes, key for key and in order
KEYS = ["schema", "kind", "date", "host", "transformers", "torch", "threads", "dtype", "new_tokens", "reps",
        "memory_reps", "prefill", "quick", "bmc_trim", "profile", "hf_overhead_calibrated", "workloads", "notes",
        "rows", "median_abs_resident_error_pct", "max_abs_resident_error_pct", "abs_resident_error_pct_by_cache",
        "checks"]
ROW_KEYS = ["workload", "model", "seq", "prompt", "batch", "cache", "policy", "policy_source", "measured_ms_per_token",
            "samples_ms_per_token", "predicted_ms_per_token", "error_pct", "speedup_vs_dynamic",
            "predicted_speedup_vs_dynamic", "predicted_breakdown_ms", "predicted_peak_kv_bytes", "predicted_kv_bytes",
            "predicted_peak_resident_bytes", "tokens_match_dynamic", "kv_bytes_final", "grow_events", "memory",
            "measured_peak_resident_bytes", "resident_error_pct", "interleave"]
CACHES = ("dynamic", "static", "bmc", "reserve")


def test_token_clock_excludes_prompt_and_prefill(monkeypatch):
    ticks = iter([10.0, 10.5, 10.7, 11.1])
    monkeypatch.setattr(token_clock.time, "perf_counter", lambda: next(ticks))
    first = []
    clock = token_clock.TokenClock(on_first_token=lambda: first.append(True))
    clock.put("prompt ids")  # generate() puts the prompt first: no timestamp
    for _ in range(4):
        clock.put("token")
    # 4 tokens: the first closes the prefill, the 3 decode steps took 1.1 s
    assert clock.decode_ms_per_token() == pytest.approx(1100.0 / 3)
    assert first == [True]


def test_quick_validate_reports_four_caches_per_case():
    res = validate_hf(workloads=["kv"], contexts=[40], batches=[2], new_tokens=4, reps=1,
                      policy="bmc:8", memory=False, quick=True)
    result = res.to_dict()
    json.dumps(result)  # JSON-able as is
    assert list(result) == KEYS and result["schema"] == 1 and result["kind"] == "hf-generate"
    rows = result["rows"]
    # grow_events: the BMCCache rows' only
    assert [list(r) for r in rows] == [[k for k in ROW_KEYS if k != "grow_events"]] * 2 + [ROW_KEYS] * 2
    assert [(r["batch"], r["cache"]) for r in rows] == [(2, c) for c in CACHES]
    for r in rows:
        assert r["seq"] == 40 and r["prompt"] == 36
        assert r["measured_ms_per_token"] > 0 and r["predicted_ms_per_token"] > 0
        assert r["tokens_match_dynamic"] in (True, False)
        assert 0 < r["predicted_peak_resident_bytes"] <= r["predicted_peak_kv_bytes"]
        assert r["memory"] is None and r["measured_peak_resident_bytes"] is None and r["resident_error_pct"] is None
    bmc = [r for r in rows if r["cache"] == "bmc"]
    assert all(r["policy"] == "r=8 padded" for r in bmc)
    assert all(r["grow_events"] >= 2 for r in bmc)  # one allocation per layer at least
    reserve = rows[3]
    assert reserve["policy"] == "reserve" and reserve["grow_events"] == 2  # its one allocation, per layer
    assert reserve["kv_bytes_final"] == rows[1]["kv_bytes_final"]  # both hold N rows; only static's are resident
    assert result["median_abs_resident_error_pct"] is None and result["abs_resident_error_pct_by_cache"] == {}
    assert all(r["interleave"] == "step" for r in rows)  # tiny caches: always side by side
    assert set(result["checks"]) >= {"bmc_never_slower", "bmc_never_slower_in_any_repetition", "bmc_peak_below_dynamic",
                                     "per_case"}
    assert all(len(v) == 1 for c in result["checks"]["per_case"] for v in c["paired_speedups"].values())
    assert list(result["checks"]) == ["bmc_2x_over_dynamic_at_kv_4096", "bmc_never_slower",
                                      "bmc_never_slower_in_any_repetition", "bmc_peak_below_dynamic", "per_case"]
    assert result["checks"]["bmc_2x_over_dynamic_at_kv_4096"] is None  # no kv case at N=4096
    assert result["checks"]["bmc_peak_below_dynamic"] is None  # no memory probes
    assert hf_table(res).row_count == len(rows)


@pytest.mark.parametrize("kwargs, match", [
    (dict(workloads=["nope"]), "unknown workload"),
    (dict(contexts=[10], new_tokens=16), "context"),
    (dict(reps=0), "reps"),
    (dict(memory_reps=0), "memory_reps"),
    (dict(prefill="maybe"), "prefill"),
    (dict(policy="bmc:x"), "unknown policy"),
])
def test_bad_input_is_a_bmc_error(kwargs, match):
    with pytest.raises(BMCError, match=match):
        validate_hf(memory=False, quick=True, **kwargs)


def test_median_probe_takes_each_fields_median():
    probes = [{"decode_peak_increase": 30, "peak_increase": 40, "hwm_reset": True},
              {"decode_peak_increase": 10, "peak_increase": 50, "hwm_reset": True},
              {"decode_peak_increase": 20, "peak_increase": 45, "hwm_reset": False}]
    out = median_probe(probes)
    assert out["decode_peak_increase"] == 20 and out["peak_increase"] == 45
    assert out["hwm_reset"] is True and out["probes"] == probes  # non-numbers from the first; all kept
    assert median_probe(probes[:1]) == probes[0]
    failed = median_probe([probes[0], {"error": "boom"}])
    assert failed["error"] == "boom"


def test_reserve_is_resident_only_where_written_static_in_full():
    """In this process (a fresh one per cache is validate's way): the decode peak of a 2048-row cache that
    holds 20 rows. StaticCache zero-fills its buffers; BMCCache(policy="reserve") leaves torch.empty's pages
    to be backed as rows are written."""
    from bmc_model.validate.memprobe import probe
    from bmc_model.validate.rss import can_measure

    if can_measure() is not None:
        pytest.skip(str(can_measure()))
    req = {"workload": "kv", "quick": True, "seq": 2048, "prompt": 16, "batch": 1, "new_tokens": 4, "threads": 1}
    static, reserve = probe({**req, "kind": "static"}), probe({**req, "kind": "reserve"})
    kv = 2 * 2 * 32 * 2048 * 128 * 4  # layers x (K, V) x heads x rows x head_dim x fp32: 128 MiB
    assert static["kv_bytes_final"] == reserve["kv_bytes_final"] == kv
    assert static["hwm_reset"] and reserve["hwm_reset"]
    assert 0.95 * kv <= static["decode_peak_increase"] <= 1.25 * kv
    assert reserve["decode_peak_increase"] < kv / 8


@pytest.mark.heavy
def test_memory_probe_runs_in_a_subprocess():
    from dataclasses import asdict

    from bmc_model.core.policy import Policy
    from bmc_model.validate.memprobe import run_probe

    out = run_probe({"workload": "kv", "quick": True, "kind": "bmc", "policy": asdict(Policy("fixed", 16)),
                     "seq": 200, "prompt": 180, "batch": 1, "new_tokens": 8, "threads": 1})
    assert "error" not in out, out
    # 2 layers x (K + V) x 32 heads x 128 x 4 bytes per row: 180 + 8 - 1 = 187 rows held, plus < r spare
    row = 2 * 2 * 32 * 128 * 4
    assert 187 * row <= out["kv_bytes_final"] < (187 + 16) * row
    assert out["decode_peak_increase"] >= 0 and out["peak_increase"] >= out["decode_peak_increase"]


def test_memory_probes_put_the_measured_decode_peak_beside_the_prediction(monkeypatch):
    import bmc_model.validate.hf_generate as hg

    peaks = {"dynamic": 4e6, "static": 8e6, "bmc": 5e6, "reserve": 2e6}
    asked = []

    def fake(req: dict, timeout: float = 0.0) -> dict:
        asked.append((req["kind"], req["policy"]))
        return {"decode_peak_increase": peaks[req["kind"]], "peak_increase": 2 * peaks[req["kind"]]}

    monkeypatch.setattr(hg, "run_probe", fake)
    res = validate_hf(workloads=["kv"], contexts=[40], batches=[1], new_tokens=4, reps=1, policy="bmc:8",
                      memory=True, quick=True)
    assert [k for k, _ in asked] == list(CACHES)  # one probe per cache, its policy only for bmc
    assert [p is None for _, p in asked] == [True, True, False, True]
    d = res.to_dict()
    errs = []
    for r in d["rows"]:
        meas = peaks[r["cache"]]
        assert r["measured_peak_resident_bytes"] == meas
        assert r["resident_error_pct"] == pytest.approx(100 * (r["predicted_peak_resident_bytes"] / meas - 1))
        errs.append(abs(r["resident_error_pct"]))
    assert d["max_abs_resident_error_pct"] == pytest.approx(max(errs))
    assert set(d["abs_resident_error_pct_by_cache"]) == set(CACHES)
    assert set(d["checks"]["per_case"][0]["decode_peak_increase_bytes"]) == set(CACHES)
    assert "res err %" in [c.header for c in hf_table(res).columns]


def test_cli_hf_passes_no_memory(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import bmc_model.validate.hf_generate as hg
    from bmc_model.cli import app
    from bmc_model.core.profile import embedded_profile, write_profile

    seen = []

    def fake(**kw):
        seen.append(kw["memory"])
        raise BMCError("stop here")

    monkeypatch.setattr(hg, "validate_hf", fake)
    prof = str(write_profile(embedded_profile(), tmp_path / "p.json"))
    for args in (["--quick"], ["--quick", "--no-memory"]):
        res = CliRunner().invoke(app, ["validate", "--hf", "--profile", prof, *args])
        assert res.exit_code == 2 and "stop here" in res.stderr
    assert seen == [True, False]
