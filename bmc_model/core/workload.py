"""What is decoded (Workload: lengths, batch, speculative setting) and on what (Geometry: the model's
byte sizes as the cost model needs them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bmc_model.core.errors import BMCError
from bmc_model.core.specs import DTYPE_BYTES, ModelSpec


def reach(accept: tuple[float, ...], gamma: int) -> list[float]:
    """P(A >= j), j = 1..gamma + 1: an iteration keeps at least j rows (its first j - 1 drafts accepted)."""
    out = [1.0]
    for i in range(gamma):
        out.append(out[-1] * (accept[min(i, len(accept) - 1)] if accept else 0.0))
    return out


def expected_advance(accept: tuple[float, ...], gamma: int) -> float:
    """E = sum_j P(A >= j) = 1 + sum_{j<=gamma} prod_{i<=j} a_i: rows kept per iteration (the bonus row
    included)."""
    return sum(reach(accept, gamma))


@dataclass(frozen=True)
class Workload:
    """One generation, or many at once: prompt, seq, batch and max_len may each be a 1-d int array (one
    generation per element, broadcast together: output lengths of one request, or requests of a stream);
    gamma and the acceptance are one for all."""

    prompt: int | np.ndarray  # P rows already in the cache when decoding starts
    seq: int | np.ndarray  # N rows at the end
    batch: int | np.ndarray = 1
    gamma: int = 0  # draft tokens per speculative iteration (0: plain decoding)
    accept: tuple[float, ...] = ()  # acceptance of draft position 1..gamma (last value repeats)
    draft_step_s: float | np.ndarray = 0.0  # one draft decode step; 0 for prompt lookup
    max_len: int | np.ndarray | None = None  # rows the cache may ever need before the drafts (prompt + max_new)

    def __post_init__(self) -> None:
        if not isinstance(self.gamma, (int, np.integer)) or self.gamma < 0:
            raise BMCError(f"gamma must be a non-negative integer, got {self.gamma!r}")
        if self.is_many:
            self._check_arrays()
        else:
            for name in ("prompt", "batch", "seq"):
                v = getattr(self, name)
                if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                    raise BMCError(f"{name} must be a positive integer, got {v!r}")
            if self.prompt >= self.seq:
                raise BMCError(f"prompt ({self.prompt}) must be shorter than seq ({self.seq})")
            if self.gamma >= self.seq - self.prompt:
                raise BMCError(f"gamma ({self.gamma}) must be smaller than the tokens to generate "
                               f"({self.seq - self.prompt})")
            if self.max_len is not None and not self.seq <= self.max_len:
                raise BMCError(f"seq ({self.seq}) must be at most max_len ({self.max_len})")
        for a in self.accept:
            if not 0.0 <= a < 1.0:
                raise BMCError(f"acceptance must be in [0, 1), got {a}")
        object.__setattr__(self, "_advance", expected_advance(self.accept, self.gamma))

    @property
    def is_many(self) -> bool:
        return any(type(v) is np.ndarray for v in (self.prompt, self.seq, self.batch, self.max_len))

    def _check_arrays(self) -> None:
        """Arrays: 1-d, integer, broadcast together, each element a workload the scalar checks would pass
        (callers name the bad element first: core/many.py)."""
        arrays = [v for v in (self.prompt, self.seq, self.batch, self.max_len) if type(v) is np.ndarray]
        for v in arrays:
            if v.ndim != 1 or not v.size or not np.issubdtype(v.dtype, np.integer):
                raise BMCError(f"a workload's arrays must be non-empty 1-d integer arrays, got {v.dtype} of "
                               f"shape {v.shape}")
        try:
            np.broadcast_shapes(*(v.shape for v in arrays))
        except ValueError:
            raise BMCError(f"a workload's arrays must have one length, got {[v.size for v in arrays]}") from None
        cap = self.seq if self.max_len is None else self.max_len
        if (np.min(self.prompt) < 1 or np.min(self.batch) < 1 or np.any(self.prompt >= self.seq)
                or np.any(self.gamma >= self.seq - self.prompt) or np.any(self.seq > cap)):
            raise BMCError("every element must have 1 <= prompt < seq <= max_len, batch >= 1 and gamma "
                           "smaller than its tokens to generate")

    @property
    def q(self) -> int:
        return self.gamma + 1

    @property
    def tokens(self) -> int | np.ndarray:
        return self.seq - self.prompt

    @property
    def cap(self) -> int:
        """Largest capacity ever needed: the last verify may write gamma rows past max_len - 1 (max_len: N
        unless the generation may run longer than this one)."""
        return (self.seq if self.max_len is None else self.max_len) + self.gamma  # type: ignore[return-value]

    @property
    def advance(self) -> float:
        return self._advance  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Geometry:
    layers: int  # L
    rho: float | np.ndarray  # bytes of one K row (all heads, whole batch) in one layer; per request over many
    layer_weight_bytes: float
    head_weight_bytes: float
    layer_out_rows: float = 0.0  # output rows of one layer's matmuls (each a dot product)
    head_out_rows: float = 0.0  # the LM head's: vocab
    group: int = 1  # query rows a KV head attends with per token row: heads / kv_heads when folded, else 1
    kv_group: int = 1  # heads / kv_heads, folded or not: > 1 is a GQA model
    sliding_layers: int = 0  # of the L layers, those attending over a window only (core/sliding.py)
    window: int = 0  # their window S (0: none)

    @classmethod
    def of(cls, spec: ModelSpec, batch: int | np.ndarray, dtype: str | None = None, folded: bool = True) -> Geometry:
        """folded: the runtime folds a KV head's group query heads into its query rows (bmc_model.runtime);
        transformers' attention does not."""
        e = DTYPE_BYTES[dtype or spec.dtype]
        row = batch * spec.kv_heads * spec.head_dim * e
        return cls(layers=spec.layers, rho=row.astype(np.float64) if type(row) is np.ndarray else float(row),
                   layer_weight_bytes=float(spec.layer_params() * e), head_weight_bytes=float(spec.head_params() * e),
                   layer_out_rows=float(spec.layer_out_rows()), head_out_rows=float(spec.vocab),
                   group=spec.heads // spec.kv_heads if folded else 1, kv_group=spec.heads // spec.kv_heads,
                   sliding_layers=spec.sliding_count,
                   window=spec.sliding_window or 0)
