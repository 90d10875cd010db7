"""The BMCCache configurations `validate --hf` measures beside its four caches, and the regret and error
summary over them.

Regret asks whether the tuner's pick was the best BMCCache the host could have run: it is the tuned BMCCache's
measured ms/token over the best measured among it, BMCCache(policy="reserve") and the grid, case by case;
regret_pct_paired compares the tuned BMCCache with each other one repetition by repetition
(compare.paired_ratio), as they ran side by side; regret_pct_steps does so step by step, with a 95% interval
(compare.step_ratio_ci), where the caches ran step by step. With reserve (one lazily backed allocation, exact views: r
as large as it gets) the grid is five configurations a person might pick by hand: r=64 and r=256 with a padded
width (HF StaticCache's masked path), r=256 exact (mlx-lm's choice) and geometric doubling (exact). Left out,
because every configuration costs a full run per repetition (validate --hf --workload smollm2 --seq 1024 is
meant to finish in under 10 minutes here): r=64 exact (with an exact width r changes only how often the cache
grows, which r=256 exact and reserve already bracket) and r=1024 padded (up to 1024 spare rows read every
step, and still a copy at each growth: the slowest BMCCache of a SmolLM2 N=1024 smoke run).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from bmc_model.core.policy import NAMED, Policy
from bmc_model.validate.compare import paired_ratio, step_ratio_ci

GRID: tuple[Policy, ...] = (
    Policy("fixed", 64, width="padded"),
    Policy("fixed", 256, width="padded"),
    Policy("fixed", 256, width="exact"),
    Policy("geometric", factor=2.0, width="exact"),
)
PREFIX = "grid:"  # a grid row's cache name: "grid:" + its policy's label


def grid_name(policy: Policy) -> str:
    return PREFIX + policy.label


def is_grid(cache: str) -> bool:
    return cache.startswith(PREFIX)


def is_bmccache(cache: str) -> bool:
    """The caches that are BMCCache: the tuned one, reserve and the grid (their rows report grow_events)."""
    return cache in ("bmc", "reserve") or is_grid(cache)


def grid_policies(tuned: Policy, grid: Iterable[Policy] = GRID) -> dict[str, Policy]:
    """Cache name -> policy for each grid entry, without the tuned pick or a policy one of the four caches
    already runs (DynamicCache is r=1 exact, StaticCache static padded, reserve): each is measured once."""
    taken = {tuned, NAMED["dynamic"], NAMED["static"], NAMED["reserve"]}
    out: dict[str, Policy] = {}
    for pol in grid:
        if pol not in taken:
            taken.add(pol)
            out[grid_name(pol)] = pol
    return out


class MeasuredRow(Protocol):
    """What the summary reads of a row (hf_result.HFRowResult has it)."""

    workload: str
    seq: int
    batch: int
    cache: str
    policy: str
    measured_ms_per_token: float | None
    samples_ms_per_token: list[float | None]  # one per repetition, the caches side by side in each
    error_pct: float | None
    steps_ms_by_rep: list[list[float]] | None  # step by step side by side only


@dataclass
class CaseRegret:
    """One (workload, N, B): the tuned BMCCache against the best BMCCache measured, and the baselines."""

    case: str
    workload: str
    seq: int
    batch: int
    tuned_policy: str
    tuned_ms_per_token: float
    best_cache: str
    best_policy: str
    best_ms_per_token: float
    regret_pct: float  # 100 * (tuned / best - 1); 0 when the tuned pick measured best
    candidates: int  # BMCCache policies measured in this case, the tuned one included
    # against each other candidate, repetition by repetition: 100 * (the largest paired_ratio(tuned, it) - 1),
    # 0 when none is below 1; None: no repetition measured both
    regret_pct_paired: float | None
    tuned_slower_than_dynamic: bool | None  # medians; None: that cache did not run
    tuned_slower_than_static: bool | None
    # step by step: 100 * (tuned's total decode time / the candidate's - 1) as [value, low, high] of its 95%
    # interval (compare.step_ratio_ci), against the candidate where that value is largest; None: no steps
    regret_pct_steps: list[float] | None = None
    regret_steps_against: str | None = None


@dataclass
class RegretSummary:
    median_abs_error_pct: float | None  # over every measured row with a prediction
    max_abs_error_pct: float | None
    regret_pct: float | None  # the worst case's; None: no case had a measured tuned BMCCache
    per_case: list[CaseRegret] = field(default_factory=list)

    @property
    def regret_pct_paired(self) -> float | None:
        """The worst case's paired regret (None: no case had one)."""
        return max((c.regret_pct_paired for c in self.per_case if c.regret_pct_paired is not None), default=None)

    @property
    def regret_pct_steps_low(self) -> float | None:
        """The largest low end of the cases' step-by-step regret intervals: the regret the measurements show
        at 97.5% confidence (negative: the tuned pick is faster than every candidate). None: no steps."""
        return max((c.regret_pct_steps[1] for c in self.per_case if c.regret_pct_steps), default=None)

    def to_dict(self) -> dict[str, Any]:
        return {"median_abs_error_pct": self.median_abs_error_pct, "max_abs_error_pct": self.max_abs_error_pct,
                "regret_pct": self.regret_pct, "regret_pct_paired": self.regret_pct_paired,
                "regret_pct_steps_low": self.regret_pct_steps_low, "regret_by_case": [asdict(c) for c in self.per_case]}


