"""Unknown output length (core/lengths.py): the model over a distribution of new tokens, vectorised over the
lengths, agrees with the scalar model length by length; bad distributions are one-line errors."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pytest
from conftest import policies
from hypothesis import given, settings
from hypothesis import strategies as st
from test_model_laws import profiles
from typer.testing import CliRunner

from bmc_model import BMCError, predict, recommend
from bmc_model.cli import app
from bmc_model.core.breakdown import breakdown
from bmc_model.core.events import policy_events
from bmc_model.core.lengths import Lengths
from bmc_model.core.profile import embedded_profile
from bmc_model.core.resident import kv_memory
from bmc_model.core.sliding import sliding_groups
from bmc_model.core.specs import get_spec
from bmc_model.core.workload import Geometry, Workload

SAME = ("ms_per_token", "breakdown", "memory_bytes", "reserved_bytes", "resident_bytes", "peak_resident_bytes",
        "growth_events", "weights_bytes")
LAZY = dataclasses.replace(embedded_profile(), scalars={**embedded_profile().scalars, "lazy_backing": 1.0})
runner = CliRunner()


@pytest.mark.parametrize("model", ["llama-7b", "gemma3-270m"])
@pytest.mark.parametrize("policy", ["dynamic", "static", "geometric", "mlx", "llamacpp", "reserve", "bmc:64",
                                    "fixed:7:pad-16", "fixed:300:exact"])
@pytest.mark.parametrize("new", [1, 200, 700])
def test_one_length_is_predict_at_that_length(model, policy, new):
    """All mass at one length: exactly predict() ending there in a cache sized for max_new."""
    kw = {"model": model, "prompt": 300, "max_new": 700, "policy": policy, "layers": 2, "profile": LAZY}
    got = predict(**kw, lengths=Lengths.of([new], [1.0], 700, "one length"))
    want = predict(**kw, seq=300 + new)
    for name in SAME:
        assert getattr(got, name) == getattr(want, name), name
    assert got.worst_peak_resident_bytes == want.peak_resident_bytes
    assert got.expected_new_tokens == new and got.seq == 1000 and got.lengths


def test_max_new_of_seq_is_the_plain_prediction():
    """max_new = seq - prompt sizes the cache as seq alone does: the same figures, bit for bit."""
    for policy in ("dynamic", "static", "geometric", "bmc:64", "reserve"):
        a = predict(seq=2048, prompt=1000, policy=policy)
        b = predict(seq=2048, prompt=1000, max_new=1048, policy=policy)
        assert all(getattr(a, n) == getattr(b, n) for n in SAME)


def test_expected_ms_is_a_ratio_of_expectations():
    dist = Lengths.of([10, 500], [0.75, 0.25], 600, "two")
    got = predict(prompt=100, max_new=600, lengths=dist, policy="geometric", layers=2)
    seconds = tokens = 0.0
    for new, p in ((10, 0.75), (500, 0.25)):
        one = predict(prompt=100, seq=100 + new, max_new=600, policy="geometric", layers=2)
        seconds += p * one.ms_per_token * new
        tokens += p * new
        assert one.peak_resident_bytes <= got.worst_peak_resident_bytes
    assert got.ms_per_token == pytest.approx(seconds / tokens, rel=1e-12)
    assert got.expected_new_tokens == pytest.approx(tokens, rel=1e-15)


@st.composite
def length_arrays(draw):
    prompt = draw(st.integers(1, 700))
    max_new = draw(st.integers(1, 900))
    news = draw(st.lists(st.integers(1, max_new), min_size=1, max_size=8))
    return prompt, prompt + max_new, prompt + np.array(news, dtype=np.int64)


@settings(max_examples=40, deadline=None)
@given(policies(), length_arrays(), st.sampled_from(["llama-7b", "gemma3-270m", "mistral-7b"]),
       st.none() | profiles())
def test_array_seq_is_scalar_seq_elementwise(pol, lengths, model, prof):
    prompt, max_len, seq = lengths
    prof = prof or LAZY
    geo = Geometry.of(get_spec(model).with_layers(2), 1, "float32")
    for group in sliding_groups(geo, seq):
        w = Workload(prompt, seq[group], max_len=max_len)
        ev = policy_events(pol, w, geo, prof)
        parts, mem = breakdown(pol, w, geo, prof, ev=ev), kv_memory(pol, w, geo, prof, ev=ev)
        for i, n in enumerate(seq[group].tolist()):
            one = Workload(prompt, n, max_len=max_len)
            ev1 = policy_events(pol, one, geo, prof)
            mem1 = kv_memory(pol, one, geo, prof, ev=ev1)
            want = {**breakdown(pol, one, geo, prof, ev=ev1), **dataclasses.asdict(mem1), "events": ev1.count}
            got = {**parts, **dataclasses.asdict(mem), "events": ev.count}
            for name, v in want.items():
                g = float(np.broadcast_to(got[name], w.seq.shape)[i])
                assert g == pytest.approx(float(v), rel=1e-12, abs=1e-300), (name, n)


def test_geometric_mean_and_support():
    for mean, cap in ((256, 2048), (2048, 2048), (1.0, 50), (1.0, 1), (0.7, 30), (40, 100000)):
        d = Lengths.geometric(mean, cap)
        p = min(1.0 / mean, 1.0)
        assert d.weights.sum() == pytest.approx(1.0, rel=1e-12)
        assert d.mean == pytest.approx((1.0 - (1.0 - p) ** cap) / p, rel=1e-9)  # E[min(G, cap)]
        assert d.worst == (1 if p == 1.0 else cap)  # any request may run to the cap
    assert Lengths.geometric(256, 10**6).mean == pytest.approx(256, rel=1e-12)
    assert Lengths.geometric(0.5, 10).mean == 1.0  # a request makes one token at least


def test_observed_lengths_group_equal_values(tmp_path):
    f = tmp_path / "lens.txt"
    f.write_text("5\n\n 7 \n5\n0012\n")
    d = Lengths.observed(f, 12)
    assert d.values.tolist() == [5, 7, 12] and d.weights.tolist() == [0.5, 0.25, 0.25] and d.mean == 7.25


def test_reserve_holds_less_than_static_when_requests_stop_early():
    kw = {"prompt": 512, "max_new": 4096, "mean_new": 64, "layers": 2, "profile": LAZY}
    res, stat = predict(policy="reserve", **kw), predict(policy="static", **kw)
    assert res.peak_resident_bytes < 0.2 * stat.peak_resident_bytes
    assert res.reserved_bytes == stat.reserved_bytes  # both allocate prompt + max_new rows
    assert res.worst_peak_resident_bytes <= stat.worst_peak_resident_bytes


def test_recommend_over_a_distribution():
    rec = recommend(prompt=512, max_new=1024, mean_new=64, layers=2, profile=LAZY)
    p = rec.prediction
    assert p.lengths and p.expected_new_tokens < 64
    assert any("geometric, mean 64 of at most 1024 new tokens" in n for n in rec.notes)
    assert all(len(sw.r) < 120 for sw in rec.sweeps.values())  # a grid of r, not every r
    cap = 1.05 * rec.baselines["reserve"].worst_peak_resident_bytes
    capped = recommend(prompt=512, max_new=1024, mean_new=64, layers=2, profile=LAZY, max_mem=cap)
    assert capped.prediction.worst_peak_resident_bytes <= cap
    with pytest.raises(BMCError, match="no configuration fits"):
        recommend(prompt=512, max_new=1024, mean_new=64, layers=2, profile=LAZY, max_mem=0.5 * cap)


BAD = [({"mean_new": 0}, "mean-new"), ({"mean_new": -3}, "mean-new"), ({"mean_new": 1025}, "mean-new"),
       ({"mean_new": math.nan}, "mean-new"), ({"mean_new": "x"}, "mean-new"), ({"max_new": 0}, "max-new"),
       ({"mean_new": 8, "lengths": "x.txt"}, "not both"), ({"mean_new": 8, "gamma": 2, "alpha": 0.8}, "not modelled"),
       ({"seq": 2000}, "at most prompt + max-new")]


@pytest.mark.parametrize("kw,needle", BAD)
def test_bad_distribution_arguments(kw, needle):
    with pytest.raises(BMCError, match=re.escape(needle)) as err:
        predict(**{"prompt": 512, "max_new": 1024, **kw})
    assert "\n" not in str(err.value)


FILES = [("", "holds no lengths"), ("\n \n", "holds no lengths"), ("5\nabc\n", "line 2"), ("1.5\n", "line 1"),
         ("0\n", "not a positive integer"), ("-3\n", "not a positive integer"), ("3\n1025\n", "over max-new"),
         ("9" * 40 + "\n", "over max-new")]


@pytest.mark.parametrize("content,needle", FILES)
def test_bad_lengths_files(tmp_path, content, needle):
    f = tmp_path / "lens.txt"
    f.write_text(content)
    with pytest.raises(BMCError, match=re.escape(needle)) as err:
        predict(prompt=512, max_new=1024, lengths=f)
    assert str(f) in str(err.value)
    with pytest.raises(BMCError, match="not found"):
        predict(prompt=512, max_new=1024, lengths=tmp_path / "none.txt")


def _cli(*args: str):
    return runner.invoke(app, ["recommend", "--layers", "2", "--prompt", "256", "--max-new", "512", *args])


@pytest.mark.parametrize("args,needle", [
    (["--mean-new", "0"], "mean-new"), (["--mean-new", "513"], "mean-new"), (["--mean-new", "-1"], "mean-new"),
    (["--lengths", "EMPTY"], "holds no lengths"), (["--lengths", "WORDS"], "not a positive integer"),
    (["--lengths", "LONG"], "over max-new"), (["--lengths", "MISSING"], "not found"),
    (["--mean-new", "8", "--gamma", "2", "--alpha", "0.8"], "not modelled"), (["--seq", "1000"], "max-new"),
    (["--mean-new", "8", "--plot", "x.png"], "--plot"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    files = {"EMPTY": "\n", "WORDS": "12\ntwelve\n", "LONG": "600\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    args = [str(tmp_path / a) if a in (*files, "MISSING") else a for a in args]
    res = _cli(*args)
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.startswith("error:") and "\n" not in err and needle in err


def test_cli_json_carries_the_distribution(tmp_path):
    f = tmp_path / "lens.txt"
    f.write_text("10\n40\n40\n500\n")
    res = _cli("--lengths", str(f), "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["expected_new_tokens"] == 147.5 and d["max_new"] == 512 and "observed in lens.txt" in d["output_length"]
    assert d["worst_peak_resident_bytes"] >= d["peak_resident_bytes"] and d["seq"] == 768
    assert all("worst_peak_resident_bytes" in b for b in d["baselines"].values())
    res = _cli("--mean-new", "32")
    assert res.exit_code == 0 and "expected of at most 512" in res.stdout, res.output
    res = _cli("--json")  # --max-new alone: generation ends at prompt + max-new, as --seq would say
    assert res.exit_code == 0 and json.loads(res.stdout)["seq"] == 768, res.output
