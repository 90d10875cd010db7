"""Reading one GGUF file: the hyperparameters we use from its header, and its tensors de-quantized to fp32.

De-quantization is the `gguf` package's (the same call transformers' GGUF loading makes), one tensor at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bmc_model.core.errors import BMCError

# transformers' config defaults, for a file whose header has no rope.freq_base
DEFAULT_ROPE_THETA = {"llama": 10000.0, "qwen2": 1000000.0}
TOKEN_IDS = {"bos": "bos_token_id", "eos": "eos_token_id", "unknown": "unk_token_id", "padding": "pad_token_id"}


@dataclass
class GGUFHeader:
    arch: str  # general.architecture: "llama", "qwen2", ...
    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int  # rows of the token embedding
    context: int  # the trained context length
    rope_theta: float
    rms_norm_eps: float
    tied: bool  # no output.weight: the head is the embedding
    token_ids: dict[str, int] = field(default_factory=dict)  # transformers' names: bos_token_id, ...


def open_gguf(path: Path) -> Any:  # a gguf.GGUFReader (memory-maps the file)
    try:
        from gguf import GGUFReader
    except ImportError:
        raise BMCError("reading GGUF weights needs the gguf package: pip install 'bmc-tune[hf]'") from None
    return GGUFReader(path)


def read_header(reader: Any) -> GGUFHeader:
    def get(key: str, default: Any = None) -> Any:
        f = reader.fields.get(key)
        if f is None:
            if default is None:
                raise BMCError(f"GGUF header has no {key}")
            return default
        return f.contents()

    arch = get("general.architecture")
    hidden, heads = int(get(f"{arch}.embedding_length")), int(get(f"{arch}.attention.head_count"))
    names = {t.name: t for t in reader.tensors}
    embed = names.get("token_embd.weight")
    if embed is None:
        raise BMCError("GGUF file has no token_embd.weight")
    token_ids = {hf: int(get(f"tokenizer.ggml.{k}_token_id")) for k, hf in TOKEN_IDS.items()
                 if f"tokenizer.ggml.{k}_token_id" in reader.fields}
    return GGUFHeader(
        arch=arch, layers=int(get(f"{arch}.block_count")), hidden=hidden, ffn=int(get(f"{arch}.feed_forward_length")),
        heads=heads, kv_heads=int(get(f"{arch}.attention.head_count_kv", heads)),
        head_dim=int(get(f"{arch}.attention.key_length", hidden // heads)), vocab=int(embed.shape[-1]),
        context=int(get(f"{arch}.context_length")),
        rope_theta=float(get(f"{arch}.rope.freq_base", DEFAULT_ROPE_THETA.get(arch, 10000.0))),
        rms_norm_eps=float(get(f"{arch}.attention.layer_norm_rms_epsilon")),
        tied="output.weight" not in names, token_ids=token_ids)


def read_tensors(reader: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """(GGUF name, fp32 tensor [rows, cols]) for every tensor, each a copy (not a view of the mapped file)."""
    from gguf import dequantize

    for t in reader.tensors:
        yield t.name, torch.from_numpy(np.array(dequantize(t.data, t.tensor_type), dtype=np.float32))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()
