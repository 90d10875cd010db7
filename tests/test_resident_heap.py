"""torch.cat's freed heap blocks under transformers (core/resident.py: the fifty-percent rule below glibc's ceiling)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmc_model import predict
from bmc_model.core.profile import embedded_profile
from bmc_model.core.request import model_spec
from bmc_model.core.resident import HEAP_CEILING_BYTES, HEAP_HOLES, kv_memory
from bmc_model.core.sweep import sweep_r
from bmc_model.core.workload import Geometry, Workload

SMOL = dataclasses.replace(model_spec("smollm2-135m"), dtype="float32")


def k_bytes(spec, seq: int, batch: int) -> int:
    return batch * spec.kv_heads * spec.head_dim * 4 * seq


@given(seq=st.integers(64, 8192), batch=st.integers(1, 16))
def test_cat_under_transformers_holds_half_again_below_the_ceiling_only(seq, batch):
    hf = predict(model=SMOL, seq=seq, batch=batch, policy="dynamic", runtime="hf", dtype="float32")
    ours = predict(model=SMOL, seq=seq, batch=batch, policy="dynamic", runtime="bmc", dtype="float32")
    assert hf.memory_bytes == ours.memory_bytes  # the live buffers are the same
    if k_bytes(SMOL, seq - 1, batch) < HEAP_CEILING_BYTES:
        assert hf.peak_resident_bytes == pytest.approx((1 + HEAP_HOLES) * hf.memory_bytes)
        assert hf.resident_bytes == pytest.approx(hf.peak_resident_bytes)
        assert hf.peak_resident_bytes > ours.peak_resident_bytes
    else:  # mapped fresh at every token: each freed buffer goes back to the OS at once
        assert hf.peak_resident_bytes == ours.peak_resident_bytes
    assert hf.peak_resident_bytes <= hf.reserved_bytes


@pytest.mark.parametrize("policy", ["reserve", "static", "bmc:64", "fixed:1:padded", "geometric"])
def test_no_other_policy_and_no_other_device_holds_freed_blocks(policy):
    hf = predict(model=SMOL, seq=2048, policy=policy, runtime="hf", dtype="float32")
    ours = predict(model=SMOL, seq=2048, policy=policy, runtime="bmc", dtype="float32")
    assert hf.peak_resident_bytes == ours.peak_resident_bytes
    base = embedded_profile()
    cuda = dataclasses.replace(base, host={**base.host, "device": "cuda"})
    on_gpu = predict(model=SMOL, seq=2048, policy="dynamic", runtime="hf", dtype="float32", profile=cuda)
    assert on_gpu.peak_resident_bytes < (1 + HEAP_HOLES) * on_gpu.memory_bytes


def test_a_sweep_over_r_charges_the_heap_at_r_1_alone():
    prof = embedded_profile().for_runtime("hf")
    geo = Geometry.of(SMOL, 1, "float32")
    w = Workload(prompt=1024, seq=2048)
    sw = sweep_r("exact", w, geo, prof, r=np.array([1.0, 2.0, 64.0]))
    from bmc_model.core.policy import Policy

    for i, r in enumerate((1, 2, 64)):
        one = kv_memory(Policy("fixed", r, width="exact"), w, geo, prof)
        assert sw.resident_bytes[i] == pytest.approx(one.resident_peak)
    assert sw.resident_bytes[0] == pytest.approx((1 + HEAP_HOLES) * 2 * SMOL.layers * geo.rho * 2048)
    assert sw.resident_bytes[1] < sw.resident_bytes[0]
