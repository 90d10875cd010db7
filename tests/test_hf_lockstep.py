"""lockstep.run_lockstep: generate() calls in greenlets, one decode step at a time, in turn."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch  # noqa: E402

from bmc_model.core.policy import Policy  # noqa: E402
from bmc_model.validate import lockstep  # noqa: E402
from bmc_model.validate.hf_measure import run_generate  # noqa: E402
from bmc_model.validate.workloads import build  # noqa: E402


def fake_generate(log: list, name: str, tokens: int):
    """A job shaped like generate(): puts the prompt, then one token per step."""
    def job(clock):
        clock.put("prompt")
        for _ in range(tokens):
            log.append(name)
            clock.put("token")
        return name
    return job


def test_turns_rotate_one_step_at_a_time():
    log: list[str] = []
    out = lockstep.run_lockstep([fake_generate(log, "a", 3), fake_generate(log, "b", 3), fake_generate(log, "c", 3)])
    assert log == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # each round starts one place further on
    assert [r for _, r in out] == ["a", "b", "c"]
    assert all(len(clock.steps_s) == 2 for clock, _ in out)  # 3 tokens: the first closes the prefill


def test_between_rounds_runs_after_each_round_outside_every_step(monkeypatch):
    now = [0.0]

    def tick() -> float:  # every reading a millisecond on
        now[0] += 1e-3
        return now[0]

    monkeypatch.setattr(lockstep.time, "perf_counter", tick)
    log: list[str] = []

    def between(k: int) -> None:
        log.append(f"|{k}")
        now[0] += 100.0  # a refresh of 100 s: no step may count it

    out = lockstep.run_lockstep([fake_generate(log, "a", 3), fake_generate(log, "b", 3)], between)
    assert log == ["a", "b", "|0", "b", "a", "|1", "a", "b", "|2"]
    assert all(len(clock.steps_s) == 2 and max(clock.steps_s) < 1.0 for clock, _ in out)


def test_a_finished_job_leaves_the_rotation():
    log: list[str] = []
    lockstep.run_lockstep([fake_generate(log, "a", 1), fake_generate(log, "b", 3), fake_generate(log, "c", 2)])
    assert log == ["a", "b", "c", "b", "c", "b"]  # a leaves after round 0; rounds of b, c rotate


def test_an_error_in_one_job_is_raised_without_deadlock():
    def bad(clock):
        clock.put("prompt")
        clock.put("token")
        raise ValueError("boom")
    log: list[str] = []
    with pytest.raises(ValueError, match="boom"):
        lockstep.run_lockstep([fake_generate(log, "a", 3), bad, fake_generate(log, "c", 3)])
    assert log.count("a") == log.count("c") == 3  # the others ran to the end


def test_step_clock_times_only_its_own_steps(monkeypatch):
    # perf_counter: token 1 at 1.0, resumed at 5.0 (others ran 4 s), token 2 at 5.5, resumed at 9.0, token 3 at 9.25
    ticks = iter([1.0, 5.0, 5.5, 9.0, 9.25, 12.0])
    monkeypatch.setattr(lockstep.time, "perf_counter", lambda: next(ticks))
    clock = lockstep.StepClock(lockstep.Baton(1), 0)
    clock.put("prompt")
    for _ in range(3):
        clock.put("token")
    assert clock.steps_s == [0.5, 0.25]
    assert clock.decode_ms_per_token() == pytest.approx(375.0)


def test_lockstep_generate_decodes_what_it_decodes_alone():
    loaded = build("kv", quick=True)
    pol = Policy("fixed", 8, width="exact")
    alone = {k: run_generate(loaded.model, k, pol, 48, 40, 1, 6)[2] for k in ("dynamic", "static", "bmc")}

    def job(kind):
        return lambda clock: run_generate(loaded.model, kind, pol, 48, 40, 1, 6, streamer=clock)

    out = lockstep.run_lockstep([job(k) for k in alone])
    for kind, (clock, (_, _, ids)) in zip(alone, out):
        assert torch.equal(ids, alone[kind])
        assert len(clock.steps_s) == 5
