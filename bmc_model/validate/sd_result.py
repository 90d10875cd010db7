"""What `bmc-tune validate --sd` found: plain and speculative decoding, on cat and on BMC, measured beside
their predictions; the acceptance they ran at; the verify matmuls timed alongside; the tuner's verdict.

to_dict() is the JSON `validate --sd --json` prints and benchmarks/sd_bench.py writes: fields in that order.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from bmc_model.core.curves import weights_row_factor
from bmc_model.core.decide import Recommendation
from bmc_model.core.predict import Prediction
from bmc_model.core.profile import Profile
from bmc_model.core.workload import Geometry
from bmc_model.validate.compare import Chosen, Config, asdict_where_set, error_pct, policy_fields

if TYPE_CHECKING:  # runtime types, named only: this module stays free of torch
    from bmc_model.calibrate.probe import MatmulProbe
    from bmc_model.runtime.speculative import SDResult, SDStats

SD_ONLY = ("iterations", "iteration_ms_median", "advance_measured", "advance_predicted", "acceptance")


@dataclass
class SDRowResult:
    """One configuration (plain or SD, cat or BMC): the median of its runs beside its two predictions."""

    name: str
    policy: str
    growth: str
    r: int | None
    width: str
    gamma: int  # 0: plain decoding
    measured_ms: float
    measured_runs_ms: list[float]
    predicted_ms: float
    error_pct: float
    growth_events_measured: int
    growth_events_predicted: float
    predicted_breakdown_ms: dict[str, float]
    first_token_mismatch: int | None  # the first step whose token differs from the reference's
    predicted_ms_probed: float
    error_pct_probed: float
    iterations: int | None = None  # SD rows only, from here on
    iteration_ms_median: float | None = None
    advance_measured: float | None = None
    advance_predicted: float | None = None
    acceptance: dict[str, Any] | None = None
    draft_growth_events: int | None = None  # with a draft model only
    predicted_ms_by_rep: list[float] | None = None  # validate --sd --refresh: each repeat's, from its refreshes

    @classmethod
    def of(cls, c: Config, runs_ms: list[float], growth_events: int, mismatch: int | None, pred: Prediction,
           probed: Prediction, sd: SDResult | None,
           by_rep: tuple[list[float], dict[str, float]] | None = None) -> SDRowResult:
        """by_rep: each repeat's predicted ms/token and the breakdown over them (as RowResult.of)."""
        meas = statistics.median(runs_ms)
        ms, breakdown = pred.ms_per_token, pred.breakdown
        more: dict[str, Any] = {}
        if sd is not None:
            more = {"iterations": len(sd.iter_s), "iteration_ms_median": 1e3 * statistics.median(sd.iter_s),
                    "advance_measured": sd.stats.advance, "advance_predicted": pred.advance,
                    "acceptance": sd.stats.to_dict(), "draft_growth_events":
                        sd.draft_cache_stats.growth_events if sd.draft_cache_stats is not None else None}
        if by_rep is not None:
            ms, breakdown = statistics.median(by_rep[0]), by_rep[1]
            more["predicted_ms_by_rep"] = by_rep[0]
        return cls(**policy_fields(c.name, c.policy), gamma=c.gamma, measured_ms=meas, measured_runs_ms=runs_ms,
                   predicted_ms=ms, error_pct=error_pct(ms, meas),
                   growth_events_measured=growth_events, growth_events_predicted=pred.growth_events,
                   predicted_breakdown_ms=breakdown, first_token_mismatch=mismatch,
                   predicted_ms_probed=probed.ms_per_token, error_pct_probed=error_pct(probed.ms_per_token, meas),
                   **more)

    def to_dict(self) -> dict[str, Any]:
        return asdict_where_set(self, (*SD_ONLY, "draft_growth_events", "predicted_ms_by_rep"))


@dataclass
class AcceptanceProbe:
    """The untimed SD run before the measured ones, whose acceptance the tuner chose gamma and policy from."""

    gamma: int
    overall: float
    per_position: list[float]


@dataclass
class Acceptance:
    """The sd-bmc run's acceptance (what predictions and `recommend --alpha FILE` use)."""

    overall: float
    per_position: list[float]
    per_position_raw: list[float | None]
    per_position_smoothed: list[float]
    advance: float
    alpha_equivalent: float
    gamma: int
    iterations: int
    reached: list[int]
    accepted: list[int]
    synthetic: bool  # chosen (the oracle drafter), not earned by a drafter
    drafter: str
    workload: str
    probe: AcceptanceProbe

    @classmethod
    def of(cls, st: SDStats, *, gamma: int, synthetic: bool, drafter: str, workload: str,
           probe: AcceptanceProbe) -> Acceptance:
        return cls(st.overall, st.alpha_list(), st.per_position(), st.alpha_list(smooth=True), st.advance,
                   st.alpha_equivalent, gamma, st.iterations, st.reached, st.accepted, synthetic, drafter, workload,
                   probe)


@dataclass
class CatTiming:
    rows: int
    measured_ms: float | None
    over_profile: float | None


@dataclass
class AttentionTiming:
    width: int
    measured_ms: dict[str, dict[int, float]]
    exact_over_profile: float | None
    masked_over_profile: float | None


