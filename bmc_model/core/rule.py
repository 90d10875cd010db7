"""The decision rule: which of several predicted configurations to pick, and which it must never pick.

Among the candidates within the memory cap and within `tolerance` of the fastest (never slower than what users
run today: window), the pick holds the least peak resident KV memory, then the least reserved, then is the
fastest (pick_rows, one row per request; pick_index for one). So no candidate dominates it: none is at least as
fast and leaner, or faster and no larger (dominates). pareto_front is what recommend prints beside the pick.
recommend() (core/decide.py) and choose_many() (core/choose.py) both decide by these functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bmc_model.core.num import Num, vmax, vmin
from bmc_model.core.policy import Policy
from bmc_model.core.predict import Prediction

EPS = 1e-9  # relative: two predictions closer than this are equal (scalar and vectorised paths round apart)


@dataclass(frozen=True)
class Candidate:
    """One configuration as the rule sees it: its predicted total seconds and peak KV bytes."""

    policy: Policy
    gamma: int
    seconds: float
    resident_bytes: float  # peak resident
    reserved_bytes: float  # peak reserved

    @property
    def label(self) -> str:
        return self.policy.label + (f", gamma {self.gamma}" if self.gamma else "")


def dominates(a: Candidate | Prediction, b: Candidate | Prediction, eps: float = EPS) -> bool:
    """a is at least as fast and leaner in peak resident memory, or faster and no larger (peak resident and
    reserved): b should not be picked while a is on offer."""
    sa, sb = _seconds(a), _seconds(b)
    ra, rb = _resident(a), _resident(b)
    leaner = ra < rb * (1 - eps)
    no_larger = ra <= rb * (1 + eps) and a.reserved_bytes <= b.reserved_bytes * (1 + eps)
    return (sa <= sb * (1 + eps) and leaner) or (sa < sb * (1 - eps) and no_larger)


def _seconds(x: Candidate | Prediction) -> float:
    return x.seconds if isinstance(x, Candidate) else x.ms_per_token


def _resident(x: Candidate | Prediction) -> float:
    return x.resident_bytes if isinstance(x, Candidate) else x.peak_resident_bytes


def pick_rows(seconds: np.ndarray, resident: np.ndarray, reserved: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """The rule over candidates along the last axis (one row per request), `ok` those it may pick (within the
    memory cap and the window): the least peak resident, then the least reserved, then the fastest, equal
    within EPS counting as equal (the scalar and the vectorised paths round apart), of equals the first
    offered. -1 where none is ok."""
    tie = ok & (resident <= np.where(ok, resident, np.inf).min(axis=-1, keepdims=True) * (1 + EPS))
    tie &= reserved <= np.where(tie, reserved, np.inf).min(axis=-1, keepdims=True) * (1 + EPS)
    tie &= seconds <= np.where(tie, seconds, np.inf).min(axis=-1, keepdims=True) * (1 + EPS)
    return np.where(ok.any(axis=-1), tie.argmax(axis=-1), -1)


def pick_index(seconds: np.ndarray, resident: np.ndarray, reserved: np.ndarray, limit: float) -> int | None:
    """pick_rows over one row of candidates already within the memory cap, those at most `limit` seconds
    (with EPS) allowed."""
    if not len(seconds):
        return None
    i = int(pick_rows(seconds, resident, reserved, seconds <= limit * (1 + EPS)))
    return None if i < 0 else i


def window(fastest: Num, ceiling: Num, tolerance: float) -> Num:
    """The slowest a pick may be: within `tolerance` of the fastest, and never slower than what users run
    today (`ceiling`: the faster of HF's StaticCache and DynamicCache) unless nothing is faster."""
    return vmin(fastest * (1.0 + tolerance), vmax(ceiling, fastest))


def pareto_front(cands: Sequence[Candidate]) -> list[Candidate]:
    """The (ms/token, peak resident) front, fastest first: each point leaner than every point at least as fast
    (of equal points the first given)."""
    front: list[Candidate] = []
    least = math.inf
    for c in sorted(cands, key=lambda c: (c.seconds, c.resident_bytes, c.reserved_bytes)):  # stable
        if c.resident_bytes < least * (1 - EPS):
            front.append(c)
            least = c.resident_bytes
    return front


def equal_on_every_axis(a: Candidate, b: Candidate) -> bool:
    """Equal on every axis the rule reads."""
    return all(abs(x - y) <= EPS * max(abs(x), abs(y)) for x, y in
               ((a.seconds, b.seconds), (a.resident_bytes, b.resident_bytes), (a.reserved_bytes, b.reserved_bytes)))
