"""predict_many() and choose_many() against predict() and recommend(), request by request."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmc_model import BMCError, choose_many, predict, predict_many, recommend
from bmc_model.core.choose import DEFAULT_R_GRID
from bmc_model.core.many import TERMS

MODELS = ("llama-7b", "smollm2-135m", "gemma3-270m", "mistral-7b", "qwen2.5-coder-0.5b")
RULES = ({"r": None}, {"r": None, "width": "exact"}, {"r": None, "width": "pad-128"}, {"policy": "reserve"},
         {"policy": "static"}, {"policy": "llamacpp"}, {"policy": "geometric"}, {"policy": "geometric:1.5:padded"},
         {"policy": "mlx"}, {"policy": "dynamic"}, {"policy": "fixed:48:exact"}, {})
FIELDS = ("ms_per_token", "memory_bytes", "reserved_bytes", "resident_bytes", "peak_resident_bytes",
          "growth_events", "advance")


@st.composite
def streams(draw, sd=True):
    n = draw(st.integers(1, 12))  # past _SCALAR_MAX: groups priced on arrays, and small ones with Python numbers
    seq = [draw(st.integers(3, 6000)) for _ in range(n)]
    prompt = [draw(st.integers(1, s - 2)) for s in seq]
    batch = [draw(st.integers(1, 3)) for _ in range(n)]
    gamma = 0
    if sd and draw(st.booleans()):
        gamma = draw(st.integers(1, 6))
        seq = [max(s, p + gamma + 1) for s, p in zip(seq, prompt)]
    alpha = draw(st.floats(0.0, 0.95)) if gamma else None
    max_new = [s - p + draw(st.integers(0, 3000)) for s, p in zip(seq, prompt)] if draw(st.booleans()) else None
    return {"model": draw(st.sampled_from(MODELS)), "seq": seq, "prompt": prompt, "batch": batch, "gamma": gamma,
            "alpha": alpha, "max_new": max_new}


def at(s: dict, i: int) -> dict:
    """Request i of a drawn stream, as predict() and recommend() take it."""
    out = {"model": s["model"], "seq": s["seq"][i], "prompt": s["prompt"][i], "batch": s["batch"][i]}
    if s["max_new"] is not None:
        out["max_new"] = s["max_new"][i]
    return out


def close(a: float, b: float, rel: float = 1e-9) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)


def check_each(many, kws: list[dict]) -> None:
    assert len(many) == len(kws)
    for i, kw in enumerate(kws):
        one = predict(**kw)
        for f in FIELDS:
            assert close(getattr(one, f), float(getattr(many, f)[i])), (i, f, kw)
        for t in TERMS:  # a term next to the total (some are 0)
            assert abs(one.breakdown[t] - many.breakdown[t][i]) <= 1e-9 * one.ms_per_token, (i, t, kw)
        assert many.policy(i) == one.policy
        assert close(many.tokens_per_s[i], one.tokens_per_s)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.sampled_from(RULES), st.data())
def test_predict_many_is_predict(s, rule, data):
    """Every policy, width and SD setting: each element equals predict() alone, to 1e-9 relative."""
    n = len(s["seq"])
    kw = dict(rule)
    if "r" in kw:
        rows = s["seq"] if s["max_new"] is None else [p + m for p, m in zip(s["prompt"], s["max_new"])]
        kw["r"] = [data.draw(st.integers(1, n + s["gamma"])) for n in rows]
    each = []
    for i in range(n):
        one = {**at(s, i), "gamma": s["gamma"], "alpha": s["alpha"]}
        one.update({k: (v[i] if isinstance(v, list) else v) for k, v in kw.items()})
        each.append(one)
    refused = {}
    for i, one in enumerate(each):
        try:
            predict(**one)
        except BMCError as err:
            refused[i] = str(err)
    if refused:  # predict_many refuses too, naming one of them with predict()'s message
        with pytest.raises(BMCError) as err:
            predict_many(**s, **kw)
        head, _, message = str(err.value).partition(": ")
        assert refused.get(int(head.split()[1])) == message
        return
    check_each(predict_many(**s, **kw), each)


def test_mixed_columns_group_and_come_back_in_order():
    """Policies, gammas and per-request acceptances mixed in one call."""
    seq = np.array([3000, 1200, 4096, 800, 2500, 1500])
    prompt = np.array([1000, 600, 100, 700, 2000, 20])
    pol = ["reserve", "bmc:64", "geometric", "fixed:17:pad-256", "mlx", "r=5 exact"]
    gamma = np.array([0, 4, 0, 3, 2, 0])
    alpha = np.array([np.nan, 0.7, np.nan, 0.5, 0.9, np.nan])
    many = predict_many(seq=seq, prompt=prompt, policy=pol, gamma=gamma, alpha=alpha)
    each = [{"seq": int(seq[i]), "prompt": int(prompt[i]), "gamma": int(gamma[i]), "policy": pol[i],
             "alpha": None if np.isnan(alpha[i]) else float(alpha[i])} for i in range(6)]
    check_each(many, each)
    dicts = many.to_dicts()
    assert [d["policy"] for d in dicts] == [predict(**kw).policy.label for kw in each]
    assert dicts[1]["breakdown_ms"] == pytest.approx(predict(**each[1]).breakdown, rel=1e-12)
    widths = predict_many(seq=seq, r=np.array([1, 64, 1, 17, 256, 3]), width=["exact", "padded"] * 3)
    check_each(widths, [{"seq": int(seq[i]), "r": [1, 64, 1, 17, 256, 3][i], "width": ["exact", "padded"][i % 2]}
                        for i in range(6)])


def test_batch_array_and_new_tokens_and_max_new():
    many = predict_many(model="llama3-8b", prompt=[512, 1024], new_tokens=[512, 3000], batch=[1, 4], r=64,
                        max_new=[1024, 4096])
    check_each(many, [{"model": "llama3-8b", "prompt": 512, "seq": 1024, "batch": 1, "r": 64, "max_new": 1024},
                      {"model": "llama3-8b", "prompt": 1024, "seq": 4024, "batch": 4, "r": 64, "max_new": 4096}])
    assert many.to_dicts()[1]["max_new"] == 4096


def test_scalars_are_one_request():
    many = predict_many(seq=2048, r=64)
    assert len(many) == 1 and many.ms_per_token[0] == predict(seq=2048, r=64).ms_per_token


@pytest.mark.parametrize(("kw", "message"), [
    ({"seq": [100, 1], "r": 8}, "request 1: seq must be an integer in [2,"),
    ({"seq": [100, 200], "prompt": [10, 300]}, "request 1: prompt must be an integer in [1, 199]"),
    ({"seq": [100, 200], "batch": [1, 0]}, "request 1: batch must be an integer in [1,"),
    ({"seq": [100, 200], "r": [5, 500]}, "request 1: r must be an integer in [1, 200]"),
    ({"seq": [100, 200], "gamma": [0, 2]}, "request 1: speculative decoding (gamma > 0) needs an acceptance"),
    ({"seq": [100, 200], "gamma": [0, 2], "alpha": 0.5}, "request 0: --alpha needs --gamma"),
    ({"seq": [100, 200], "gamma": 2, "alpha": np.array([0.5, 1.5])}, "request 1: alpha must be in [0, 1)"),
    ({"seq": [1000, 2000], "policy": ["mlx", "reserve"], "r": [256, 8]}, "request 1: policy 'reserve'"),
    ({"seq": [1000, 2000], "policy": "mlx", "r": [256, 8]}, "request 1: policy 'mlx' grows by r=256"),
    ({"seq": [100, 2.5]}, "request 1: seq must be an integer, got 2.5"),
    ({"seq": ["100", 200]}, "request 0: seq must be an integer"),
    ({"seq": [100, 200, 300], "r": [1, 2]}, "arrays must have one length"),
    ({"prompt": [10], "new_tokens": [5], "seq": [20]}, "give seq or new_tokens, not both"),
    ({"new_tokens": [5]}, "new_tokens needs prompt"),
    ({"seq": [4096, 200], "batch": [64, 1]}, "request 0: seq 4096: the KV cache would need"),
    ({"seq": [100, 200], "policy": ["reserve", "nope"]}, "request 1: unknown policy 'nope'"),
])
def test_a_bad_request_is_named(kw, message):
    with pytest.raises(BMCError) as err:
        predict_many(**kw)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def _recommended(kw: dict) -> tuple[str | None, int, str | None]:
    """(label, gamma, None), (None, 0, None) where nothing fits the cap, or (None, 0, message) where refused."""
    try:
        rec = recommend(**kw)
    except BMCError as err:
        return None, 0, None if "no configuration fits" in str(err) else str(err)
    return rec.policy.label, rec.gamma, None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.sampled_from([None, 2e8, 1.5e9]),
       st.sampled_from([("padded", "exact", "pad"), ("exact",), ("padded", "pad-512")]),
       st.sampled_from([None, ("reserve", "static", "mlx"), ("dynamic", "geometric")]),
       st.sampled_from([DEFAULT_R_GRID, (1, 4, 16, 64), (100,)]))
def test_choose_many_is_recommend_on_the_same_candidates(s, max_mem, widths, named, grid):
    each = []
    for i in range(len(s["seq"])):
        kw = {**at(s, i), "max_mem": max_mem, "widths": widths, "named": named, "r_grid": grid}
        if s["gamma"]:
            kw.update(gamma=[0, s["gamma"]], alpha=s["alpha"])
        each.append((kw, _recommended(kw)))
    refused = {i: msg for i, (_, (_, _, msg)) in enumerate(each) if msg}
    if refused:  # choose_many refuses too, naming one of them with the same reason
        with pytest.raises(BMCError) as err:
            choose_many(**s, max_mem=max_mem, widths=widths, named=named, r_grid=grid)
        head, _, message = str(err.value).partition(": ")
        assert int(head.split()[1]) in refused and message.split(":")[0] in refused[int(head.split()[1])]
        return
    ch = choose_many(**s, max_mem=max_mem, widths=widths, named=named, r_grid=grid)
    labels = ch.labels()
    for i, (kw, (label, gamma, _)) in enumerate(each):
        assert labels[i] == label, (i, kw)
        if label is not None:
            assert ch.gamma[i] == gamma
            rec = recommend(**kw)
            assert close(ch.peak_resident_bytes[i], rec.prediction.peak_resident_bytes)
            assert close(ch.ms_per_token[i], rec.prediction.ms_per_token, 1e-9)


def test_choose_many_answers_per_request_max_mem():
    ch = choose_many(seq=[2048, 2048], max_mem=[None, 1.0])
    assert ch.fits.tolist() == [True, False]
    assert ch.to_dicts()[1] == {"policy": None, "error": "no configuration fits max_mem"}
    assert ch.to_dicts()[0]["policy"] == recommend(seq=2048, r_grid=DEFAULT_R_GRID).policy.label


def test_r_is_bounded_by_the_rows_the_cache_is_sized_for():
    """With max_new the cache holds prompt + max_new rows: r may reach them, as in predict()."""
    kw = {"prompt": 1000, "seq": 1100, "max_new": 4096, "r": 2048}
    check_each(predict_many(**kw), [kw])
    with pytest.raises(BMCError, match="request 0: r must be an integer in"):
        predict_many(prompt=1000, seq=1100, max_new=200, r=2048)


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_an_r_spelt_in_a_policy_is_checked_for_every_request(order):
    prompt, max_new = np.array([5000, 1000])[order], np.array([4000, 3000])[order]
    with pytest.raises(BMCError, match=f"request {order.index(1)}: r must be an integer in"):
        predict_many(prompt=prompt, max_new=max_new, seq=prompt + 100, policy="fixed:6000:padded")


def test_labels_and_dicts_are_built_once_per_rule():
    many = predict_many(seq=np.full(5000, 3000), r=np.arange(1, 5001) % 7 + 1, width="exact")
    assert many.labels()[:3] == ["r=2 exact", "r=3 exact", "r=4 exact"]
    assert [d["policy"] for d in many.to_dicts()[:2]] == ["r=2 exact", "r=3 exact"]


def test_choose_many_under_max_new_weighs_the_grid_r_as_they_are():
    """An r past T + gamma is not T + gamma when max_new sizes the cache for more: the grid's r stay."""
    ch = choose_many(prompt=[1000], seq=[1100], max_new=4096, named=(), widths="padded", r_grid=(64, 2048))
    rec = recommend(prompt=1000, seq=1100, max_new=4096, named=(), widths="padded", r_grid=(64, 2048))
    assert ch.labels() == [rec.policy.label] and rec.policy.r in (64, 2048)


def test_a_numpy_string_column_is_a_list_of_strings():
    pols = np.array(["reserve", "mlx", "fixed:32:pad-256", "reserve", "geometric"] * 40)
    seq = np.arange(1000, 1200)
    a, b = predict_many(seq=seq, policy=pols), predict_many(seq=seq, policy=pols.tolist())
    assert a.labels() == b.labels() and np.array_equal(a.ms_per_token, b.ms_per_token)