@dataclass
class VerifyMatmuls:
    """What the probe beside the runs measured, against what the profile charges."""

    rows: int  # gamma + 1: the verify pass's rows
    steps: int
    measured_ms: dict[str, dict[int, float]]
    one_row_over_profile: float
    cat: CatTiming
    attention: AttentionTiming
    measured_ratio: dict[str, float]  # m rows over one row
    profile_ratio: dict[str, float]

    @classmethod
    def of(cls, probe: MatmulProbe, drift: dict[str, float], prof: Profile, geo: Geometry, m: int,
           ratios: dict[str, dict[int, float]], cat_ms: float | None,
           attn_ms: dict[str, dict[int, float]]) -> VerifyMatmuls:
        return cls(m, len(probe.samples[("layers", 1)]), probe.medians_ms(), drift["weights"],
                   CatTiming(probe.cat_rows, cat_ms, drift.get("cat")),
                   AttentionTiming(probe.attn_width, attn_ms, drift.get("attn_exact"), drift.get("attn_masked")),
                   {p: ratios[p][m] for p in ratios},
                   {"layers": weights_row_factor(prof, m, geo.layer_weight_bytes),
                    "head": weights_row_factor(prof, m, geo.head_weight_bytes, "head_rows")})


@dataclass
class Tuner:
    """recommend()'s choice with gamma "auto" at the probed acceptance."""

    best_gamma: int
    verdict: str  # "SD" or "no SD"
    notes: list[str]
    best_policy: str
    predicted_ms: float
    predicted_no_sd_ms: float | None

    @classmethod
    def of(cls, rec: Recommendation) -> Tuner:
        no_sd = rec.no_sd
        return cls(rec.gamma, "SD" if rec.gamma > 0 else "no SD", rec.notes, rec.policy.label,
                   rec.prediction.ms_per_token, no_sd.ms_per_token if no_sd is not None else None)


@dataclass
class SDValidateResult:
    workload: str
    workload_note: str
    model: str
    layers: int
    prompt: int
    seq: int
    new_tokens: int
    synthetic_prompt: bool
    draft_model: str | None
    gamma: int  # the gamma the SD rows ran at
    gamma_requested: int | str
    repeats: int
    threads: int
    wall_s: float
    interleave: str  # "step": side by side, step by step; "run": whole runs in turn
    rows: list[SDRowResult]  # plain-cat, plain-bmc, sd-cat, sd-bmc
    acceptance: Acceptance  # the sd-bmc run's
    verify_matmuls: VerifyMatmuls
    tuner: Tuner
    recommended_plain: Chosen  # plain-bmc's configuration
    recommended_sd: Chosen  # sd-bmc's, at gamma
    host: dict[str, Any]
    profile: dict[str, Any]
    geometry_rho_bytes: float
    refresh: dict[str, Any] | None = None  # compare.refresh_report: a refreshed profile's errors without it

    def row(self, name: str) -> SDRowResult:
        return next(r for r in self.rows if r.name == name)

    def ratio(self, a: str, b: str, predicted: bool = False) -> float:
        """a's ms over b's: b's speedup over a."""
        ra, rb = self.row(a), self.row(b)
        return ra.predicted_ms / rb.predicted_ms if predicted else ra.measured_ms / rb.measured_ms

    @property
    def max_abs_error_pct_sd(self) -> float:
        return max(abs(self.row(n).error_pct) for n in ("sd-cat", "sd-bmc"))

    @property
    def max_abs_error_pct(self) -> float:
        return max(abs(r.error_pct) for r in self.rows)

    @property
    def max_abs_error_pct_sd_probed(self) -> float:
        return max(abs(self.row(n).error_pct_probed) for n in ("sd-cat", "sd-bmc"))

    @property
    def sd_pays_measured(self) -> bool:
        return self.row("sd-bmc").measured_ms < self.row("plain-bmc").measured_ms

    @property
    def tokens_match_reference(self) -> bool:
        return all(r.first_token_mismatch is None for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        head = ("workload", "workload_note", "model", "layers", "prompt", "seq", "new_tokens", "synthetic_prompt",
                "draft_model", "gamma", "gamma_requested", "repeats", "threads", "wall_s", "interleave")
        return {
            **{k: getattr(self, k) for k in head},
            "rows": [r.to_dict() for r in self.rows],
            "acceptance": asdict(self.acceptance),
            "speedup_sd_bmc_vs_sd_cat": self.ratio("sd-cat", "sd-bmc"),
            "speedup_sd_bmc_vs_plain_cat": self.ratio("plain-cat", "sd-bmc"),
            "speedup_sd_bmc_vs_plain_bmc": self.ratio("plain-bmc", "sd-bmc"),
            "speedup_sd_cat_vs_plain_cat": self.ratio("plain-cat", "sd-cat"),
            "predicted_speedup_sd_bmc_vs_sd_cat": self.ratio("sd-cat", "sd-bmc", predicted=True),
            "predicted_speedup_sd_bmc_vs_plain_cat": self.ratio("plain-cat", "sd-bmc", predicted=True),
            "prediction_errors_pct": {r.name: r.error_pct for r in self.rows},
            "max_abs_error_pct_sd": self.max_abs_error_pct_sd, "max_abs_error_pct": self.max_abs_error_pct,
            "prediction_errors_pct_probed": {r.name: r.error_pct_probed for r in self.rows},
            "max_abs_error_pct_sd_probed": self.max_abs_error_pct_sd_probed,
            "verify_matmuls": asdict(self.verify_matmuls),
            "sd_pays_measured": self.sd_pays_measured,
            "tuner": asdict(self.tuner),
            "verdict": self.tuner.verdict,
            "recommended": {"plain": asdict(self.recommended_plain),
                            "sd": {**asdict(self.recommended_sd), "gamma": self.gamma}},
            "tokens_match_reference": self.tokens_match_reference,
            "host": self.host,
            "profile": self.profile,
            "geometry_rho_bytes": self.geometry_rho_bytes,
            "refresh": self.refresh,
        }
