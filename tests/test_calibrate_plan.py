"""What a calibration plans to measure, and the one-line errors on bad options."""

from __future__ import annotations

import pytest

from bmc_model.calibrate.plan import DEFAULT_MODELS, MIN_FREE_RAM, QUICK_MODELS, check_options, make_plan
from bmc_model.core.errors import BMCError
from bmc_model.core.specs import get_spec

GiB = 2**30
MiB = 2**20


def plan(quick=True, ram=16 * GiB, model=None, dtype="float32"):
    specs = [get_spec(model)] if model else []
    return make_plan(quick=quick, device="cpu", dtype=dtype, threads=2, specs=specs, available_ram=ram,
                     llc_bytes=32 * MiB)


def test_full_plan_spans_4k_to_1g_and_quick_is_smaller():
    full, quick = plan(quick=False), plan(quick=True)
    assert min(full.alloc_sizes) == 4096 and max(full.alloc_sizes) == GiB
    assert max(quick.alloc_sizes) < max(full.alloc_sizes)
    assert max(full.weight_sizes) > GiB and min(full.weight_sizes) <= 16 * MiB  # beyond any LLC
    assert full.notes == () and quick.notes == ()
    assert [s.name for s in full.specs] == list(DEFAULT_MODELS)
    assert [s.name for s in quick.specs] == list(QUICK_MODELS)
    assert sum(quick.budgets.values()) < sum(full.budgets.values())
    assert all(a < b for a, b in zip(full.alloc_sizes, full.alloc_sizes[1:]))


def test_model_option_sets_the_geometry():
    p = plan(model="qwen2.5-coder-1.5b")
    assert [s.name for s in p.specs] == ["qwen2.5-coder-1.5b"]
    assert p.primary.kv_heads == 2


def test_little_free_ram_shrinks_the_ranges_and_says_so():
    p = plan(quick=False, ram=1 * GiB)
    assert max(p.alloc_sizes) <= GiB // 4
    assert max(p.weight_sizes) <= GiB // 4
    assert any("allocation sizes capped" in n and "free" in n for n in p.notes)
    assert p.describe()["notes"] == list(p.notes)


def test_too_little_ram_is_a_clear_error():
    with pytest.raises(BMCError, match="too little free RAM"):
        plan(ram=MIN_FREE_RAM // 2)


def test_half_precision_on_cpu_keeps_quick_weights_small():
    assert max(plan(dtype="bfloat16").weight_sizes) <= 256 * MiB
    assert plan(dtype="bfloat16").elem == 2


@pytest.mark.parametrize("device,threads,dtype,model,match", [
    ("tpu", None, "float32", None, "unknown device 'tpu'"),
    ("cpu", 0, "float32", None, "--threads must be at least 1"),
    ("cpu", -3, "float32", None, "--threads must be at least 1"),
    ("cpu", None, "float64", None, "unknown dtype 'float64'"),
    ("cpu", None, "float32", "llama-7", "unknown model 'llama-7'"),
])
def test_bad_options(device, threads, dtype, model, match):
    with pytest.raises(BMCError, match=match):
        check_options(device, threads, dtype, model)


def test_good_options():
    assert check_options("cpu", 1, "bfloat16", None) == []
    assert check_options("cuda", None, "float16", "llama-7b")[0].name == "llama-7b"
