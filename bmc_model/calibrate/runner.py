"""The measurement loop: interleaved rounds, budgeted repeats, inner loops, robust medians.

No torch here: a benchmark is a list of Cases (a size and a factory that builds its buffers and
returns the operation to time), and a Timer says what a second is (perf_counter on a CPU, CUDA
events on a GPU, a fake clock in tests).

Hygiene, in order of what it protects against:
- every round visits the cases in a fresh random order, so slow drift of the machine (thermal,
  other tenants) spreads over all sizes instead of tilting the slope;
- each visit enters the case's buffers (built once, or per visit when large: Buffers) and runs
  one untimed warm-up call (ops under `skip_warmup_s` get one on every visit);
- an op shorter than `target_sample_s` is repeated inside one timed sample (timer overhead);
- a case gets budget_s / len(cases) seconds of samples, at least min_samples, at most max_samples,
  and a benchmark far over its budget (a busy machine) stops after its current round;
- outliers are dropped with the MAD rule before taking the median (stats.summarize); the mean of
  every sample is kept beside it for the first-touch terms, whose slow samples are part of the cost
  (assemble.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from bmc_model.calibrate.stats import summarize

Op = Callable[[], object]


class Timer(Protocol):
    def start(self) -> None: ...

    def stop(self) -> float:
        """Seconds since start()."""
        ...


class CpuTimer:
    def __init__(self) -> None:
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        return time.perf_counter() - self._t0


class Reporter(Protocol):
    """Progress sink: the CLI draws rich bars, tests and the library pass NullReporter."""

    def begin(self, bench: str, total: int) -> None: ...

    def step(self, bench: str, n: int = 1) -> None: ...

    def end(self, bench: str) -> None: ...


class NullReporter:
    def begin(self, bench: str, total: int) -> None:
        pass

    def step(self, bench: str, n: int = 1) -> None:
        pass

    def end(self, bench: str) -> None:
        pass


@contextmanager
def _plain(op: Op) -> Iterator[Op]:
    yield op


@dataclass(frozen=True)
class Case:
    key: Hashable  # e.g. ("strided", rows) or (model, width): returned with the point
    x: float  # the size the fitted term is a function of (bytes)
    make: Callable[[], AbstractContextManager[Op]]  # builds buffers (untimed), yields the op
    per_call: int = 1  # units of work one op call performs (the time is divided by it)
    fresh: Callable[[], object] | None = None  # untimed reset before every timed call (no inner loop)

    @classmethod
    def simple(cls, key: Hashable, x: float, op: Op, per_call: int = 1) -> Case:
        return cls(key=key, x=x, make=lambda: _plain(op), per_call=per_call)


class Buffers:
    """Buffers built on a case's first visit and reused by later rounds (building them is the slow
    part for small ops); they live as long as the benchmark's case list. Buffers over `keep_bytes`
    are rebuilt on every visit instead: their op is long anyway, and keeping every size's would
    hold several times the largest in memory."""

    def __init__(self, keep_bytes: int = 64 * 2**20) -> None:
        self._d: dict = {}
        self.keep_bytes = keep_bytes

    def get(self, key: object, build: Callable[[], tuple], nbytes: int = 0) -> tuple:
        if key in self._d:
            return self._d[key]
        value = build()
        if nbytes <= self.keep_bytes:
            self._d[key] = value
        return value


@dataclass(frozen=True)
class Point:
    key: Hashable
    x: float
    median: float  # seconds per unit of work, outliers removed
    mad: float
    kept: int
    total: int
    inner: int  # op calls inside one timed sample
    mean: float | None = None  # seconds per unit of work over every sample, outliers kept

    @property
    def expected(self) -> float:
        """The mean when recorded, else the median: what a term of first-touch work is fitted to."""
        return self.median if self.mean is None else self.mean


@dataclass(frozen=True)
class Settings:
    rounds: int = 3
    min_samples: int = 3
    max_samples: int = 30
    target_sample_s: float = 5e-4  # shortest timed sample; shorter ops loop inside it
    max_inner: int = 2000
    skip_warmup_s: float = 0.02  # ops this long need no warm-up call after their first visit
    deadline_factor: float = 3.0  # stop starting rounds once wall time exceeds this times the budget ...
    deadline_slack_s: float = 2.0  # ... or the budget plus this, whichever is later


def run_cases(bench: str, cases: Sequence[Case], *, budget_s: float, timer: Timer, rng: np.random.Generator,
              settings: Settings = Settings(), reporter: Reporter | None = None,
              notes: list[str] | None = None) -> list[Point]:
    """Time every case over `settings.rounds` shuffled rounds; one Point per case, input order.

    Rounds after the first are skipped once the benchmark has run `deadline_factor` times its budget
    of wall time (a busy machine): fewer samples, a note in `notes`, and a bounded run time.
    """
    rep = reporter or NullReporter()
    s = settings
    rounds = max(1, s.rounds)
    wall0 = time.perf_counter()
    deadline = max(s.deadline_factor * budget_s, budget_s + s.deadline_slack_s)
    per_case = budget_s / max(len(cases), 1)
    samples: list[list[float]] = [[] for _ in cases]
    plan: list[tuple[int, int] | None] = [None] * len(cases)  # (inner, samples per visit)
    est: list[float] = [0.0] * len(cases)
    rep.begin(bench, len(cases) * rounds)
    for rnd in range(rounds):
        spent = time.perf_counter() - wall0
        if rnd and spent > deadline:
            if notes is not None:
                notes.append(f"{bench}: stopped after {rnd} of {rounds} rounds ({spent:.0f} s against a "
                             f"{budget_s:.0f} s budget): the machine was busy, these medians rest on fewer samples")
            break
        for i in rng.permutation(len(cases)):
            c = cases[i]
            with c.make() as op:
                if plan[i] is None or est[i] < s.skip_warmup_s:
                    op()  # warm-up: first-call effects (thread pool, page tables, caches)
                first = plan[i] is None
                if first:
                    if c.fresh is not None:
                        c.fresh()
                    timer.start()
                    op()
                    est[i] = max(timer.stop(), 1e-9)
                    inner = min(s.max_inner, max(1, math.ceil(s.target_sample_s / est[i])))
                    inner = 1 if c.fresh is not None else inner
                    total = int(min(s.max_samples, max(s.min_samples, per_case // (est[i] * inner))))
                    plan[i] = (inner, math.ceil(total / rounds))
                    if inner == 1:  # a call long enough to time alone: the estimate is a sample
                        samples[i].append(est[i] / c.per_call)
                inner, k = plan[i]  # type: ignore[misc]
                for _ in range(k - (first and inner == 1)):
                    if c.fresh is not None:
                        c.fresh()
                    timer.start()
                    for _ in range(inner):
                        op()
                    samples[i].append(timer.stop() / (inner * c.per_call))
            rep.step(bench)
    rep.end(bench)
    out = []
    for i, c in enumerate(cases):
        sm = summarize(samples[i])
        out.append(Point(key=c.key, x=float(c.x), median=sm.median, mad=sm.mad, kept=sm.kept, total=sm.total,
                         inner=plan[i][0] if plan[i] else 1,  # type: ignore[index]
                         mean=float(np.mean(samples[i]))))
    return out


def points_raw(points: Sequence[Point]) -> dict:
    """The JSON form kept in profile["raw"]: parallel lists, sorted by size."""
    pts = sorted(points, key=lambda p: p.x)
    return {"x": [p.x for p in pts], "t": [p.median for p in pts], "mean": [p.expected for p in pts],
            "mad": [p.mad for p in pts], "kept": [p.kept for p in pts], "samples": [p.total for p in pts]}
