"""validate --refresh and validate --sd --refresh: a refresh before the run, within each repeat and after it,
and each repeat predicted from the refreshes over its span (repeat_refresh.py)."""

import dataclasses
import statistics
import sys
import types

import pytest

from bmc_model.core.errors import BMCError
from bmc_model.core.policy import parse_policy
from bmc_model.core.predict import predict
from bmc_model.core.profile import embedded_profile
from bmc_model.core.refresh import Refresh, refreshed, rescaled
from bmc_model.core.specs import get_spec
from bmc_model.validate.repeat_refresh import WITHIN_REFRESH_S, WITHIN_REFRESHES, RepeatRefresher

pytestmark = pytest.mark.usefixtures("one_thread", "small_probe")  # tiny tensors: see conftest

SPAN = WITHIN_REFRESHES + 2  # the profiles that stand for one repeat: its start, those within it, its end


@pytest.fixture()
def slowing_refresh(monkeypatch):
    """A stand-in calibrate.refresh whose every refresh finds weight streaming 10% slower than the one before;
    returns its calls (the profile it was given, its keywords)."""
    calls: list = []

    def refresh_profile(profile, **kw):
        calls.append((profile, kw))
        return refreshed(profile.calibrated, Refresh(at=f"2026-12-02T10:00:{len(calls):02d}+00:00", model="m",
                                                     seq=kw["seq"], seconds=1.0,
                                                     factors={"weights": 1.1 ** len(calls)}))

    monkeypatch.setitem(sys.modules, "bmc_model.calibrate.refresh",
                        types.SimpleNamespace(refresh_profile=refresh_profile))
    return calls


def whens(reps: int, before: tuple[str, ...] = ("before",)) -> list[str]:
    return [*before] + [w for i in range(1, reps + 1)
                         for w in [*(f"rep {i} pause {k}" for k in range(1, WITHIN_REFRESHES + 1)), f"after rep {i}"]]


def check_rows(rows, refresh, calls, reps, kw_of, before: tuple[str, ...] = ("before",)):
    """Each row's repeats predicted as the median over the refreshes of their spans, the row as their median; the
    refresh before the run (the last of `before`) alone beside it; every refresh from the profile as given, none
    carried over."""
    base, o = calls[0][0], len(before)  # o: the call number (from 1) of the refresh right before the run
    assert all(p is base for p, _ in calls) and len(calls) == o + reps * (SPAN - 1)
    assert ([kw.get("budget_s") for _, kw in calls[o - 1:o - 1 + SPAN]]
            == [None, *[WITHIN_REFRESH_S] * WITHIN_REFRESHES, None])
    assert [r["when"] for r in refresh["refreshes"]] == whens(reps, before)
    for row in rows:
        def ms(k, row=row):  # the prediction from the k-th refresh
            return predict(**kw_of(row), profile=rescaled(base, {"weights": 1.1 ** k})).ms_per_token

        want = [statistics.median(ms(o + (SPAN - 1) * i + j) for j in range(SPAN)) for i in range(reps)]
        assert row.predicted_ms_by_rep == pytest.approx(want)
        assert row.predicted_ms == pytest.approx(statistics.median(want))
        m = row.measured_ms
        assert row.error_pct == pytest.approx(100 * (row.predicted_ms - m) / m)
        assert refresh["errors_pct_refresh_before_run"][row.name] == pytest.approx(100 * (ms(o) - m) / m)
    before = refresh["errors_pct_refresh_before_run"].values()
    assert refresh["max_abs_error_pct_refresh_before_run"] == pytest.approx(max(map(abs, before)))


def test_plain_validate_refreshes_before_within_and_after_each_repeat(slowing_refresh):
    from bmc_model.validate.plain import run_validate

    spec, reps = get_spec("smollm2-135m").with_layers(1), 2
    res = run_validate(spec, seq=44, prompt=32, batch=1, profile=embedded_profile(), names=["dynamic"], r_grid=[4],
                       repeats=reps, memory=False, refresh=True)
    assert res.interleave == "step" and len(res.rows) > 2
    assert all(kw["seq"] == 44 and kw["prompt"] == 32 and kw["batch"] == 1 for _, kw in slowing_refresh)
    check_rows(res.rows, res.refresh, slowing_refresh, reps,
               lambda row: {"model": spec, "seq": 44, "prompt": 32, "policy": parse_policy(row.policy), "batch": 1,
                            "dtype": "float32"})
    assert "predicted_ms_by_rep" in res.to_dict()["rows"][0]


def test_sd_validate_refreshes_before_within_and_after_each_repeat(slowing_refresh):
    from bmc_model.validate.speculative import measure_sd

    tiny = dataclasses.replace(get_spec("llama-7b"), name="tiny-llama", hidden=64, heads=4, kv_heads=4,
                               head_dim=16, ffn=128, vocab=128)
    reps = 2
    out = measure_sd("synthetic", model=tiny, layers=1, prompt=16, new_tokens=12, gamma=2, repeats=reps, warmup=0,
                     refresh=True, profile=embedded_profile())
    assert all(kw["seq"] == 28 and kw["prompt"] == 16 for _, kw in slowing_refresh)
    # the first refresh picks gamma; the rest also time verification's gamma + 1 rows, from one before the run
    assert "rows" not in slowing_refresh[0][1] and all(kw["rows"] == (1, 3) for _, kw in slowing_refresh[1:])
    check_rows(out.rows, out.refresh, slowing_refresh, reps, before=("before", "before, at 3 rows"),
               kw_of=lambda row: {"model": tiny.with_layers(1), "seq": 28, "prompt": 16, "batch": 1,
                                  "dtype": "float32", "policy": parse_policy(row.policy), "gamma": row.gamma,
                                  "alpha": alpha_of(row.acceptance) if row.gamma else None})


def alpha_of(acceptance: dict) -> list[float]:
    """The rates a row was predicted at: its run's raw acceptance, as the cost model takes it."""
    from bmc_model.runtime.speculative import SDStats

    return SDStats(**{k: acceptance[k] for k in ("gamma", "iterations", "tokens", "reached", "accepted",
                                                  "proposed")}).alpha_list()


def test_a_refresh_within_a_repeat_that_cannot_run_is_logged_and_left_out():
    calls = []

    def refresh(budget_s=None):
        calls.append(budget_s)
        if budget_s is not None:
            raise BMCError("no room")
        return types.SimpleNamespace(refresh=types.SimpleNamespace(to_dict=lambda: {"at": "t"}))

    rr = RepeatRefresher("as calibrated", refresh)
    rr.start_repeat()
    rr.pause(0)
    rr.end_repeat()
    assert len(rr.spans) == 1 and rr.spans[0][0] is rr.first and len(rr.spans[0]) == 2
    assert rr.log[1] == {"when": "rep 1 pause 1", "skipped": "no room"} and calls == [None, WITHIN_REFRESH_S, None]
    with pytest.raises(BMCError, match="no room"):  # one at a repeat's end stands for it: never skipped
        RepeatRefresher("as calibrated", lambda budget_s=None: (_ for _ in ()).throw(BMCError("no room")))


def test_without_a_refresh_every_span_is_the_profile_as_given():
    rr = RepeatRefresher("as calibrated")
    for _ in range(2):
        rr.start_repeat()
        rr.pause(0)
        rr.end_repeat()
    assert not rr.refreshing and rr.first == rr.last == "as calibrated"
    assert rr.spans == [["as calibrated"], ["as calibrated"]] and rr.log == []
