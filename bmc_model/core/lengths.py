"""Output lengths not known in advance: requests stop at EOS, so the new tokens follow a distribution over
1..max_new (geometric stopping, or lengths observed), and cost and memory are taken over it (docs/model.md,
"Unknown output length"). The cache is sized for max_new whatever the length; plain decoding only."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bmc_model.core.breakdown import breakdown
from bmc_model.core.errors import BMCError
from bmc_model.core.events import policy_events
from bmc_model.core.inputs import path, real
from bmc_model.core.policy import Policy
from bmc_model.core.profile import Profile
from bmc_model.core.resident import kv_memory
from bmc_model.core.sliding import sliding_groups
from bmc_model.core.workload import Geometry, Workload


@dataclass(frozen=True)
class Lengths:
    """New tokens per request: distinct values (ascending, in 1..max_new) and their probabilities."""

    values: np.ndarray  # int64
    weights: np.ndarray  # float64, summing to 1, each > 0
    max_new: int  # the cap: the cache may need prompt + max_new rows
    kind: str  # how it was given, in words ("geometric, mean 256")

    @classmethod
    def of(cls, values: object, weights: object, max_new: int, kind: str) -> Lengths:
        """Equal values grouped, weights normalised, those of weight 0 dropped."""
        vals = np.asarray(values, dtype=np.int64).ravel()
        wts = np.broadcast_to(np.asarray(weights, dtype=np.float64), vals.shape)
        if not vals.size or not np.all(np.isfinite(wts)) or np.any(wts < 0) or not wts.sum() > 0:
            raise BMCError(f"output lengths ({kind}) need at least one length of positive weight")
        if vals.min() < 1 or vals.max() > max_new:
            raise BMCError(f"output lengths ({kind}) must be in [1, max-new {max_new}], got {vals.min()}..{vals.max()}")
        uniq, inv = np.unique(vals, return_inverse=True)
        grouped = np.bincount(inv, weights=wts)
        keep = grouped > 0
        return cls(uniq[keep], grouped[keep] / grouped[keep].sum(), int(max_new), kind)

    @classmethod
    def geometric(cls, mean_new: object, max_new: int) -> Lengths:
        """Stopping with probability p = 1 / mean_new after each token (a mean under 1 stops at the first),
        truncated at max_new with the rest of the mass there: P(T = t) = (1 - p)^(t - 1) p for t < max_new."""
        m = real("mean-new", mean_new)
        if not 0.0 < m <= max_new:
            raise BMCError(f"mean-new must be in (0, max-new {max_new}], got {mean_new!r}")
        p = min(1.0 / m, 1.0)
        t = np.arange(1, max_new + 1, dtype=np.int64)
        survive = np.exp((t - 1) * np.log1p(-p)) if p < 1.0 else (t == 1) * 1.0  # P(T >= t)
        wts = survive * p
        wts[-1] = survive[-1]
        if p < 1.0:
            # an underflowed tail is still reachable: max_new keeps a weight, so the worst case is the cap
            wts[-1] = max(wts[-1], np.finfo(np.float64).tiny)
        return cls.of(t, wts, max_new, f"geometric, mean {m:g}")

    @classmethod
    def observed(cls, file: object, max_new: int) -> Lengths:
        """A text file of new-token counts, one positive integer per line (blank lines ignored)."""
        where = Path(path("lengths", file))
        try:
            text = where.read_text()
        except FileNotFoundError:
            raise BMCError(f"lengths file not found: {where}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise BMCError(f"lengths file {where}: unreadable ({e})") from None
        vals = []
        for i, line in enumerate(text.splitlines(), 1):
            item = line.strip()
            if not item:
                continue
            digits = item.lstrip("0")
            if not (item.isascii() and item.isdigit()) or not digits:
                raise BMCError(f"lengths file {where}, line {i}: {item[:40]!r} is not a positive integer")
            if len(digits) > 18 or int(digits) > max_new:  # 18 digits: past any max-new, and int() stays cheap
                raise BMCError(f"lengths file {where}, line {i}: {item[:40]} is over max-new {max_new}")
            vals.append(int(digits))
        if not vals:
            raise BMCError(f"lengths file {where} holds no lengths (one positive integer per line)")
        return cls.of(vals, 1.0, max_new, f"observed in {where.name} ({len(vals)} requests)")

    @property
    def mean(self) -> float:
        return float(self.weights @ self.values)

    @property
    def worst(self) -> int:
        return int(self.values[-1])

    def describe(self) -> str:
        return f"output length: {self.kind} of at most {self.max_new} new tokens (expected {self.mean:.1f})"


def lengths_of(mean_new: object, lengths: object, max_new: int) -> Lengths | None:
    """The distribution recommend() and predict() were given: a mean (geometric stopping), a lengths file or
    a Lengths; neither: None (generation ends at seq)."""
    if mean_new is not None and lengths is not None:
        raise BMCError("give mean-new or lengths, not both")
    if isinstance(lengths, Lengths):
        if lengths.worst > max_new:
            raise BMCError(f"output lengths run to {lengths.worst} new tokens, over max-new {max_new}")
        return replace(lengths, max_new=max_new)
    if lengths is not None:
        return Lengths.observed(lengths, max_new)
    if mean_new is not None:
        return Lengths.geometric(mean_new, max_new)
    return None


@dataclass(frozen=True)
class Expected:
    """One configuration over a distribution of output lengths: expectations, and the worst case where a
    cap must hold for every request."""

    seconds: dict[str, float]  # E[seconds of one generation] by term
    tokens: float  # E[new tokens]
    events: float  # E[growth events]
    resident_peak: float  # E[peak resident KV bytes]
    worst_resident_peak: float  # the most over the lengths
    resident_end: float  # E[resident KV bytes at the end]
    reserved_peak: float  # the most over the lengths (at the longest)
    reserved_end: float  # the most over the lengths

    @property
    def total(self) -> float:
        """E[total seconds]: the sum of the terms' expectations."""
        return sum(self.seconds.values())


