"""The typer groups behind `bmc-tune`: flags listed as plain flags in the help, and usage errors (a value
that is not a number, an unknown option) as one line and exit 2, like every other bad input."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

from bmc_model.cli.layout import one_line


class PlainFlagsGroup(TyperGroup):
    """Typer's help shows a `<bool>` type after every flag, --help included, as if it took a value
    (`--json true` is an error). Commands are handed out through get_command: give their flags, and
    their help option, an empty metavar there, so the help lists a flag as a plain flag."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            for param in (*cmd.params, cmd.get_help_option(ctx)):
                if getattr(param, "is_flag", False):
                    param.metavar = ""
        return cmd

    def get_help_option(self, ctx: Any) -> Any:
        opt = super().get_help_option(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt


class RootGroup(PlainFlagsGroup):
    """`bmc-tune` itself: a usage error (`--seq abc`, `--bogus`, `--json true`) is one line, "error: ..."
    and exit 2, as a BMCError is, instead of typer's usage block and boxed message."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            # not standalone: click raises usage errors to us, and returns the exit code of a typer.Exit
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as e:  # click's ClickException: UsageError, BadParameter, ...
            if not hasattr(e, "format_message"):
                raise
            if e.__class__.__name__ != "NoArgsIsHelpError":  # that one has printed the help already
                ctx = getattr(e, "ctx", None)
                hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
                typer.echo(f"error: {one_line(e.format_message())}{hint}", err=True)
            sys.exit(getattr(e, "exit_code", 2))
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)
