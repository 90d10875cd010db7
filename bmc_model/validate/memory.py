"""Memory needed by a decode run (weights + peak KV + activations), estimated before allocating.

No torch here: `validate` can refuse a context that does not fit before importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from bmc_model.core.errors import BMCError
from bmc_model.core.host import available_ram_bytes
from bmc_model.core.policy import Policy
from bmc_model.core.specs import DTYPE_BYTES, ModelSpec


@dataclass(frozen=True)
class MemoryEstimate:
    weights_bytes: int
    kv_peak_bytes: int  # K + V of all layers at the worst moment (old and new buffer coexisting)
    activation_bytes: int  # prefill / verify activations, logits, masks (rough upper bound)

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_peak_bytes + self.activation_bytes


def weight_bytes(spec: ModelSpec, dtype: str = "float32") -> int:
    isz = DTYPE_BYTES[dtype]
    params = spec.layers * (spec.layer_params() + 2 * spec.hidden) + spec.hidden + spec.vocab * spec.hidden
    if not spec.tied_embeddings:
        params += spec.head_params()
    return params * isz


def kv_peak_rows(policy: Policy, *, layers: int, prompt: int, max_len: int, q: int = 1) -> int:
    """Peak rows held by every K and V tensor together (in rows of one tensor) when decoding q rows a step
    from prompt to max_len.

    Tensors grow one after another inside a forward (K then V, layer by layer), so at the last one's growth
    2L - 1 tensors hold the new capacity and the last holds old + new: 2 L new + old.
    """
    if prompt < 1 or max_len < prompt:
        raise BMCError(f"need 1 <= prompt <= max_len, got prompt {prompt}, max_len {max_len}")
    if policy.is_cat:  # every write is a cat; the last one (at n_last) makes max_len rows
        steps = -(-(max_len - prompt) // q)
        return 2 * layers * max_len + prompt + (steps - 1) * q if steps else 2 * layers * prompt
    cap = policy.initial_capacity(prompt, max_len)
    peak, n = 2 * layers * cap, prompt
    while n < max_len:
        if n + q <= cap:  # skip the in-place writes up to the next growth
            n += max(1, (cap - n) // q) * q
            continue
        qq = min(q, max_len - n)
        if n + qq > cap:
            new = policy.grown_capacity(n, qq, cap, max_len)
            peak = max(peak, 2 * layers * new + cap)
            cap = new
        n += qq
    return peak


def estimate_memory(spec: ModelSpec, policy: Policy, *, prompt: int, max_len: int, batch: int = 1,
                    dtype: str = "float32", q: int = 1, synth_prompt: bool = False) -> MemoryEstimate:
    """Bytes for a decode run of `spec` from `prompt` rows to `max_len` with q rows per step."""
    if dtype not in DTYPE_BYTES:
        raise BMCError(f"unknown dtype {dtype!r} (use {', '.join(DTYPE_BYTES)})")
    isz = DTYPE_BYTES[dtype]
    row = batch * spec.kv_row_elems() * isz  # K + V of one row, one layer
    kv = kv_peak_rows(policy, layers=spec.layers, prompt=prompt, max_len=max_len, q=q) * row // 2
    rows = q if synth_prompt else max(prompt, q)  # rows of the widest forward
    qkv = (spec.heads + 2 * spec.kv_heads) * spec.head_dim
    per_row = 4 * spec.hidden + 3 * spec.ffn + 2 * qkv  # residual, norms, qkv, attention out, mlp
    act = batch * rows * per_row * isz
    act += rows * max_len * 4 * (spec.heads // spec.kv_heads)  # additive mask, folded for GQA
    act += batch * q * spec.vocab * isz  # logits of the rows kept (prefill keeps the last only)
    if synth_prompt:
        act += row * prompt  # one layer of synthesized prompt rows before it is written
    return MemoryEstimate(weight_bytes(spec, dtype), kv, act)


def available_bytes() -> int | None:
    """MemAvailable (Linux), else physical memory, else None."""
    return available_ram_bytes() or None


def fits(est: MemoryEstimate, *, available: int | None = None, headroom: float = 0.9) -> bool:
    """Whether the estimate stays within `headroom` of the available memory (True when unknown)."""
    avail = available_bytes() if available is None else available
    return avail is None or est.total_bytes <= headroom * avail


def check_fits(est: MemoryEstimate, *, available: int | None = None, headroom: float = 0.9, what: str = "run") -> None:
    """Raise BMCError when the estimate exceeds `headroom` of the available memory."""
    avail = available_bytes() if available is None else available
    if avail is not None and not fits(est, available=avail, headroom=headroom):
        gib = 1024 ** 3
        raise BMCError(f"{what} needs about {est.total_bytes / gib:.1f} GiB (weights {est.weights_bytes / gib:.1f}, "
                       f"KV peak {est.kv_peak_bytes / gib:.1f}) but only {avail / gib:.1f} GiB is available; "
                       "use fewer --layers, a shorter --seq or a smaller --batch")


def probe_bytes(spec: ModelSpec, *, cat_rows: int, attn_width: int, stream_bytes: int, elem: int = 4) -> int:
    """What a MatmulProbe (calibrate/probe.py) holds beside the runs, roughly: torch.cat's sources (at least
    stream_bytes) plus a tensor being replaced and its successor, and attention's K/V pool (at least
    stream_bytes). Float32 unless elem says otherwise. 16 and 64 are bench_memory.CAT_SPAN and
    bench_attention.VIEW_SLACK, written out to keep this module free of torch (a test ties them)."""
    row = spec.kv_heads * spec.head_dim * elem
    cat = max(stream_bytes, cat_rows * row) + 2 * (cat_rows + 16) * row if cat_rows else 0
    attn = max(stream_bytes, 2 * (attn_width + 64) * row) if attn_width else 0
    return int(cat + attn)
