"""A Llama-architecture decoder (RMSNorm, RoPE, GQA, SwiGLU; optional q/k/v biases, as in Qwen2) over plain
tensors, gpt-fast style.

Weights are plain tensors used with F.linear; q/k/v and gate/up projections are fused so one
step is a few large GEMVs. Attention is F.scaled_dot_product_attention over the cache's views.
GQA: the g = heads / kv_heads query heads that share a KV head are folded into the query rows
([batch, kv_heads, g * q, head_dim]) so SDPA reads each cached KV row once, with no
repeat_interleave copy of the cache; for long prefills (many rows) enable_gqa=True is used instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bmc_model.core.errors import BMCError
from bmc_model.core.policy import Policy
from bmc_model.core.specs import ModelSpec
from bmc_model.runtime.cache import KVCache

FOLD_MAX_ROWS = 32  # fold GQA groups into query rows up to this many new rows; enable_gqa beyond
EMBED_STD = 0.03  # random embeddings small against the unit-variance layer outputs: a tied head then
# does not just echo the input token (0.3 let greedy decoding lock onto one token)


@dataclass
class LayerWeights:
    attn_norm: torch.Tensor  # [hidden]
    wqkv: torch.Tensor  # [(heads + 2 * kv_heads) * head_dim, hidden]
    wo: torch.Tensor  # [hidden, heads * head_dim]
    mlp_norm: torch.Tensor  # [hidden]
    w_in: torch.Tensor  # gated: [2 * ffn, hidden] (gate rows then up rows); else [ffn, hidden]
    w_down: torch.Tensor  # [hidden, ffn]
    bqkv: torch.Tensor | None = None  # q/k/v biases [(heads + 2 * kv_heads) * head_dim] (Qwen2); None: no bias

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.attn_norm, self.wqkv, self.wo, self.mlp_norm, self.w_in, self.w_down, self.bqkv)
                if t is not None]


@dataclass
class Weights:
    embed: torch.Tensor  # [vocab, hidden]
    layers: list[LayerWeights]
    norm: torch.Tensor  # [hidden]
    lm_head: torch.Tensor  # [vocab, hidden]; the same tensor as embed when tied

    def nbytes(self) -> int:
        seen: dict[int, int] = {}
        tensors = [self.embed, self.norm, self.lm_head]
        for lw in self.layers:
            tensors += lw.tensors()
        for t in tensors:
            seen[t.data_ptr()] = t.numel() * t.element_size()
        return sum(seen.values())


def tile_(t: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """t filled in place with `block` (1-D) repeated: a copy's cost, where 200M random draws (one 7B layer)
    take seconds."""
    flat = t.view(-1)
    for i in range(0, flat.numel(), block.numel()):
        n = min(block.numel(), flat.numel() - i)
        flat[i:i + n].copy_(block[:n])
    return t


def random_weights(spec: ModelSpec, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                   tiled: bool = False) -> Weights:
    """Seeded random weights scaled so every sublayer matters and greedy argmax moves.

    Projections have std 1/sqrt(fan_in) (unit-variance outputs); queries are scaled up so
    attention is peaked enough to depend on which rows are cached; embeddings are small
    against the layer outputs so a tied head does not just repeat the input token.
    tiled: one block of draws repeated over every matrix (tile_), for timing only: a matmul's speed does not
    depend on its values, but repeated rows tie logits, so greedy tokens are not a test's to compare.
    """
    g = torch.Generator().manual_seed(seed)
    h, d = spec.hidden, spec.head_dim
    qd, kvd = spec.heads * d, spec.kv_heads * d
    block = torch.empty(2**20).normal_(generator=g) if tiled else None

    def fill(w: torch.Tensor, std: float) -> torch.Tensor:
        if block is not None:
            return tile_(w, block).mul_(std)
        return w.normal_(generator=g).mul_(std)  # in place: a 7B layer is ~200M draws, no extra copy

    def lin(out: int, fan_in: int, scale: float = 1.0) -> torch.Tensor:
        """[out, fan_in] with std scale / sqrt(fan_in)."""
        w = torch.empty((out, fan_in), dtype=torch.float32)
        fill(w, scale / fan_in ** 0.5)
        return w if dtype == torch.float32 else w.to(dtype)

    def ones() -> torch.Tensor:
        return torch.ones(h, dtype=dtype)

    layers = []
    for _ in range(spec.layers):
        wqkv = torch.empty((qd + 2 * kvd, h), dtype=torch.float32)
        fill(wqkv[:qd], 2.0 / h ** 0.5)  # queries x2: peaked attention
        fill(wqkv[qd:], 1.0 / h ** 0.5)
        w_in = lin((2 if spec.gated_mlp else 1) * spec.ffn, h)
        layers.append(LayerWeights(ones(), wqkv.to(dtype), lin(h, qd, 2.0), ones(), w_in, lin(h, spec.ffn, 2.0)))
    embed = fill(torch.empty((spec.vocab, h), dtype=torch.float32), EMBED_STD).to(dtype)
    head = embed if spec.tied_embeddings else lin(spec.vocab, h)
    return Weights(embed, layers, ones(), head)


class Decoder:
    # Every weight matmul goes through here (a builtin: no self); calibration times them where they run
    # (calibrate/bench_layers.py) to learn what the rest of a layer costs.
    _linear = staticmethod(F.linear)

    def __init__(self, spec: ModelSpec, weights: Weights | None = None, *, seed: int = 0,
                 dtype: torch.dtype = torch.float32, rope_theta: float = 10000.0, norm_eps: float = 1e-5) -> None:
        if spec.head_dim % 2:
            raise BMCError(f"model {spec.name!r}: RoPE needs an even head_dim, got {spec.head_dim}")
        self.spec = spec.full_attention()  # no sliding layers here: every layer attends to all rows
        self.dtype = dtype
        self.w = weights if weights is not None else random_weights(spec, seed=seed, dtype=dtype)
        if len(self.w.layers) != spec.layers:
            raise BMCError(f"model {spec.name!r}: {len(self.w.layers)} weight layers for a {spec.layers}-layer spec")
        self.rope_theta, self.eps = rope_theta, norm_eps
        self.group = spec.heads // spec.kv_heads
        self._cos = self._sin = torch.empty(0)
        self._mask_src: torch.Tensor | None = None  # the cache's mask of this forward ...
        self._mask_fold: torch.Tensor | None = None  # ... repeated for the folded GQA rows

    @classmethod
    def random(cls, spec: ModelSpec, *, layers: int | None = None, seed: int = 0,
               dtype: torch.dtype = torch.float32) -> Decoder:
        spec = spec.with_layers(layers)
        return cls(spec, random_weights(spec, seed=seed, dtype=dtype), dtype=dtype)

    def truncated(self, layers: int) -> Decoder:
        """The first `layers` layers of this decoder (shares the weight tensors)."""
        spec = self.spec.with_layers(layers)
        if layers > len(self.w.layers):
            raise BMCError(f"cannot truncate a {len(self.w.layers)}-layer decoder to {layers} layers")
        w = Weights(self.w.embed, self.w.layers[:layers], self.w.norm, self.w.lm_head)
        return Decoder(spec, w, dtype=self.dtype, rope_theta=self.rope_theta, norm_eps=self.eps)

    def new_cache(self, policy: Policy, *, batch: int, max_len: int) -> KVCache:
        s = self.spec
        return KVCache(policy, layers=s.layers, batch=batch, kv_heads=s.kv_heads, head_dim=s.head_dim,
                       max_len=max_len, dtype=self.dtype, device=self.w.embed.device)

    @property
    def device(self) -> torch.device:
        return self.w.embed.device

    def to(self, device: str | torch.device) -> Decoder:
        """A copy with every weight on `device` (tied heads stay tied)."""
        def mv(t: torch.Tensor) -> torch.Tensor:
            return t.to(device)

        embed = mv(self.w.embed)
        head = embed if self.w.lm_head is self.w.embed else mv(self.w.lm_head)
        layers = [LayerWeights(mv(lw.attn_norm), mv(lw.wqkv), mv(lw.wo), mv(lw.mlp_norm), mv(lw.w_in), mv(lw.w_down),
                               None if lw.bqkv is None else mv(lw.bqkv)) for lw in self.w.layers]
        return Decoder(self.spec, Weights(embed, layers, mv(self.w.norm), head), dtype=self.dtype,
                       rope_theta=self.rope_theta, norm_eps=self.eps)

    def nbytes(self) -> int:
        return self.w.nbytes()

    # --- forward -----------------------------------------------------------------------------
    def prefill(self, tokens: torch.Tensor, cache: KVCache, *, last_only: bool = False) -> torch.Tensor:
        """tokens [b, P] into an empty cache -> logits [b, P, vocab] ([b, 1, vocab] if last_only)."""
        if cache.length != 0:
            raise BMCError(f"prefill needs an empty cache, it holds {cache.length} rows")
        return self.forward(tokens, cache, last_only=last_only)

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, cache: KVCache, *, last_only: bool = False) -> torch.Tensor:
        """tokens [b, q] at positions n..n+q-1 (n = cache.length), causal -> logits [b, q, vocab].

        q > 1 after prefill is speculative verification; the cache advances by q rows (roll back
        the rejected ones with cache.rollback).
        """
        if tokens.dim() != 2 or tokens.shape[0] != cache.batch or tokens.shape[1] < 1:
            raise BMCError(f"tokens must be [batch={cache.batch}, q>=1], got {list(tokens.shape)}")
        b, q = tokens.shape
        n = cache.length
        cos, sin = self._rope(n, q)  # [q, 1, head_dim]
        x = F.embedding(tokens.to(self.device), self.w.embed)  # [b, q, hidden]
        for i, lw in enumerate(self.w.layers):
            x = x + self._attention(i, self._norm(x, lw.attn_norm), lw, cache, cos, sin)
            x = x + self._mlp(self._norm(x, lw.mlp_norm), lw)
        cache.advance()
        self._mask_src = self._mask_fold = None
        if last_only:
            x = x[:, -1:]
        return self._linear(self._norm(x, self.w.norm), self.w.lm_head)  # [b, q, vocab]

    def _attention(self, layer: int, h: torch.Tensor, lw: LayerWeights, cache: KVCache,
                   cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        s = self.spec
        b, q, _ = h.shape
        d, nh, nkv, g = s.head_dim, s.heads, s.kv_heads, self.group
        qkv = self._linear(h, lw.wqkv, lw.bqkv)  # [b, q, (heads + 2 kv_heads) * head_dim]
        xq, xk, xv = qkv.split([nh * d, nkv * d, nkv * d], dim=-1)
        xq = _rotate(xq.view(b, q, nh, d), cos, sin)  # [b, q, heads, head_dim]
        xk = _rotate(xk.view(b, q, nkv, d), cos, sin)
        xv = xv.view(b, q, nkv, d)
        K, V, mask = cache.update(layer, xk.transpose(1, 2), xv.transpose(1, 2))  # [b, kv, W, d], [q, W]
        if q <= FOLD_MAX_ROWS:
            # [b, q, kv, g, d] -> [b, kv, g * q, d]: query head kv * g + j reads KV head kv (HF repeat_kv order)
            qf = xq.view(b, q, nkv, g, d).permute(0, 2, 3, 1, 4).reshape(b, nkv, g * q, d)
            o = F.scaled_dot_product_attention(qf, K, V, attn_mask=self._fold(mask, g, q))
            o = o.view(b, nkv, g, q, d).permute(0, 3, 1, 2, 4).reshape(b, q, nh * d)
        else:
            o = F.scaled_dot_product_attention(xq.transpose(1, 2), K, V, attn_mask=mask, enable_gqa=g > 1)
            o = o.transpose(1, 2).reshape(b, q, nh * d)
        return self._linear(o, lw.wo)

    def _fold(self, mask: torch.Tensor | None, g: int, q: int) -> torch.Tensor | None:
        """The [q, W] mask for folded rows [g * q, W] (row j * q + i uses mask row i); once per forward."""
        if mask is None or q == 1 or g == 1:
            return mask  # [1, W] broadcasts over the g folded rows
        if mask is not self._mask_src:
            self._mask_src, self._mask_fold = mask, mask.repeat(g, 1)
        return self._mask_fold

    def _mlp(self, h: torch.Tensor, lw: LayerWeights) -> torch.Tensor:
        u = self._linear(h, lw.w_in)
        if self.spec.gated_mlp:
            gate, up = u.chunk(2, dim=-1)
            u = F.silu(gate) * up  # SwiGLU
        else:
            u = F.gelu(u)
        return self._linear(u, lw.w_down)

    def _norm(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return w * xf.to(x.dtype)

    def _rope(self, n: int, q: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [q, 1, head_dim] for positions n..n+q-1 (HF rotate_half layout); table grows by doubling."""
        if n + q > self._cos.shape[0]:
            size = max(n + q, 2 * self._cos.shape[0], 256)
            d = self.spec.head_dim
            inv = 1.0 / (self.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))  # [d/2]
            freqs = torch.outer(torch.arange(size, dtype=torch.float32), inv)  # [size, d/2]
            emb = torch.cat([freqs, freqs], dim=-1)  # [size, d]
            dev = self.device
            self._cos = emb.cos().to(self.dtype).to(dev)[:, None, :]
            self._sin = emb.sin().to(self.dtype).to(dev)[:, None, :]
        return self._cos[n:n + q], self._sin[n:n + q]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on x [b, q, heads, head_dim] with cos, sin [q, 1, head_dim]."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin
