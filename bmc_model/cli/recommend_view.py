"""`bmc-tune recommend` as text: the recommendation, its cost against the baselines, r* per width mode, the
terms behind it and a chart; in a compact form (short headers, MiB as bare numbers, no grid) where the full
tables do not fit the terminal."""

from __future__ import annotations

import re

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bmc_model.cli.chart import line_chart
from bmc_model.cli.layout import COMPACT, fits, speedup
from bmc_model.core.decide import Recommendation
from bmc_model.core.predict import Prediction


def curve(rec: Recommendation, label: str, points: int = 48) -> tuple[list[float], list[float]]:
    """ms/token over r for one width mode, at `points` r spaced evenly in log r (NaN where infeasible)."""
    sw = rec.sweeps[label]
    idx = np.unique(np.geomspace(1, len(sw.r), points).astype(int)) - 1
    tokens = rec.prediction.new_tokens
    ms = np.where(sw.feasible[idx], sw.seconds[idx] * 1000.0 / tokens, np.nan)
    return [float(v) for v in sw.r[idx]], [float(v) for v in ms]


def row_label(name: str, pred: Prediction, sd: bool) -> str:
    """The row's name and then what its policy adds: "static padded", not "static (static padded)";
    "bmc-padded r=10", not "bmc-padded (r=10 padded)"."""
    said = set(re.split(r"[-\s]+", name.lower()))
    words = [w for w in pred.policy.label.split() if w.lower() not in said]
    if sd and pred.gamma == 0 and "sd" not in said:
        words.append("no SD")
    return " ".join([name, *words])


def _mib(x: float, compact: bool) -> str:
    return f"{x / 2**20:,.1f}" if compact else f"{x / 2**20:,.1f} MiB"


def cost_table(rec: Recommendation, compact: bool) -> Table:
    p = rec.prediction
    heads = (("configuration", "configuration"), ("ms/token", "ms/\ntoken"), ("tokens/s", "tokens\n/s"),
             ("peak resident KV", "peak res.\nMiB"), ("reserved KV", "reserved\nMiB"),
             ("speedup of recommended", "speedup"))
    dist = p.lengths is not None
    if dist:  # expected figures, and the worst length's peak beside them
        heads = (*heads[:3], ("expected peak resident KV", "exp. peak\nres. MiB"),
                 ("worst peak resident KV", "worst peak\nres. MiB"), *heads[4:])
    t = Table(title="Predicted decode cost" + (" over the output lengths" if dist else ""), **_style(compact),
              caption="speedup: its ms/token over the recommended's (below 1: faster); peak resident: pages the "
                      "OS holds at the worst moment; reserved: address space of the buffers"
                      + ("; expected over the output lengths, ms/token as E(seconds) / E(new tokens); worst: "
                         "the longest request's" if dist else ""))
    for i, (wide, short) in enumerate(heads):
        t.add_column(short if compact else wide, justify="left" if i == 0 else "right", no_wrap=i == 0,
                     vertical="bottom")

    def row(label: str, b: Prediction, bold: bool = False) -> None:
        worst = [_mib(b.worst_resident, compact)] if dist else []
        t.add_row(f"[bold]{escape(label)}[/]" if bold else escape(label), f"{b.ms_per_token:.2f}",
                  f"{b.tokens_per_s:.2f}", _mib(b.peak_resident_bytes, compact), *worst,
                  _mib(b.reserved_bytes, compact), speedup(b.ms_per_token / p.ms_per_token))

    sd = bool(p.gamma)
    row(row_label("recommended", p, sd), p, bold=True)
    for name, b in rec.baselines.items():
        if b.policy != p.policy or b.gamma != p.gamma:  # the recommended row is that one already
            row(row_label(name, b, sd), b)
    if rec.no_sd is not None and sd:
        row(row_label("best without SD", rec.no_sd, sd), rec.no_sd)
    return t


