"""The closed-form decode cost model. Every equation here is derived in docs/model.md.

Symbols (as in the docs):
  L layers, b batch, e bytes per element, rho = b*kv_heads*head_dim*e bytes of one K (or V) row
  P prompt rows, N final length, T = N - P generated tokens
  gamma draft tokens per iteration, q = gamma + 1 rows verified per iteration,
  E expected rows accepted per iteration (1 without speculative decoding), I = T / E iterations
  C_k capacity after the k-th growth event, n_k valid rows when it happens, K events in all

Each function takes r as a Python number or a numpy array (the vectorised sweep over r); scalar
calls stay in pure Python so that predict() is a few tens of microseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bmc_model.errors import BMCError
from bmc_model.policy import Policy
from bmc_model.profile import Curve, Profile, Term
from bmc_model.specs import DTYPE_BYTES, ModelSpec

Num = float | np.ndarray


def _is_arr(x: object) -> bool:
    return type(x) is np.ndarray


def _min(a: Num, b: Num) -> Num:
    return np.minimum(a, b) if type(a) is np.ndarray or type(b) is np.ndarray else min(a, b)


def _max(a: Num, b: Num) -> Num:
    return np.maximum(a, b) if type(a) is np.ndarray or type(b) is np.ndarray else max(a, b)


def _ceil(a: Num) -> Num:
    return np.ceil(a) if type(a) is np.ndarray else float(math.ceil(a))


def term_at(term: Term, x: Num) -> Num:
    """t(x) for one size or an array of sizes."""
    if _is_arr(x):
        return term(x)
    i = 0
    while i < len(term.knots) and x >= term.knots[i]:
        i += 1
    return term.c0[i] + term.slope[i] * x


def row_factor(prof: Profile, curve: str, slope: float, m: float) -> float:
    """Cost of m rows relative to one: the measured curve (linear between points, the last
    segment extended), else the linear 1 + slope (m - 1)."""
    if m == 1:
        return 1.0
    pts = prof.curves.get(curve)
    if pts is None:
        return 1.0 + slope * (m - 1)
    return _curve_at(pts, m)


def _curve_at(pts: Curve, m: float) -> float:
    xs, ys = pts
    i = 1
    while i < len(xs) - 1 and m > xs[i]:
        i += 1
    return ys[i - 1] + (ys[i] - ys[i - 1]) * (m - xs[i - 1]) / (xs[i] - xs[i - 1])


def weights_row_factor(prof: Profile, m: float, nbytes: float, family: str = "weights_rows") -> float:
    """Cost of m token rows over one for a matmul group of nbytes: from the FAMILY@B curves (linear
    in log B between the two around nbytes, the nearest outside them), else weights_rows. The LM
    head asks family "head_rows", and falls back to the layers' curves where it has none."""
    sized = prof.sized_curves(family)
    if not sized and family != "weights_rows":
        sized = prof.sized_curves()
    if m == 1 or not sized:
        return row_factor(prof, "weights_rows", prof.weights_row_slope, m)
    if nbytes <= sized[0][0]:
        return _curve_at(sized[0][1], m)
    if nbytes >= sized[-1][0]:
        return _curve_at(sized[-1][1], m)
    j = next(i for i, (b, _) in enumerate(sized) if b >= nbytes)
    (b0, c0), (b1, c1) = sized[j - 1], sized[j]
    f = math.log(nbytes / b0) / math.log(b1 / b0)
    return (1 - f) * _curve_at(c0, m) + f * _curve_at(c1, m)


def touch_rate(prof: Profile) -> Term:
    """Seconds per byte of first touch, by the size of the buffer the bytes belong to."""
    a = prof.alloc
    return Term(c0=a.slope, slope=(0.0,) * len(a.slope), knots=a.knots)


def progression_sum(term: Term, a: Num, d: Num, count: Num) -> Num:
    """sum_{k=0}^{count-1} t(a + d k) for a piecewise-affine t, d > 0, in closed form."""
    edges = [-math.inf, *term.knots, math.inf]
    total: Num = 0.0
    for j in range(len(term.c0)):
        lo = 0.0 if edges[j] == -math.inf else _min(_max(_ceil((edges[j] - a) / d), 0.0), count)
        hi = count if edges[j + 1] == math.inf else _min(_max(_ceil((edges[j + 1] - a) / d), 0.0), count)
        n = hi - lo
        xsum = n * a + d * (lo + hi - 1.0) * n / 2.0
        total = total + term.c0[j] * n + term.slope[j] * xsum
    return total


