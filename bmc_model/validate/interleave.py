"""Several decode runs advanced side by side, a step at a time, so the machine's drift hits them alike.

A decode run on a shared host drifts: memory bandwidth moves by several percent over seconds. Runs
that take turns as wholes (one run, then the next) see different stretches of that drift, and a
median of a few repeats keeps much of it. Taking turns step by step puts every configuration in the
same seconds. The next step always goes to the run that is furthest behind in its share of tokens,
so runs of different step sizes (one token per step, or a speculative iteration of several) stay
level to the end; ties go in an order that rotates by one every n steps (n runs), so no run always
follows the same neighbour.

A run is anything with `progress` (0..1) and `step() -> bool` (False when it is finished):
generate.DecodeRun and speculative.SDRun. A pause (validate --refresh: a refresh within a repeat) runs
between two steps once every run has reached its share of the tokens, so no step's time includes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from bmc_model.runtime.generate import gc_paused


class Stepper(Protocol):
    @property
    def progress(self) -> float: ...

    def step(self) -> bool: ...


def run_interleaved(runs: Sequence[Stepper], pauses: int = 0,
                    pause: Callable[[int], None] | None = None) -> list[int]:
    """Step the runs to the end, the one furthest behind first; returns the order of the steps (indices).
    pause(k), for k in 0..pauses-1, runs between two steps once every run's progress has reached
    (k + 1) / (pauses + 1); one whose share only the last step reaches does not run (no step follows it)."""
    n = len(runs)
    active = list(range(n))
    order: list[int] = []
    paused = 0
    with gc_paused():
        while active:
            while pause is not None and paused < pauses and \
                    min(runs[j].progress for j in active) >= (paused + 1) / (pauses + 1):
                pause(paused)
                paused += 1
            turn = len(order) // n
            i = min(active, key=lambda j: (runs[j].progress, (j - turn) % n))
            if not runs[i].step():
                active.remove(i)
            order.append(i)
    return order
