"""Plain validate's memory probes (validate/decode_memprobe.py): peak resident KV of one configuration in a
fresh process, and how validate's result, table and CLI carry it."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from conftest import tiny_spec  # noqa: E402
from rich.console import Console  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from bmc_model.cli import app  # noqa: E402
from bmc_model.core.errors import BMCError  # noqa: E402
from bmc_model.core.policy import NAMED  # noqa: E402
from bmc_model.core.profile import embedded_profile, write_profile  # noqa: E402
from bmc_model.validate import decode_memprobe, plain  # noqa: E402
from bmc_model.validate.decode_memprobe import probe, request, run_decode_probe  # noqa: E402
from bmc_model.validate.report import show  # noqa: E402
from bmc_model.validate.rss import can_measure  # noqa: E402

# 2 layers, 4 KV heads x 64 fp32: 1 KiB per row per K or V tensor of a layer
SPEC = tiny_spec(heads=4, kv_heads=4, head_dim=64, hidden=64, ffn=128)
ROW = 4 * 64 * 4
MAX_LEN = 8192  # 8 MiB per tensor, 32 MiB in all; the runs write 48 rows of it
FIELDS = {"baseline_rss", "peak_increase", "decode_peak_increase", "after_prefill_increase", "end_increase",
          "cache_peak_bytes", "cache_bytes_final", "final_capacity", "growth_events", "hwm_reset"}

needs_rss = pytest.mark.skipif(can_measure() is not None, reason=str(can_measure()))


def _req(name: str, **kw):
    return request(SPEC, NAMED[name], prompt=32, seq=48, threads=1, **kw)


@needs_rss
def test_reserve_holds_only_the_rows_written_static_holds_all():
    static, reserve = probe(_req("static", max_len=MAX_LEN)), probe(_req("reserve", max_len=MAX_LEN))
    assert set(static) == set(reserve) == FIELDS
    full = 2 * SPEC.layers * MAX_LEN * ROW
    for got in (static, reserve):
        assert got["hwm_reset"] and got["final_capacity"] == MAX_LEN and got["growth_events"] == 0
        assert got["cache_bytes_final"] == full  # both reserve the whole length ...
        assert 0 <= got["decode_peak_increase"] <= got["peak_increase"]
        assert got["decode_peak_increase"] >= got["after_prefill_increase"] >= 0
    # ... but zero-filled pages are resident and torch.empty's are not until written (a lazily backing host)
    assert 0.95 * full <= static["decode_peak_increase"] <= 1.1 * full
    assert reserve["decode_peak_increase"] < full / 8


@needs_rss
def test_probe_runs_in_a_fresh_process():
    got = run_decode_probe(_req("dynamic"))
    assert "error" not in got, got
    assert set(got) == FIELDS
    assert got["growth_events"] == 16 and got["final_capacity"] == 48  # torch.cat at every step
    assert got["cache_bytes_final"] == 2 * SPEC.layers * 48 * ROW
    assert 0 < got["decode_peak_increase"] < 8 * 2**20  # 192 KiB of KV, a few pages of activations


def test_a_host_that_cannot_measure_says_so(monkeypatch):
    monkeypatch.setattr(decode_memprobe, "can_measure", lambda: "no /proc/self/statm")
    assert probe(_req("static")) == {"error": "no /proc/self/statm"}


def _fake_probe(req: dict) -> dict:
    """What a probe measures, without a process: the runtime's reserved peak as the resident one."""
    if req["policy"]["growth"] == "static":
        return {"error": "memory probe failed (exit 1): boom"}
    return {"decode_peak_increase": 1000 * req["prompt"]}


def test_validate_puts_the_measured_peak_beside_the_prediction(monkeypatch):
    monkeypatch.setattr(plain, "run_decode_probe", _fake_probe)
    res = plain.run_validate(SPEC, seq=40, prompt=32, batch=1, profile=embedded_profile(),
                             names=["static", "reserve"], r_grid=[4], widths=("exact",), repeats=1)
    d = res.to_dict()
    json.dumps(d)
    rows = {r["name"]: r for r in d["rows"]}
    assert "measured_peak_resident_bytes" not in rows["static"]  # its probe failed
    assert d["memory_probe"]["failed"] == {"static": "memory probe failed (exit 1): boom"}
    assert d["memory_probe"]["subtracted_bytes"] == 0
    errs = []
    for name, r in rows.items():
        if name == "static":
            continue
        assert r["measured_peak_resident_bytes"] == 32000
        assert r["resident_error_pct"] == pytest.approx(100 * (r["predicted_peak_resident_bytes"] / 32000 - 1))
        errs.append(abs(r["resident_error_pct"]))
    assert d["max_abs_resident_error_pct"] == pytest.approx(max(errs))
    assert d["overhead_vs_reserve"] is not None  # reserve ran, as itself or as the recommended configuration
    con = Console(record=True, width=240)
    show(res, con)
    text = con.export_text()
    assert "resident (meas/pred)" in text and "peak resident KV: median / max |error|" in text
    assert "memory probe failed" in text


@needs_rss
def test_validate_measures_reserve_below_the_padded_buffers(monkeypatch):
    monkeypatch.setattr(plain, "run_decode_probe", probe)  # in this process: fast, and enough for an order
    res = plain.run_validate(SPEC, seq=1024, prompt=896, batch=1, profile=embedded_profile(),
                             names=["dynamic", "reserve"], r_grid=[64], widths=("padded",), repeats=1)
    got = {r.policy: r for r in res.rows}  # the recommended configuration may be one of them
    kv = 2 * SPEC.layers * 1024 * ROW  # 4 MiB at the end
    for r in got.values():
        assert r.measured_peak_resident_bytes is not None and r.measured_peak_resident_bytes > 0.5 * kv
        assert r.predicted_peak_resident_bytes <= r.predicted_reserved_bytes
    # torch.cat holds old and new at its last step, r=64 padded at its growth from 960 rows to 1024
    assert got["r=64 padded"].growth_events_measured == 1
    for other in ("r=64 padded", "r=1 exact"):
        assert got["reserve"].measured_peak_resident_bytes + 0.5 * 2**20 < got[other].measured_peak_resident_bytes


def test_memory_is_on_by_default_and_with_quick(monkeypatch, tmp_path):
    seen = []

    def fake(*a, **kw):
        seen.append(kw["memory"])
        raise BMCError("stop here")

    monkeypatch.setattr(plain, "run_validate", fake)
    prof = str(write_profile(embedded_profile(), tmp_path / "p.json"))
    runner = CliRunner()
    for args in ([], ["--quick"], ["--no-memory"], ["--quick", "--no-memory"]):
        res = runner.invoke(app, ["validate", "--profile", prof, "--layers", "1", "--seq", "64", *args])
        assert res.exit_code == 2 and "stop here" in res.stderr
    assert seen == [True, True, False, False]
