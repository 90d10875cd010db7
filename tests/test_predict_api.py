"""predict() and recommend() as an API: every bad argument is a one-line BMCError naming it, options that
conflict or would do nothing say so, numpy scalars work as Python ones, and labels round-trip."""

import json
import math

import numpy as np
import pytest
from conftest import policies
from hypothesis import given
from hypothesis import strategies as st

from bmc_model import NAMED, BMCError, Policy, parse_policy, predict, recommend
from bmc_model.core.policy import parse_width
from bmc_model.core.specs import get_spec

BAD_COMMON = [
    ("model", 123), ("model", ""), ("model", "  "), ("model", ["llama-7b"]), ("model", "no-such-model"),
    ("seq", 2048.0), ("seq", True), ("seq", "2048"), ("seq", None), ("seq", np.float64(2048)),
    ("prompt", 1.5), ("prompt", "x"), ("batch", np.bool_(True)), ("batch", 2.0), ("batch", None),
    ("layers", "x"), ("layers", 1.0), ("layers", -1), ("dtype", 5), ("dtype", "int8"), ("dtype", ""),
    ("profile", 123), ("profile", ""), ("profile", "/nonexistent/profile.json"), ("config", 123),
    ("config", ""), ("gamma", "x"), ("gamma", -1), ("gamma", 1.5), ("gamma", [4]), ("runtime", 3),
    ("runtime", "tf"), ("alpha", 0.8), ("draft", "qwen2.5-coder-0.5b"), ("draft_cost", 0.1),
]
BAD_SD = [  # with gamma 4
    ("alpha", "0.8"), ("alpha", []), ("alpha", [0.5, "x"]), ("alpha", 1.0), ("alpha", math.nan), ("alpha", -0.1),
    ("alpha", {"a": 1}), ("alpha", None), ("draft", 5), ("draft", ""), ("draft", "llama-7b"), ("draft_cost", "x"),
    ("draft_cost", math.nan), ("draft_cost", math.inf), ("draft_cost", 10.0), ("draft_cost", -1.0),
]
BAD_PREDICT = [("policy", 3), ("policy", "nope"), ("policy", ""), ("policy", "fixed:0:exact"), ("r", 0), ("r", "5"),
               ("r", 2.0), ("width", 3), ("width", "e"), ("gamma", "auto")]
BAD_RECOMMEND = [("max_mem", "2 parsecs"), ("max_mem", -1), ("max_mem", True), ("max_mem", [1]), ("widths", []),
                 ("widths", "e"), ("widths", 5), ("widths", ["exact", 3]), ("widths", ""), ("tolerance", 1.0),
                 ("tolerance", "x"), ("tolerance", math.nan), ("pad", 0), ("pad", 1.5), ("gamma", "autox")]


def _raises_one_line(fn, **kw):
    with pytest.raises(BMCError) as err:
        fn(**kw)
    msg = str(err.value)
    assert msg and "\n" not in msg
    return msg


@pytest.mark.parametrize("arg,value", BAD_COMMON + [(a, v) for a, v in BAD_PREDICT])
def test_every_bad_predict_argument_is_a_bmc_error(arg, value):
    kw = {"seq": 2048, arg: value}
    _raises_one_line(predict, **kw)


@pytest.mark.parametrize("arg,value", BAD_SD)
@pytest.mark.parametrize("fn", [predict, recommend])
def test_bad_speculative_arguments_are_bmc_errors(fn, arg, value):
    kw = {"model": "qwen2.5-coder-1.5b", "seq": 512, "gamma": 4, "alpha": 0.8, arg: value}
    _raises_one_line(fn, **kw)


@pytest.mark.parametrize("arg,value", BAD_COMMON + BAD_RECOMMEND)
def test_every_bad_recommend_argument_is_a_bmc_error(arg, value):
    _raises_one_line(recommend, **{"seq": 512, arg: value})


@pytest.mark.parametrize("arg", ["model", "seq", "prompt", "batch", "layers", "gamma", "alpha", "r", "width",
                                 "tolerance", "max_mem", "widths", "pad"])
def test_type_errors_name_the_argument(arg):
    fn = predict if arg in ("r", "width") else recommend
    value = {"alpha": "0.8", "max_mem": "2 parsecs", "widths": 5}.get(arg, object())
    kw = {"gamma": 4} if arg == "alpha" else {}
    msg = _raises_one_line(fn, **{"seq": 512, **kw, arg: value})
    assert arg.replace("_", "-") in msg or arg in msg or "size" in msg


