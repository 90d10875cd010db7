"""The measurement loop with a fake clock: synthetic costs with known coefficients, noise and
preempted samples go through the real runner and fits, which must recover them."""

from __future__ import annotations

import numpy as np
import pytest

from bmc_model.calibrate.fit import fit_affine, fit_piecewise
from bmc_model.calibrate.runner import Buffers, Case, Settings, points_raw, run_cases

MiB = 2**20


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0


class FakeTimer:
    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.t0 = clock, 0.0

    def start(self) -> None:
        self.t0 = self.clock.now

    def stop(self) -> float:
        return self.clock.now - self.t0


def synthetic_cases(clock, cost, sizes, rng, noise=0.03, stalls_per_s=4.0, stall_s=4e-3, drift=0.0, log=None):
    """Each op advances the fake clock by cost(x) with multiplicative noise, plus preemption stalls
    (another tenant's time slice) arriving at random, stalls_per_s per second of busy time; drift
    makes everything slower as fake time passes."""

    def make_op(x):
        def op():
            t = cost(x) * (1.0 + noise * rng.standard_normal()) * (1.0 + drift * clock.now)
            t += rng.poisson(stalls_per_s * t) * stall_s
            clock.now += t

        return op

    cases = []
    for x in sizes:
        op = make_op(x)
        if log is None:
            cases.append(Case.simple(x, x, op))
        else:
            def make(x=x, op=op):
                log.append(x)
                return Case.simple(x, x, op).make()

            cases.append(Case(key=x, x=x, make=make))
    return cases


def alloc_cost(x):
    return np.where(x < 24 * MiB, 1.5e-6 + 1.2e-11 * x, 2e-5 + 4e-10 * x)


def test_fake_alloc_benchmark_recovers_the_knee_and_slopes():
    clock, rng = FakeClock(), np.random.default_rng(7)
    sizes = [float(v) for v in np.geomspace(4096, 2**30, 37)]
    pts = run_cases("alloc", synthetic_cases(clock, alloc_cost, sizes, rng), budget_s=5.0, timer=FakeTimer(clock),
                    rng=rng, settings=Settings(rounds=3, min_samples=5))
    f = fit_piecewise([p.x for p in pts], [p.median for p in pts])
    assert len(f.knots) == 1
    below = max(s for s in sizes if s < 24 * MiB)
    above = min(s for s in sizes if s >= 24 * MiB)
    assert below <= f.knots[0] <= above
    assert f.segments[0].slope == pytest.approx(1.2e-11, rel=0.05)
    assert f.segments[0].c0 == pytest.approx(1.5e-6, rel=0.05)
    assert f.segments[1].slope == pytest.approx(4e-10, rel=0.05)
    assert all(p.kept <= p.total for p in pts) and sum(p.total - p.kept for p in pts) > 0  # outliers dropped


def test_short_ops_loop_inside_a_sample_and_per_call_divides():
    clock, rng = FakeClock(), np.random.default_rng(8)

    def op_tiny():
        clock.now += 1e-7

    def op_four():
        clock.now += 4 * 2e-3  # four units of 2 ms in one call

    cases = [Case.simple("tiny", 1.0, op_tiny), Case(key="four", x=2.0, make=Case.simple("f", 2.0, op_four).make,
                                                     per_call=4)]
    pts = {p.key: p for p in run_cases("t", cases, budget_s=0.1, timer=FakeTimer(clock), rng=rng,
                                       settings=Settings(rounds=2, target_sample_s=5e-4))}
    assert pts["tiny"].inner == 5000 or pts["tiny"].inner == Settings().max_inner
    assert pts["tiny"].median == pytest.approx(1e-7)
    assert pts["four"].inner == 1 and pts["four"].median == pytest.approx(2e-3)


def test_budget_bounds_the_number_of_samples():
    clock, rng = FakeClock(), np.random.default_rng(9)
    sizes = [float(v) for v in np.geomspace(1e3, 1e9, 10)]
    st = Settings(rounds=3, min_samples=3, max_samples=30)
    pts = run_cases("b", synthetic_cases(clock, lambda x: 1e-3, sizes, rng, stalls_per_s=0.0), budget_s=0.2,
                    timer=FakeTimer(clock), rng=rng, settings=st)
    # 0.2 s over 10 cases of 1 ms: 20 samples each (+ warm-ups and the estimate, untimed)
    assert all(18 <= p.total <= 21 for p in pts)
    pts = run_cases("b", synthetic_cases(clock, lambda x: 1.0, sizes, rng, stalls_per_s=0.0), budget_s=0.2,
                    timer=FakeTimer(clock), rng=rng, settings=st)
    assert all(p.total == 3 for p in pts)  # too slow for the budget: the minimum


