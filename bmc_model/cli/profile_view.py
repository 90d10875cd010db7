"""A profile as text: its terms with fit quality, scalars, calibration notes, its refresh (how far each term has
moved since), host and charts of the fits against the raw medians (`profile show`, and `calibrate` after a run).
A refreshed profile shows its terms as calibrated, and the factors that scale them beside.

The profile's numbers are checked when it loads (core/profile_check.py); its "raw" block is free-form
diagnostics, so what is read from it here is taken only where it has the expected shape."""

from __future__ import annotations

import math

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bmc_model.calibrate.chart import loglog_chart
from bmc_model.cli.layout import print_table
from bmc_model.core.profile import IN_PLACE_TERMS, OPTIONAL_TERMS, SCALAR_NAMES, TERM_NAMES, Profile

TERM_HELP = {
    "alloc": "torch.empty + first touch, per tensor",
    "copy": "valid rows into a new buffer (growth)",
    "write": "q new rows into a preallocated buffer",
    "attn_exact": "SDPA, 1 query row, exact K/V views",
    "attn_masked": "SDPA over a padded buffer, additive mask",
    "weights": "one layer's matmuls (or the LM head)",
    "cat": "torch.cat with one row (exact-width growth)",
}
SCALAR_HELP = {  # at most 30 characters: the table fits 80 columns
    "attn_q_slope": "extra attention cost per q row",
    "weights_row_slope": "extra matmul cost per row",
    "step_s": "framework cost per step",
    "layer_s": "framework cost per layer",
    "sd_iter_s": "cost per speculative iteration",
    "gemv_row_s": "matmul cost per output row",
    "hf_step_s": "step_s under HF generate()",
    "hf_layer_s": "layer_s under HF generate()",
    "lazy_backing": "unwritten bytes not resident",
}
SCALAR_CI = {"attn_q_slope": ("attn_q", "ci95"), "weights_row_slope": ("weights_rows", "ci95"),
             "step_s": ("overhead", "step_ci95"), "layer_s": ("overhead", "layer_ci95")}


def raw_block(prof: Profile, key: str) -> dict:
    block = prof.raw.get(key)
    return block if isinstance(block, dict) else {}


def raw_series(block: dict, key: str) -> list[float]:
    """A list of finite numbers from a raw block, else [] (a chart of half-read data would mislead)."""
    v = block.get(key)
    if not isinstance(v, list) or not all(_finite_number(x) for x in v):
        return []
    return [float(x) for x in v]


def _finite_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _bytes(x: float, short: bool = False) -> str:
    """Binary units: "1.5 GiB", or "1.5G" when short."""
    for unit, f in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if abs(x) >= f:
            return f"{x / f:.3g}{unit}" if short else f"{x / f:.3g} {unit}iB"
    return f"{x:.0f}" if short else f"{x:.0f} B"


def _us(t: float) -> str:
    return f"{t * 1e6:.3g}"


def _gbs(slope: float) -> str:
    """Bytes per second the slope amounts to (what the term streams at); none for a flat segment."""
    return f"{1e-9 / slope:.3g}" if slope > 0 else "-"


def _scalar(name: str, v: float) -> str:
    return f"{v * 1e6:.3g} us" if name.endswith("_s") else f"{v:.4g}"


def terms_table(prof: Profile, scaled: bool = False) -> Table:
    note = " (as calibrated: the refresh scales them)" if scaled else ""
    t = Table(title=f"Terms: t(x) = c0 + slope * x per segment (x: bytes per call){note}")
    for col, j in (("term", "left"), ("x range", "left"), ("c0 us", "right"), ("slope us/MiB [ci95]", "right"),
                   ("GB/s", "right"), ("R^2", "right"), ("n", "right")):
        t.add_column(col, justify=j)  # type: ignore[arg-type]
    for name in (*TERM_NAMES, *(n for n in OPTIONAL_TERMS if n in prof.terms)):
        term = prof.terms[name]
        edges = [None, *term.knots, None]
        npts = len(raw_series(raw_block(prof, name), "x")) or "-"
        for i, (c0, s) in enumerate(zip(term.c0, term.slope)):
            lo, hi = edges[i], edges[i + 1]
            lo_s, hi_s = (None if v is None else _bytes(v, short=True) for v in (lo, hi))
            seg = ("all" if lo is None and hi is None else f"< {hi_s}" if lo is None
                   else f">= {lo_s}" if hi is None else f"{lo_s}-{hi_s}")
            ci = term.ci95[i] if i < len(term.ci95) else None
            us = 2**20 * 1e6
            slope = f"{s * us:.3g}" + (f" [{ci[0] * us:.3g}, {ci[1] * us:.3g}]" if ci else "")
            r2 = f"{term.r2:.3f}" if term.r2 is not None and i == 0 else ""
            gbs = "-" if name in IN_PLACE_TERMS else _gbs(s)  # x is the layer's weight bytes, not bytes moved
            t.add_row(name if i == 0 else "", seg, _us(c0), slope, gbs, r2, str(npts) if i == 0 else "")
    return t


