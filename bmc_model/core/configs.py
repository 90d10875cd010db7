"""Reading a Hugging Face config.json into a ModelSpec, family by family (`model_type`).

Each family names its fields its own way (GPT-2's n_embd, Falcon's num_kv_heads, OPT's ffn_dim) and has its
own defaults (tied embeddings, gated MLP, which layers slide). A model_type not listed here is refused by
name: reading it with another family's names gives a wrong model silently (a Falcon read as GPT-2 has 71 KV
heads instead of 1). A config with no model_type at all is read with Llama's names, transformers' default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bmc_model.core.errors import BMCError
from bmc_model.core.specs import DTYPE_BYTES, ModelSpec

LAYER_TYPES = ("full_attention", "sliding_attention")  # the kinds of layer bmc-tune prices and caches

# Gemma3TextConfig's defaults (transformers 5.24): a multimodal config's text_config often holds only the
# fields that differ from them, and transformers fills the rest from them, as this reader does.
GEMMA3_TEXT_DEFAULTS = {"vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216,
                        "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                        "max_position_embeddings": 131072, "sliding_window": 4096, "tie_word_embeddings": True}


@dataclass(frozen=True)
class Reader:
    """One config dict and the label its errors carry."""

    cfg: dict
    src: str

    def has(self, key: str) -> bool:
        return self.cfg.get(key) is not None

    def need(self, *keys: str, default: int | None = None) -> int:
        """The first of keys present, a positive integer; else default; else a 'missing field' error."""
        for key in keys:
            if self.has(key):
                return self.positive(key)
        if default is not None:
            return default
        raise BMCError(f"{self.src}: missing field {' or '.join(repr(key) for key in keys)}")

    def positive(self, key: str) -> int:
        v = self.cfg[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise BMCError(f"{self.src}: field {key!r} must be a positive integer, got {v!r}")
        return v

    def optional(self, key: str) -> int | None:
        return self.positive(key) if self.has(key) else None

    def flag(self, key: str, default: bool) -> bool:
        v = self.cfg.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise BMCError(f"{self.src}: field {key!r} must be true or false, got {v!r}")
        return v

    def head_dim(self, hidden: int, heads: int) -> int:
        """An explicit head_dim (Gemma-3's 256 is not hidden / heads), else hidden / heads, which must divide."""
        if self.has("head_dim"):
            return self.positive("head_dim")
        if hidden % heads:
            raise BMCError(f"{self.src}: hidden size {hidden} is not a multiple of {heads} heads; give head_dim")
        return hidden // heads

    def sliding_from_types(self, layers: int) -> int | None:
        """Sliding layers counted in layer_types (None without the field)."""
        types = self.cfg.get("layer_types")
        if types is None:
            return None
        if not isinstance(types, list) or len(types) != layers:
            raise BMCError(f"{self.src}: layer_types must list one type for each of the {layers} layers")
        other = sorted({t for t in types if t not in LAYER_TYPES})
        if other:
            raise BMCError(f"{self.src}: layer type {', '.join(map(repr, other))} is not supported "
                           f"({', '.join(LAYER_TYPES)})")
        return types.count("sliding_attention")


Shape = dict  # a family reader's ModelSpec fields: the ones each family spells its own way


def _llama(rd: Reader, tied: bool = False, window: bool = False) -> Shape:
    """Llama and the families that kept its field names (Mistral, Qwen2, Phi-3 and Gemma-3 add a window)."""
    layers, heads, hidden = rd.need("num_hidden_layers"), rd.need("num_attention_heads"), rd.need("hidden_size")
    return {"layers": layers, "heads": heads, "kv_heads": rd.need("num_key_value_heads", default=heads),
            "head_dim": rd.head_dim(hidden, heads), "hidden": hidden, "ffn": rd.need("intermediate_size"),
            "gated_mlp": True, "tied_embeddings": rd.flag("tie_word_embeddings", tied),
            "max_context": rd.optional("max_position_embeddings"),
            "sliding_window": rd.optional("sliding_window") if window else None}


def _mistral(rd: Reader) -> Shape:
    """Mistral and Phi-3: a sliding_window (Mistral-7B-v0.1 4096, Phi-3-mini-4k 2047) applies to every layer.
    (Phi-3 fuses q, k, v and gate, up: the same weights, so the same counts.)"""
    return _llama(rd, window=True)


def _qwen2(rd: Reader) -> Shape:
    """Qwen2 and Qwen3: the window only with use_sliding_window, and then on layers from max_window_layers on."""
    base = _llama(rd)
    if not rd.flag("use_sliding_window", False) or not rd.has("sliding_window"):
        return base
    sliding = rd.sliding_from_types(base["layers"])
    if sliding is None:
        sliding = max(base["layers"] - rd.need("max_window_layers", default=28), 0)
    return {**base, "sliding_window": rd.positive("sliding_window"), "sliding_layers": sliding}


def _gemma3(rd: Reader) -> Shape:
    """Gemma-3: layer_types, or in older configs one full layer every sliding_window_pattern (6) layers."""
    base = _llama(rd, tied=True, window=True)
    if base["sliding_window"] is None:
        return base
    sliding = rd.sliding_from_types(base["layers"])
    if sliding is None:
        pattern = rd.need("sliding_window_pattern", default=6)
        sliding = base["layers"] - base["layers"] // pattern  # every pattern-th layer is full
    return {**base, "sliding_layers": sliding}


def _plain(rd: Reader, layers: int, heads: int, hidden: int, kv: int, ffn: int, context: int | None) -> Shape:
    """Falcon, OPT and GPT-2: a two-matrix MLP, tied embeddings by default, no window."""
    return {"layers": layers, "heads": heads, "kv_heads": kv, "head_dim": rd.head_dim(hidden, heads),
            "hidden": hidden, "ffn": ffn, "gated_mlp": False, "tied_embeddings": rd.flag("tie_word_embeddings", True),
            "max_context": context}


def _falcon(rd: Reader) -> Shape:
    """Falcon: multi-query (one KV head) unless new_decoder_architecture (num_kv_heads); a 4x GELU MLP."""
    layers, heads = rd.need("num_hidden_layers", "n_layer"), rd.need("num_attention_heads", "n_head")
    hidden = rd.need("hidden_size", "n_embed")
    if rd.flag("new_decoder_architecture", False) or not rd.flag("multi_query", True):
        kv = rd.need("num_kv_heads", "n_head_kv", default=heads)
    else:
        kv = 1
    return _plain(rd, layers, heads, hidden, kv, rd.need("ffn_hidden_size", default=4 * hidden),
                  rd.optional("max_position_embeddings"))


def _opt(rd: Reader) -> Shape:
    heads = rd.need("num_attention_heads")
    return _plain(rd, rd.need("num_hidden_layers"), heads, rd.need("hidden_size"), heads, rd.need("ffn_dim"),
                  rd.optional("max_position_embeddings"))


def _gpt2(rd: Reader) -> Shape:
    heads, hidden = rd.need("n_head", "num_attention_heads"), rd.need("n_embd", "hidden_size")
    return _plain(rd, rd.need("n_layer", "num_hidden_layers"), heads, hidden, heads,
                  rd.need("n_inner", default=4 * hidden),
                  rd.optional("n_positions") or rd.optional("max_position_embeddings"))


FAMILIES: dict[str, Callable[[Reader], Shape]] = {
    "llama": _llama, "mistral": _mistral, "qwen2": _qwen2, "qwen3": _qwen2, "gemma3_text": _gemma3, "phi3": _mistral,
    "falcon": _falcon, "opt": _opt, "gpt2": _gpt2,
}
MULTIMODAL = {"gemma3": ("gemma3_text", GEMMA3_TEXT_DEFAULTS)}  # model_type -> (text model_type, its defaults)
KNOWN = tuple(sorted([*FAMILIES, *MULTIMODAL]))


def read_config(cfg: object, name: str, source: str) -> ModelSpec:
    """ModelSpec of an HF config dict; `name` is the fallback label, `source` labels errors."""
    if not isinstance(cfg, dict):
        raise BMCError(f"{source}: config must be a JSON object")
    mtype = cfg.get("model_type")
    mtype = "llama" if mtype in (None, "") else mtype
    if not isinstance(mtype, str):
        raise BMCError(f"{source}: model_type must be a string, got {mtype!r}")
    mtype = mtype.lower()
    top = cfg
    if mtype in MULTIMODAL:
        text_type, defaults = MULTIMODAL[mtype]
        text = cfg.get("text_config")
        if not isinstance(text, dict):
            raise BMCError(f"{source}: a {mtype} config needs a text_config object")
        cfg, mtype = {**defaults, **{k: v for k, v in text.items() if v is not None}}, text_type
        source = f"{source} (text_config)"
    family = FAMILIES.get(mtype)
    if family is None:
        raise BMCError(f"{source}: model_type {mtype!r} is not supported (known: {', '.join(KNOWN)})")
    rd = Reader(cfg, source)
    shape = family(rd)
    dtype = str(top.get("dtype") or top.get("torch_dtype") or cfg.get("dtype") or cfg.get("torch_dtype")
                or "float16")
    return ModelSpec(name=str(top.get("_name_or_path") or name) or "config", vocab=rd.need("vocab_size"),
                     dtype=dtype if dtype in DTYPE_BYTES else "float16", **shape)