def test_rounds_visit_cases_in_fresh_random_orders():
    clock, rng = FakeClock(), np.random.default_rng(11)
    sizes = [float(v) for v in range(1, 13)]
    log: list[float] = []
    run_cases("o", synthetic_cases(clock, lambda x: 1e-3, sizes, rng, log=log), budget_s=0.1,
              timer=FakeTimer(clock), rng=rng, settings=Settings(rounds=3))
    rounds = [log[i * 12:(i + 1) * 12] for i in range(3)]
    assert all(sorted(r) == sizes for r in rounds)
    assert rounds[0] != rounds[1] != rounds[2] and rounds[0] != sizes


class SortedRng:
    """A generator whose permutations are the identity: the runner then visits sizes in order."""

    def __init__(self, seed: int) -> None:
        self.g = np.random.default_rng(seed)

    def permutation(self, n: int) -> np.ndarray:
        return np.arange(n)


def _breakeven(rng_for_order) -> float:
    clock, noise_rng = FakeClock(), np.random.default_rng(5)
    sizes = [float(v) for v in np.geomspace(4096, 2**28, 24)]
    cost = lambda x: 5e-5 + 1e-10 * x  # noqa: E731
    cases = synthetic_cases(clock, cost, sizes, noise_rng, noise=0.01, stalls_per_s=0.0, drift=0.5)
    pts = run_cases("d", cases, budget_s=2.0, timer=FakeTimer(clock), rng=rng_for_order,
                    settings=Settings(rounds=4, min_samples=4))
    f = fit_affine([p.x for p in pts], [p.median for p in pts])
    return (f.c0 / f.slope) / (5e-5 / 1e-10)  # 1.0 when drift did not tilt the line


def test_interleaving_keeps_drift_from_tilting_the_fit():
    # the machine slows down by half over the run: visiting sizes in order would make the large sizes
    # look slower than they are; shuffled rounds spread the drift over every size alike
    shuffled = _breakeven(np.random.default_rng(3))
    ordered = _breakeven(SortedRng(3))
    assert abs(shuffled - 1.0) < 0.2
    assert abs(ordered - 1.0) > 2 * abs(shuffled - 1.0)


def test_buffers_are_built_once_and_raw_is_sorted():
    built = []
    b = Buffers()
    for _ in range(3):
        b.get("k", lambda: built.append(1) or (1, 2))
    for _ in range(2):
        b.get("big", lambda: built.append(2) or (3,), nbytes=b.keep_bytes + 1)
    assert built == [1, 2, 2]  # the big one is rebuilt each time
    clock, rng = FakeClock(), np.random.default_rng(1)
    pts = run_cases("r", synthetic_cases(clock, lambda x: 1e-3 * x, [3.0, 1.0, 2.0], rng), budget_s=0.05,
                    timer=FakeTimer(clock), rng=rng)
    raw = points_raw(pts)
    assert raw["x"] == [1.0, 2.0, 3.0] and len(raw["t"]) == 3 and raw["t"][0] < raw["t"][2]


def test_a_busy_machine_stops_after_the_first_round_and_says_so():
    clock, rng = FakeClock(), np.random.default_rng(2)
    notes: list[str] = []
    st = Settings(rounds=4, min_samples=8, max_samples=8, deadline_factor=0.0, deadline_slack_s=0.0)  # late
    pts = run_cases("late", synthetic_cases(clock, lambda x: 1e-3, [1.0, 2.0], rng, stalls_per_s=0.0),
                    budget_s=0.0, timer=FakeTimer(clock), rng=rng, settings=st, notes=notes)
    assert all(p.total == 2 for p in pts)  # one round of ceil(8 / 4) samples, then stop
    assert len(notes) == 1 and "late: stopped after 1 of 4 rounds" in notes[0]


def test_share_of_cpu_used_by_other_processes():
    from bmc_model.calibrate.load import CpuSnapshot, others_share, snapshot

    before, after = CpuSnapshot(100.0, 50.0, 10.0), CpuSnapshot(200.0, 140.0, 40.0)
    assert others_share(before, after) == pytest.approx(0.6)  # 90 busy seconds, 30 of them ours
    assert others_share(None, after) is None and others_share(after, before) is None
    s = snapshot()
    assert s is None or (s.total_s >= s.busy_s >= 0 and s.own_s > 0)


def test_points_keep_the_mean_beside_the_median_for_costs_with_a_slow_tail():
    """One call in four 4x slower (slow page faults): the MAD median drops them, the mean keeps them."""
    clock, rng = FakeClock(), np.random.default_rng(3)
    calls = [0]

    def op():
        calls[0] += 1
        clock.now += 4e-2 if calls[0] % 4 == 0 else 1e-2

    st = Settings(rounds=2, min_samples=16, max_samples=16)
    (pt,) = run_cases("tail", [Case.simple("t", 1.0, op)], budget_s=0.0, timer=FakeTimer(clock), rng=rng, settings=st)
    assert pt.median == pytest.approx(1e-2)
    assert pt.mean == pytest.approx(1.75e-2, rel=0.1) and pt.expected == pt.mean
    assert points_raw([pt])["mean"] == [pt.mean]
