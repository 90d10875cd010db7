"""Model specs (ModelSpec): the numbers of a model's shape the cost model needs, from presets or any HF config.json."""

from __future__ import annotations

import difflib
import functools
import json
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path

from bmc_model.core.errors import BMCError

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    ffn: int
    vocab: int
    gated_mlp: bool = True
    tied_embeddings: bool = False
    dtype: str = "float16"
    hf_id: str = ""
    aliases: tuple[str, ...] = field(default=())
    sliding_window: int | None = None  # S: a sliding layer attends to (and keeps) the last S positions only
    max_context: int | None = None  # positions the model was trained for (max_position_embeddings)
    sliding_layers: int | None = None  # how many layers slide (Gemma-3: 5 of 6); None: all, when there is a window

    def __post_init__(self) -> None:
        for name in ("layers", "heads", "kv_heads", "head_dim", "hidden", "ffn", "vocab"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise BMCError(f"model {self.name!r}: {name} must be a positive integer, got {v!r}")
        if self.heads % self.kv_heads:
            raise BMCError(f"model {self.name!r}: heads ({self.heads}) not a multiple of kv_heads ({self.kv_heads})")
        if self.dtype not in DTYPE_BYTES:
            raise BMCError(f"model {self.name!r}: unknown dtype {self.dtype!r} (use {', '.join(DTYPE_BYTES)})")
        for name, low in (("sliding_window", 1), ("sliding_layers", 0), ("max_context", 1)):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < low):
                raise BMCError(f"model {self.name!r}: {name} must be an integer >= {low} or null, got {v!r}")
        if self.sliding_layers is not None and self.sliding_layers > self.layers:
            raise BMCError(f"model {self.name!r}: sliding_layers ({self.sliding_layers}) exceeds layers "
                           f"({self.layers})")
        if self.sliding_layers and self.sliding_window is None:
            raise BMCError(f"model {self.name!r}: sliding_layers ({self.sliding_layers}) needs a sliding_window")

    def full_attention(self) -> ModelSpec:
        """This model with every layer attending to all rows: what a runtime without sliding layers runs."""
        return self if self.sliding_window is None else replace(self, sliding_window=None, sliding_layers=None)

    @property
    def sliding_count(self) -> int:
        """Layers that attend over the window only (0 without a window)."""
        if self.sliding_window is None:
            return 0
        return self.layers if self.sliding_layers is None else self.sliding_layers

    # Parameter counts; the cost model turns them into bytes with the dtype in use.
    def layer_params(self) -> int:
        """Weights one decoder layer streams per step: q, k, v, o projections and the MLP."""
        attn = self.hidden * self.heads * self.head_dim * 2 + self.hidden * self.kv_heads * self.head_dim * 2
        mlp = (3 if self.gated_mlp else 2) * self.hidden * self.ffn
        return attn + mlp

    def layer_matrices(self) -> list[tuple[int, int]]:
        """(out, in) of one layer's weight matrices as the runtime holds them: wqkv fused, wo,
        w_in (gate and up fused when gated), w_down. Four GEMVs per layer and token."""
        hd = self.head_dim
        return [((self.heads + 2 * self.kv_heads) * hd, self.hidden), (self.hidden, self.heads * hd),
                ((2 if self.gated_mlp else 1) * self.ffn, self.hidden), (self.hidden, self.ffn)]

    def hf_layer_matrices(self) -> list[tuple[int, int]]:
        """(out, in) of one layer's nn.Linear weights as transformers holds them, unfused: q, k, v, o, then gate,
        up (gated) and down. Seven GEMVs per layer and token (five without a gated MLP)."""
        hd, h = self.head_dim, self.hidden
        attn = [(self.heads * hd, h), (self.kv_heads * hd, h), (self.kv_heads * hd, h), (h, self.heads * hd)]
        return attn + [(self.ffn, h)] * (2 if self.gated_mlp else 1) + [(h, self.ffn)]

    def layer_out_rows(self) -> int:
        """Output rows (dot products) of one layer's matmuls for one token: each has a fixed cost."""
        return sum(n_out for n_out, _ in self.layer_matrices())

    def head_params(self) -> int:
        """The LM head, streamed once per step (tied or not, it is read)."""
        return self.vocab * self.hidden

    def kv_row_elems(self) -> int:
        """Elements of one K row plus one V row, one sequence, one layer."""
        return 2 * self.kv_heads * self.head_dim

    def with_layers(self, layers: int | None) -> ModelSpec:
        if layers is None:
            return self
        if layers < 1:
            raise BMCError(f"--layers must be a positive integer, got {layers}")
        # the same share of sliding layers, rounded (a truncated Gemma-3 stays mostly sliding)
        sliding = self.sliding_layers
        if sliding is not None:
            sliding = (sliding * layers + self.layers // 2) // self.layers
        return replace(self, layers=layers, name=f"{self.name}[{layers}L]", sliding_layers=sliding)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["aliases"] = list(self.aliases)
        return d


def scaled_shapes(spec: ModelSpec, nbytes: float, elem: int) -> tuple[list[tuple[int, int]], int]:
    """Layer matrices with output rows scaled so the four hold about nbytes; (shapes, bytes).

    Calibration times weight streaming at many sizes this way, keeping each inner dimension."""
    shapes = spec.layer_matrices()
    scale = nbytes / (sum(n_out * n_in for n_out, n_in in shapes) * elem)
    out = [(max(1, round(n_out * scale)), n_in) for n_out, n_in in shapes]
    return out, sum(n_out * n_in for n_out, n_in in out) * elem


def _preset_files() -> list[tuple[str, str]]:
    root = resources.files("bmc_model") / "presets"
    return [(entry.name, entry.read_text()) for entry in root.iterdir() if entry.name.endswith(".json")]


@functools.cache
def presets() -> dict[str, ModelSpec]:
    out: dict[str, ModelSpec] = {}
    for _, text in sorted(_preset_files()):
        d = json.loads(text)
        d["aliases"] = tuple(d.get("aliases", ()))
        out[d["name"]] = ModelSpec(**d)
    return out


@functools.cache
def _lookup_table() -> dict[str, ModelSpec]:
    table: dict[str, ModelSpec] = {}
    for spec in presets().values():
        for key in (spec.name, spec.hf_id, *spec.aliases):
            if key:
                table[key.lower()] = spec
    return table


def get_spec(name: str) -> ModelSpec:
    """A preset by name or HF id, case-insensitively; unknown names suggest close matches."""
    table = _lookup_table()
    spec = table.get(name.strip().lower())
    if spec is not None:
        return spec
    close = difflib.get_close_matches(name.lower(), list(table), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    known = ", ".join(sorted(presets()))
    raise BMCError(f"unknown model {name!r}{hint} (known: {known}; or pass --config config.json)")


def spec_from_config(path: str | Path) -> ModelSpec:
    """Read an HF config.json (the families bmc_model.core.configs knows; others are refused by name)."""
    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise BMCError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BMCError(f"{path}: not a readable JSON config ({err.__class__.__name__}: {err})") from None
    except RecursionError:
        raise BMCError(f"{path}: not a readable JSON config (nested too deeply)") from None
    if not isinstance(cfg, dict):
        raise BMCError(f"{path}: config must be a JSON object")
    return spec_from_config_dict(cfg, name=path.parent.name or path.stem, source=str(path))


def spec_from_config_dict(cfg: dict, name: str = "config", source: str | None = None) -> ModelSpec:
    """The same from a config already in memory (e.g. `model.config.to_dict()`); `name` is the fallback
    when the dict has no `_name_or_path`, `source` labels error messages (default: the name). The field
    names of each model family: bmc_model.core.configs."""
    from bmc_model.core.configs import read_config  # it builds ModelSpecs: imported here, not at the top

    return read_config(cfg, name, source or name)


def resolve_spec(model: str | ModelSpec | None = None, config: str | Path | None = None,
                 layers: int | None = None) -> ModelSpec:
    if isinstance(model, ModelSpec):
        spec = model
    elif config is not None:
        spec = spec_from_config(config)
    else:
        spec = get_spec(model or "llama-7b")
    return spec.with_layers(layers)
