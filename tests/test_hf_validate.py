"""The HF validation measurement (bmc-tune validate --hf): structure, streamer timing, bad input, the BMCCache
grid and its regret, the command line's case selection."""

from __future__ import annotations

import json
import statistics
import sys
import types
from dataclasses import dataclass, field, replace

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from bmc_model.calibrate import token_clock  # noqa: E402
from bmc_model.core.errors import BMCError  # noqa: E402
from bmc_model.core.policy import NAMED, Policy  # noqa: E402
from bmc_model.validate.hf_budget import case_seconds, remaining_seconds  # noqa: E402
from bmc_model.validate.hf_generate import validate_hf  # noqa: E402
from bmc_model.validate.hf_grid import GRID, grid_policies, summarize  # noqa: E402
from bmc_model.validate.memprobe import median_probe  # noqa: E402
from bmc_model.validate.repeat_refresh import WITHIN_REFRESH_S, refreshed_at  # noqa: E402
from bmc_model.validate.report import hf_summary, hf_table  # noqa: E402

# the JSON validate --hf prints and benchmarks/hf_generate.py writes, key for key and in order
KEYS = ["schema", "kind", "date", "host", "transformers", "torch", "threads", "dtype", "new_tokens", "reps",
        "memory_reps", "prefill", "quick", "bmc_trim", "grid", "profile", "profile_refreshed_at", "refreshes",
        "hf_overhead_calibrated", "workloads", "notes", "estimated_s", "wall_s", "phases_s", "rows",
        "median_abs_error_pct", "max_abs_error_pct", "regret_pct", "regret_pct_paired", "regret_pct_steps_low",
        "regret_by_case", "median_abs_error_pct_case_refresh", "max_abs_error_pct_case_refresh",
        "median_abs_resident_error_pct", "max_abs_resident_error_pct", "abs_resident_error_pct_by_cache", "checks"]
ROW_KEYS = ["workload", "model", "seq", "prompt", "batch", "cache", "policy", "policy_source", "measured_ms_per_token",
            "samples_ms_per_token", "predicted_ms_per_token", "error_pct", "speedup_vs_dynamic",
            "predicted_speedup_vs_dynamic", "predicted_breakdown_ms", "predicted_peak_kv_bytes", "predicted_kv_bytes",
            "predicted_peak_resident_bytes", "tokens_match_dynamic", "kv_bytes_final", "grow_events", "memory",
            "measured_peak_resident_bytes", "resident_error_pct", "interleave", "predicted_ms_per_token_by_rep",
            "steps_ms_by_rep"]
CACHES = ("dynamic", "static", "bmc", "reserve")
GRID_NAMES = tuple("grid:" + p.label for p in GRID)  # none equals bmc:8, the policy the quick runs give
TINY_RUN = dict(workloads=["kv"], contexts=[40], new_tokens=4, reps=1, policy="bmc:8", quick=True)


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


