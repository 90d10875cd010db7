"""What validate's runs and results share: a configuration to run, the fields that name its policy in a
result row, the configuration recommend() chose as results report it, the signed prediction error, and the
rule for fields a row's JSON carries only where they apply, and the paired comparison of two rows' repetitions."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bmc_model.core.decide import Recommendation
from bmc_model.core.policy import Policy


@dataclass(frozen=True)
class Config:
    name: str  # "dynamic", "static", "recommended", "r=64 padded", "sd-bmc", ...
    policy: Policy
    gamma: int = 0  # draft tokens per iteration; 0: plain decoding


@dataclass(frozen=True)
class Chosen:
    """A configuration recommend() picked, as a result reports it."""

    policy: str
    r: int
    width: str

    @classmethod
    def of(cls, rec: Recommendation) -> Chosen:
        return cls(rec.policy.label, rec.r, rec.width)


def policy_fields(name: str, policy: Policy) -> dict[str, Any]:
    """A row's opening fields: its name and its policy's label, growth, r (fixed growth only) and width."""
    return {"name": name, "policy": policy.label, "growth": policy.growth,
            "r": policy.r if policy.growth == "fixed" else None, "width": policy.width_label}


def error_pct(predicted: float, measured: float) -> float:
    """Positive when the model predicts a slower step than was measured."""
    return 100.0 * (predicted - measured) / measured


def paired_ratios(a: Sequence[float | None], b: Sequence[float | None]) -> list[float]:
    """a's ms/token over b's, repetition by repetition, where both were measured."""
    return [x / y for x, y in zip(a, b) if x is not None and y]


def paired_ratio(a: Sequence[float | None], b: Sequence[float | None]) -> float | None:
    """The median of paired_ratios (None: no repetition measured both). The two ran side by side in each
    repetition, so each ratio is taken in the same seconds: the ratio of their medians mixes repetitions the host
    ran at different speeds."""
    ratios = paired_ratios(a, b)
    return statistics.median(ratios) if ratios else None


def asdict_where_set(obj: Any, optional: Iterable[str]) -> dict[str, Any]:
    """asdict(obj) without those optional fields that are None (absent from the JSON, not null)."""
    d = asdict(obj)
    for k in optional:
        if d[k] is None:
            del d[k]
    return d


def refresh_report(profile: Any, measured: dict[str, tuple[float, dict[str, Any]]],
                   refresher: Any = None) -> dict[str, Any] | None:
    """With a refreshed profile (calibrate --refresh, validate --refresh): when it was refreshed, its factors, and
    every configuration's error had the profile not been refreshed (its calibrated terms), so the refresh's effect
    sits beside the errors it gave. measured: name -> (measured ms/token, predict() keywords but the profile).
    refresher (validate's repeat_refresh.RepeatRefresher, whose first refresh `profile` is), where it refreshed:
    also every refresh made, and each error with that first refresh alone. None for a profile never refreshed."""
    from bmc_model.core.predict import predict

    refresh = getattr(profile, "refresh", None)
    if refresh is None:
        return None

    def errors(prof: Any) -> dict[str, float]:
        return {name: error_pct(predict(**kw, profile=prof).ms_per_token, ms) for name, (ms, kw) in measured.items()}

    errs = errors(profile.calibrated)
    out = {"at": refresh.at, "model": refresh.model, "seq": refresh.seq, "factors": dict(refresh.factors),
           "errors_pct_unrefreshed": errs, "max_abs_error_pct_unrefreshed": max(map(abs, errs.values()), default=None)}
    if refresher is not None and refresher.refreshing:
        before = errors(refresher.first)
        out.update({"refreshes": refresher.log, "errors_pct_refresh_before_run": before,
                    "max_abs_error_pct_refresh_before_run": max(map(abs, before.values()), default=None)})
    return out
