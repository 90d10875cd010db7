"""What `bmc-tune validate` found: each configuration measured beside its prediction, and the summary figures.

to_dict() is the JSON `validate --json` prints and `--out` writes: fields in that order, summaries derived.
Peak resident KV memory (measured in a fresh process per configuration, decode_memprobe.py) sits beside
predict()'s peak_resident_bytes in each row; rows carry the measured figure only where it was probed.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bmc_model.core.policy import NAMED
from bmc_model.core.predict import Prediction
from bmc_model.validate.compare import Chosen, Config, asdict_where_set, error_pct, policy_fields


@dataclass
class RowResult:
    """One configuration: the median of its runs beside predict()'s figure."""

    name: str
    policy: str
    growth: str
    r: int | None
    width: str
    measured_ms: float
    measured_runs_ms: list[float]
    predicted_ms: float
    error_pct: float
    growth_events_measured: float
    growth_events_predicted: float
    predicted_breakdown_ms: dict[str, float]
    predicted_reserved_bytes: float  # the most KV bytes reserved at once (Prediction.reserved_bytes)
    predicted_peak_resident_bytes: float  # the most KV pages resident at once (Prediction.peak_resident_bytes)
    predicted_ms_probed: float | None = None  # predicted with the probed profile (CPU runs only)
    error_pct_probed: float | None = None
    measured_peak_resident_bytes: float | None = None  # the fresh-process memory probe's (decode_memprobe.py)
    resident_error_pct: float | None = None
    predicted_ms_by_rep: list[float] | None = None  # validate --refresh: each repeat's, from the refreshes over it

    @classmethod
    def of(cls, c: Config, runs_ms: list[float], events: float, pred: Prediction,
           probed: Prediction | None, resident: float | None = None,
           by_rep: tuple[list[float], dict[str, float]] | None = None) -> RowResult:
        """resident: the measured peak resident KV bytes (None: not probed). by_rep: each repeat's predicted
        ms/token and the breakdown over them (repeat_refresh.repetition_predictions): the row is then predicted
        as their median, as it is measured; else as `pred`."""
        meas = statistics.median(runs_ms)
        more: dict[str, Any] = {} if probed is None else {"predicted_ms_probed": probed.ms_per_token,
                                                          "error_pct_probed": error_pct(probed.ms_per_token, meas)}
        if resident is not None:
            more["measured_peak_resident_bytes"] = resident
            more["resident_error_pct"] = error_pct(pred.peak_resident_bytes, resident) if resident > 0 else None
        ms, breakdown = pred.ms_per_token, pred.breakdown
        if by_rep is not None:
            ms, breakdown = statistics.median(by_rep[0]), by_rep[1]
            more["predicted_ms_by_rep"] = by_rep[0]
        return cls(**policy_fields(c.name, c.policy), measured_ms=meas, measured_runs_ms=runs_ms,
                   predicted_ms=ms, error_pct=error_pct(ms, meas),
                   growth_events_measured=events, growth_events_predicted=pred.growth_events,
                   predicted_breakdown_ms=breakdown, predicted_reserved_bytes=pred.reserved_bytes,
                   predicted_peak_resident_bytes=pred.peak_resident_bytes, **more)

    def to_dict(self) -> dict[str, Any]:
        return asdict_where_set(self, ("predicted_ms_probed", "error_pct_probed", "measured_peak_resident_bytes",
                                       "resident_error_pct", "predicted_ms_by_rep"))


def _median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


