"""`bmc-tune` console script: typer app; user errors become one line on stderr and exit 2."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

from bmc_model.cli.groups import PlainFlagsGroup, RootGroup
from bmc_model.cli.layout import one_line
from bmc_model.core.errors import BMCError

__all__ = ["PlainFlagsGroup", "app", "fail", "guarded", "main", "warn"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, cls=RootGroup,
                  help="Calibrated KV-cache growth model and r-tuner (BMC).")


def fail(message: str) -> None:
    """Print a one-line error and exit 2."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(2)


def warn(message: str) -> None:
    """One line on stderr, whatever the output mode: JSON on stdout stays parseable, and the warning is seen."""
    typer.echo(f"warning: {one_line(message)}", err=True)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command so BMCError (bad input) is one line and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BMCError as e:
            fail(str(e))
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


@app.callback()
def _root() -> None:
    """Calibrated KV-cache growth model and r-tuner (BMC)."""


def _register() -> None:
    # Each command lives in its own module; importing it adds it to `app`.
    from bmc_model.cli import calibrate_cmd, models_cmd, profile_cmd, recommend_cmd, serve_cmd, validate_cmd  # noqa: F401


_register()


def main() -> None:
    app()