def test_quick_validate_reports_four_caches_and_the_grid_per_case():
    res = validate_hf(**TINY_RUN, batches=[2], memory=False)
    result = res.to_dict()
    json.dumps(result)  # JSON-able as is
    assert list(result) == KEYS and result["schema"] == 1 and result["kind"] == "hf-generate"
    rows = result["rows"]
    # grow_events: the BMCCache rows' only
    assert [list(r) for r in rows] == ([[k for k in ROW_KEYS if k != "grow_events"]] * 2
                                       + [ROW_KEYS] * (2 + len(GRID)))
    assert [(r["batch"], r["cache"]) for r in rows] == [(2, c) for c in CACHES + GRID_NAMES]
    assert result["grid"] == [p.label for p in GRID] and result["profile_refreshed_at"] is None
    grid = rows[len(CACHES):]
    assert [r["policy"] for r in grid] == result["grid"] and {r["policy_source"] for r in grid} == {"grid"}
    # every BMCCache configuration gives DynamicCache's greedy tokens, step for step
    assert all(r["tokens_match_dynamic"] for r in rows[2:])
    assert all(r["memory"] is None and r["grow_events"] >= 2 for r in grid)
    errs = [abs(r["error_pct"]) for r in rows]
    assert result["median_abs_error_pct"] == pytest.approx(statistics.median(errs))
    assert result["max_abs_error_pct"] == pytest.approx(max(errs))
    (case,) = result["regret_by_case"]
    assert case["case"] == "kv N=40 B=2" and case["candidates"] == 2 + len(GRID)
    bmc_ms = {r["cache"]: r["measured_ms_per_token"] for r in rows[2:]}
    assert case["best_ms_per_token"] == min(bmc_ms.values())
    assert result["regret_pct"] == case["regret_pct"] == pytest.approx(
        100 * (bmc_ms["bmc"] / min(bmc_ms.values()) - 1))
    assert result["wall_s"] > 0 and result["estimated_s"] > 0
    assert set(result["phases_s"]) == {"kv build", "kv N=40 B=2 warm-up", "kv N=40 B=2 timed",
                                       "kv N=40 B=2 memory"}
    rows = rows[:len(CACHES)]
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
    assert list(result["checks"]) == ["bmc_2x_over_dynamic_at_kv_4096", "bmc_never_slower", "bmc_never_slower_paired",
                                      "bmc_never_slower_in_any_repetition", "bmc_never_significantly_slower",
                                      "bmc_peak_below_dynamic", "per_case"]
    # every decode step kept: one list a repetition, as many steps as every other cache's, their mean the sample
    for r in result["rows"]:
        (steps,) = r["steps_ms_by_rep"]
        assert len(steps) == len(result["rows"][0]["steps_ms_by_rep"][0]) == result["new_tokens"] - 1
        assert statistics.mean(steps) == pytest.approx(r["samples_ms_per_token"][0], rel=1e-4)
    assert result["checks"]["bmc_never_significantly_slower"] in (True, False)
    assert all(set(c["speedup_ci95"]) == {"dynamic", "static"} for c in result["checks"]["per_case"])
    assert result["checks"]["bmc_2x_over_dynamic_at_kv_4096"] is None  # no kv case at N=4096
    assert result["checks"]["bmc_peak_below_dynamic"] is None  # no memory probes
    assert hf_table(res).row_count == len(result["rows"])
    assert hf_summary(res).row_count >= 3  # errors, regret, the case