def pareto_table(rec: Recommendation, compact: bool) -> Table:
    t = Table(title="Pareto front: ms/token against peak resident KV", **_style(compact),
              caption="no configuration is both faster and leaner than one of these; * the recommended")
    for i, head in enumerate(("configuration", "ms/token", "peak resident", "reserved")):
        t.add_column(head, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for b in rec.pareto:
        mark = " *" if b.policy == rec.policy and b.gamma == rec.gamma else ""
        t.add_row(escape(b.policy.label + mark), f"{b.ms_per_token:.2f}", _mib(b.peak_resident_bytes, compact),
                  _mib(b.reserved_bytes, compact))
    return t


def headline(p: Prediction) -> str:
    """What the recommended policy does, in words."""
    pol = p.policy
    sd = f", gamma {p.gamma}" if p.gamma else ""
    if pol.growth == "reserve":
        return (f"reserve: one lazily backed buffer of {p.cap_rows} rows, exact-width views (no growth event, "
                f"no padded row){sd}")
    if pol.growth == "static":
        return f"static: {p.cap_rows} rows allocated zero-filled once, {p.width} attention width{sd}"
    if pol.growth == "geometric":
        return f"grow by x{pol.label.split()[1][1:]} at each event, {p.width} attention width{sd}"
    return f"grow by r = {pol.r} rows, {p.width} attention width{sd}"


def width_table(rec: Recommendation, compact: bool) -> Table:
    tokens = rec.prediction.new_tokens
    within = f"within {rec.tolerance:.1%}"
    heads = ("width", "closed-form r*", "exact argmin r", f"chosen r ({within})", "ms/token")
    t = Table(title="Per width mode: r*", **_style(compact),
              caption=f"chosen: the least peak resident memory {within} of the argmin's cost" if compact else None)
    for head in heads:
        t.add_column(head.replace(" (", "\n(").replace("exact ", "exact\n") if compact else head, justify="right",
                     vertical="bottom")
    for lab, sw in rec.sweeps.items():
        ch = rec.chosen_r[lab]
        ms = "-" if ch is None else f"{sw.seconds_at(ch) * 1000 / tokens:.2f}"
        t.add_row(lab + (" (paper)" if lab == "padded" else ""), f"{rec.closed_form_r[lab]:.1f}",
                  str(rec.argmin_r[lab]), str(ch), ms)
    return t


def terms_table(rec: Recommendation, compact: bool) -> Table:
    p = rec.prediction
    t = Table(title="Why: predicted ms/token by term", **_style(compact))
    t.add_column("term")
    t.add_column("recommended", justify="right")
    t.add_column("dynamic (torch.cat)", justify="right")
    dyn = rec.baselines["dynamic"].breakdown if "dynamic" in rec.baselines else {}
    for k, v in p.breakdown.items():
        if v or dyn.get(k):
            t.add_row(k, f"{v:.3f}", f"{dyn.get(k, 0.0):.3f}")
    return t


def _style(compact: bool) -> dict:
    return COMPACT if compact else {}


def render(rec: Recommendation, profile_line: str, con: Console | None = None) -> None:
    con = con or Console()
    p = rec.prediction
    tokens = p.seq - p.prompt
    sd = f", gamma {p.gamma} (E = {p.advance:.2f} tokens/pass)" if p.gamma else ""
    if p.expected_new_tokens is not None:
        span = f"prompt {p.prompt}, {p.expected_new_tokens:.1f} new tokens expected of at most {p.max_new}"
    else:
        span = f"prompt {p.prompt} -> seq {p.seq} ({tokens} new tokens)"
        span += f", cache sized for {p.prompt + p.max_new} rows" if p.max_new is not None else ""
    con.print(f"[bold]{escape(p.model)}[/], {span}, batch {p.batch}, {p.dtype}{sd}")
    con.print(profile_line, style="dim", markup=False, highlight=False)
    con.print(f"\n[bold green]Recommended: {escape(headline(p))}[/]")
    con.print(f"Why: {rec.reason}", markup=False, highlight=False)
    for note in rec.notes:
        con.print(note, style="yellow", markup=False, highlight=False)
    for make in (cost_table, pareto_table, width_table, terms_table):
        table = make(rec, compact=False)
        con.print(table if fits(con, table) else make(rec, compact=True))
    series = {lab: curve(rec, lab) for lab in rec.sweeps}
    width = max(20, min(64, con.width - 12))  # the y labels take 11 columns
    mark = (p.policy.r, p.ms_per_token) if p.policy.growth == "fixed" else None
    con.print(line_chart(series, width=width, highlight=mark), highlight=False, markup=False)
