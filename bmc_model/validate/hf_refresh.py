"""validate --hf --refresh: refreshing a case's profile around and within its repetitions, and predicting each
repetition from the refreshes over its span (hf_generate.py's module docstring says why)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from bmc_model.core.errors import BMCError

REFRESH_EVERY = 64  # decode steps between the refreshes within a repetition (refresh=True, step by step)
INNER_REFRESH_S = 3.0  # of measuring, each of those: several of them stand for a repetition, their mean


def refreshed_at(prof: Any) -> str | None:
    """The profile's refresh timestamp (Profile.refresh.at, or a JSON section's "at"); None without one."""
    section = getattr(prof, "refresh", None)
    at = section.get("at") if isinstance(section, dict) else getattr(section, "at", None)
    return None if at is None else str(at)


def refresh_case(prof: Any, spec: Any, case: str, seq: int, prompt: int, batch: int, phases: dict[str, float],
                 refreshes: list[dict], say: Callable[[str], None], when: str, budget_s: float | None = None,
                 optional: bool = False) -> Any:
    """`prof` (as calibrated: no refresh carries over) refreshed at the case's sizes (budget_s: of measuring;
    None: the refresh's default); its section and seconds go into `refreshes` and `phases` under the case and
    `when` ("before", "rep k step j", "after rep k"). optional: a BMCError (beside every cache at once RAM may
    not hold the refresh's buffers) is recorded as skipped and None returned."""
    from bmc_model.calibrate.refresh import refresh_profile  # here: only --refresh measures

    say(f"{case}: refreshing the profile ({when})")
    t1 = time.perf_counter()
    more = {} if budget_s is None else {"budget_s": budget_s}
    try:
        out = refresh_profile(prof, model=spec, seq=seq, prompt=prompt, batch=batch, **more)
    except BMCError as e:
        if not optional:
            raise
        refreshes.append({"case": case, "when": when, "skipped": str(e)})
        return None
    phases[f"{case} refresh {when}"] = time.perf_counter() - t1
    refreshes.append({"case": case, "when": when, **out.refresh.to_dict()})
    return out


def repetition_predictions(rep_profs: list[list[Any]], predict_all: Callable[[Any], dict[str, Any]],
                           known: dict[int, dict[str, Any]]) -> tuple[dict[str, list[float]], dict[str, dict]]:
    """Each repetition's ms/token per cache, the mean over the profiles from its start to its end (rep_profs,
    one list per repetition), and each cache's breakdown, each term's median over the repetitions of its mean.
    predict_all(profile): every cache's Prediction; known: those already made, by id(profile)."""
    predicted_with = dict(known)
    for p in (p for ps in rep_profs for p in ps if id(p) not in predicted_with):
        predicted_with[id(p)] = predict_all(p)
    names = list(next(iter(predicted_with.values())))
    by_rep = [{k: [predicted_with[id(p)][k] for p in ps] for k in names} for ps in rep_profs]
    rep_ms = {k: [statistics.fmean(p.ms_per_token for p in r[k]) for r in by_rep] for k in names}
    terms = {k: by_rep[0][k][0].breakdown for k in names}
    rep_breakdown = {k: {t: statistics.median(statistics.fmean(p.breakdown[t] for p in r[k]) for r in by_rep)
                         for t in terms[k]} for k in names}
    return rep_ms, rep_breakdown
