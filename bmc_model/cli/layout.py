"""Terminal layout shared by the commands' tables: whether a table fits the console on one line a row, and
numbers that read right at a glance."""

from __future__ import annotations

import re

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

# The compact form of a table: a rule under the header only, and one space between columns (rich's grid
# spends three on a border and its padding), so a table of nine narrow columns fits 80.
COMPACT = {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False, "collapse_padding": True}


def fits(con: Console, table: Table) -> bool:
    """True when the table's natural width (no cell wrapped) fits the console. Else rich squeezes columns
    until it must cut words short with an ellipsis, so the caller picks its compact form instead."""
    return Measurement.get(con, con.options.update(width=10**4), table).maximum <= con.width


def speedup(ratio: float) -> str:
    """'1.190x', '0.996x': enough digits that a ratio below 1 never reads '1.000x' (a baseline within the
    tolerance can be a little faster than the recommended configuration), nor one above 1."""
    for digits in range(3, 10):
        text = f"{ratio:.{digits}f}"
        if ratio == 1.0 or float(text) != 1.0:
            return f"{text}x"
    return f"{ratio:.3f}x"


def print_table(con: Console, table: Table) -> None:
    """The table as built where it fits the console, else in the COMPACT style (long cells may still wrap)."""
    if not fits(con, table):
        for key, value in COMPACT.items():
            setattr(table, key, value)
    con.print(table)


def one_line(text: str) -> str:
    """Errors and warnings are one line each: a path, or an excerpt of a file, may hold line breaks."""
    return re.sub(r"\s*[\r\n]+\s*", " ", text).strip()
