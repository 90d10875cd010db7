"""`bmc-tune profile show [PATH]`: a profile's coefficients, fit quality, host and fitted curves."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from bmc_model.calibrate.chart import loglog_chart
from bmc_model.cli import app, guarded
from bmc_model.cli.options import profile_note
from bmc_model.core.profile import SCALAR_NAMES, TERM_NAMES, Profile, load_profile

profile_app = typer.Typer(no_args_is_help=True, help="Inspect host profiles (the fitted cost coefficients).")
app.add_typer(profile_app, name="profile")

TERM_HELP = {
    "alloc": "torch.empty + first touch, per tensor",
    "copy": "valid rows into a new buffer (growth)",
    "write": "q new rows into a preallocated buffer",
    "attn_exact": "SDPA, 1 query row, exact K/V views",
    "attn_masked": "SDPA over a padded buffer, additive mask",
    "weights": "one layer's matmuls (or the LM head)",
}
SCALAR_HELP = {
    "attn_q_slope": "relative extra attention cost per extra query row",
    "weights_row_slope": "relative extra matmul cost per extra token row",
    "step_s": "fixed framework cost per decode step",
    "layer_s": "fixed framework cost per layer per step",
    "sd_iter_s": "fixed cost of one speculative-decoding iteration",
}


def _bytes(x: float, short: bool = False) -> str:
    """Binary units: "1.5 GiB", or "1.5G" when short."""
    for unit, f in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if abs(x) >= f:
            return f"{x / f:.3g}{unit}" if short else f"{x / f:.3g} {unit}iB"
    return f"{x:.0f}" if short else f"{x:.0f} B"


def _us(t: float) -> str:
    return f"{t * 1e6:.3g}"


def _gbs(slope: float) -> str:
    """Bytes per second the slope amounts to (what the term streams at)."""
    return f"{1e-9 / slope:.3g}" if slope > 0 else "inf"


def _scalar(name: str, v: float) -> str:
    return f"{v * 1e6:.3g} us" if name.endswith("_s") else f"{v:.4g}"


def terms_table(prof: Profile) -> Table:
    t = Table(title="Terms: t(x) = c0 + slope * x per segment (x: bytes per call)")
    for col, j in (("term", "left"), ("x range", "left"), ("c0 us", "right"), ("slope us/MiB [ci95]", "right"),
                   ("GB/s", "right"), ("R^2", "right"), ("n", "right")):
        t.add_column(col, justify=j)  # type: ignore[arg-type]
    for name in TERM_NAMES:
        term = prof.terms[name]
        edges = [None, *term.knots, None]
        npts = len(prof.raw.get(name, {}).get("x", [])) or "-"
        for i, (c0, s) in enumerate(zip(term.c0, term.slope)):
            lo, hi = edges[i], edges[i + 1]
            lo_s, hi_s = (None if v is None else _bytes(v, short=True) for v in (lo, hi))
            seg = ("all" if lo is None and hi is None else f"< {hi_s}" if lo is None
                   else f">= {lo_s}" if hi is None else f"{lo_s}-{hi_s}")
            ci = term.ci95[i] if i < len(term.ci95) else None
            us = 2**20 * 1e6
            slope = f"{s * us:.3g}" + (f" [{ci[0] * us:.3g}, {ci[1] * us:.3g}]" if ci else "")
            r2 = f"{term.r2:.3f}" if term.r2 is not None and i == 0 else ""
            t.add_row(name if i == 0 else "", seg, _us(c0), slope, _gbs(s), r2, str(npts) if i == 0 else "")
    return t


def scalars_table(prof: Profile) -> Table:
    t = Table(title="Scalars")
    for col in ("name", "value", "ci95", "meaning"):
        t.add_column(col)
    ci = {"attn_q_slope": prof.raw.get("attn_q", {}).get("ci95"),
          "weights_row_slope": prof.raw.get("weights_rows", {}).get("ci95"),
          "step_s": prof.raw.get("overhead", {}).get("step_ci95"),
          "layer_s": prof.raw.get("overhead", {}).get("layer_ci95")}
    for name in SCALAR_NAMES:
        c = ci.get(name)
        c_s = f"[{_scalar(name, c[0])}, {_scalar(name, c[1])}]" if c else "-"
        t.add_row(name, _scalar(name, prof.scalars[name]), c_s, SCALAR_HELP[name])
    return t


def host_table(prof: Profile) -> Table:
    t = Table(title=f"Host ({prof.source}, {prof.date or 'undated'})")
    t.add_column("key")
    t.add_column("value")
    for k, v in prof.host.items():
        t.add_row(k, _bytes(v) if k.endswith("bytes") and isinstance(v, (int, float)) else str(v))
    return t


def charts(prof: Profile) -> list[str]:
    out = []
    for name in TERM_NAMES:
        term = prof.terms[name]
        raw = prof.raw.get(name, {})
        xs, ts = raw.get("x", []), raw.get("t", [])
        rng = None if xs else (4096.0, 2.0**30)
        out.append(f"{name}: {TERM_HELP[name]}\n" + loglog_chart(term, xs, ts, term.knots, x_range=rng))
    return out


def render(prof: Profile, con: Console, with_charts: bool = True) -> None:
    con.print(terms_table(prof))
    con.print(scalars_table(prof))
    cat = prof.raw.get("cat")
    if cat and "median_abs_rel_residual" in cat:
        con.print(f"cross-check torch.cat vs alloc(n+1 rows) + copy(n rows): median |measured/predicted - 1| = "
                  f"{cat['median_abs_rel_residual']:.1%} over {len(cat.get('x', []))} sizes")
    for note in prof.raw.get("meta", {}).get("notes", []):
        con.print(f"[yellow]note: {note}[/]")
    con.print(host_table(prof))
    if with_charts:
        for ch in charts(prof):
            con.print(ch, markup=False, highlight=False)
            con.print()


@profile_app.command("show")
@guarded
def show_cmd(
    path: Path | None = typer.Argument(None, help="Profile JSON (default: the calibrated one, else embedded)."),
    no_charts: bool = typer.Option(False, "--no-charts", help="Tables only."),
    as_json: bool = typer.Option(False, "--json", help="Print the profile's JSON (as loaded)."),
) -> None:
    """Print a profile: coefficients with ci95 and R^2, scalars, host, and charts of the fits."""
    prof = load_profile(path)
    if as_json:
        typer.echo(json.dumps({**prof.to_dict(), "source": prof.source}, indent=1))
        return
    con = Console()
    line, warn = profile_note(prof)
    con.print(line, markup=False, highlight=False)
    if warn:
        con.print(f"[yellow]warning: {warn}[/]")
    render(prof, con, with_charts=not no_charts)
