"""`bmc-tune calibrate`: measure this host's cost terms and write the profile atomically; `--refresh`:
re-time the terms that drift in seconds and store their scale factors on an existing profile."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bmc_model.cli import app, guarded
from bmc_model.cli.options import to_json
from bmc_model.core.errors import BMCError
from bmc_model.core.profile import Profile, default_profile_path, embedded_profile, read_profile, write_profile
from bmc_model.core.profile_check import first_problem


class RichReporter:
    """One bar per benchmark, plus an overall bar in planned seconds (its ETA is the run's)."""

    def __init__(self, progress: Progress, budgets: dict[str, float]) -> None:
        self.p = progress
        self.budgets = budgets
        self.overall = progress.add_task("[bold]calibration", total=sum(budgets.values()))
        self.tasks: dict[str, tuple[int, int]] = {}

    def begin(self, bench: str, total: int) -> None:
        self.tasks[bench] = (self.p.add_task(bench, total=max(total, 1)), max(total, 1))

    def step(self, bench: str, n: int = 1) -> None:
        task, total = self.tasks[bench]
        self.p.advance(task, n)
        self.p.advance(self.overall, self.budgets.get(bench, 0.0) * n / total)

    def end(self, bench: str) -> None:
        task, total = self.tasks[bench]
        self.p.update(task, completed=total)


def check_destination(path: Path) -> None:
    """Fail before minutes of measuring, not after: the folder must exist (or be creatable) and be writable."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise BMCError(f"cannot write the profile to {path}: {parent} is not a folder")
            break
    if path.is_dir():
        raise BMCError(f"cannot write the profile to {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BMCError(f"cannot write the profile to {path}: {e.strerror or e}") from None
    if not os.access(path.parent, os.W_OK):
        raise BMCError(f"cannot write the profile to {path}: {path.parent} is not writable")


@app.command("calibrate")
@guarded
def calibrate_cmd(
    quick: bool = typer.Option(False, "--quick",
                               help="Fewer sizes and repeats (about 30 s instead of 3-4 min on 2 cores)."),
    device: str | None = typer.Option(None, help="cpu or cuda (default cpu)."),
    threads: int | None = typer.Option(None, help="torch threads (default: the cores this process may use)."),
    dtype: str | None = typer.Option(None, help="float32, bfloat16 or float16 (default float32)."),
    model: str | None = typer.Option(None, help="Calibrate attention and weights at this preset's geometry "
                                                "(default: a few common geometries); with --refresh, the model "
                                                "whose sizes are re-timed (default llama-7b)."),
    out: Path | None = typer.Option(None, help="Where to write the profile (default: the user cache dir; with "
                                               "--refresh, the profile refreshed)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
    refresh: bool = typer.Option(False, "--refresh", help="Re-time the terms that drift (weights, cat, alloc, "
                                                          "attention; about 10 s) and store how far each moved "
                                                          "on the profile, its calibrated terms kept."),
    profile: Path | None = typer.Option(None, help="With --refresh: the profile to refresh (default: the cached "
                                                   "one; without one, the embedded default, written there)."),
    seq: int | None = typer.Option(None, help="With --refresh: the decode length whose sizes are re-timed "
                                              "(default 2048)."),
    batch: int | None = typer.Option(None, help="With --refresh: sequences decoded together; K/V sizes are the "
                                                "batch's and the matmuls are also timed at its rows (default 1)."),
    runtime: str | None = typer.Option(None, help="With --refresh: bmc (default) or hf: hf also re-times "
                                                  "transformers' framework cost in place (about 1-2 s more; the "
                                                  "hf extra)."),
) -> None:
    """Measure allocation, copy, write, attention, weight streaming and framework overhead; fit them."""
    from bmc_model.calibrate.plan import budgets, check_options

    if refresh:
        given = [flag for flag, v in (("--quick", quick), ("--device", device), ("--dtype", dtype)) if v]
        if given:
            raise BMCError(f"--refresh re-times a profile as it was calibrated: {', '.join(given)} does not go "
                           "with it")
        check_options("cpu", threads, "float32", None)
        return refresh_cmd(profile, model, seq, threads, out, as_json, 1 if batch is None else batch,
                           runtime or "bmc")
    given = [flag for flag, v in (("--profile", profile), ("--seq", seq), ("--batch", batch),
                                  ("--runtime", runtime)) if v is not None]
    if given:
        raise BMCError(f"{' and '.join(given)} go{'es' if len(given) == 1 else ''} with --refresh")
    device, dtype = device or "cpu", dtype or "float32"
    check_options(device, threads, dtype, model)  # one-line errors before torch is imported
    from bmc_model.calibrate.run import calibrate, resolve_device

    resolve_device(device)
    path = out or default_profile_path()
    check_destination(path)
    err = Console(stderr=True)
    columns = (TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=as_json) as progress:
        result = calibrate(quick=quick, device=device, threads=threads, dtype=dtype, model=model,
                           reporter=RichReporter(progress, budgets(quick)))
    problem = first_problem(result.profile)
    if problem:  # the fits are bounded so that this does not happen; if it does, keep the old profile
        raise BMCError(f"calibration produced an unphysical profile ({problem}); {path} left as it was: "
                       "calibrate again on a quiet machine")
    try:
        write_profile(result.profile, path)
    except OSError as e:
        raise BMCError(f"cannot write the profile to {path}: {e.strerror or e}") from None
    if as_json:
        typer.echo(to_json({"path": str(path), "elapsed_s": result.elapsed_s, "notes": result.notes,
                            "cat_residual": result.cat_residual, "profile": result.profile.to_dict()}))
        return
    from bmc_model.cli.profile_view import render

    con = Console()
    render(result.profile, con, with_charts=False)
    con.print(f"[bold green]profile written to {escape(str(path))}[/] ({result.elapsed_s:.1f} s; "
              f"`bmc-tune profile show {escape(str(path))}` draws the fits)")


def refresh_cmd(profile: Path | None, model: str | None, seq: int | None, threads: int | None, out: Path | None,
                as_json: bool, batch: int = 1, runtime: str = "bmc") -> None:
    """`calibrate --refresh`: checks first (one line each), then about DEFAULT_BUDGET_S s of measuring."""
    t0 = time.perf_counter()
    from bmc_model.calibrate.refresh import DEFAULT_BUDGET_S, plan_refresh
    from bmc_model.core.request import DEFAULT_MODEL, DEFAULT_SEQ

    src = profile or default_profile_path()
    note = None
    if profile is None and not _exists(src):
        prof: Profile = embedded_profile()
        note = f"no profile at {src}: refreshing the embedded default and writing it there"
    else:
        prof = read_profile(src)
    dest = out or src
    check_destination(dest)
    model, seq = model or DEFAULT_MODEL, DEFAULT_SEQ if seq is None else seq
    plan = plan_refresh(prof.calibrated, model, seq, DEFAULT_BUDGET_S, batch=batch, runtime=runtime)  # no torch yet
    err = Console(stderr=True)
    if note and not as_json:
        err.print(note, markup=False, highlight=False)
    if not as_json:
        at = f"seq {seq}" + (f", batch {batch}" if batch != 1 else "")
        err.print(f"refreshing {src} at {plan.spec.name}'s sizes, {at} (about {DEFAULT_BUDGET_S:.0f} s)",
                  markup=False, highlight=False)
    from bmc_model.calibrate.refresh import refresh_profile

    new = refresh_profile(prof, model=plan.spec, seq=seq, threads=threads, batch=batch, runtime=runtime)
    try:
        write_profile(new, dest)
    except OSError as e:
        raise BMCError(f"cannot write the profile to {dest}: {e.strerror or e}") from None
    wall = time.perf_counter() - t0
    assert new.refresh is not None
    if as_json:
        typer.echo(to_json({"path": str(dest), "note": note, "elapsed_s": wall, "refresh": new.refresh.to_dict()}))
        return
    from bmc_model.cli.layout import print_table
    from bmc_model.cli.profile_view import refresh_table

    con = Console()
    print_table(con, refresh_table(new))
    con.print(f"[bold green]refreshed profile written to {escape(str(dest))}[/] ({new.refresh.seconds:.1f} s "
              f"measuring, {wall:.1f} s in all)")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a cache folder we may not enter: read_profile says so, naming the fix
        return True
