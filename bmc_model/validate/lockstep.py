"""Several HF generate() calls advanced side by side, one decode step at a time.

validate/interleave.py steps our own decode runs in turn so the host's drift hits every configuration
alike; generate() owns its loop, so here each call runs in its own greenlet and a streamer hands control
back after every token: only one call runs at a time. A step is timed from the moment its call resumes to
its next token, so time spent on the others is not counted. Every call advances one token per turn, so
they stay level; each round of turns starts one place further along (Baton), as validate/interleave.py
rotates its ties. Greenlets, not threads: torch's OpenMP team belongs to the OS thread that calls it, and a
thread per call left the idle calls' teams spinning beside the running one's, about 10% on every step
(docs/results.md#transformers-side-by-side); greenlets keep every call on this thread's one team.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from greenlet import greenlet
from transformers.generation.streamers import BaseStreamer

from bmc_model.runtime.generate import gc_paused


class Baton:
    """Whose turn it is among n calls. Every live call gets one turn per round; each round starts one
    place further along the ring (0 1 2, 1 2 0, 2 0 1, ...), so no call always follows the same
    neighbour: a step that leaves work behind for the next ones (torch.cat freeing and faulting in
    hundreds of MB) does not always land on the same cache. A finished call leaves the rotation."""

    def __init__(self, n: int) -> None:
        self._alive = list(range(n))
        self._pending = list(range(n))  # this round's turns still to come, the current one first
        self._round = 0
        self.turn = 0 if n else -1  # -1: every call has finished

    def pass_on(self, i: int) -> None:
        self._advance(i)

    def leave(self, i: int) -> None:
        self._alive.remove(i)
        self._advance(i)

    @property
    def rounds(self) -> int:
        """Rounds of turns completed."""
        return self._round

    def _advance(self, i: int) -> None:
        if i in self._pending:
            self._pending.remove(i)
        if not self._pending and self._alive:
            self._round += 1
            k = self._round % len(self._alive)
            self._pending = self._alive[k:] + self._alive[:k]
        self.turn = self._pending[0] if self._pending else -1


class StepClock(BaseStreamer):
    """A streamer that times each decode step of its generate() and hands the baton on after each token.

    generate() first puts the prompt (ignored); the first generated token comes out of the prefill, so
    steps are counted from it: prefill is excluded, as TokenClock does."""

    def __init__(self, baton: Baton, index: int, hand_over: Callable[[], None] = lambda: None) -> None:
        self.baton, self.index, self.hand_over = baton, index, hand_over
        self.steps_s: list[float] = []
        self.tokens = 0
        self.seen_prompt = False
        self._resumed = 0.0

    def put(self, value: Any) -> None:
        if not self.seen_prompt:
            self.seen_prompt = True
            return
        now = time.perf_counter()
        self.tokens += 1
        if self.tokens > 1:
            self.steps_s.append(now - self._resumed)
        self.baton.pass_on(self.index)
        self.hand_over()  # back to run_lockstep, which resumes this call at its next turn
        self._resumed = time.perf_counter()

    def end(self) -> None:
        pass

    def decode_ms_per_token(self) -> float:
        """Mean ms per decode step (the whole batch advances one token per step)."""
        return float("nan") if not self.steps_s else 1000.0 * sum(self.steps_s) / len(self.steps_s)


def run_lockstep(jobs: Sequence[Callable[[StepClock], Any]],
                 between_rounds: Callable[[int], None] | None = None) -> list[tuple[StepClock, Any]]:
    """Run each job (a callable that calls generate(..., streamer=clock)) in its own greenlet, one decode step
    at a time in turn (set-up and prefill take turns too); returns (clock, the job's return value) per job. A
    job's exception is raised here once every job has finished. between_rounds(k) runs after round k (round 0:
    set-up and prefill), while every call waits between its steps: no step's time includes it."""
    n = len(jobs)
    baton = Baton(n)
    main = greenlet.getcurrent()
    clocks = [StepClock(baton, i, main.switch) for i in range(n)]
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = jobs[i](clocks[i])
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            errors.append(e)

    lets = [greenlet(lambda i=i: work(i), parent=main) for i in range(n)]
    # grad mode is the thread's, so every call's no_grad() saves and restores it in turn: with it off around
    # them all, a call that ends first cannot turn it back on under the others
    rounds = 0
    with gc_paused(), torch.no_grad():
        while baton.turn >= 0:
            if between_rounds is not None and baton.rounds > rounds:
                rounds = baton.rounds
                between_rounds(rounds - 1)
            i = baton.turn
            lets[i].switch()  # runs until its next token hands over, or to its end
            if lets[i].dead:
                baton.leave(i)
    if errors:
        raise errors[0]
    return list(zip(clocks, results))
