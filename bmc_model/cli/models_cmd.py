"""`bmc-tune models`: the presets and their geometry, as a table (compact where the full one does not fit
the terminal) or as JSON."""

from __future__ import annotations

import dataclasses

import typer
from rich.console import Console
from rich.table import Table

from bmc_model.cli import app, guarded
from bmc_model.cli.layout import COMPACT, fits
from bmc_model.cli.options import to_json
from bmc_model.core.specs import ModelSpec, presets

# (full header, compact header): the compact ones break across two lines so no column is wider than its numbers
COLUMNS = (("layers", "layers"), ("heads", "heads"), ("kv heads", "kv\nheads"), ("head dim", "head\ndim"),
           ("hidden", "hidden"), ("ffn", "ffn"), ("vocab", "vocab"), ("KV bytes/token (fp16)", "KV"))


def kv_bytes_per_token(s: ModelSpec) -> int:
    return s.layers * s.kv_row_elems() * 2  # fp16: 2 bytes an element


def _numbers(s: ModelSpec) -> list[str]:
    return [str(v) for v in (s.layers, s.heads, s.kv_heads, s.head_dim, s.hidden, s.ffn, s.vocab)] + [
        f"{kv_bytes_per_token(s):,}"]


def full_table(specs: list[ModelSpec]) -> Table:
    t = Table(title="Model presets")
    for col in ("name", "HF id", *(wide for wide, _ in COLUMNS)):
        t.add_column(col)
    for s in specs:
        t.add_row(s.name, s.hf_id, *_numbers(s))
    return t


def compact_tables(specs: list[ModelSpec]) -> list[Table]:
    """The geometry without the HF ids (35 columns on their own), then the ids in a table of their own."""
    t = Table(title="Model presets", caption="KV: bytes of KV cache per token, all layers, at fp16", **COMPACT)
    t.add_column("name", no_wrap=True, vertical="bottom")
    for _, short in COLUMNS:
        t.add_column(short, justify="right", vertical="bottom")
    ids = Table(title="HF ids (they work as names too)", **COMPACT)
    ids.add_column("name", no_wrap=True)
    ids.add_column("HF id", no_wrap=True)
    for s in specs:
        t.add_row(s.name, *_numbers(s))
        ids.add_row(s.name, s.hf_id)
    return [t, ids]


def to_dict(s: ModelSpec) -> dict:
    return {**dataclasses.asdict(s), "kv_bytes_per_token_fp16": kv_bytes_per_token(s)}


@app.command("models")
@guarded
def models_cmd(as_json: bool = typer.Option(False, "--json", help="Print the presets as a JSON list.")) -> None:
    """List the model presets (names are case-insensitive; HF ids work too)."""
    specs = list(presets().values())
    if as_json:
        typer.echo(to_json([to_dict(s) for s in specs]))
        return
    con = Console()
    table = full_table(specs)
    for t in [table] if fits(con, table) else compact_tables(specs):
        con.print(t)
