"""validate --hf --refresh: refreshing a case's profile around and within its repetitions; each repetition is
then predicted from the refreshes over its span (repeat_refresh.repetition_predictions; hf_generate.py's module
docstring says why)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bmc_model.core.errors import BMCError

REFRESH_EVERY = 64  # decode steps between the refreshes within a repetition (refresh=True, step by step)
INNER_REFRESH_S = 3.0  # of measuring, each of those: several of them stand for a repetition, their median


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