@dataclass
class ValidateResult:
    model: str
    layers: int
    seq: int
    prompt: int
    batch: int
    dtype: str
    device: str  # "cpu", or "cuda (<the GPU's name>)"
    threads: int
    repeats: int
    wall_s: float
    interleave: str  # "step": side by side, step by step; "run": whole runs in turn
    rows: list[RowResult]
    recommended: Chosen
    token_mismatch: list[str]  # configurations whose tokens differ from the first run's
    host: dict[str, Any]
    profile: dict[str, Any]
    geometry_rho_bytes: float
    probe_factors: dict[str, float] | None = None  # host now over the profile, per term (None: no probe)
    probe_width: int = 0  # the length the probe timed cat and attention at
    synthetic_prompt: bool = True
    memory_probe: dict[str, Any] | None = None  # how the peak resident KV was measured (None: not measured)
    refresh: dict[str, Any] | None = None  # compare.refresh_report: a refreshed profile's errors without it

    def row(self, name: str) -> RowResult | None:
        return next((r for r in self.rows if r.name == name), None)

    def named_row(self, name: str) -> RowResult | None:
        """The row of named policy `name`; the recommended one where recommend() chose that very policy
        (plan_configs runs it once, as "recommended")."""
        got = self.row(name)
        if got is None and name in NAMED:
            got = next((r for r in self.rows if r.policy == NAMED[name].label), None)
        return got

    @property
    def abs_errors(self) -> list[float]:
        return [abs(r.error_pct) for r in self.rows]

    @property
    def abs_errors_probed(self) -> list[float]:
        return [abs(r.error_pct_probed) for r in self.rows if r.error_pct_probed is not None]

    @property
    def abs_resident_errors(self) -> list[float]:
        return [abs(r.resident_error_pct) for r in self.rows if r.resident_error_pct is not None]

    @property
    def median_abs_resident_error_pct(self) -> float | None:
        return _median(self.abs_resident_errors)

    @property
    def max_abs_resident_error_pct(self) -> float | None:
        return max(self.abs_resident_errors, default=None)

    @property
    def median_abs_error_pct(self) -> float:
        return statistics.median(self.abs_errors)

    @property
    def median_abs_error_pct_probed(self) -> float | None:
        return _median(self.abs_errors_probed)

    @property
    def best(self) -> RowResult:
        return min(self.rows, key=lambda r: r.measured_ms)

    @property
    def recommended_ms(self) -> float:
        return self.row("recommended").measured_ms  # type: ignore[union-attr]

    @property
    def regret_pct(self) -> float:
        return 100.0 * (self.recommended_ms / self.best.measured_ms - 1.0)

    def speedup(self, name: str) -> float | None:
        """name's measured ms over the recommended configuration's (None when name did not run)."""
        r = self.named_row(name)
        return r.measured_ms / self.recommended_ms if r is not None else None

    @property
    def overhead_vs_reserve(self) -> float | None:
        floor = self.named_row("reserve")
        return self.recommended_ms / floor.measured_ms if floor is not None else None

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "model": self.model, "layers": self.layers, "seq": self.seq, "prompt": self.prompt, "batch": self.batch,
            "dtype": self.dtype, "device": self.device, "synthetic_prompt": self.synthetic_prompt,
            "threads": self.threads, "repeats": self.repeats, "wall_s": self.wall_s, "interleave": self.interleave,
            "rows": [r.to_dict() for r in self.rows],
            "median_abs_error_pct": self.median_abs_error_pct, "max_abs_error_pct": max(self.abs_errors),
            "median_abs_error_pct_probed": self.median_abs_error_pct_probed,
            "max_abs_error_pct_probed": max(self.abs_errors_probed, default=None),
            "probe": {"factors": self.probe_factors, "width": self.probe_width}
            if self.probe_factors is not None else None,
            "median_abs_resident_error_pct": self.median_abs_resident_error_pct,
            "max_abs_resident_error_pct": self.max_abs_resident_error_pct,
            "memory_probe": self.memory_probe,
            "refresh": self.refresh,
            "recommended": asdict(self.recommended),
            "recommended_r": self.recommended.r, "recommended_width": self.recommended.width,
            "best_measured": {"name": best.name, "policy": best.policy},
            "best_measured_r": best.r,
            "regret_pct": self.regret_pct,
            "speedup_vs_dynamic": self.speedup("dynamic"), "speedup_vs_static": self.speedup("static"),
            "speedup_vs_mlx_256": self.speedup("mlx"), "speedup_vs_geometric": self.speedup("geometric"),
            "overhead_vs_reserve": self.overhead_vs_reserve,
            "token_mismatch": self.token_mismatch,
            "host": self.host,
            "profile": self.profile,
            "geometry_rho_bytes": self.geometry_rho_bytes,
        }
