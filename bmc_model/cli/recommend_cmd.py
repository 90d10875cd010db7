"""`bmc-tune recommend`: the best growth configuration for a model and context, and why."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from bmc_model.cli import app, guarded, warn
from bmc_model.cli.options import SIZE_HELP, parse_alpha, profile_note, to_json
from bmc_model.cli.plot import FORMATS, check_plot_path, write_plot
from bmc_model.cli.recommend_view import render
from bmc_model.core.decide import Recommendation, recommend
from bmc_model.core.errors import BMCError
from bmc_model.core.predict import get_profile


def to_dict(rec: Recommendation) -> dict:
    p = rec.prediction
    return {
        "model": p.model, "seq": p.seq, "prompt": p.prompt, "batch": p.batch, "dtype": p.dtype,
        "policy": p.policy.label, "r": p.r, "width": p.width, "gamma": p.gamma,
        "expected_tokens_per_pass": p.advance,
        "ms_per_token": p.ms_per_token, "tokens_per_s": p.tokens_per_s, "breakdown_ms": p.breakdown,
        "memory_bytes": p.memory_bytes, "reserved_bytes": p.reserved_bytes, "resident_bytes": p.resident_bytes,
        "peak_resident_bytes": p.peak_resident_bytes, "weights_bytes": p.weights_bytes, "reason": rec.reason,
        "r_closed_form": rec.r_closed_form, "r_argmin": rec.argmin_r[p.width], "tolerance": rec.tolerance,
        "per_width": {lab: {"r": rec.chosen_r[lab], "r_argmin": rec.argmin_r[lab],
                            "r_closed_form": rec.closed_form_r[lab],
                            "ms_per_token": (None if rec.chosen_r[lab] is None else
                                             rec.sweeps[lab].seconds_at(rec.chosen_r[lab]) * 1000.0
                                             / p.new_tokens)}
                      for lab in rec.sweeps},
        "baselines": {k: {**b.to_dict(), "speedup_of_recommended": b.ms_per_token / p.ms_per_token}
                      for k, b in rec.baselines.items()},
        "pareto": [{"policy": b.policy.label, "gamma": b.gamma, "ms_per_token": b.ms_per_token,
                    "peak_resident_bytes": b.peak_resident_bytes, "reserved_bytes": b.reserved_bytes,
                    **({} if b.worst_peak_resident_bytes is None else
                       {"worst_peak_resident_bytes": b.worst_peak_resident_bytes})}
                   for b in rec.pareto],
        "no_sd": None if rec.no_sd is None else rec.no_sd.to_dict(),
        "notes": rec.notes,
        "profile": {"source": p.profile},
        **p.lengths_dict(),  # under a distribution: ms_per_token and peak_resident_bytes are expectations
    }


@app.command("recommend")
@guarded
def recommend_cmd(
    model: str | None = typer.Option(None, help="Preset name or HF id (see `bmc-tune models`); default llama-7b."),
    config: Path | None = typer.Option(None, help="An HF config.json instead of a preset."),
    layers: int | None = typer.Option(None, help="Override the layer count."),
    seq: int | None = typer.Option(None, help="Context length at the end of generation (default 2048; with "
                                              "--max-new, prompt + max-new)."),
    prompt: int | None = typer.Option(None, help="Prompt length (default: seq // 2)."),
    max_new: int | None = typer.Option(None, "--max-new", help="Most new tokens a request may generate: the "
                                                               "cache is sized for prompt + max-new rows "
                                                               "(default: seq - prompt)."),
    mean_new: float | None = typer.Option(None, "--mean-new", help="Output length unknown: requests stop at "
                                                                   "EOS with this mean (geometric stopping, at "
                                                                   "most --max-new)."),
    lengths: Path | None = typer.Option(None, "--lengths", help="Output length unknown: a file of observed new-"
                                                                "token counts, one per line."),
    batch: int = typer.Option(1, help="Sequences decoded together."),
    dtype: str | None = typer.Option(None, help="float32, bfloat16 or float16 (default: the profile's)."),
    alpha: str | None = typer.Option(None, help="Draft acceptance: a rate, a comma list per position, or a "
                                                "validate --sd JSON file."),
    gamma: str | None = typer.Option(None, help="Draft tokens per iteration, or 'auto'."),
    draft: str | None = typer.Option(None, help="Draft model preset (its own decode cost is predicted)."),
    draft_cost: float | None = typer.Option(None, help="Draft step cost as a fraction of a target step."),
    profile: Path | None = typer.Option(None, help="Profile JSON (default: calibrated, else embedded)."),
    max_mem: str | None = typer.Option(None, "--max-mem", help=f"Cap on peak resident KV bytes, e.g. 8G, 512MiB "
                                                               f"({SIZE_HELP})."),
    tolerance: float = typer.Option(0.005, help="Of the configurations within this fraction of the fastest, pick the "
                                                   "least peak resident memory."),
    runtime: str = typer.Option("bmc", help="What runs the model: bmc (bmc_model.runtime) or hf (transformers "
                                            "generate(), with its calibrated overhead)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    plot: Path | None = typer.Option(None, help=f"Also write the chart to this file ({', '.join(FORMATS)}; "
                                                "needs matplotlib)."),
) -> None:
    """Pick the growth configuration (width mode and r, and gamma with SD) and show why."""
    if plot is not None:
        if mean_new is not None or lengths is not None:
            raise BMCError("--plot draws every r at one output length: it is not drawn for --mean-new or "
                           "--lengths yet")
        check_plot_path(plot)  # before the work, not after it
    if seq is None and max_new is None:
        seq = 2048  # as always; with --max-new, None is prompt + max-new
    rec = recommend(model=model, seq=seq, prompt=prompt, batch=batch, dtype=dtype, profile=profile, layers=layers,
                    config=config, gamma=gamma, alpha=parse_alpha(alpha), draft=draft, draft_cost=draft_cost,
                    max_mem=max_mem, tolerance=tolerance, runtime=runtime, max_new=max_new, mean_new=mean_new,
                    lengths=lengths)  # recommend() reads gamma and sizes
    if plot is not None:
        write_plot(rec, plot)
    prof = get_profile(profile)
    line, warning = profile_note(prof)
    if warning:  # after the last thing that may fail: an error stays the one line on stderr
        warn(warning)
    if as_json:
        d = to_dict(rec)
        d["profile"] = {"source": prof.source, "host": prof.host, "date": prof.date, "warning": warning}
        if plot is not None:
            d["plot"] = str(plot)
        typer.echo(to_json(d))
        return
    con = Console()
    render(rec, line, con)
    if plot is not None:
        con.print(f"chart written to {escape(str(plot))}")