def expected(policy: Policy, prompt: int, batch: int, dist: Lengths, geo: Geometry, prof: Profile) -> Expected:
    """Every length priced at once (one array of seq; two where some lengths stay within a sliding window and
    some run past it), then weighed by the distribution."""
    seq = prompt + dist.values
    n = seq.size
    parts: dict[str, np.ndarray] = {}
    cols = {k: np.empty(n) for k in ("count", "reserved_end", "reserved_peak", "resident_end", "resident_peak")}
    for group in sliding_groups(geo, seq):
        w = Workload(prompt, seq[group], batch, max_len=prompt + dist.max_new)
        ev = policy_events(policy, w, geo, prof)
        for name, v in breakdown(policy, w, geo, prof, ev=ev).items():
            parts.setdefault(name, np.empty(n))[group] = v
        mem = kv_memory(policy, w, geo, prof, ev=ev)
        cols["count"][group] = ev.count
        for k in ("reserved_end", "reserved_peak", "resident_end", "resident_peak"):
            cols[k][group] = getattr(mem, k)
    p = dist.weights
    return Expected(seconds={k: float(p @ v) for k, v in parts.items()}, tokens=dist.mean,
                    events=float(p @ cols["count"]), resident_peak=float(p @ cols["resident_peak"]),
                    worst_resident_peak=float(cols["resident_peak"].max()),
                    resident_end=float(p @ cols["resident_end"]), reserved_peak=float(cols["reserved_peak"].max()),
                    reserved_end=float(cols["reserved_end"].max()))


def r_grid(max_new: int, dense: int = 64, spread: int = 48) -> np.ndarray:
    """The fixed r recommend() weighs over a distribution: every r up to `dense`, then about `spread` spaced
    geometrically up to max_new, and max_new itself (past it the cache never grows: the capacity clamps)."""
    low = np.arange(1, min(dense, max_new) + 1)
    high = np.geomspace(dense, max_new, spread + 1)[1:] if max_new > dense else np.array([])
    return np.unique(np.concatenate([low, np.round(high), [max_new]])).astype(np.int64)

