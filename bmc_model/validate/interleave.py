"""Several decode runs advanced side by side, a step at a time, so the machine's drift hits them alike.

A decode run on a shared host drifts: memory bandwidth moves by several percent over seconds. Runs
that take turns as wholes (one run, then the next) see different stretches of that drift, and a
median of a few repeats keeps much of it. Taking turns step by step puts every configuration in the
same seconds. The next step always goes to the run that is furthest behind in its share of tokens,
so runs of different step sizes (one token per step, or a speculative iteration of several) stay
level to the end; ties go in an order that rotates by one every n steps (n runs), so no run always
follows the same neighbour.

A run is anything with `progress` (0..1) and `step() -> bool` (False when it is finished):
generate.DecodeRun and speculative.SDRun.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from bmc_model.runtime.generate import gc_paused


class Stepper(Protocol):
    @property
    def progress(self) -> float: ...

    def step(self) -> bool: ...


def run_interleaved(runs: Sequence[Stepper]) -> list[int]:
    """Step the runs to the end, the one furthest behind first; returns the order of the steps (indices)."""
    n = len(runs)
    active = list(range(n))
    order: list[int] = []
    with gc_paused():
        while active:
            turn = len(order) // n
            i = min(active, key=lambda j: (runs[j].progress, (j - turn) % n))
            if not runs[i].step():
                active.remove(i)
            order.append(i)
    return order
