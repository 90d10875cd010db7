"""`bmc-tune recommend`: the best growth configuration for a model and context, and why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from bmc_model.cli import app, guarded
from bmc_model.cli.chart import line_chart
from bmc_model.cli.options import parse_alpha, parse_bytes, profile_note
from bmc_model.core.decide import Recommendation, recommend
from bmc_model.core.errors import BMCError
from bmc_model.core.predict import get_profile


def _mb(x: float) -> str:
    return f"{x / 2**20:,.1f} MiB"


def _curve(rec: Recommendation, label: str, points: int = 48) -> tuple[list[float], list[float]]:
    sw = rec.sweeps[label]
    idx = np.unique(np.geomspace(1, len(sw.r), points).astype(int)) - 1
    tokens = rec.prediction.seq - rec.prediction.prompt
    ms = np.where(sw.feasible[idx], sw.seconds[idx] * 1000.0 / tokens, np.nan)
    return [float(v) for v in sw.r[idx]], [float(v) for v in ms]


def to_json(rec: Recommendation) -> dict:
    p = rec.prediction
    return {
        "model": p.model, "seq": p.seq, "prompt": p.prompt, "batch": p.batch, "dtype": p.dtype,
        "r": p.policy.r, "width": p.width, "gamma": p.gamma, "expected_tokens_per_pass": p.advance,
        "ms_per_token": p.ms_per_token, "tokens_per_s": p.tokens_per_s, "breakdown_ms": p.breakdown,
        "memory_bytes": p.memory_bytes, "peak_memory_bytes": p.peak_memory_bytes, "weights_bytes": p.weights_bytes,
        "r_closed_form": rec.r_closed_form, "r_argmin": rec.argmin_r[p.width], "tolerance": rec.tolerance,
        "per_width": {lab: {"r": rec.chosen_r[lab], "r_argmin": rec.argmin_r[lab],
                            "r_closed_form": rec.closed_form_r[lab],
                            "ms_per_token": (None if rec.chosen_r[lab] is None else
                                             float(rec.sweeps[lab].seconds[rec.chosen_r[lab] - 1]) * 1000.0
                                             / (p.seq - p.prompt))}
                      for lab in rec.sweeps},
        "baselines": {k: {**b.to_dict(), "speedup_of_recommended": b.ms_per_token / p.ms_per_token}
                      for k, b in rec.baselines.items()},
        "no_sd": None if rec.no_sd is None else rec.no_sd.to_dict(),
        "notes": rec.notes,
        "profile": {"source": p.profile},
    }


def _plot_png(rec: Recommendation, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BMCError("--plot needs matplotlib: pip install 'bmc-tune[plot]'") from None
    fig, ax = plt.subplots(figsize=(7, 4))
    for lab in rec.sweeps:
        xs, ys = _curve(rec, lab, points=200)
        ax.plot(xs, ys, label=lab)
    p = rec.prediction
    ax.plot([p.policy.r], [p.ms_per_token], "ko", label=f"recommended r={p.policy.r} {p.width}")
    ax.set_xscale("log")
    ax.set_xlabel("r (rows per growth event)")
    ax.set_ylabel("predicted ms/token")
    ax.set_title(f"{p.model}, seq {p.seq}, prompt {p.prompt}, batch {p.batch}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@app.command("recommend")
@guarded
def recommend_cmd(
    model: str = typer.Option("llama-7b", help="Preset name or HF id (see `bmc-tune models`)."),
    config: Path | None = typer.Option(None, help="An HF config.json instead of a preset."),
    layers: int | None = typer.Option(None, help="Override the layer count."),
    seq: int = typer.Option(2048, help="Context length at the end of generation."),
    prompt: int | None = typer.Option(None, help="Prompt length (default: seq // 2)."),
    batch: int = typer.Option(1, help="Sequences decoded together."),
    dtype: str | None = typer.Option(None, help="float32, bfloat16 or float16 (default: the profile's)."),
    alpha: str | None = typer.Option(None, help="Draft acceptance: a rate, a comma list per position, or a "
                                                "validate --sd JSON file."),
    gamma: str | None = typer.Option(None, help="Draft tokens per iteration, or 'auto'."),
    draft: str | None = typer.Option(None, help="Draft model preset (its own decode cost is predicted)."),
    draft_cost: float | None = typer.Option(None, help="Draft step cost as a fraction of a target step."),
    profile: Path | None = typer.Option(None, help="Profile JSON (default: calibrated, else embedded)."),
    max_mem: str | None = typer.Option(None, "--max-mem", help="Cap on peak KV bytes (e.g. 8G, 512MiB)."),
    tolerance: float = typer.Option(0.005, help="Pick the smallest r within this fraction of the best."),
    runtime: str = typer.Option("bmc", help="What runs the model: bmc (bmc_model.runtime) or hf (transformers "
                                            "generate(), with its calibrated overhead)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    plot: Path | None = typer.Option(None, help="Also write a PNG chart (needs matplotlib)."),
) -> None:
    """Pick the growth configuration (width mode and r, and gamma with SD) and show why."""
    g: int | str | None = gamma
    if gamma is not None and gamma != "auto":
        try:
            g = int(gamma)
        except ValueError:
            raise BMCError(f"--gamma must be a non-negative integer or 'auto', got {gamma!r}") from None
    rec = recommend(model=model, seq=seq, prompt=prompt, batch=batch, dtype=dtype, profile=profile, layers=layers,
                    config=config, gamma=g, alpha=parse_alpha(alpha), draft=draft, draft_cost=draft_cost,
                    max_mem=parse_bytes(max_mem), tolerance=tolerance, runtime=runtime)
    prof = get_profile(profile)
    line, warn = profile_note(prof)
    if plot is not None:
        _plot_png(rec, plot)
    if as_json:
        d = to_json(rec)
        d["profile"] = {"source": prof.source, "host": prof.host, "date": prof.date, "warning": warn}
        typer.echo(json.dumps(d, indent=1))
        return
    _render(rec, line, warn, plot)


def _render(rec: Recommendation, profile_line: str, warn: str | None, plot: Path | None) -> None:
    con = Console()
    p = rec.prediction
    tokens = p.seq - p.prompt
    sd = f", gamma {p.gamma} (E = {p.advance:.2f} tokens/pass)" if p.gamma else ""
    con.print(f"[bold]{p.model}[/], prompt {p.prompt} -> seq {p.seq} ({tokens} new tokens), batch {p.batch}, "
              f"{p.dtype}{sd}")
    con.print(f"[dim]{profile_line}[/]")
    if warn:
        con.print(f"[yellow]warning: {warn}[/]")
    con.print(f"\n[bold green]Recommended: grow by r = {p.policy.r} rows, {p.width} attention width"
              f"{f', gamma {p.gamma}' if p.gamma else ''}[/]")
    for note in rec.notes:
        con.print(f"[yellow]{note}[/]")
    t = Table(title="Predicted decode cost")
    for col in ("configuration", "ms/token", "tokens/s", "KV at end", "peak KV", "speedup of recommended"):
        t.add_column(col, justify="right" if col != "configuration" else "left")
    t.add_row(f"[bold]recommended ({p.policy.label})[/]", f"{p.ms_per_token:.2f}", f"{p.tokens_per_s:.2f}",
              _mb(p.memory_bytes), _mb(p.peak_memory_bytes), "1.00x")
    for name, b in rec.baselines.items():
        t.add_row(f"{name} ({b.policy.label}{', no SD' if b.gamma == 0 and p.gamma else ''})",
                  f"{b.ms_per_token:.2f}", f"{b.tokens_per_s:.2f}", _mb(b.memory_bytes), _mb(b.peak_memory_bytes),
                  f"{b.ms_per_token / p.ms_per_token:.2f}x")
    if rec.no_sd is not None and p.gamma:
        n = rec.no_sd
        t.add_row(f"best without SD ({n.policy.label})", f"{n.ms_per_token:.2f}", f"{n.tokens_per_s:.2f}",
                  _mb(n.memory_bytes), _mb(n.peak_memory_bytes), f"{n.ms_per_token / p.ms_per_token:.2f}x")
    con.print(t)
    w = Table(title="Per width mode: r*")
    for col in ("width", "closed-form r*", "exact argmin r", f"chosen r (within {rec.tolerance:.1%})", "ms/token"):
        w.add_column(col, justify="right")
    for lab, sw in rec.sweeps.items():
        ch = rec.chosen_r[lab]
        ms = "-" if ch is None else f"{sw.seconds[ch - 1] * 1000 / tokens:.2f}"
        w.add_row(lab + (" (paper)" if lab == "padded" else ""), f"{rec.closed_form_r[lab]:.1f}",
                  str(rec.argmin_r[lab]), str(ch), ms)
    con.print(w)
    b = Table(title="Why: predicted ms/token by term")
    b.add_column("term")
    b.add_column("recommended", justify="right")
    b.add_column("dynamic (torch.cat)", justify="right")
    dyn = rec.baselines["dynamic"].breakdown
    for k, v in p.breakdown.items():
        if v or dyn.get(k):
            b.add_row(k, f"{v:.3f}", f"{dyn.get(k, 0.0):.3f}")
    con.print(b)
    series = {lab: _curve(rec, lab) for lab in rec.sweeps}
    con.print(line_chart(series, highlight=(p.policy.r, p.ms_per_token)), highlight=False, markup=False)
    if plot is not None:
        con.print(f"chart written to {plot}")
