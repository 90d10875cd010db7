"""What validate's runs and results share: a configuration to run, the fields that name its policy in a
result row, the configuration recommend() chose as results report it, the signed prediction error, and the
rule for fields a row's JSON carries only where they apply, and the paired comparisons of two rows: repetition by
repetition, and step by step with a bootstrap interval."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

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


CI_LEVEL = 0.95
CI_RESAMPLES = 2000


def step_ratio_ci(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], seed: int = 0
                  ) -> tuple[float, float, float] | None:
    """a's total decode time over b's, with a CI_LEVEL bootstrap interval: (ratio, low, high); None without a
    step both timed. a[k][i] and b[k][i] are step i of repetition k, taken in the same round of turns (side by
    side: lockstep.py), so rounds are resampled whole, within each repetition: the host's drift between
    repetitions and within one stays paired, and a stall on one step weighs as often as it came. The ratio of
    sums is the ratio of mean ms/token, what the model predicts."""
    pairs = [(np.asarray(x[:n], float), np.asarray(y[:n], float))
             for x, y in zip(a, b) if (n := min(len(x), len(y))) > 0]
    if not pairs:
        return None
    rng = np.random.default_rng(seed)
    num = np.zeros(CI_RESAMPLES)
    den = np.zeros(CI_RESAMPLES)
    for x, y in pairs:
        idx = rng.integers(0, len(x), (CI_RESAMPLES, len(x)))  # [resamples, rounds]
        num += x[idx].sum(axis=1)
        den += y[idx].sum(axis=1)
    tail = (1.0 - CI_LEVEL) / 2
    lo, hi = np.quantile(num / den, [tail, 1.0 - tail])
    ratio = sum(float(x.sum()) for x, _ in pairs) / sum(float(y.sum()) for _, y in pairs)
    return ratio, float(lo), float(hi)


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
