"""Runs advanced side by side (interleave.run_interleaved): the furthest-behind rule, the rotation of
ties, and decoding that gives the same tokens whether a run goes alone or between others."""

import contextlib
from unittest import mock

import pytest
import torch
from conftest import tiny_spec
from hypothesis import given, settings
from hypothesis import strategies as st

from bmc_model.core.policy import NAMED, Policy
from bmc_model.runtime.decoder import Decoder
from bmc_model.runtime.drafters import PromptLookup
from bmc_model.runtime.generate import DecodeRun, decode_run
from bmc_model.runtime.speculative import SDRun, speculative_decode
from bmc_model.validate import interleave
from bmc_model.validate.interleave import run_interleaved

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest


class Fake:
    """`tokens` to produce, `per_step` a step; records the progress of every run when it steps."""

    def __init__(self, tokens: int, per_step: int, log: list, runs: list) -> None:
        self.tokens, self.per_step, self.done, self.log, self.runs = tokens, per_step, 0, log, runs

    @property
    def progress(self) -> float:
        return min(1.0, self.done / self.tokens)

    def step(self) -> bool:
        assert self.done < self.tokens, "stepped after it said it was finished"
        self.log.append((self, [r.progress for r in self.runs]))
        self.done += self.per_step
        return self.done < self.tokens


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 30), st.integers(1, 5)), min_size=1, max_size=6))
def test_every_run_finishes_and_the_furthest_behind_goes_next(shapes):
    log: list = []
    runs: list = []
    runs.extend(Fake(t, k, log, runs) for t, k in shapes)
    with mock.patch.object(interleave, "gc_paused", contextlib.nullcontext):  # its gc.collect(): most of the time
        order = run_interleaved(runs)
    assert all(r.done >= r.tokens for r in runs)
    assert [order.count(i) for i in range(len(runs))] == [-(-t // k) for t, k in shapes]
    for run, before in log:
        unfinished = [p for p in before if p < 1.0]
        assert run.progress <= 1.0 and before[runs.index(run)] == min(unfinished)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 30), st.integers(1, 5)), min_size=1, max_size=4), st.integers(0, 4))
def test_each_pause_runs_once_every_run_has_reached_its_share_and_leaves_the_order_alone(shapes, pauses):
    def play(with_pauses: bool) -> tuple[list[int], list, list]:
        log: list = []
        runs: list = []
        runs.extend(Fake(t, k, log, runs) for t, k in shapes)
        seen: list = []
        with mock.patch.object(interleave, "gc_paused", contextlib.nullcontext):
            order = run_interleaved(runs, pauses, (lambda k: seen.append((k, len(log), [r.progress for r in runs])))
                                    if with_pauses else None)
        return order, seen, log

    order, seen, log = play(True)
    assert order == play(False)[0]
    assert [k for k, _, _ in seen] == list(range(len(seen)))
    for k, steps, progress in seen:  # between two steps, once every run is at its share (a finished one at 1.0)
        assert 0 < steps < len(order) and min(progress) >= (k + 1) / (pauses + 1)
    if len(seen) < pauses:  # skipped only where the last step itself reached the next share: no step follows
        _, before = log[-1]
        assert min(p for p in before if p < 1.0) < (len(seen) + 1) / (pauses + 1)


def test_equal_runs_rotate_their_order():
    log: list = []
    runs: list = []
    runs.extend(Fake(3, 1, log, runs) for _ in range(3))
    assert run_interleaved(runs) == [0, 1, 2, 1, 2, 0, 2, 0, 1]


SPEC = tiny_spec(vocab=97)


def test_interleaved_runs_decode_what_they_decode_alone():
    dec = Decoder.random(SPEC, seed=3)
    prompt = torch.randint(0, SPEC.vocab, (1, 20), generator=torch.Generator().manual_seed(5))
    prompt = torch.cat([prompt, prompt[:, :10]], dim=1)  # a repeat, so prompt lookup finds matches
    pols = [NAMED["dynamic"], Policy("fixed", 8, width="padded"), Policy("fixed", 4, width="exact")]
    alone = [decode_run(dec, p, prompt=prompt, new_tokens=12, warmup=0) for p in pols]
    sd_alone = speculative_decode(dec, pols[1], PromptLookup(), gamma=3, prompt=prompt, new_tokens=12, warmup=0)
    runs = [DecodeRun(dec, p, prompt=prompt, new_tokens=12, warmup=0) for p in pols]
    sd_run = SDRun(dec, pols[1], PromptLookup(), gamma=3, prompt=prompt, new_tokens=12, warmup=0)
    run_interleaved([*runs, sd_run])
    for a, r in zip(alone, runs):
        res = r.result()
        assert torch.equal(res.tokens, a.tokens) and len(res.step_s) == 12
        assert res.total_s == pytest.approx(sum(res.step_s))
        assert res.cache_stats.growth_events == a.cache_stats.growth_events
    sd = sd_run.result()
    assert torch.equal(sd.tokens, sd_alone.tokens) and sd.accepted_per_iter == sd_alone.accepted_per_iter
    assert sd.total_s == pytest.approx(sum(sd.iter_s))
