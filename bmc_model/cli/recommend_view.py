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
    tokens = rec.prediction.seq - rec.prediction.prompt
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


def cost_table(rec: Recommendation, compact: bool) -> Table:
    p = rec.prediction
    heads = (("configuration", "configuration"), ("ms/token", "ms/\ntoken"), ("tokens/s", "tokens\n/s"),
             ("KV at end", "KV\nMiB"), ("peak KV", "peak\nMiB"), ("speedup of recommended", "speedup"))
    t = Table(title="Predicted decode cost", **_style(compact),
              caption="speedup: its ms/token over the recommended's (below 1: faster)")
    for i, (wide, short) in enumerate(heads):
        t.add_column(short if compact else wide, justify="left" if i == 0 else "right", no_wrap=i == 0,
                     vertical="bottom")

    def mem(x: float) -> str:
        return f"{x / 2**20:,.1f}" if compact else f"{x / 2**20:,.1f} MiB"

    def row(label: str, b: Prediction, bold: bool = False) -> None:
        t.add_row(f"[bold]{escape(label)}[/]" if bold else escape(label), f"{b.ms_per_token:.2f}",
                  f"{b.tokens_per_s:.2f}", mem(b.memory_bytes), mem(b.peak_memory_bytes),
                  speedup(b.ms_per_token / p.ms_per_token))

    sd = bool(p.gamma)
    row(row_label("recommended", p, sd), p, bold=True)
    for name, b in rec.baselines.items():
        row(row_label(name, b, sd), b)
    if rec.no_sd is not None and sd:
        row(row_label("best without SD", rec.no_sd, sd), rec.no_sd)
    return t


def width_table(rec: Recommendation, compact: bool) -> Table:
    tokens = rec.prediction.seq - rec.prediction.prompt
    within = f"within {rec.tolerance:.1%}"
    heads = ("width", "closed-form r*", "exact argmin r", f"chosen r ({within})", "ms/token")
    t = Table(title="Per width mode: r*", **_style(compact),
              caption=f"chosen: the smallest r {within} of the argmin's cost" if compact else None)
    for head in heads:
        t.add_column(head.replace(" (", "\n(").replace("exact ", "exact\n") if compact else head, justify="right",
                     vertical="bottom")
    for lab, sw in rec.sweeps.items():
        ch = rec.chosen_r[lab]
        ms = "-" if ch is None else f"{sw.seconds[ch - 1] * 1000 / tokens:.2f}"
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
    con.print(f"[bold]{escape(p.model)}[/], prompt {p.prompt} -> seq {p.seq} ({tokens} new tokens), "
              f"batch {p.batch}, {p.dtype}{sd}")
    con.print(profile_line, style="dim", markup=False, highlight=False)
    con.print(f"\n[bold green]Recommended: grow by r = {p.policy.r} rows, {p.width} attention width"
              f"{f', gamma {p.gamma}' if p.gamma else ''}[/]")
    for note in rec.notes:
        con.print(note, style="yellow", markup=False, highlight=False)
    for make in (cost_table, width_table, terms_table):
        table = make(rec, compact=False)
        con.print(table if fits(con, table) else make(rec, compact=True))
    series = {lab: curve(rec, lab) for lab in rec.sweeps}
    width = max(20, min(64, con.width - 12))  # the y labels take 11 columns
    con.print(line_chart(series, width=width, highlight=(p.policy.r, p.ms_per_token)), highlight=False,
              markup=False)