def scalars_table(prof: Profile) -> Table:
    t = Table(title="Scalars")
    for col in ("name", "value", "ci95", "meaning"):
        t.add_column(col)
    for name in (*SCALAR_NAMES, *(n for n in prof.scalars if n not in SCALAR_NAMES)):
        block, key = SCALAR_CI.get(name, ("", ""))
        c = raw_series(raw_block(prof, block), key) if block else []
        c_s = f"[{_scalar(name, c[0])}, {_scalar(name, c[1])}]" if len(c) == 2 else "-"
        t.add_row(name, _scalar(name, prof.scalars[name]) + _unmeasured(prof, name), c_s, SCALAR_HELP.get(name, ""))
    return t


def _unmeasured(prof: Profile, name: str) -> str:
    """lazy_backing reads 0 when calibration did not measure it: say so, or 0 would read as a measurement."""
    return " (default)" if name == "lazy_backing" and name not in raw_block(prof, name) else ""


def refresh_table(prof: Profile) -> Table:
    """The refresh's factors: how far each term moved since calibration (measured now over the calibrated
    charge at the model's sizes), and any row ratios it measured."""
    r = prof.refresh
    assert r is not None
    t = Table(title=f"Refresh: {escape(r.at)}, {escape(r.model)} at seq {r.seq}"
                    + (f", batch {r.batch}" if r.batch != 1 else "") + f", {r.seconds:.1f} s "
                    "(factor: measured now / calibrated)")
    for col, j in (("term", "left"), ("factor", "right"), ("moved", "right"), ("what it scales", "left")):
        t.add_column(col, justify=j)  # type: ignore[arg-type]
    for name, f in r.factors.items():
        what = TERM_HELP.get(name, "") + ("; gemv_row_s" if name == "weights" else "")
        t.add_row(escape(name), f"x{f:.2f}", f"{100 * (f - 1):+.0f}%", what)
    if r.row_ratios:
        parts = "; ".join(f"{p}: " + ", ".join(f"m={m} x{v:.2f}" for m, v in sorted(by.items()) if m != 1)
                          for p, by in r.row_ratios.items())
        t.caption = f"m-row ratios measured ({parts}) replace the weights_rows@ and head_rows@ curves"
    return t


def host_table(prof: Profile) -> Table:
    t = Table(title=f"Host ({prof.source}, {prof.date or 'undated'})")
    t.add_column("key")
    t.add_column("value")
    for k, v in prof.host.items():
        t.add_row(escape(str(k)), _bytes(v) if str(k).endswith("bytes") and _finite_number(v) else escape(str(v)))
    return t


def charts(prof: Profile) -> list[str]:
    out = []
    for name in TERM_NAMES:
        term = prof.terms[name]
        raw = raw_block(prof, name)
        xs, ts = raw_series(raw, "x"), raw_series(raw, "t")
        if len(xs) != len(ts):
            xs, ts = [], []
        rng = None if xs else (4096.0, 2.0**30)
        out.append(f"{name}: {TERM_HELP[name]}\n" + loglog_chart(term, xs, ts, term.knots, x_range=rng))
    return out


def calibration_notes(prof: Profile) -> list[str]:
    """The cat cross-check and the notes calibration left, as lines."""
    lines = []
    cat = raw_block(prof, "cat")
    resid = cat.get("median_abs_rel_residual")
    if _finite_number(resid):
        lines.append(f"cross-check torch.cat vs alloc(n+1 rows) + copy(n rows): median |measured/predicted - 1| = "
                     f"{resid:.1%} over {len(raw_series(cat, 'x'))} sizes")
    notes = raw_block(prof, "meta").get("notes")
    lines += [f"note: {n}" for n in notes if isinstance(n, str)] if isinstance(notes, list) else []
    return lines


def render(shown: Profile, con: Console, with_charts: bool = True) -> None:
    prof = shown.calibrated  # the calibrated fits, as the charts draw them against calibration's medians
    print_table(con, terms_table(prof, scaled=shown.refresh is not None))
    print_table(con, scalars_table(prof))
    if shown.refresh is not None:
        print_table(con, refresh_table(shown))
    for line in calibration_notes(prof):
        con.print(line, style="yellow" if line.startswith("note:") else None, markup=False, highlight=False)
    print_table(con, host_table(prof))
    if with_charts:
        for ch in charts(prof):
            con.print(ch, markup=False, highlight=False)
            con.print()
