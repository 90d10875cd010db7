"""What `bmc-tune validate --hf` found: HF generate() with each cache, measured beside predict(), the
comparisons between the caches evaluated on the measured numbers (reported, never asserted), and the
prediction error and the tuned BMCCache's regret over the grid (hf_grid.summarize).

to_dict() is the JSON `validate --hf --json` prints and benchmarks/hf_generate.py writes: fields in that order.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from bmc_model.validate.compare import asdict_where_set, paired_ratios, step_ratio_ci
from bmc_model.validate.hf_grid import RegretSummary, summarize


@dataclass
class HFRowResult:
    """One (workload, N, B, cache): decode ms/token, median over repetitions, beside predict()'s."""

    workload: str
    model: str
    seq: int
    prompt: int
    batch: int
    cache: str  # "dynamic", "static", "bmc" or "reserve" (workloads.CACHES), or "grid:" + policy (hf_grid.py)
    policy: str
    policy_source: str  # bmc: where its policy came from; "grid" for the grid; "" for the others
    measured_ms_per_token: float | None
    samples_ms_per_token: list[float | None]
    predicted_ms_per_token: float
    error_pct: float | None
    speedup_vs_dynamic: float | None
    predicted_speedup_vs_dynamic: float
    predicted_breakdown_ms: dict[str, float]
    predicted_peak_kv_bytes: float
    predicted_kv_bytes: float
    predicted_peak_resident_bytes: float  # predict(..., runtime="hf").peak_resident_bytes of the cache's policy
    tokens_match_dynamic: bool
    kv_bytes_final: int
    grow_events: int | None  # BMCCache kinds (bmc, reserve, the grid) only
    memory: dict[str, Any] | None  # the fresh-process memory probes' median (memprobe.py); None without (and grid)
    measured_peak_resident_bytes: float | None  # memory's decode_peak_increase; None without probes
    resident_error_pct: float | None  # predicted over measured peak resident, signed as error_pct
    interleave: str  # "step": side by side, step by step; "run": whole runs in turn
    # each repetition's prediction (with refresh: the median over the refreshes from its start to its end);
    # their median is predicted_ms_per_token
    predicted_ms_per_token_by_rep: list[float] = field(default_factory=list)
    error_pct_case_refresh: float | None = None  # with refresh: the error from the refresh before the case alone
    # side by side step by step (interleave "step"): every decode step's ms, repetition by repetition; step i of
    # every cache in a repetition ran in the same round (compare.step_ratio_ci pairs them)
    steps_ms_by_rep: list[list[float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict_where_set(self, ("grow_events", "error_pct_case_refresh", "steps_ms_by_rep"))


@dataclass
class CaseCheck:
    case: str
    bmc_speedup_vs_dynamic: float
    bmc_speedup_vs_static: float
    paired_speedups: dict[str, list[float]]  # per repetition (the caches ran side by side): the other's time / BMC's
    decode_peak_increase_bytes: dict[str, Any] | None = None  # with memory probes only
    # step by step: the other's total decode time / BMC's, [ratio, low, high] (compare.step_ratio_ci)
    speedup_ci95: dict[str, list[float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict_where_set(self, ("decode_peak_increase_bytes", "speedup_ci95"))


@dataclass
class Checks:
    """bmc_never_slower compares medians; bmc_never_slower_paired the median of the repetitions' ratios
    (compare.paired_ratio: the caches ran side by side in each). bmc_never_slower_in_any_repetition is False
    only where BMC was slower than a baseline in every repetition: medians a fraction of a percent apart at a
    tie otherwise count as slower half the time. bmc_never_significantly_slower is False only where a baseline's
    total decode time over BMC's has its whole 95% interval below 1 (compare.step_ratio_ci, the steps paired
    round by round); None where no case ran step by step. None: no case to judge."""

    bmc_2x_over_dynamic_at_kv_4096: bool | None = None
    bmc_never_slower: bool = True
    bmc_never_slower_paired: bool = True
    bmc_never_slower_in_any_repetition: bool = True
    bmc_never_significantly_slower: bool | None = None
    bmc_peak_below_dynamic: bool | None = None
    per_case: list[CaseCheck] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "per_case": [c.to_dict() for c in self.per_case]}


def _peaks(d: HFRowResult, s: HFRowResult, b: HFRowResult, r: HFRowResult | None = None) -> dict[str, Any] | None:
    md, mb = d.memory or {}, b.memory or {}
    if "decode_peak_increase" not in md or "decode_peak_increase" not in mb:
        return None
    return {"dynamic": md["decode_peak_increase"], "static": (s.memory or {}).get("decode_peak_increase"),
            "bmc": mb["decode_peak_increase"],
            **({"reserve": (r.memory or {}).get("decode_peak_increase")} if r is not None else {})}


def check(rows: list[HFRowResult]) -> Checks:
    """BMC against DynamicCache and StaticCache, case by case, on the measured numbers."""
    by = {(r.workload, r.seq, r.batch, r.cache): r for r in rows}
    out = Checks()
    two_x: list[bool] = []
    peaks: list[bool] = []
    for c in sorted({(r.workload, r.seq, r.batch) for r in rows}):
        d, s, b = (by.get((*c, k)) for k in ("dynamic", "static", "bmc"))
        if not (d and s and b) or b.measured_ms_per_token is None:
            continue
        sp_d = d.measured_ms_per_token / b.measured_ms_per_token  # type: ignore[operator]
        sp_s = s.measured_ms_per_token / b.measured_ms_per_token  # type: ignore[operator]
        paired = {k: paired_ratios(r.samples_ms_per_token, b.samples_ms_per_token) for k, r in (("dynamic", d),
                                                                                                  ("static", s))}
        cis = {k: step_ratio_ci(r.steps_ms_by_rep, b.steps_ms_by_rep) for k, r in (("dynamic", d), ("static", s))
               if r.steps_ms_by_rep and b.steps_ms_by_rep}
        ci95 = {k: list(v) for k, v in cis.items() if v is not None} or None
        item = CaseCheck(f"{c[0]} N={c[1]} B={c[2]}", sp_d, sp_s, paired, _peaks(d, s, b, by.get((*c, "reserve"))),
                         ci95)
        if ci95:
            out.bmc_never_significantly_slower = bool(out.bmc_never_significantly_slower is not False
                                                      and all(hi >= 1.0 for _, _, hi in ci95.values()))
        out.bmc_never_slower = bool(out.bmc_never_slower and sp_d >= 1.0 and sp_s >= 1.0)
        # the median of the repetitions' ratios (compare.paired_ratio)
        out.bmc_never_slower_paired = bool(out.bmc_never_slower_paired and all(statistics.median(v) >= 1.0
                                                                             for v in paired.values() if v))
        # slower in every repetition: a difference larger than the repetitions' own scatter
        out.bmc_never_slower_in_any_repetition = bool(
            out.bmc_never_slower_in_any_repetition and all(max(v) >= 1.0 for v in paired.values() if v))
        if c[0] == "kv" and c[1] == 4096:
            two_x.append(sp_d >= 2.0)
        if item.decode_peak_increase_bytes is not None:
            peaks.append(item.decode_peak_increase_bytes["bmc"] < item.decode_peak_increase_bytes["dynamic"])
        out.per_case.append(item)
    out.bmc_2x_over_dynamic_at_kv_4096 = all(two_x) if two_x else None
    out.bmc_peak_below_dynamic = all(peaks) if peaks else None
    return out


@dataclass
class HFValidateResult:
    date: str  # ISO 8601, UTC
    host: dict[str, Any]
    transformers: str
    torch: str
    threads: int
    dtype: str
    new_tokens: int
    reps: int
    memory_reps: int  # 0: no memory probes
    prefill: str
    quick: bool
    bmc_trim: bool
    profile: Any
    hf_overhead_calibrated: bool
    workloads: dict[str, str]  # name -> what it is
    notes: list[str]
    rows: list[HFRowResult]
    grid: list[str] = field(default_factory=list)  # the grid's policy labels (hf_grid.GRID unless given)
    profile_refreshed_at: str | None = None  # the profile's refresh["at"] (calibrate/refresh.py); None: never
    refreshes: list[dict] = field(default_factory=list)  # every refresh ({"case": ..., "when": ..., "at": ...})
    estimated_s: float | None = None  # the wall time the cost model expected (hf_budget.py)
    wall_s: float | None = None
    phases_s: dict[str, float] = field(default_factory=dict)  # "<case> timed", "<workload> build", ...: seconds

    # computed once: the step-by-step intervals bootstrap every case's steps, and the JSON and the report each
    # read them (rows are not changed once a result is made)
    @cached_property
    def checks(self) -> Checks:
        return check(self.rows)

    @cached_property
    def regret(self) -> RegretSummary:
        return summarize(self.rows)

    @property
    def abs_errors_case_refresh(self) -> list[float]:
        """With refresh: every row's |error| had its case been predicted from the refresh before it alone."""
        return [abs(r.error_pct_case_refresh) for r in self.rows if r.error_pct_case_refresh is not None]

    @property
    def abs_resident_errors(self) -> list[float]:
        return [abs(r.resident_error_pct) for r in self.rows if r.resident_error_pct is not None]

    def resident_errors_by_cache(self) -> dict[str, float]:
        """Each cache's median |resident error| % over the cases probed."""
        by: dict[str, list[float]] = {}
        for r in self.rows:
            if r.resident_error_pct is not None:
                by.setdefault(r.cache, []).append(abs(r.resident_error_pct))
        return {k: statistics.median(v) for k, v in by.items()}

    def to_dict(self) -> dict[str, Any]:
        head = {k: getattr(self, k) for k in ("date", "host", "transformers", "torch", "threads", "dtype",
                                             "new_tokens", "reps", "memory_reps", "prefill", "quick", "bmc_trim",
                                             "grid", "profile", "profile_refreshed_at", "refreshes",
                                             "hf_overhead_calibrated", "workloads", "notes", "estimated_s",
                                             "wall_s", "phases_s")}
        errs = self.abs_resident_errors
        once = self.abs_errors_case_refresh
        return {"schema": 1, "kind": "hf-generate", **head, "rows": [r.to_dict() for r in self.rows],
                **self.regret.to_dict(),
                "median_abs_error_pct_case_refresh": statistics.median(once) if once else None,
                "max_abs_error_pct_case_refresh": max(once, default=None),
                "median_abs_resident_error_pct": statistics.median(errs) if errs else None,
                "max_abs_resident_error_pct": max(errs, default=None),
                "abs_resident_error_pct_by_cache": self.resident_errors_by_cache(),
                "checks": self.checks.to_dict()}
