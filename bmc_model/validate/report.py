"""Rendering validate's results for people: rich tables for plain and HF validation, plain text for SD.
The only module in validate/ that prints; the run functions return typed results."""

from __future__ import annotations

import statistics

from rich.console import Console
from rich.table import Table

from bmc_model.validate.hf_grid import CaseRegret, is_grid
from bmc_model.validate.hf_result import HFValidateResult
from bmc_model.validate.plain_result import ValidateResult
from bmc_model.validate.sd_result import SDValidateResult

_HOW = {"step": "configurations side by side step by step", "run": "runs interleaved (caches too big together)"}


def _fmt(x: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def _mb(x: float | None) -> str:
    return "-" if x is None else f"{x / 2**20:.0f}"


def show(result: ValidateResult | SDValidateResult | HFValidateResult, con: Console) -> None:
    """Print any validate result the way `bmc-tune validate` does."""
    if isinstance(result, ValidateResult):
        print_plain(result, con)
    elif isinstance(result, SDValidateResult):
        con.print(sd_text(result), highlight=False, markup=False)
    else:
        con.print(hf_table(result))
        con.print(hf_summary(result))


def _mib(x: float | None) -> str:
    return "-" if x is None else f"{x / 2**20:.1f}"


def plain_table(res: ValidateResult) -> Table:
    t = Table(title="Measured vs predicted ms/token and peak KV MiB")
    probed = bool(res.abs_errors_probed)
    memory = res.memory_probe is not None
    for col in ("configuration", "policy", "measured", "predicted", "error", "events (meas/pred)",
                *(("probed", "error") if probed else ()), "reserved (pred)",
                *(("resident (meas/pred)", "error") if memory else ("resident (pred)",))):
        t.add_column(col, justify="left" if col in ("configuration", "policy") else "right")
    for r in sorted(res.rows, key=lambda r: r.measured_ms):
        more = (f"{r.predicted_ms_probed:.2f}", f"{r.error_pct_probed:+.1f}%") if probed else ()
        mem = ((f"{_mib(r.measured_peak_resident_bytes)}/{_mib(r.predicted_peak_resident_bytes)}",
                _fmt(r.resident_error_pct, "+.1f", "%")) if memory else (_mib(r.predicted_peak_resident_bytes),))
        t.add_row(r.name, r.policy, f"{r.measured_ms:.2f}", f"{r.predicted_ms:.2f}", f"{r.error_pct:+.1f}%",
                  f"{r.growth_events_measured:.0f}/{r.growth_events_predicted:.0f}", *more,
                  _mib(r.predicted_reserved_bytes), *mem)
    return t


def plain_summary(res: ValidateResult) -> Table:
    s = Table(title="Summary", show_header=False)
    s.add_row("median |error|", _fmt(res.median_abs_error_pct, ".1f", "%"))
    s.add_row("max |error|", _fmt(max(res.abs_errors), ".1f", "%"))
    probed = res.abs_errors_probed
    if probed and res.probe_factors is not None:
        said = ", ".join(f"{k} x{v:.2f}" for k, v in res.probe_factors.items())
        s.add_row("probed: median / max |error|", f"{res.median_abs_error_pct_probed:.1f}% / "
                  f"{max(probed):.1f}% (host now vs profile: {said})")
    if res.refresh is not None:
        s.add_row("without the refresh: max |error|", f"{res.refresh['max_abs_error_pct_unrefreshed']:.1f}% "
                  f"(refreshed {res.refresh['at'][:16]} at {res.refresh['model']}, seq {res.refresh['seq']})")
        if "max_abs_error_pct_refresh_before_run" in res.refresh:
            s.add_row("  refreshed before the run only: max |error|",
                      f"{res.refresh['max_abs_error_pct_refresh_before_run']:.1f}% "
                      f"({len(res.refresh['refreshes'])} refreshes in all)")
    if res.abs_resident_errors:
        s.add_row("peak resident KV: median / max |error|", f"{res.median_abs_resident_error_pct:.1f}% / "
                  f"{res.max_abs_resident_error_pct:.1f}% (fresh process per configuration)")
    failed = (res.memory_probe or {}).get("failed") or {}
    if failed:
        s.add_row("[yellow]memory probe failed[/]", "; ".join(f"{k}: {v}" for k, v in failed.items()))
    best = res.best
    s.add_row("recommended", res.recommended.policy)
    s.add_row("best measured", f"{best.name} ({best.policy})")
    s.add_row("regret", _fmt(res.regret_pct, ".1f", "%"))
    s.add_row("speedup vs torch.cat (dynamic)", _fmt(res.speedup("dynamic"), ".2f", "x"))
    s.add_row("speedup vs static", _fmt(res.speedup("static"), ".2f", "x"))
    s.add_row("speedup vs exact-view r=256 (mlx)", _fmt(res.speedup("mlx"), ".2f", "x"))
    s.add_row("overhead vs reserve", _fmt(res.overhead_vs_reserve, ".3f"))
    if res.token_mismatch:
        s.add_row("[red]token mismatch[/]", ", ".join(res.token_mismatch))
    return s


def print_plain(res: ValidateResult, con: Console) -> None:
    con.print(f"[bold]{res.model}[/] on {res.device}, fp32, batch {res.batch}, {res.threads} threads, "
              f"decode {res.prompt} -> {res.seq} (prompt K/V synthesized), median of {res.repeats} "
              f"runs, {_HOW.get(res.interleave, 'interleaved')}; host {res.host['cpu']}")
    con.print(plain_table(res))
    con.print(plain_summary(res))


def _x(f: float | None) -> str:
    return "-" if f is None else f"{f:.2f}x"


def sd_text(out: SDValidateResult) -> str:
    """The SD result as a plain-text table (validate --sd and benchmarks/sd_bench.py)."""
    lines = [f"workload {out.workload}: {out.workload_note}",
             f"model {out.model}  prompt {out.prompt}  seq {out.seq}  gamma {out.gamma}  "
             f"repeats {out.repeats} (interleaved by {out.interleave})  threads {out.threads}",
             f"{'config':<10} {'policy':<22} {'gamma':>5} {'measured ms':>12} {'predicted ms':>13} {'error %':>8} "
             f"{'growth':>7} {'advance':>8} {'probed ms':>10} {'error %':>8}"]
    for r in out.rows:
        adv = f"{r.advance_measured:.2f}" if r.advance_measured is not None else "1"
        lines.append(f"{r.name:<10} {r.policy:<22} {r.gamma:>5} {r.measured_ms:>12.2f} "
                     f"{r.predicted_ms:>13.2f} {r.error_pct:>+8.1f} {r.growth_events_measured:>7} {adv:>8} "
                     f"{r.predicted_ms_probed:>10.2f} {r.error_pct_probed:>+8.1f}")
    mm, acc = out.verify_matmuls, out.acceptance
    att = mm.attention
    per = ", ".join(f"{a:.2f}" for a in acc.per_position)
    synth = " SYNTHETIC" if acc.synthetic else ""
    lines += [f"acceptance overall {acc.overall:.3f}, alpha-equivalent {acc.alpha_equivalent:.3f} "
              f"(per position {per}){synth}",
              f"speedup SD+BMC vs SD+cat    {out.ratio('sd-cat', 'sd-bmc'):.2f}x "
              f"(predicted {out.ratio('sd-cat', 'sd-bmc', predicted=True):.2f}x)",
              f"speedup SD+BMC vs plain cat {out.ratio('plain-cat', 'sd-bmc'):.2f}x "
              f"(predicted {out.ratio('plain-cat', 'sd-bmc', predicted=True):.2f}x)",
              f"max |error| SD rows {out.max_abs_error_pct_sd:.1f}%, all rows {out.max_abs_error_pct:.1f}%",
              f"verify matmuls at {mm.rows} rows, timed alongside: layers {mm.measured_ratio['layers']:.2f}x, "
              f"head {mm.measured_ratio['head']:.2f}x one row (profile: {mm.profile_ratio['layers']:.2f}x, "
              f"{mm.profile_ratio['head']:.2f}x), one row {mm.one_row_over_profile:.2f}x the profile's "
              f"charge, torch.cat at {mm.cat.rows} rows {_x(mm.cat.over_profile)} the profile's, "
              f"attention at {att.width} rows {_x(att.exact_over_profile)} (1 row) and "
              f"{_x(att.masked_over_profile)} ({mm.rows} rows) the profile's; with these, max |error| "
              f"SD rows {out.max_abs_error_pct_sd_probed:.1f}% (the 'probed' columns)",
              f"tuner: best gamma {out.tuner.best_gamma} -> {out.tuner.verdict}; measured: SD "
              f"{'pays' if out.sd_pays_measured else 'does not pay'} over plain BMC",
              f"tokens identical to the plain cat reference: {out.tokens_match_reference}"]
    if out.refresh is not None:
        lines.append(f"without the refresh ({out.refresh['at'][:16]}): max |error| all rows "
                     f"{out.refresh['max_abs_error_pct_unrefreshed']:.1f}%")
        if "max_abs_error_pct_refresh_before_run" in out.refresh:
            lines.append(f"refreshed before the run only: max |error| all rows "
                         f"{out.refresh['max_abs_error_pct_refresh_before_run']:.1f}% "
                         f"({len(out.refresh['refreshes'])} refreshes in all)")
    return "\n".join(lines)


def hf_table(result: HFValidateResult) -> Table:
    errs = result.abs_resident_errors
    said = f"; peak resident |error| median {statistics.median(errs):.0f}%, max {max(errs):.0f}%" if errs else ""
    t = Table(title=f"HF generate(): decode ms/token, fp32, {result.threads} threads, "
                    f"{result.new_tokens} new tokens, median of {result.reps}{said}")
    for col in ("workload", "N", "B", "cache", "policy", "measured", "predicted", "err %", "x dyn (meas)",
                "x dyn (pred)", "peak RSS MB", "decode peak MB", "pred KV peak MB", "pred resident MB", "res err %"):
        t.add_column(col, justify="left" if col in ("workload", "cache", "policy") else "right")
    for r in result.rows:
        mem = r.memory or {}
        cache = "grid" if is_grid(r.cache) else r.cache  # the policy column names which
        t.add_row(r.workload, str(r.seq), str(r.batch), cache, r.policy, _fmt(r.measured_ms_per_token),
                  f"{r.predicted_ms_per_token:.2f}", _fmt(r.error_pct, "+.0f"), _fmt(r.speedup_vs_dynamic),
                  f"{r.predicted_speedup_vs_dynamic:.2f}", _mb(mem.get("peak_increase")),
                  _mb(mem.get("decode_peak_increase")), _mb(r.predicted_peak_kv_bytes),
                  _mb(r.predicted_peak_resident_bytes), _fmt(r.resident_error_pct, "+.0f"))
    return t


def _slower(c: CaseRegret) -> str:
    said = [k for k, v in (("DynamicCache", c.tuned_slower_than_dynamic), ("StaticCache", c.tuned_slower_than_static))
            if v]
    return f"; [yellow]slower than {' and '.join(said)}[/]" if said else ""


def hf_summary(result: HFValidateResult) -> Table:
    """Prediction error over every row, and the tuned BMCCache's regret case by case."""
    reg = result.regret
    s = Table(title="Summary", show_header=False)
    s.add_row("median / max |error|", f"{_fmt(reg.median_abs_error_pct, '.1f', '%')} / "
              f"{_fmt(reg.max_abs_error_pct, '.1f', '%')}")
    once = result.abs_errors_case_refresh
    if once:  # refreshed around every repetition: what the refresh before each case alone gave
        s.add_row("  refreshed before each case only", f"{statistics.median(once):.1f}% / {max(once):.1f}%")
    s.add_row("regret (worst case): medians / paired", f"{_fmt(reg.regret_pct, '.1f', '%')} / "
              f"{_fmt(reg.regret_pct_paired, '.1f', '%')}")
    for c in reg.per_case:
        best = "tuned" if c.best_cache == "bmc" else c.best_policy
        s.add_row(f"  {c.case}", f"{c.regret_pct:.1f}% / {_fmt(c.regret_pct_paired, '.1f', '%')}: tuned "
                  f"{c.tuned_policy} {c.tuned_ms_per_token:.2f} ms, best {best} {c.best_ms_per_token:.2f} ms of "
                  f"{c.candidates}{_slower(c)}")
    if reg.regret_pct_steps_low is not None:
        s.add_row("regret step by step (95% interval)", f"at least {reg.regret_pct_steps_low:+.1f}% in the worst case")
        for c in reg.per_case:
            if c.regret_pct_steps:
                v, lo, hi = c.regret_pct_steps
                s.add_row(f"  {c.case}", f"{v:+.1f}% [{lo:+.1f}, {hi:+.1f}] against {c.regret_steps_against}")
    checks = result.checks
    for case in checks.per_case:
        for k, (v, lo, hi) in (case.speedup_ci95 or {}).items():
            s.add_row(f"  {case.case}: x {k} step by step", f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
                      + ("; [yellow]slower[/]" if hi < 1.0 else ""))
    if result.profile_refreshed_at:
        s.add_row("profile refreshed", result.profile_refreshed_at)
    if result.wall_s is not None and result.estimated_s is not None:
        s.add_row("wall time", f"{result.wall_s:.0f} s (the measuring predicted at {result.estimated_s:.0f} s)")
    return s
