"""`bmc-tune profile show [PATH]`: a profile's coefficients, fit quality, host and fitted curves; a profile
that fails the checks every load runs (core/profile_check.py) is one error line and exit code 2."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from bmc_model.cli import PlainFlagsGroup, app, guarded, warn
from bmc_model.cli.options import profile_note, to_json
from bmc_model.cli.profile_view import render
from bmc_model.core.profile import load_profile

profile_app = typer.Typer(no_args_is_help=True, cls=PlainFlagsGroup,
                          help="Inspect host profiles (the fitted cost coefficients).")
app.add_typer(profile_app, name="profile")


@profile_app.command("show")
@guarded
def show_cmd(
    path: Path | None = typer.Argument(None, help="Profile JSON (default: the calibrated one, else embedded)."),
    no_charts: bool = typer.Option(False, "--no-charts", help="Tables only."),
    as_json: bool = typer.Option(False, "--json", help="Print the profile's JSON (as loaded), its source and "
                                                      "any host warning."),
) -> None:
    """Print a profile: coefficients with ci95 and R^2, scalars, host, and charts of the fits."""
    prof = load_profile(path)
    line, warning = profile_note(prof)
    if warning:
        warn(warning)
    if as_json:
        typer.echo(to_json({**prof.to_dict(), "source": prof.source, "warning": warning}))
        return
    con = Console()
    con.print(line, markup=False, highlight=False)
    render(prof, con, with_charts=not no_charts)
