"""The decision rule (core/decide.py): the pick is never beaten inside its own table."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_model_laws import profiles

from bmc_model.core.decide import recommend
from bmc_model.core.errors import BMCError
from bmc_model.core.policy import NAMED, Policy
from bmc_model.core.predict import Prediction
from bmc_model.core.rule import Candidate, dominates, pareto_front, pick_index

PRESETS = st.sampled_from(["llama-7b", "smollm2-135m", "llama-70b", "qwen2.5-coder-1.5b", "opt-6.7b", "gemma3-270m"])


def printed(rec) -> list[Prediction]:
    """Every row recommend prints: the baselines, the best without SD, the Pareto front."""
    rows = [*rec.baselines.values(), *rec.pareto]
    return rows + ([rec.no_sd] if rec.no_sd is not None else [])


def assert_not_dominated(rec) -> None:
    pick = rec.prediction
    for row in printed(rec):
        assert not dominates(row, pick), (row.policy.label, row.gamma, pick.policy.label, pick.gamma)


@st.composite
def requests(draw):
    seq = draw(st.integers(2, 32768))
    prompt = draw(st.integers(1, seq - 1))
    kw = {"model": draw(PRESETS), "seq": seq, "prompt": prompt, "batch": draw(st.sampled_from([1, 2, 8]))}
    if draw(st.booleans()) and seq - prompt > 17:
        kw.update(gamma="auto", alpha=draw(st.floats(0.0, 0.95)))
    if draw(st.booleans()):
        kw["layers"] = draw(st.integers(1, 4))  # keeps long contexts within the profile host's RAM
    return kw


@settings(max_examples=15, deadline=None)
@given(requests(), profiles(), st.floats(0.0, 0.05), st.none() | st.floats(0.3, 3.0))
def test_pick_is_pareto_optimal_among_what_recommend_prints(kw, prof, tol, cap_share):
    try:
        free = recommend(**kw, profile=prof, tolerance=tol)
    except BMCError:  # a context past what the profile's host holds
        return
    assert_not_dominated(free)
    if cap_share is None:
        return
    cap = free.prediction.peak_resident_bytes * cap_share
    try:
        capped = recommend(**kw, profile=prof, tolerance=tol, max_mem=cap)
    except BMCError as err:
        assert "no configuration fits" in str(err)
        return
    assert capped.prediction.peak_resident_bytes <= cap * (1 + 1e-9)
    assert_not_dominated(capped)
    # a cap never buys speed: what it returns is no faster than the free pick, or holds no less memory
    assert not dominates(capped.prediction, free.prediction)


def test_llama_7b_2048_picks_what_no_printed_row_beats_and_says_why():
    rec = recommend("llama-7b", 2048)
    assert_not_dominated(rec)
    assert rec.reason.startswith(rec.policy.label)
    assert rec.pareto and any(p.policy == rec.policy for p in rec.pareto)


def test_rule_takes_least_resident_then_reserved_then_fastest():
    seconds = np.array([1.0, 1.004, 1.004, 1.2])
    resident = np.array([3.0, 2.0, 2.0, 1.0])
    reserved = np.array([3.0, 4.0, 2.5, 1.0])
    assert pick_index(seconds, resident, reserved, limit=1.005) == 2  # least resident, then least reserved
    assert pick_index(seconds, resident, reserved, limit=1.0) == 0
    assert pick_index(seconds, resident, reserved, limit=0.5) is None


def test_dominance_and_the_front():
    def c(s: float, res: float, rsv: float) -> Candidate:
        return Candidate(Policy("fixed", 2), 0, s, res, rsv)

    a, b = c(1.0, 2.0, 2.0), c(1.0, 3.0, 3.0)
    assert dominates(a, b) and not dominates(b, a)
    assert not dominates(c(1.0, 2.0, 5.0), c(2.0, 2.0, 2.0))  # faster but larger reserved: a trade-off
    front = pareto_front([b, a, c(0.5, 9.0, 9.0), c(0.5, 9.0, 9.0)])
    assert [(x.seconds, x.resident_bytes) for x in front] == [(0.5, 9.0), (1.0, 2.0)]


def test_a_reserve_the_os_refuses_is_left_out_of_the_candidates_and_refused_when_asked():
    from bmc_model.core.predict import get_profile, predict

    prof = get_profile(None)
    host = {**prof.host, "reserve_limit_bytes": 2**30, "overcommit_mode": 2}
    import dataclasses

    tight = dataclasses.replace(prof, host=host)
    with pytest.raises(BMCError, match="reserve of 2 GiB is more than the OS"):
        predict("llama-7b", 2048, policy="reserve", profile=tight)
    rec = recommend("llama-7b", 2048, profile=tight)
    assert "reserve" not in rec.baselines and rec.policy.growth != "reserve"
    assert math.isfinite(rec.prediction.ms_per_token)


def test_reserve_holds_only_rows_written_where_the_allocator_backs_lazily():
    from bmc_model.core.predict import get_profile, predict

    lazy = get_profile(None)
    assert lazy.lazy_backing > 0.9  # measured on the embedded profile's host
    res = predict("llama-7b", 2048, policy="reserve", profile=lazy)
    static = predict("llama-7b", 2048, policy=NAMED["static"], profile=lazy)
    assert res.peak_resident_bytes == pytest.approx(res.reserved_bytes, rel=1e-3)  # the whole length is written
    assert static.peak_resident_bytes == static.reserved_bytes


def test_a_named_pick_outside_the_swept_widths_has_a_closed_form_r():
    """reserve (exact) picked beside padded sweeps only: r_closed_form answers (T: exact width grows once)."""
    rec = recommend(model="smollm2-135m", seq=1024, prompt=960, widths=("padded",), named=("reserve",))
    assert rec.policy.label == "reserve"
    assert rec.r_closed_form == 64.0
