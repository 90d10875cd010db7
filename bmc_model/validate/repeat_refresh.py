"""validate --refresh (plain, --sd and --hf): the profile refreshed before the run (--hf: each case), within
each repeat and after it, and each repeat predicted from the refreshes over its span.

One refresh before the run cannot follow a host that moves by 10-60% within minutes, often as a step
(docs/results.md#refreshes-within-every-repetition): each repeat is predicted as the median of its
predictions from every refresh from its start to its end, and a row as the median of its repeats', as its
measurement is. The refreshes within a repeat are shorter and run between two steps (interleave.run_interleaved's
pauses), so no step's time includes them. The recommendation comes from the refresh before the run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from bmc_model.core.errors import BMCError

WITHIN_REFRESHES = 2  # per repeat run step by step, evenly spaced in its tokens, besides those at its two ends
WITHIN_REFRESH_S = 3.0  # of measuring, each refresh within a repeat (validate --hf's too)


def refreshed_at(prof: Any) -> str | None:
    """The profile's refresh timestamp (Profile.refresh.at, or a JSON section's "at"); None without one."""
    section = getattr(prof, "refresh", None)
    at = section.get("at") if isinstance(section, dict) else getattr(section, "at", None)
    return None if at is None else str(at)


class RepeatRefresher:
    """Refreshes before a run, within and after each of its repeats, and each repeat's profiles from its start
    to its end (spans). refresh(budget_s=None): the profile as calibrated, refreshed now (None: the refresh's
    default budget; no refresh carries over); refresh None: nothing is refreshed and every span is `profile`.
    log: every refresh's section and `when`, after the fields of `tag` (validate --hf passes one list for all
    its cases, each tagged with its case); on_refreshed(when, wall seconds): after each refresh made."""

    def __init__(self, profile: Any, refresh: Callable[..., Any] | None = None,
                 say: Callable[[str], None] = lambda _m: None, log: list[dict[str, Any]] | None = None,
                 tag: dict[str, Any] | None = None,
                 on_refreshed: Callable[[str, float], None] = lambda _w, _s: None) -> None:
        self._refresh, self._say, self._tag, self._on_refreshed = refresh, say, tag or {}, on_refreshed
        self.log: list[dict[str, Any]] = [] if log is None else log
        self.spans: list[list[Any]] = []
        self.first = self.last = profile if refresh is None else self._take("before")

    @property
    def refreshing(self) -> bool:
        return self._refresh is not None

    def retarget(self, refresh: Callable[..., Any], when: str) -> None:
        """From here on refresh with `refresh` (validate --sd: at verification's rows, known only once the tuner has
        chosen gamma from the first refresh), and refresh with it now: that is the refresh before the run."""
        if self.refreshing:
            self._refresh = refresh
            self.first = self.last = self._take(when)

    def start_repeat(self) -> None:
        self.spans.append([self.last])

    def within(self, label: str) -> None:
        """A short refresh within the current repeat ("rep k <label>"), skipped (and logged so) where RAM beside
        every cache at once cannot hold its buffers: the refreshes at the repeat's ends still stand for it."""
        if self.refreshing:
            got = self._take(f"rep {len(self.spans)} {label}", WITHIN_REFRESH_S, optional=True)
            if got is not None:
                self.spans[-1].append(got)

    def pause(self, k: int) -> None:
        """run_interleaved's pause hook: the refresh within a repeat at its (k + 1)-th pause."""
        self.within(f"pause {k + 1}")

    def end_repeat(self) -> None:
        if self.refreshing:
            self.last = self._take(f"after rep {len(self.spans)}")
            self.spans[-1].append(self.last)

    def _take(self, when: str, budget_s: float | None = None, optional: bool = False) -> Any:
        assert self._refresh is not None
        self._say(f"refreshing the profile ({when})")
        t0 = time.perf_counter()
        try:
            out = self._refresh(**({} if budget_s is None else {"budget_s": budget_s}))
        except BMCError as e:
            if not optional:
                raise
            self.log.append({**self._tag, "when": when, "skipped": str(e)})
            return None
        self._on_refreshed(when, time.perf_counter() - t0)
        self.log.append({**self._tag, "when": when, **out.refresh.to_dict()})
        return out


def repetition_predictions(rep_profs: list[list[Any]], predict_all: Callable[[Any], dict[str, Any]],
                           known: dict[int, dict[str, Any]]) -> tuple[dict[str, list[float]], dict[str, dict]]:
    """Each repetition's ms/token per configuration, the median over the profiles from its start to its end
    (rep_profs, one list per repetition), and each one's breakdown, each term's median over the repetitions of
    its median. predict_all(profile): every configuration's Prediction; known: those already made, by
    id(profile). The median, not the mean: a 3 s refresh can land on a spike of a few seconds that the
    repetition's minute around it did not see (docs/results.md, "Plain validate and validate --sd refreshed
    within every repeat")."""
    predicted_with = dict(known)
    for p in (p for ps in rep_profs for p in ps if id(p) not in predicted_with):
        predicted_with[id(p)] = predict_all(p)
    names = list(next(iter(predicted_with.values())))
    by_rep = [{k: [predicted_with[id(p)][k] for p in ps] for k in names} for ps in rep_profs]
    rep_ms = {k: [statistics.median(p.ms_per_token for p in r[k]) for r in by_rep] for k in names}
    terms = {k: by_rep[0][k][0].breakdown for k in names}
    rep_breakdown = {k: {t: statistics.median(statistics.median(p.breakdown[t] for p in r[k]) for r in by_rep)
                         for t in terms[k]} for k in names}
    return rep_ms, rep_breakdown