@pytest.mark.parametrize("kw,says", [
    ({"alpha": 0.8}, "--alpha needs --gamma N or --gamma auto"), ({"alpha": 0.8, "gamma": 0}, "--alpha needs"),
    ({"draft": "qwen2.5-coder-0.5b"}, "--draft needs --gamma"), ({"draft_cost": 0.1, "gamma": 0}, "--draft-cost needs"),
    ({"gamma": 4}, "needs an acceptance rate"), ({"gamma": "auto"}, "gamma auto needs"),
    ({"gamma": 4, "alpha": 0.8, "draft": "qwen2.5-coder-0.5b", "draft_cost": 0.1}, "not both"),
    ({"model": "mistral-7b", "config": "config.json"}, "either a model or a config"),
])
def test_conflicting_or_idle_options_say_so(kw, says):
    for fn in (predict, recommend):
        if fn is predict and kw.get("gamma") == "auto":
            continue
        msg = _raises_one_line(fn, **{"model": "qwen2.5-coder-1.5b", "seq": 512, **kw})
        assert says in msg


@pytest.mark.parametrize("kw,says", [
    ({"policy": "dynamic", "r": 64}, "conflicts with r=64"), ({"policy": "mlx", "r": 64}, "grows by r=256"),
    ({"policy": "static", "r": 64}, "takes no r"), ({"policy": "geometric", "r": 2}, "takes no r"),
    ({"width": "exact"}, "needs r or a policy"), ({"policy": "fixed:32:exact", "width": "padded"}, "conflicts"),
    ({"policy": "bmc"}, "needs r"), ({"policy": Policy("fixed", 8, width="exact"), "width": "padded"}, "conflicts"),
    ({"policy": Policy("fixed", 8, width="exact"), "r": 9}, "conflicts with r=9"),
])
def test_policy_options_that_conflict_are_errors(kw, says):
    assert says in _raises_one_line(predict, seq=2048, **kw)


def test_policy_options_that_agree_or_complete_a_policy_are_honoured():
    assert predict(policy="static", width="exact").policy == NAMED["reserve"]  # a named policy's width is a default
    assert predict(policy="llamacpp", width="exact").policy == NAMED["reserve"]
    assert predict(policy="dynamic", width="padded").policy == Policy("fixed", 1, width="padded")
    assert predict(policy="bmc", r=64).policy == Policy("fixed", 64, width="padded")
    assert predict(policy="fixed", r=64, width="PAD-128").policy == Policy("fixed", 64, width="pad", pad=128)
    assert predict(policy="dynamic", r=1).policy == NAMED["dynamic"]  # the same r is no conflict
    assert predict(policy="fixed:32:exact", width="EXACT").policy == Policy("fixed", 32, width="exact")
    assert predict(r=64).policy == Policy("fixed", 64, width="padded")
    assert predict().policy == NAMED["dynamic"]


def test_model_beside_config_is_a_conflict(tmp_path):
    cfg = {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 64,
           "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 1024}
    path = tmp_path / "tiny" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(cfg))
    a = predict(config=path, seq=512)
    assert a == predict(model=None, config=str(path), seq=512)
    assert a.model == "tiny"
    for model in ("llama-7b", get_spec("llama-7b"), "smollm2-135m"):
        with pytest.raises(BMCError, match="not both"):
            predict(model=model, config=path)


def test_numpy_scalars_give_identical_results_to_python_ones():
    py = predict("llama-7b", 3000, 1000, r=40, width="exact", batch=2, layers=4, gamma=3, alpha=[0.8, 0.5],
                 draft_cost=0.1)
    npy = predict("llama-7b", np.int64(3000), np.int32(1000), r=np.int16(40), width="exact", batch=np.uint8(2),
                  layers=np.int64(4), gamma=np.int64(3), alpha=np.array([0.8, 0.5]), draft_cost=np.float64(0.1))
    assert npy == py
    assert predict("llama-7b", 3000, alpha=np.float64(0.8), gamma=2) == predict("llama-7b", 3000, alpha=0.8, gamma=2)
    a = recommend("smollm2-135m", np.int64(1024), gamma="auto", alpha=np.float64(0.8), tolerance=np.float64(0.01),
                  max_mem=np.int64(2**30), pad=np.int64(128))
    b = recommend("smollm2-135m", 1024, gamma="auto", alpha=0.8, tolerance=0.01, max_mem=2**30, pad=128)
    assert a.prediction == b.prediction and a.chosen_r == b.chosen_r and a.argmin_r == b.argmin_r
    assert recommend("llama-7b", 1024, gamma=np.int64(4), alpha=0.7).gamma == 4


