"""validate --refresh (plain and --sd): the profile refreshed before the run, within each repeat and after it,
and each repeat predicted from the refreshes over its span.

One refresh before the run cannot follow a host that moves by 10-60% within minutes, often as a step
(docs/results.md#refreshes-within-every-repetition): each repeat is predicted as the median of its
predictions from every refresh from its start to its end, and a row as the median of its repeats', as its
measurement is. The refreshes within a repeat are shorter and run between two steps (interleave.run_interleaved's
pauses), so no step's time includes them. The recommendation comes from the refresh before the run.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from bmc_model.core.errors import BMCError

WITHIN_REFRESHES = 2  # per repeat run step by step, evenly spaced in its tokens, besides those at its two ends
WITHIN_REFRESH_S = 3.0  # of measuring, each of those


class RepeatRefresher:
    """Refreshes around and within repeats. refresh(budget_s=None): the profile as calibrated, refreshed now
    (None: the refresh's default budget; no refresh carries over). log: every refresh's section and `when`;
    spans: each repeat's refreshed profiles, from its start to its end."""

    def __init__(self, refresh: Callable[..., Any], say: Callable[[str], None] = lambda _m: None) -> None:
        self._refresh, self._say = refresh, say
        self.log: list[dict[str, Any]] = []
        self.spans: list[list[Any]] = []
        self.first = self._last = self._take("before")

    def start_repeat(self) -> None:
        self.spans.append([self._last])

    def within(self, k: int) -> None:
        """A pause hook (run_interleaved(pause=)): a short refresh, skipped (and logged so) where RAM beside
        every cache at once cannot hold its buffers; the refreshes at the repeat's ends still stand for it."""
        got = self._take(f"rep {len(self.spans)} pause {k + 1}", WITHIN_REFRESH_S, optional=True)
        if got is not None:
            self.spans[-1].append(got)

    def end_repeat(self) -> None:
        self._last = self._take(f"after rep {len(self.spans)}")
        self.spans[-1].append(self._last)

    def _take(self, when: str, budget_s: float | None = None, optional: bool = False) -> Any:
        self._say(f"refreshing the profile ({when})")
        try:
            out = self._refresh(**({} if budget_s is None else {"budget_s": budget_s}))
        except BMCError as e:
            if not optional:
                raise
            self.log.append({"when": when, "skipped": str(e)})
            return None
        self.log.append({"when": when, **out.refresh.to_dict()})
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
