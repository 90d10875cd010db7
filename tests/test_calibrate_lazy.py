"""lazy_backing (calibrate/bench_lazy.py): measured from the resident size, stored in the profile's scalars
with its raw data, and left out (the profile then reads 0) where it cannot be measured."""

from __future__ import annotations

import sys

import pytest
from test_calibrate_run import synthetic_measurements, tiny_plan

from bmc_model.calibrate import bench_lazy
from bmc_model.calibrate.assemble import build_profile
from bmc_model.calibrate.bench_lazy import lazy_fraction, measure

MiB = 2**20


def test_fraction_of_unwritten_bytes_not_resident():
    assert lazy_fraction(8 * MiB, 64 * MiB, 8 * MiB) == 1.0  # only the written part became resident
    assert lazy_fraction(64 * MiB, 64 * MiB, 8 * MiB) == 0.0  # everything resident at allocation
    assert lazy_fraction(36 * MiB, 64 * MiB, 8 * MiB) == 0.5
    assert lazy_fraction(-MiB, 64 * MiB, 8 * MiB) == 1.0  # the heap shrank meanwhile: clipped
    assert lazy_fraction(99 * MiB, 64 * MiB, 8 * MiB) == 0.0
    assert lazy_fraction(0, 8, 8) == 0.0  # nothing left unwritten: the conservative reading


def test_median_of_the_repeats_from_a_scripted_resident_size():
    # before / after pairs: growth 8, 36 and 8 MiB over 64 MiB with 8 MiB written
    reads = iter([0, 8 * MiB, 0, 36 * MiB, 0, 8 * MiB])
    steps = []
    got = measure(size=64 * MiB, rss=lambda: next(reads), step=lambda: steps.append(1))
    assert got.value == 1.0 and got.raw["samples"] == [1.0, 0.5, 1.0] and got.note == ""
    assert got.raw["written_bytes"] == 8 * MiB and len(steps) == bench_lazy.REPEATS


def test_not_linux_stores_nothing_and_says_so():
    got = measure(size=MiB, rss=lambda: None)
    assert got.value is None and "not measured" in got.note and "lazy_backing" not in got.raw


def test_cuda_commits_at_allocation():
    got = measure("cuda")
    assert got.value == 0.0 and "caching allocator" in got.note


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/statm is Linux's")
def test_measured_on_this_host_is_a_fraction():
    got = measure()
    assert got.value is not None and 0.0 <= got.value <= 1.0
    assert len(got.raw["samples"]) == bench_lazy.REPEATS


def test_profile_stores_the_value_and_raw_and_reads_0_without():
    plan = tiny_plan()
    m = synthetic_measurements(plan)
    assert build_profile(plan, m, {}, "").lazy_backing == 0.0  # not measured: conservative
    m.lazy_backing, m.lazy_raw = 0.75, {"lazy_backing": 0.75, "samples": [0.75]}
    prof = build_profile(plan, m, {}, "")
    assert prof.lazy_backing == prof.scalars["lazy_backing"] == 0.75
    assert prof.raw["lazy_backing"]["samples"] == [0.75]


def test_the_calibration_run_records_it_with_its_time_and_note():
    from bmc_model.calibrate import run
    from bmc_model.calibrate.runner import NullReporter

    bench_s: dict[str, float] = {}
    notes: list[str] = []
    got = run._lazy_backing(tiny_plan(), NullReporter(), bench_s, notes)
    assert bench_s["lazy_backing"] >= 0 and (got.value is not None or notes)
