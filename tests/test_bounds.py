"""Input bounds (core/bounds.py): absolute ceilings, the KV cache against the host's RAM, the context note,
and a sweep that stops where the cost is flat."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmc_model import BMCError, predict, recommend
from bmc_model.core import bounds
from bmc_model.core.inputs import format_bytes, parse_bytes, size
from bmc_model.core.profile import embedded_profile
from bmc_model.core.specs import get_spec
from bmc_model.core.sweep import sweep_r
from bmc_model.core.workload import Geometry, Workload

PROF = embedded_profile()


def with_ram(ram: int):
    return dataclasses.replace(PROF, host={**PROF.host, "ram_bytes": ram})


@pytest.mark.parametrize("kw", [{"seq": bounds.SEQ_MAX + 1}, {"seq": 10**12}, {"seq": 2**63 - 1}, {"seq": 1},
                                {"batch": bounds.BATCH_MAX + 1}, {"batch": 10**20}, {"batch": 0},
                                {"layers": bounds.LAYERS_MAX + 1}, {"layers": 10**20}, {"layers": 0},
                                {"prompt": 2048}, {"prompt": 0}, {"prompt": -5},
                                {"gamma": bounds.GAMMA_MAX + 1, "alpha": 0.8}, {"gamma": 10**20, "alpha": 0.8},
                                {"gamma": 1024, "alpha": 0.8}, {"gamma": "99999999999999999999", "alpha": 0.8}])
@pytest.mark.parametrize("fn", [predict, recommend])
def test_sizes_past_a_ceiling_are_one_line_errors(fn, kw):
    with pytest.raises(BMCError) as err:
        fn("llama-7b", **{"seq": 2048, **kw})
    assert "\n" not in str(err.value)
    name = next(iter(kw))
    assert name in str(err.value)


def test_r_is_bounded_by_seq_plus_gamma_where_a_user_gives_it():
    assert predict(seq=2048, prompt=1000, r=2048).growth_events == 0
    with pytest.raises(BMCError, match=r"r must be an integer in \[1, 2048\]"):
        predict(seq=2048, r=2049)
    with pytest.raises(BMCError, match=r"\[1, 2052\]"):
        predict(seq=2048, policy="fixed:3000:exact", gamma=4, alpha=0.5)
    assert predict(seq=2052, prompt=2048, r=2055, gamma=3, alpha=0.5).r == 2055  # seq + gamma
    # a named policy's own r (mlx: 256) is not the user's: it runs at any seq
    assert predict(seq=100, policy="mlx").r == 256


def test_kv_cache_larger_than_the_host_ram_is_refused_with_the_largest_seq_that_fits():
    spec = get_spec("llama-7b")
    row = 2 * spec.layers * spec.kv_heads * spec.head_dim * 4  # K and V of every layer, float32, batch 1
    prof = with_ram(row * 5000)
    assert predict("llama-7b", 5000, profile=prof).seq == 5000
    with pytest.raises(BMCError) as err:
        predict("llama-7b", 5001, profile=prof)
    msg = str(err.value)
    assert "largest seq that fits is 5000" in msg and "the profile's host" in msg and "\n" not in msg
    with pytest.raises(BMCError, match="largest seq that fits is 4995"):  # seq + gamma rows are held
        predict("llama-7b", 5000, profile=prof, gamma=5, alpha=0.5)
    with pytest.raises(BMCError, match="lower batch or layers"):
        predict("llama-7b", 2048, profile=with_ram(row))
    with pytest.raises(BMCError, match="largest seq that fits is 2500"):  # batch 2 holds twice the rows
        recommend("llama-7b", 4096, profile=prof, batch=2)


def test_sliding_window_layers_count_only_their_window():
    mistral = get_spec("mistral-7b")
    assert mistral.sliding_count == mistral.layers and mistral.sliding_window == 4096
    assert predict(mistral, 200_000, policy="static").seq == 200_000  # 32 layers of 4096 rows fit
    largest = PROF.host["ram_bytes"] // (2 * mistral.layers * mistral.kv_heads * mistral.head_dim * 4)
    with pytest.raises(BMCError, match=f"largest seq that fits is {largest}$"):
        predict(dataclasses.replace(mistral, sliding_window=None), 200_000, policy="static")
    half = dataclasses.replace(mistral, sliding_layers=16)
    assert bounds.kv_bytes(half, 1.0, 10_000) == 2 * (16 * 10_000 + 16 * 4096)
    with pytest.raises(BMCError, match="16 of them over a 4096-row window"):
        predict(half, 1_000_000, policy="static")


def test_without_a_profile_ram_this_hosts_ram_decides(monkeypatch):
    monkeypatch.setattr(bounds.host, "ram_bytes", lambda: 2**30)
    prof = dataclasses.replace(PROF, host={})
    with pytest.raises(BMCError, match="RAM of this host"):
        predict("llama-7b", 8192, profile=prof)
    monkeypatch.setattr(bounds.host, "ram_bytes", lambda: 0)  # unknown: no check rather than a wrong one
    assert predict("llama-7b", 8192, profile=prof).seq == 8192


def test_a_seq_past_the_context_is_a_note_not_an_error():
    spec = get_spec("llama-7b")
    assert spec.max_context == 4096
    assert predict("llama-7b", 4096).notes == []
    note = predict("llama-7b", 4097).notes
    assert len(note) == 1 and "4097" in note[0] and "4096" in note[0]
    rec = recommend("llama-7b", 16384, 8000, layers=2, gamma=7, alpha=0.76)
    assert rec.notes[0] == note[0].replace("4097", "16384").replace("llama-7b's", "llama-7b[2L]'s")
    assert rec.prediction.notes == rec.notes[:1]
    no_context = dataclasses.replace(spec, max_context=None)
    assert predict(no_context, 9000).notes == []


@pytest.mark.parametrize("gamma", [0, 5])
def test_sweep_holds_only_the_distinct_r_and_answers_past_them(gamma):
    w = Workload(300, 1000, gamma=gamma, accept=(0.7,) if gamma else ())
    geo = Geometry.of(get_spec("llama-7b"), 1, "float32")
    for width in ("padded", "exact", "pad"):
        sw = sweep_r(width, w, geo, PROF)
        assert len(sw.r) == len(sw.seconds) == len(sw.resident_bytes) == sw.flat_r == 700 + gamma
        assert sw.seconds_at(10**6) == sw.seconds_at(sw.flat_r) == float(sw.seconds[-1])
        assert sw.resident_at(10**6) == float(sw.resident_bytes[-1])
        with pytest.raises(BMCError):
            sw.seconds_at(0)


def test_recommend_at_a_long_seq_sweeps_only_to_the_flat_point():
    rec = recommend("smollm2-135m", 200_000, 199_000, layers=1)
    assert all(len(sw.r) == 1000 for sw in rec.sweeps.values())
    rec = recommend("smollm2-135m", 60_000, layers=2, gamma="auto", alpha=0.8)
    assert all(len(sw.r) == 30_000 + rec.gamma for sw in rec.sweeps.values())


def test_no_fit_says_what_the_smallest_configuration_needs():
    free = recommend("llama-7b", 2048)
    need = min([float(sw.resident_bytes.min()) for sw in free.sweeps.values()]
               + [b.peak_resident_bytes for b in free.baselines.values()])
    with pytest.raises(BMCError) as err:
        recommend("llama-7b", 2048, max_mem=need * 0.99)
    assert f"needs {format_bytes(need)}" in str(err.value)
    assert recommend("llama-7b", 2048, max_mem=need).prediction.peak_resident_bytes <= need


@pytest.mark.parametrize("text,value", [("8G", 8e9), ("512MiB", 512 * 2**20), ("1e9", 1e9), ("1E+9b", 1e9),
                                        (" 2 gib ", 2 * 2**30), ("0.5k", 500)])
def test_sizes_parse_in_the_core(text, value):
    assert parse_bytes(text) == value == size("max-mem", text)


@pytest.mark.parametrize("bad", ["", "2 parsecs", "-1G", "0", "1e999", "nan", "inf", "G"])
def test_bad_sizes_are_errors(bad):
    with pytest.raises(BMCError):
        size("max-mem", bad)


def test_max_mem_as_a_string_equals_the_number():
    a, b = recommend("llama-7b", 2048, max_mem="2GiB"), recommend("llama-7b", 2048, max_mem=2 * 2**30)
    assert a.prediction == b.prediction and a.chosen_r == b.chosen_r
    assert recommend("llama-7b", 2048, max_mem=np.float64(2 * 2**30)).prediction == b.prediction


@given(st.integers(-(2**70), 2**70), st.integers(-(2**70), 2**70), st.integers(-(2**70), 2**70))
def test_any_integer_sizes_give_a_prediction_or_a_bmc_error(seq, batch, layers):
    try:
        p = predict("smollm2-135m", seq, batch=batch, layers=layers, policy="static")
    except BMCError as e:
        assert "\n" not in str(e)
    else:
        assert 2 <= p.seq <= bounds.SEQ_MAX and 1 <= p.batch <= bounds.BATCH_MAX
