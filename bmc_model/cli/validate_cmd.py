"""`bmc-tune validate`: measure the policies in the torch runtime against the model's predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from bmc_model.calibrate.plan import DEVICES
from bmc_model.cli import app, guarded, warn
from bmc_model.cli.options import profile_note, to_json
from bmc_model.core.errors import BMCError
from bmc_model.core.paths import atomic_write
from bmc_model.core.policy import NAMED
from bmc_model.core.predict import get_profile
from bmc_model.core.profile import Profile, default_profile_path, write_profile
from bmc_model.core.specs import resolve_spec

DEFAULT_NAMES = ["dynamic", "static", "reserve", "mlx", "geometric"]
QUICK_NAMES = ["dynamic", "static", "reserve", "mlx"]


def _ints(text: str, what: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BMCError(f"{what} must be a comma list of positive integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise BMCError(f"{what} must be a comma list of positive integers, got {text!r}")
    return vals


def _profile(path: Path | None, quick: bool, threads: int | None, con: Console) -> Profile:
    if path is not None or default_profile_path().exists():
        return get_profile(path)
    con.print("[yellow]no calibrated profile for this host: running `bmc-tune calibrate --quick` first[/]")
    from bmc_model.calibrate import calibrate

    prof = calibrate(quick=True, threads=threads).profile
    out = write_profile(prof, default_profile_path())
    con.print(f"[dim]profile written to {out}[/]")
    return get_profile(out)


def _hf_workloads(workload: str | None, seq: int | None, new_tokens: int | None, quick: bool) -> list[str] | None:
    """--hf's --workload as validate_hf takes it, after the checks that need no model: a known workload and a
    --seq that leaves a prompt (positions beyond the model's are validate_hf's to refuse)."""
    from bmc_model.validate.hf_generate import NEW_TOKENS, QUICK_NEW_TOKENS
    from bmc_model.validate.workloads import WORKLOADS

    if workload is not None and workload not in WORKLOADS:
        raise BMCError(f"--workload with --hf is {' or '.join(WORKLOADS)}, got {workload!r}")
    new = new_tokens if new_tokens is not None else (QUICK_NEW_TOKENS if quick else NEW_TOKENS)
    if new < 2:
        raise BMCError(f"--new-tokens must be at least 2, got {new}")
    if seq is not None and seq < new + 2:
        raise BMCError(f"--seq {seq} leaves no prompt for {new} new tokens: give --seq >= {new + 2} "
                       "or fewer --new-tokens")
    return [workload] if workload is not None else None


def _progress(con: Console, status: Any, message: str) -> None:
    # the time estimates ("about 9.1 min (predicted)", "about 6.0 min left (measured)") stay on screen; the
    # per-cache lines only update the status
    if " about " in message:
        con.print(message, style="dim", markup=False, highlight=False)
    status.update(message)


@app.command("validate")
@guarded
def validate_cmd(
    model: str = typer.Option("llama-7b", help="Preset name or HF id; random weights at its geometry."),
    layers: int | None = typer.Option(2, help="Truncate the model to this many layers."),
    seq: int | None = typer.Option(None, help="Context length at the end of the measured decode (default 2048; "
                                              "with --hf: one context instead of each workload's defaults)."),
    prompt: int | None = typer.Option(None, help="Rows already cached (synthesized) when decoding starts; "
                                                 "default seq - 128 (seq - 64 with --quick)."),
    batch: int | None = typer.Option(None, help="Sequences decoded together (default 1; with --hf: this batch "
                                                "instead of the workload's)."),
    policies: str | None = typer.Option(None, help="Comma list of named policies: " + ", ".join(NAMED)),
    r_grid: str | None = typer.Option(None, "--r-grid", help="Comma list of r, each run padded and exact."),
    repeats: int | None = typer.Option(None, help="Runs per configuration (median); default 3, 2 with --quick."),
    threads: int | None = typer.Option(None, help="torch threads (default: torch's)."),
    device: str = typer.Option("cpu", help="cpu or cuda (plain validate only; use a profile calibrated there)."),
    profile: Path | None = typer.Option(None, help="Profile JSON (default: calibrated; else a quick calibration)."),
    quick: bool = typer.Option(False, help="A smaller grid and fewer tokens: about 3 minutes here."),
    memory: bool = typer.Option(True, "--memory/--no-memory",
                                help="Also measure each configuration's peak resident KV, in a fresh process "
                                     "per configuration after the timed runs (CPU; kept by --quick)."),
    sd: bool = typer.Option(False, "--sd", help="Speculative decoding: plain vs SD, cat vs BMC."),
    hf: bool = typer.Option(False, "--hf", help="HF generate(): DynamicCache, StaticCache and BMCCache."),
    acceptance_out: Path | None = typer.Option(None, help="With --sd: write the measured acceptance here."),
    workload: str | None = typer.Option(None, help="With --sd: synthetic (default; oracle drafter at --alpha on "
                                                   "the --model geometry), smollm2 (prompt lookup, real text) or "
                                                   "qwen. With --hf: smollm2 or kv (default both)."),
    new_tokens: int | None = typer.Option(None, "--new-tokens", help="With --hf: tokens decoded per run, the "
                                                                     "prompt being seq - this (default 256, 16 "
                                                                     "with --quick)."),
    refresh: bool = typer.Option(False, "--refresh", help="Refresh the profile (calibrate --refresh, in memory) "
                                                          "at the run's model and seq before the run, within and "
                                                          "after each repeat (with --hf: before each case, every "
                                                          "64 decode steps and after each repetition); each repeat "
                                                          "is predicted from the refreshes over its span."),
    gamma: str = typer.Option("auto", help="With --sd: draft tokens per iteration, or auto."),
    alpha: float = typer.Option(0.8, help="With --sd and the synthetic workload: the oracle's acceptance."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    out: Path | None = typer.Option(None, help="Also write the JSON result to this file."),
) -> None:
    """Run the policies for real and report prediction error, regret and measured speedups."""
    con = Console(stderr=as_json)
    if threads is not None and threads < 1:
        raise BMCError(f"--threads must be a positive integer, got {threads}")
    for name, v in (("seq", seq), ("batch", batch), ("new-tokens", new_tokens)):
        if v is not None and v < 1:
            raise BMCError(f"--{name} must be a positive integer, got {v}")
    if not hf and new_tokens is not None:
        raise BMCError("--new-tokens applies to --hf only")
    if refresh and device != "cpu":
        raise BMCError("--refresh re-times a CPU profile; --device cuda predicts from the profile as calibrated")
    hf_workloads = _hf_workloads(workload, seq, new_tokens, quick) if hf else None
    batch_given, batch = batch, batch if batch is not None else 1  # --hf uses batch only where it was given
    workload = workload or "synthetic"
    seq_given, seq = seq, seq if seq is not None else 2048  # --hf uses seq only where it was given
    spec = resolve_spec(model, None, layers).full_attention()  # the runtime has no sliding layers
    names = [p.strip().lower() for p in policies.split(",")] if policies else (QUICK_NAMES if quick else DEFAULT_NAMES)
    for n in names:
        if n not in NAMED:
            raise BMCError(f"unknown policy {n!r} (known: {', '.join(NAMED)})")
    grid = _ints(r_grid, "--r-grid") if r_grid else ([64] if quick else [16, 64])
    reps = repeats if repeats is not None else (2 if quick else 3)
    prompt = prompt if prompt is not None else max(1, seq - (64 if quick else 128))
    if not 1 <= prompt < seq:
        raise BMCError(f"--prompt must be in [1, seq), got {prompt} with seq {seq}")
    if device not in DEVICES:
        raise BMCError(f"--device must be cpu or cuda, got {device!r}")
    if device != "cpu" and (sd or hf):
        raise BMCError("--device cuda measures plain decoding only; --sd and --hf run on the CPU")
    if device != "cpu" and profile is None:
        raise BMCError("--device cuda needs --profile: a profile calibrated on that GPU "
                       "(bmc-tune calibrate --device cuda --out FILE)")
    prof = _profile(profile, quick, threads, con)
    line, warning = profile_note(prof, device, threads)
    con.print(line, style="dim", markup=False, highlight=False)
    if sd:
        from bmc_model.validate.speculative import measure_sd

        if batch != 1:
            raise BMCError("--sd measures batch 1")
        with con.status("measuring speculative decoding") as status:
            result = measure_sd(workload, new_tokens=seq - prompt, gamma=gamma, repeats=reps, profile=prof,
                                threads=threads, acceptance_out=acceptance_out, model=model, layers=layers,
                                prompt=prompt, alpha=alpha, refresh=refresh, progress=lambda m: status.update(m))
    elif hf:
        from bmc_model.validate.hf_generate import validate_hf

        with con.status("measuring HF generate()") as status:
            result = validate_hf(workloads=hf_workloads, contexts=[seq_given] if seq_given else None,
                                 batches=[batch_given] if batch_given else None, new_tokens=new_tokens,
                                 quick=quick, profile=prof, threads=threads, memory=memory,
                                 refresh=refresh, progress=lambda m: _progress(con, status, m))
    else:
        from bmc_model.validate.plain import run_validate

        with con.status("measuring") as status:
            result = run_validate(spec, seq=seq, prompt=prompt, batch=batch, profile=prof, names=names, r_grid=grid,
                                  repeats=reps, threads=threads, device=device, memory=memory, refresh=refresh,
                                  progress=lambda m: status.update(m))
    from bmc_model.validate.report import show

    if warning:  # with the results it qualifies: an error before them stays the one line on stderr
        warn(warning)
    data = result.to_dict()
    if out is not None:
        with atomic_write(out) as f:
            f.write(to_json(data))
    if as_json:
        typer.echo(to_json(data))
    else:
        show(result, con)
