"""`bmc-tune calibrate`: measure this host's cost terms and write the profile atomically."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bmc_model.cli import app, guarded
from bmc_model.cli.options import to_json
from bmc_model.core.errors import BMCError
from bmc_model.core.profile import default_profile_path, write_profile
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
    quick: bool = typer.Option(False, "--quick", help="Fewer sizes and repeats (about 15-30 s instead of 2-3 min)."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    threads: int | None = typer.Option(None, help="torch threads (default: the cores this process may use)."),
    dtype: str = typer.Option("float32", help="float32, bfloat16 or float16."),
    model: str | None = typer.Option(None, help="Calibrate attention and weights at this preset's geometry "
                                                "(default: a few common geometries)."),
    out: Path | None = typer.Option(None, help="Where to write the profile (default: the user cache dir)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Measure allocation, copy, write, attention, weight streaming and framework overhead; fit them."""
    from bmc_model.calibrate.plan import FULL_SCALE, QUICK_BUDGET, check_options

    check_options(device, threads, dtype, model)  # one-line errors before torch is imported
    from bmc_model.calibrate.run import calibrate, resolve_device

    resolve_device(device)
    path = out or default_profile_path()
    check_destination(path)
    err = Console(stderr=True)
    budgets = {k: v * (1.0 if quick else FULL_SCALE) for k, v in QUICK_BUDGET.items()}
    columns = (TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=as_json) as progress:
        result = calibrate(quick=quick, device=device, threads=threads, dtype=dtype, model=model,
                           reporter=RichReporter(progress, budgets))
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