def expected_advance(accept: tuple[float, ...], gamma: int) -> float:
    """E = 1 + sum_k prod_{i<=k} a_i: rows kept per iteration (the bonus row included)."""
    e, run = 1.0, 1.0
    for k in range(gamma):
        run *= accept[min(k, len(accept) - 1)] if accept else 0.0
        e += run
    return e


@dataclass(frozen=True)
class Workload:
    prompt: int  # P rows already in the cache when decoding starts
    seq: int  # N rows at the end
    batch: int = 1
    gamma: int = 0  # draft tokens per speculative iteration (0: plain decoding)
    accept: tuple[float, ...] = ()  # acceptance of draft position 1..gamma (last value repeats)
    draft_step_s: float = 0.0  # one draft decode step; 0 for prompt lookup

    def __post_init__(self) -> None:
        for name in ("prompt", "seq", "batch"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise BMCError(f"{name} must be a positive integer, got {v!r}")
        if self.prompt >= self.seq:
            raise BMCError(f"prompt ({self.prompt}) must be shorter than seq ({self.seq})")
        if not isinstance(self.gamma, (int, np.integer)) or self.gamma < 0:
            raise BMCError(f"gamma must be a non-negative integer, got {self.gamma!r}")
        if self.gamma >= self.seq - self.prompt:
            raise BMCError(f"gamma ({self.gamma}) must be smaller than the tokens to generate "
                           f"({self.seq - self.prompt})")
        for a in self.accept:
            if not 0.0 <= a < 1.0:
                raise BMCError(f"acceptance must be in [0, 1), got {a}")
        object.__setattr__(self, "_advance", expected_advance(self.accept, self.gamma))

    @property
    def q(self) -> int:
        return self.gamma + 1

    @property
    def tokens(self) -> int:
        return self.seq - self.prompt

    @property
    def cap(self) -> int:
        """Largest capacity ever needed: the last verify may write gamma rows past N - 1."""
        return self.seq + self.gamma

    @property
    def advance(self) -> float:
        return self._advance  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Geometry:
    layers: int  # L
    rho: float  # bytes of one K row (all heads, whole batch) in one layer
    layer_weight_bytes: float
    head_weight_bytes: float
    layer_out_rows: float = 0.0  # output rows of one layer's matmuls (each a dot product)
    head_out_rows: float = 0.0  # the LM head's: vocab
    group: int = 1  # query rows a KV head attends with per token row: g = heads / kv_heads when folded, else 1

    @classmethod
    def of(cls, spec: ModelSpec, batch: int, dtype: str | None = None, folded: bool = True) -> Geometry:
        """folded: the runtime folds a KV head's g query heads into its query rows (bmc_model.runtime);
        transformers' attention does not."""
        e = DTYPE_BYTES[dtype or spec.dtype]
        return cls(layers=spec.layers, rho=float(batch * spec.kv_heads * spec.head_dim * e),
                   layer_weight_bytes=float(spec.layer_params() * e), head_weight_bytes=float(spec.head_params() * e),
                   layer_out_rows=float(spec.layer_out_rows()), head_out_rows=float(spec.vocab),
                   group=spec.heads // spec.kv_heads if folded else 1)


@dataclass
class Events:
    """Growth events over the generation and the attention width summed over iterations."""

    count: Num  # K
    alloc_rows_sum_s: Num  # sum_k alloc(rho C_k) (exact width: alloc(rho (C_k - n_k))), s per tensor
    copy_rows_sum_s: Num  # sum_k copy(rho n_k) (exact width: cat(rho n_k)), seconds per tensor
    width_sum: Num  # sum over iterations of W rows
    final_capacity: Num  # C_K (C_0 when K = 0)
    prev_capacity: Num  # C_{K-1}, the buffer alive beside C_K at the last event (0 when K = 0)


def _avg_pad(p1: float, s: Num) -> Num:
    """Mean over slack s' in [0, s] of E[min(U, s')], U uniform on [0, p1]: pad-p's extra rows."""
    if p1 <= 0:
        return 0.0 * s
    s = _max(s, 1e-12)
    small = s / 2.0 - s * s / (6.0 * p1)
    large = (p1 * p1 / 3.0 + (s - p1) * p1 / 2.0) / s
    if _is_arr(s):
        return np.where(s <= p1, small, large)
    return small if s <= p1 else large


def _exact_width_sum(w: Workload) -> float:
    it = w.tokens / w.advance
    return it * (w.prompt + w.q) + w.advance * it * (it - 1.0) / 2.0


def fixed_events(policy: Policy, w: Workload, geo: Geometry, prof: Profile, r: Num) -> Events:
    """Growth by r rows: closed form over K events spaced Delta = max(r, q) - q + E rows apart."""
    P, N, q, E, cap = float(w.prompt), float(w.seq), float(w.q), w.advance, float(w.cap)
    m = _max(r, q)  # rows past the valid ones after a growth event
    cat = (r == 1) * 1.0 if policy.width == "exact" else 0.0  # torch.cat keeps no spare row after prefill
    c0 = _min(P + r - cat, cap)
    n1 = _max(P, c0 - q + E)  # first event: fewer than q spare rows remain
    delta = m - q + E
    k = _max(_ceil((N - n1) / delta), 0.0)
    has = _min(k, 1.0)
    n_last = n1 + (k - 1.0) * delta
    c_last = _min(n_last + m, cap) * has + c0 * (1.0 - has)
    c_prev = (c0 + (n_last - delta + m - c0) * _min(_max(k - 1.0, 0.0), 1.0)) * has
    rho = geo.rho
    if policy.width == "exact" and "cat" in prof.terms:
        # torch.empty + copy: the copy first-touches the valid rows' pages (as torch.cat does); the
        # spare rows' pages are touched later by the writes, charged here
        # rows charged at the first-touch rate of the buffer they sit in (its size picks the segment)
        rate = touch_rate(prof)
        alloc = progression_sum(rate, rho * (n1 + m), rho * delta, _max(k - 1.0, 0.0)) * rho * m
        alloc = alloc + term_at(rate, rho * c_last) * rho * (c_last - n_last) * has
        copy = progression_sum(prof.cat, rho * n1, rho * delta, k)
    else:
        alloc = progression_sum(prof.alloc, rho * (n1 + m), rho * delta, _max(k - 1.0, 0.0))
        alloc = alloc + term_at(prof.alloc, rho * c_last) * has
        copy = progression_sum(prof.copy, rho * n1, rho * delta, k)
    if policy.width == "exact":
        width = _exact_width_sum(w) + 0.0 * r
    else:
        # sum of C_k over events (only the last can be capped) weighted by block lengths
        s_c = k * (n1 + m) + delta * k * (k - 1.0) / 2.0 - (n_last + m - c_last) * has
        first = _min(n1, N) - P
        width = (first * c0 + delta * s_c - (n1 + k * delta - N) * c_last * has) / E
        if policy.width == "pad":
            p1 = float(policy.pad - 1)
            mid = _max(k - 1.0, 0.0) * delta * _avg_pad(p1, m - q)
            last = (N - n_last) * _avg_pad(p1, c_last - n_last - q) * has
            extra = (first * _avg_pad(p1, _max(c0 - P - q, 0.0)) + mid + last) / E
            width = _min(_exact_width_sum(w) + extra, width)
    return Events(k, alloc, copy, width, c_last, c_prev)


def stepped_events(policy: Policy, w: Workload, geo: Geometry, prof: Profile) -> Events:
    """Static and geometric growth: few events, walked one by one."""
    P, N, q, E, cap = w.prompt, w.seq, w.q, w.advance, w.cap
    cap_now = policy.initial_capacity(P, cap)
    start, blocks, events = float(P), [], []
    while True:
        n_e = max(start, cap_now - q + E)
        if n_e >= N or cap_now >= cap:
            blocks.append((start, float(N), cap_now))
            break
        blocks.append((start, n_e, cap_now))
        new = policy.grown_capacity(math.ceil(n_e), q, cap_now, cap) if math.ceil(n_e) + q <= cap else cap
        events.append((n_e, new))
        start, cap_now = n_e, new
    rho = geo.rho
    if policy.width == "exact" and "cat" in prof.terms:  # as in fixed_events
        alloc = sum(term_at(touch_rate(prof), rho * c) * rho * (c - n) for n, c in events)
        copy = sum(term_at(prof.cat, rho * n) for n, _ in events)
    else:
        alloc = sum(term_at(prof.alloc, rho * c) for _, c in events)
        copy = sum(term_at(prof.copy, rho * n) for n, _ in events)
    exact = _exact_width_sum(w)
    if policy.width == "exact":
        width = exact
    else:
        width = sum((b - a) * c for a, b, c in blocks) / E
        if policy.width == "pad":
            p1 = float(policy.pad - 1)
            extra = sum((b - a) * _avg_pad(p1, max(c - a - q, 0.0)) for a, b, c in blocks) / E
            width = min(exact + extra, width)
    final = blocks[-1][2]
    prev = events[-2][1] if len(events) > 1 else (policy.initial_capacity(P, cap) if events else 0)
    return Events(float(len(events)), alloc, copy, width, float(final), float(prev))


def policy_events(policy: Policy, w: Workload, geo: Geometry, prof: Profile, r: Num | None = None) -> Events:
    if policy.growth == "fixed":
        return fixed_events(policy, w, geo, prof, float(policy.r) if r is None else r)
    return stepped_events(policy, w, geo, prof)


def attn_rows_factor(prof: Profile, q: int, group: int = 1) -> float:
    """Attention's per-byte cost at q new token rows over one. With GQA folded, a KV head attends with g q
    query rows where one token row gives it g: the attn_q curve (calibrated on the primary geometry) at g q
    over its value at g. (attn_exact / attn_masked are calibrated per geometry at one token row, so they
    already hold the g rows of one.)"""
    f = row_factor(prof, "attn_q", prof.attn_q_slope, group * q)
    return f if group == 1 else f / row_factor(prof, "attn_q", prof.attn_q_slope, group)


def attention_s(prof: Profile, rho: float, width: float, q: int, masked: bool, group: int = 1) -> float:
    """One layer's attention of q new rows over `width` cached rows (K and V of rho bytes a row)."""
    a0, a1 = (prof.attn_masked if masked else prof.attn_exact).segment(2 * rho * width)
    return a0 + a1 * 2 * rho * attn_rows_factor(prof, q, group) * width


def write_s(prof: Profile, rho: float, q: int) -> float:
    """One layer's in-place write of q new K rows and q new V rows."""
    return 2 * term_at(prof.write, rho * q)


def layer_overhead_s(prof: Profile, geo: Geometry, rows: int) -> float:
    """One layer's cost beyond its matmuls, attention and writes, at `rows` token rows (batch * q): measured
    in place at real geometries (layer_fixed + (rows - 1) layer_row) when calibrated, else the tiny
    decoder's layer_s."""
    fixed = prof.terms.get("layer_fixed")
    if fixed is None:
        return prof.layer_s
    per_row = prof.terms.get("layer_row")
    x = geo.layer_weight_bytes
    return term_at(fixed, x) + (rows - 1) * (term_at(per_row, x) if per_row is not None else 0.0)


def breakdown(policy: Policy, w: Workload, geo: Geometry, prof: Profile, r: Num | None = None,
              ev: Events | None = None) -> dict[str, Num]:
    """Seconds spent over the whole generation, by term; their sum is the total."""
    ev = ev or policy_events(policy, w, geo, prof, r)
    L, rho, q, g = geo.layers, geo.rho, w.q, w.gamma
    iters = w.tokens / w.advance
    rows = w.batch * q  # token rows each matmul processes
    g_row = prof.scalars.get("gemv_row_s", 0.0)
    head = term_at(prof.weights, geo.head_weight_bytes) + g_row * geo.head_out_rows
    layer = term_at(prof.weights, geo.layer_weight_bytes) + g_row * geo.layer_out_rows
    weights = iters * (weights_row_factor(prof, rows, geo.head_weight_bytes, "head_rows") * head
                       + L * weights_row_factor(prof, rows, geo.layer_weight_bytes) * layer)
    masked = policy.width != "exact" or q > 1  # padded rows or a causal block need a mask
    att = prof.attn_masked if masked else prof.attn_exact
    fq = attn_rows_factor(prof, q, geo.group)
    a0, a1 = att.segment(2 * rho * (w.prompt + w.seq) / 2)
    useful = L * (iters * a0 + a1 * 2 * rho * fq * _exact_width_sum(w))
    redundant = L * a1 * 2 * rho * fq * (ev.width_sum - _exact_width_sum(w))
    return {
        "weights": weights,
        "attention_useful": useful,
        "attention_redundant": redundant,
        "kv_write": iters * L * write_s(prof, rho, q),
        "growth_alloc": 2 * L * ev.alloc_rows_sum_s,
        "growth_copy": 2 * L * ev.copy_rows_sum_s,
        "overhead": iters * (prof.step_s + L * layer_overhead_s(prof, geo, rows)),
        "sd_iteration": iters * (prof.sd_iter_s if g > 0 else 0.0),
        "draft": iters * g * w.draft_step_s,
    }


def total_seconds(policy: Policy, w: Workload, geo: Geometry, prof: Profile, r: Num | None = None,
                  ev: Events | None = None) -> Num:
    return sum(breakdown(policy, w, geo, prof, r, ev).values())


def memory(policy: Policy, w: Workload, geo: Geometry, prof: Profile, r: Num | None = None,
           ev: Events | None = None) -> tuple[Num, Num]:
    """(KV bytes held at the end, largest KV footprint at any moment).

    At a growth event tensors are replaced one at a time, so the peak is every tensor at its new
    capacity plus one old buffer still alive.
    """
    ev = ev or policy_events(policy, w, geo, prof, r)
    steady = 2 * geo.layers * geo.rho * ev.final_capacity
    return steady, steady + geo.rho * ev.prev_capacity