@given(st.integers(2, 5000), st.data())
def test_numpy_lengths_equal_python_lengths(seq, data):
    prompt = data.draw(st.integers(1, seq - 1))
    r = data.draw(st.integers(1, seq))
    dt = data.draw(st.sampled_from([np.int64, np.int32, np.uint32, int]))
    assert predict("smollm2-135m", dt(seq), dt(prompt), r=dt(r)) == predict("smollm2-135m", seq, prompt, r=r)


@given(policies(factors=(1.3, 2.0, 1.001, 1.0 + 1 / 3, 3.141592653589793)))
def test_every_policy_label_parses_back_to_an_equal_policy(pol):
    for text in (pol.label, pol.label.upper(), f"  {pol.label.title()}  "):
        assert parse_policy(text) == pol
    assert parse_width(pol.width_label) == (pol.width, pol.pad)
    assert parse_width(pol.width_label.upper()) == (pol.width, pol.pad)
    assert hash(parse_policy(pol.label)) == hash(pol)


@pytest.mark.parametrize("text", ["r=40 exact", "geometric x2 exact", "static padded", "static pad-256",
                                  "r=1 pad-7", "geometric x1.5 padded", "reserve"])
def test_labels_recommend_prints_are_accepted_by_predict(text):
    pol = parse_policy(text)
    assert pol.label == text
    assert predict(policy=text) == predict(policy=pol) == predict(policy=text.upper())


def test_recommend_labels_round_trip_through_predict():
    rec = recommend("llama-7b", 2048)
    for lab, sw in rec.sweeps.items():
        r = rec.chosen_r[lab]
        p = predict("llama-7b", 2048, r=r, width=lab.upper())
        assert p.policy == sw.policy(r) and p.width == lab
    again = predict("llama-7b", 2048, policy=rec.policy.label)
    assert again.policy == rec.policy and again.ms_per_token == rec.prediction.ms_per_token
    if rec.policy.growth == "fixed":
        assert predict("llama-7b", 2048, r=rec.r, width=rec.width).policy == rec.policy


def test_widths_take_a_label_a_comma_list_or_a_sequence_in_any_case():
    assert list(recommend(seq=1024, widths="exact").sweeps) == ["exact"]
    assert list(recommend(seq=1024, widths="Padded, EXACT").sweeps) == ["padded", "exact"]
    assert list(recommend(seq=1024, widths=("pad-64", "exact", "EXACT")).sweeps) == ["pad-64", "exact"]
    assert list(recommend(seq=1024, widths=["pad"], pad=32).sweeps) == ["pad-32"]
    assert list(recommend(seq=1024, widths=np.array(["padded"])).sweeps) == ["padded"]


def test_case_and_spacing_of_names_do_not_matter():
    base = predict("llama-7b", 2048, policy="static", dtype="float16", runtime="bmc")
    assert predict(" LLAMA-7B ", 2048, policy="STATIC", dtype="Float16", runtime="BMC") == base
    assert recommend(seq=1024, gamma=" AUTO ", alpha=0.8).gamma == recommend(seq=1024, gamma="auto", alpha=0.8).gamma
    assert recommend(seq=1024, gamma="4", alpha=0.8).gamma == 4


ANY = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=12),
                st.lists(st.floats(-1, 2), max_size=3), st.binary(max_size=4),
                st.sampled_from([np.int64(7), np.float64(0.5), np.float32(0.25), np.bool_(True), np.array([0.5]),
                                 np.array(3), object(), "auto", "exact", "pad-8", "static", "2GiB", "r=8 exact"]))
PREDICT_ARGS = ["model", "seq", "prompt", "policy", "r", "width", "batch", "dtype", "profile", "layers", "config",
                "gamma", "alpha", "draft", "draft_cost", "runtime"]
RECOMMEND_ARGS = [a for a in PREDICT_ARGS if a not in ("policy", "r", "width")] + ["max_mem", "pad", "tolerance",
                                                                                   "widths"]


CALLS = [(predict, a) for a in PREDICT_ARGS] + [(recommend, a) for a in RECOMMEND_ARGS]


@given(st.sampled_from(CALLS), ANY, st.booleans())
def test_the_api_raises_nothing_but_bmc_error(call, value, sd):
    fn, arg = call
    base = {"model": "qwen2.5-coder-1.5b", "seq": 512, **({"gamma": 3, "alpha": 0.7} if sd else {})}
    try:
        fn(**{**base, arg: value})
    except BMCError as e:
        assert str(e) and "\n" not in str(e)