@pytest.mark.parametrize("kwargs, match", [
    (dict(workloads=["nope"]), "unknown workload"),
    (dict(contexts=[10], new_tokens=16), "context"),
    (dict(reps=0), "reps"),
    (dict(memory_reps=0), "memory_reps"),
    (dict(prefill="maybe"), "prefill"),
    (dict(policy="bmc:x"), "unknown policy"),
    (dict(grid=["fixed:0:exact"]), "r must be"),
    (dict(workloads=["kv"], contexts=[20000], new_tokens=4), "max_position_embeddings 16384"),
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
    res = validate_hf(**TINY_RUN, batches=[1], memory=True)
    assert [k for k, _ in asked] == list(CACHES)  # one probe per cache, its policy only for bmc; none for the grid
    assert [p is None for _, p in asked] == [True, True, False, True]
    d = res.to_dict()
    errs = []
    assert all(r["memory"] is None for r in d["rows"][len(CACHES):])
    for r in d["rows"][:len(CACHES)]:
        meas = peaks[r["cache"]]
        assert r["measured_peak_resident_bytes"] == meas
        assert r["resident_error_pct"] == pytest.approx(100 * (r["predicted_peak_resident_bytes"] / meas - 1))
        errs.append(abs(r["resident_error_pct"]))
    assert d["max_abs_resident_error_pct"] == pytest.approx(max(errs))
    assert set(d["abs_resident_error_pct_by_cache"]) == set(CACHES)
    assert set(d["checks"]["per_case"][0]["decode_peak_increase_bytes"]) == set(CACHES)
    assert "res err %" in [c.header for c in hf_table(res).columns]


def test_cli_hf_passes_no_memory_and_the_batch(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import bmc_model.validate.hf_generate as hg
    from bmc_model.cli import app
    from bmc_model.core.profile import embedded_profile, write_profile

    seen = []

    def fake(**kw):
        seen.append((kw["memory"], kw["batches"]))
        raise BMCError("stop here")

    monkeypatch.setattr(hg, "validate_hf", fake)
    prof = str(write_profile(embedded_profile(), tmp_path / "p.json"))
    for args in (["--quick"], ["--quick", "--no-memory"], ["--quick", "--batch", "4"]):
        res = CliRunner().invoke(app, ["validate", "--hf", "--profile", prof, *args])
        assert res.exit_code == 2 and "stop here" in res.stderr
    assert seen == [(True, None), (False, None), (True, [4])]  # --batch selects one batch


@dataclass
class Row:
    """What hf_grid.summarize reads of a row."""

    cache: str
    measured_ms_per_token: float | None
    error_pct: float | None = None
    policy: str = ""
    workload: str = "kv"
    seq: int = 2048
    batch: int = 1
    samples_ms_per_token: list = field(default_factory=list)
    memory: dict | None = None
    steps_ms_by_rep: list | None = None


def test_regret_is_the_tuned_bmccache_over_the_best_bmccache_of_its_case():
    a = [Row("dynamic", 7.0, 10.0, "r=1 exact"), Row("static", 12.0, -20.0, "static padded"),
         Row("bmc", 10.0, 5.0, "r=32 padded"), Row("reserve", 9.0, None, "reserve"),
         Row("grid:r=64 padded", 8.0, -2.0, "r=64 padded"), Row("grid:r=256 exact", None, 1.0, "r=256 exact")]
    b = [replace(r, seq=4096) for r in (Row("bmc", 5.0, 30.0), Row("grid:r=64 padded", 6.0, -40.0),
                                        Row("static", 4.0, 3.0))]
    unmeasured = [Row("bmc", None, None, seq=8192), Row("reserve", 3.0, 1.0, seq=8192)]
    # the tuner picked reserve: the reserve row is the same policy measured again, scatter and not regret
    same = [Row("bmc", 5.0, 1.0, "reserve", seq=512), Row("reserve", 4.0, 1.0, "reserve", seq=512)]
    out = summarize(a + b + unmeasured + same)
    first, second, third = out.per_case
    assert third.regret_pct == 0.0 and third.candidates == 1
    # DynamicCache and StaticCache are not BMCCache: faster, they say "slower than", never regret
    assert first.regret_pct == pytest.approx(25.0) and first.best_cache == "grid:r=64 padded"
    assert first.best_policy == "r=64 padded" and first.candidates == 3  # the unmeasured grid row left out
    assert first.case == "kv N=2048 B=1" and first.tuned_policy == "r=32 padded"
    assert first.tuned_slower_than_dynamic is True and first.tuned_slower_than_static is False
    assert second.regret_pct == 0.0 and second.best_cache == "bmc"
    assert second.tuned_slower_than_dynamic is None and second.tuned_slower_than_static is True
    assert out.regret_pct == pytest.approx(25.0)  # the worst case's; the unmeasured case has none
    # |error| over every measured row with a prediction: the reserve row of `a` has none, the unmeasured rows
    errs = [10, 20, 5, 2, 30, 40, 3, 1, 1, 1]
    assert out.median_abs_error_pct == pytest.approx(statistics.median(errs))
    assert out.max_abs_error_pct == pytest.approx(40.0)
    d = out.to_dict()
    assert list(d) == ["median_abs_error_pct", "max_abs_error_pct", "regret_pct", "regret_pct_paired",
                       "regret_pct_steps_low", "regret_by_case"]
    assert d["regret_pct_steps_low"] is None and first.regret_pct_steps is None  # nothing ran step by step
    assert d["regret_by_case"][0]["regret_pct"] == pytest.approx(25.0)
    assert first.regret_pct_paired is None and third.regret_pct_paired == 0.0  # no repetitions; no alternative
    assert out.regret_pct_paired == 0.0
    empty = summarize([])
    assert (empty.median_abs_error_pct, empty.max_abs_error_pct, empty.regret_pct, empty.per_case) == (
        None, None, None, [])
    assert empty.regret_pct_paired is None


def test_paired_regret_takes_each_candidate_repetition_by_repetition():
    # the host ran repetition 2 fast: each median lands in another repetition, the paired ratios do not
    rows = [Row("bmc", 10.0, 1.0, "r=32 padded", samples_ms_per_token=[10.0, 12.0, 9.0]),
            Row("grid:r=64 padded", 8.0, 1.0, "r=64 padded", samples_ms_per_token=[8.0, 12.5, 8.0]),
            Row("reserve", 9.0, 1.0, "reserve", samples_ms_per_token=[9.0, 9.0, None]),
            Row("grid:r=256 exact", 20.0, 1.0, "r=256 exact", samples_ms_per_token=[20.0, 24.0, 18.0])]
    (case,) = summarize(rows).per_case
    assert case.regret_pct == pytest.approx(25.0)
    # r=64: 10/8, 12/12.5, 9/8 -> median 1.125; reserve: 10/9, 12/9 (its third unmeasured) -> 1.222
    assert case.regret_pct_paired == pytest.approx(100 * (statistics.median([10 / 9, 12 / 9]) - 1))
    slower = [replace(r, samples_ms_per_token=[x * 3 for x in r.samples_ms_per_token if x]) for r in rows[:1]]
    assert summarize(slower + [rows[3]]).per_case[0].regret_pct_paired == pytest.approx(50.0)
    assert summarize([rows[0], rows[3]]).per_case[0].regret_pct_paired == 0.0  # faster in every repetition


def test_never_slower_by_medians_and_by_the_repetitions_paired():
    from bmc_model.validate.hf_result import check

    def case(seq, bmc):
        return [Row(k, statistics.median(v), None, seq=seq, samples_ms_per_token=v)
                for k, v in (("dynamic", [20.0, 22.0, 24.0]), ("static", [10.0, 11.0, 12.0]), ("bmc", bmc))]

    # faster than StaticCache in repetitions 1 and 3, yet its median is the larger: a tie the medians call slower
    got = check(case(2048, [9.9, 11.5, 11.9]))
    assert not got.bmc_never_slower and got.bmc_never_slower_paired and got.bmc_never_slower_in_any_repetition
    assert got.per_case[0].paired_speedups["static"] == pytest.approx([10 / 9.9, 11 / 11.5, 12 / 11.9])
    got = check(case(2048, [9.9, 11.5, 11.9]) + case(4096, [10.1, 11.1, 11.0]))  # slower in 2 of 3 at 4096
    assert not got.bmc_never_slower_paired and got.bmc_never_slower_in_any_repetition
    got = check(case(2048, [9.0, 10.0, 11.0]))
    assert got.bmc_never_slower and got.bmc_never_slower_paired


def test_grid_drops_the_tuned_pick_and_the_four_caches_policies():
    tuned = Policy("fixed", 64, width="padded")
    got = grid_policies(tuned, (*GRID, NAMED["reserve"], NAMED["static"], NAMED["dynamic"], GRID[1]))
    assert tuned in GRID and tuned not in got.values()
    assert list(got.values()) == [p for p in GRID if p != tuned]
    assert list(got) == ["grid:" + p.label for p in got.values()]
    assert len(grid_policies(Policy("fixed", 8, width="padded"))) == len(GRID)


def test_estimate_adds_every_run_and_each_probe_start():
    ms = {"dynamic": 60.0, "bmc": 50.0, "grid:r=64 padded": 50.0}
    # 3 reps x 256 tokens x 160 ms, then 2 probes of 2 caches: their runs and a start-up each
    assert case_seconds(ms, 256, 3, ("dynamic", "bmc"), 2, probe_start_s=5.0) == pytest.approx(
        3 * 256 * 0.160 + 2 * (256 * 0.110 + 2 * 5.0))
    assert case_seconds(ms, 256, 1) == pytest.approx(256 * 0.160)
    # after a 40 s repetition, 2 to go, then 3 probes of one cache at its measured 80 ms/token
    assert remaining_seconds(40.0, 2, {"bmc": 80.0}, 256, 3, probe_start_s=5.0) == pytest.approx(
        80.0 + 3 * (256 * 0.080 + 5.0))


def test_refresh_runs_before_each_case_within_and_after_each_repetition(monkeypatch):
    from bmc_model.core.predict import get_profile, predict
    from bmc_model.core.refresh import rescaled
    from bmc_model.hf.cache import make_policy

    calls = []

    def fake_refresh(profile, *, model, seq, prompt, batch, budget_s=None):
        # each refresh finds the host's weight streaming 10% slower than the one before
        calls.append((model, seq, prompt, batch, profile.refresh, budget_s))
        at = f"2026-12-02T10:00:{len(calls):02d}+00:00"
        out = rescaled(profile, {"weights": 1.1 ** len(calls)})
        section = types.SimpleNamespace(at=at, to_dict=lambda: {"at": at, "seq": seq, "batch": batch})
        object.__setattr__(out, "refresh", section)  # as Profile.refresh exposes it
        return out

    # bmc_model.calibrate.refresh is imported when validate_hf is asked to refresh: a stand-in module
    monkeypatch.setitem(sys.modules, "bmc_model.calibrate.refresh",
                        types.SimpleNamespace(refresh_profile=fake_refresh))
    reps, new = 2, TINY_RUN["new_tokens"]  # 4 tokens: 3 decode steps, a refresh after the second
    res = validate_hf(**{**TINY_RUN, "contexts": [24], "reps": reps}, batches=[1, 2], memory=False, grid=(),
                      refresh=True, refresh_every=2)
    # every refresh from the profile as given (none carried over), at the case's own prompt and batch: one
    # before the case, one within each repetition (a shorter one) and one after it
    assert [(c[0].name, *c[1:4]) for c in calls] == [("llama2-7b-attn-2L-quick", 24, 24 - new, b) for b in (1, 2)
                                                      for _ in range(1 + 2 * reps)]
    assert all(c[4] is None for c in calls)
    assert [c[5] for c in calls[:5]] == [None, WITHIN_REFRESH_S, None, WITHIN_REFRESH_S, None]
    d = res.to_dict()
    assert d["profile_refreshed_at"] == "2026-12-02T10:00:10+00:00" and d["grid"] == []
    whens = ("before", "rep 1 step 2", "after rep 1", "rep 2 step 2", "after rep 2")
    assert [(r["case"], r["when"]) for r in d["refreshes"]] == [(f"kv N=24 B={b}", w) for b in (1, 2) for w in whens]
    assert d["refreshes"][5]["batch"] == 2
    assert set(d["phases_s"]) >= {f"kv N=24 B={b} refresh {w}" for b in (1, 2) for w in whens}
    base, spec = get_profile(None), calls[0][0]
    assert len(res.rows) == 2 * len(CACHES) and {r.interleave for r in res.rows} == {"step"}
    for case, b in enumerate((1, 2)):
        for r in (x for x in res.rows if x.batch == b):
            pol = NAMED.get(r.cache) or make_policy(None, None, TINY_RUN["policy"])

            def ms(k, pol=pol, b=b):
                return predict(model=spec, seq=24, prompt=24 - new, policy=pol, batch=b, dtype="float32",
                               profile=rescaled(base, {"weights": 1.1 ** k}), runtime="hf").ms_per_token

            first = 5 * case + 1  # the refresh before this case
            # repetition i: the refreshes at its start, within it and at its end, their predictions' median
            assert r.predicted_ms_per_token_by_rep == pytest.approx(
                [statistics.median(ms(first + 2 * i + j) for j in range(3)) for i in range(reps)])
            assert r.predicted_ms_per_token == pytest.approx(statistics.median(r.predicted_ms_per_token_by_rep))
            m = r.measured_ms_per_token
            assert r.error_pct == pytest.approx(100 * (r.predicted_ms_per_token - m) / m)
            assert r.error_pct_case_refresh == pytest.approx(100 * (ms(first) - m) / m)
    once = [abs(x["error_pct_case_refresh"]) for x in d["rows"]]
    assert d["max_abs_error_pct_case_refresh"] == pytest.approx(max(once))
    assert refreshed_at(types.SimpleNamespace(refresh={"at": "x"})) == "x"
    assert refreshed_at(types.SimpleNamespace(refresh=None)) is None and refreshed_at(object()) is None


def _invoke(args, tmp_path):
    from typer.testing import CliRunner

    from bmc_model.cli import app
    from bmc_model.core.profile import embedded_profile, write_profile

    prof = str(write_profile(embedded_profile(), tmp_path / "p.json"))
    return CliRunner().invoke(app, ["validate", "--profile", prof, *args])


@pytest.mark.parametrize("args, match", [
    (["--hf", "--workload", "qwen"], "--workload with --hf is kv or smollm2, got 'qwen'"),
    (["--hf", "--workload", "kv", "--seq", "100"], "--seq 100 leaves no prompt for 256 new tokens"),
    (["--hf", "--quick", "--seq", "17"], "--seq 17 leaves no prompt for 16 new tokens"),
    (["--hf", "--seq", "64", "--new-tokens", "1"], "--new-tokens must be at least 2"),
    (["--hf", "--new-tokens", "0"], "--new-tokens must be a positive integer"),
    (["--new-tokens", "64"], "--new-tokens applies to --hf only"),
    (["--refresh", "--device", "cuda", "--profile", "x.json"], "--refresh re-times a CPU profile"),
    (["--hf", "--quick", "--workload", "kv", "--seq", "20000", "--new-tokens", "4", "--no-memory"],
     "context 20000 exceeds kv's max_position_embeddings 16384"),
])
def test_cli_hf_bad_selection_is_one_line_and_exit_2(args, match, tmp_path):
    res = _invoke(args, tmp_path)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {match}"), res.stderr


def test_cli_hf_refuses_smollm2_past_its_positions_before_loading_it(tmp_path, monkeypatch):
    import bmc_model.validate.hf_generate as hg
    from bmc_model.validate import smollm2

    monkeypatch.setattr(smollm2, "available", lambda: True)  # installed or not: the preset knows its positions
    monkeypatch.setattr(smollm2, "require", lambda what="": None)
    monkeypatch.setattr(hg, "build", lambda *a, **k: pytest.fail("built the model"))
    res = _invoke(["--hf", "--workload", "smollm2", "--seq", "9000"], tmp_path)
    assert res.exit_code == 2 and "context 9000 exceeds smollm2's max_position_embeddings 8192" in res.stderr


def test_cli_hf_selects_one_case(monkeypatch, tmp_path):
    import bmc_model.validate.hf_generate as hg
    import bmc_model.validate.speculative as sp

    seen = []

    def fake(**kw):
        seen.append({k: kw.get(k) for k in ("workloads", "contexts", "new_tokens", "refresh")})
        raise BMCError("stop here")

    monkeypatch.setattr(hg, "validate_hf", fake)
    monkeypatch.setattr(sp, "measure_sd", lambda workload, **kw: seen.append(workload) or fake(**kw))
    for args in (["--hf", "--workload", "smollm2", "--seq", "1024", "--new-tokens", "64", "--refresh", "--json"],
                 ["--hf", "--workload", "kv"], ["--hf"], ["--sd"]):
        res = _invoke(args, tmp_path)
        assert res.exit_code == 2 and "stop here" in res.stderr
    assert seen[:3] == [{"workloads": ["smollm2"], "contexts": [1024], "new_tokens": 64, "refresh": True},
                        {"workloads": ["kv"], "contexts": None, "new_tokens": None, "refresh": False},
                        {"workloads": None, "contexts": None, "new_tokens": None, "refresh": False}]
    assert seen[3] == "synthetic"  # --sd's workload default is unchanged


def test_step_ratio_ci_pairs_rounds_so_drift_cancels():
    from bmc_model.validate.compare import step_ratio_ci

    # the host's speed moves 2x over the steps and again between repetitions; a is 2% slower in every round
    base = [[1.0 + (i % 50) / 50 for i in range(200)], [3.0 - (i % 7) / 7 for i in range(150)]]
    a = [[1.02 * x for x in rep] for rep in base]
    ratio, lo, hi = step_ratio_ci(a, base)
    assert ratio == pytest.approx(1.02) and lo == pytest.approx(1.02) and hi == pytest.approx(1.02)
    # unpaired the drift would swamp 2%; paired, scatter of 1% a step still leaves 1 outside the interval
    noisy = [[x * (1.0 + 0.01 * ((-1) ** i)) for i, x in enumerate(rep)] for rep in a]
    ratio, lo, hi = step_ratio_ci(noisy, base)
    assert 1.0 < lo <= ratio <= hi < 1.04
    assert step_ratio_ci(base, base) == (1.0, 1.0, 1.0)
    assert step_ratio_ci([[]], [[1.0]]) is None and step_ratio_ci([], []) is None
    # rounds past the shorter side's end are left out: nothing to pair them with
    assert step_ratio_ci([[1.0, 1.0, 9.0]], [[1.0, 1.0]]) == (1.0, 1.0, 1.0)


def test_step_ratio_ci_scales_and_sees_a_rare_stall():
    from bmc_model.validate.compare import step_ratio_ci

    b = [[1.0] * 100]
    a = [[1.0] * 99 + [30.0]]  # one stall of 29 extra steps' time in 100 steps
    ratio, lo, hi = step_ratio_ci(a, b)
    assert ratio == pytest.approx(1.29)
    assert lo == pytest.approx(1.0) and hi > 1.29  # one step: the interval reaches where it did not come
    r2, lo2, hi2 = step_ratio_ci([[3 * x for x in a[0]]], b)
    assert (r2, lo2, hi2) == pytest.approx((3 * ratio, 3 * lo, 3 * hi))


def test_never_significantly_slower_and_regret_step_by_step():
    import numpy as np

    from bmc_model.validate.hf_result import check

    def steps(scale, seed, n=120):  # the host drifts along the steps, and each step scatters by 3% on its own
        noise = np.random.default_rng(seed).normal(1.0, 0.03, n)
        return [[scale * (1.0 + 0.3 * (i % 10) / 10) * float(e) for i, e in enumerate(noise)]]

    def case(bmc_scale, grid_scale=None):
        rows = [("dynamic", 2.0), ("static", 1.0), ("bmc", bmc_scale)]
        if grid_scale is not None:
            rows.append(("grid:r=64 padded", grid_scale))
        out = []
        for seed, (k, sc) in enumerate(rows):
            st = steps(sc, seed)
            m = statistics.mean(st[0])
            out.append(Row(k, m, None, "r=64 padded" if k.startswith("grid") else k, samples_ms_per_token=[m],
                           steps_ms_by_rep=st))
        return out

    got = check(case(1.003))  # 0.3% over StaticCache: inside the steps' scatter, not a finding
    v, lo, hi = got.per_case[0].speedup_ci95["static"]
    assert lo < 1.0 < hi and hi - lo < 0.03
    assert got.bmc_never_significantly_slower is True
    got = check(case(1.05))
    assert got.bmc_never_significantly_slower is False and got.per_case[0].speedup_ci95["static"][2] < 1.0
    assert not got.bmc_never_slower
    no_steps = [replace(r, steps_ms_by_rep=None) for r in case(1.05)]
    assert check(no_steps).bmc_never_significantly_slower is None
    assert check(no_steps).per_case[0].speedup_ci95 is None
    summary = summarize(case(1.05, grid_scale=1.0))
    (c,) = summary.per_case
    assert c.regret_steps_against == "grid:r=64 padded"
    v, lo, hi = c.regret_pct_steps
    assert lo < v < hi and v == pytest.approx(5.0, abs=1.0) and lo > 3.0
    assert summary.regret_pct_steps_low == lo
