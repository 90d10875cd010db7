"""`bmc-tune models`: the presets and their geometry."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from bmc_model.cli import app, guarded
from bmc_model.core.specs import presets


@app.command("models")
@guarded
def models_cmd() -> None:
    """List the model presets (names are case-insensitive; HF ids work too)."""
    t = Table(title="Model presets")
    cols = ("name", "HF id", "layers", "heads", "kv heads", "head dim", "hidden", "ffn", "vocab",
            "KV bytes/token (fp16)")
    for col in cols:
        t.add_column(col)
    for s in presets().values():
        t.add_row(s.name, s.hf_id, str(s.layers), str(s.heads), str(s.kv_heads), str(s.head_dim), str(s.hidden),
                  str(s.ffn), str(s.vocab), f"{s.layers * s.kv_row_elems() * 2:,}")
    Console().print(t)