def _slower(tuned: float, other: MeasuredRow | None) -> bool | None:
    if other is None or other.measured_ms_per_token is None:
        return None
    return tuned > other.measured_ms_per_token


def case_regret(rows: Sequence[MeasuredRow]) -> CaseRegret | None:
    """The regret of one case's rows (all the same workload, N, B); None without a measured tuned row."""
    by = {r.cache: r for r in rows}
    tuned = by.get("bmc")
    if tuned is None or tuned.measured_ms_per_token is None:
        return None
    # the same policy as the tuned pick in another row (reserve, when the tuner picks it) is no alternative:
    # their difference is the repetitions' scatter, not regret
    cands = [tuned] + [r for r in rows if r is not tuned and is_bmccache(r.cache) and r.policy != tuned.policy
                       and r.measured_ms_per_token is not None]
    best = min(cands, key=lambda r: r.measured_ms_per_token)  # type: ignore[arg-type,return-value]
    t, b = tuned.measured_ms_per_token, best.measured_ms_per_token
    assert b is not None
    paired = [x for x in (paired_ratio(tuned.samples_ms_per_token, c.samples_ms_per_token) for c in cands[1:])
              if x is not None]
    steps = [(ci, c.cache) for c in cands[1:] if tuned.steps_ms_by_rep and c.steps_ms_by_rep
             and (ci := step_ratio_ci(tuned.steps_ms_by_rep, c.steps_ms_by_rep)) is not None]
    worst = max(steps, default=None)  # the largest ratio, tuned over the candidate
    return CaseRegret(
        case=f"{tuned.workload} N={tuned.seq} B={tuned.batch}", workload=tuned.workload, seq=tuned.seq,
        batch=tuned.batch, tuned_policy=tuned.policy, tuned_ms_per_token=t, best_cache=best.cache,
        best_policy=best.policy, best_ms_per_token=b, regret_pct=100.0 * (t / b - 1.0), candidates=len(cands),
        regret_pct_paired=100.0 * max(0.0, max(paired) - 1.0) if paired else (0.0 if len(cands) == 1 else None),
        tuned_slower_than_dynamic=_slower(t, by.get("dynamic")), tuned_slower_than_static=_slower(t, by.get("static")),
        regret_pct_steps=[100.0 * (x - 1.0) for x in worst[0]] if worst else None,
        regret_steps_against=worst[1] if worst else None)


def summarize(rows: Sequence[MeasuredRow]) -> RegretSummary:
    """Prediction error over every row, and regret case by case (cases in the order they first appear)."""
    errs = [abs(r.error_pct) for r in rows if r.error_pct is not None and r.measured_ms_per_token is not None]
    cases: dict[tuple[str, int, int], list[MeasuredRow]] = {}
    for r in rows:
        cases.setdefault((r.workload, r.seq, r.batch), []).append(r)
    per_case = [c for c in (case_regret(v) for v in cases.values()) if c is not None]
    return RegretSummary(
        median_abs_error_pct=statistics.median(errs) if errs else None, max_abs_error_pct=max(errs, default=None),
        regret_pct=max((c.regret_pct for c in per_case), default=None), per_case=per_case)
