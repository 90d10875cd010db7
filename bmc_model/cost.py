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

import functools
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


def reach(accept: tuple[float, ...], gamma: int) -> list[float]:
    """P(A >= j), j = 1..gamma + 1: an iteration keeps at least j rows (its first j - 1 drafts accepted)."""
    out = [1.0]
    for k in range(gamma):
        out.append(out[-1] * (accept[min(k, len(accept) - 1)] if accept else 0.0))
    return out


def expected_advance(accept: tuple[float, ...], gamma: int) -> float:
    """E = 1 + sum_k prod_{i<=k} a_i: rows kept per iteration (the bonus row included)."""
    return sum(reach(accept, gamma))


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


@dataclass(frozen=True)
class Renewal:
    """SD iteration starts as a renewal process: each iteration advances A rows, A in 1..q with
    P(A >= j) = prod_{i<j} a_i. What growth needs of it: where the first start more than g rows past
    a start lands (g = the rows a growth leaves beyond the next q, or the prefill's slack)."""

    E: float
    excess_cdf: np.ndarray  # [G + 1, q + 1]: P(first start past g lands within x rows of g), x = 0..q
    excess_mean: np.ndarray  # [G + 1] mean of that excess
    excess_var: np.ndarray  # [G + 1] its variance

    def __post_init__(self) -> None:  # plain lists for scalar calls: numpy's per-call cost dominates there
        object.__setattr__(self, "_rows", self.excess_cdf.tolist())
        object.__setattr__(self, "_mean", self.excess_mean.tolist())
        object.__setattr__(self, "_var", self.excess_var.tolist())

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def of(accept: tuple[float, ...], gamma: int) -> Renewal:
        q, at_least = gamma + 1, reach(accept, gamma)
        pa = np.array(at_least) - np.array(at_least[1:] + [0.0])  # P(A = a), a = 1..q
        # h[x] = P(some start lands exactly x rows past a start): 1 / E once mixed, which takes long
        # when A is nearly always q (starts nearly periodic); walk until settled, at most _SPAN rows
        E, h = float(sum(at_least)), [1.0]
        rev = pa[::-1].tolist()  # rev[q - a] = P(A = a)
        while len(h) <= 8 * q or (len(h) <= _SPAN and max(abs(v * E - 1.0) for v in h[-q:]) > 1e-4):
            x = len(h)
            h.append(sum(w * v for w, v in zip(rev[max(q - x, 0):], h[max(x - q, 0):])))
        hv, span = np.array(h), len(h) - 1  # rows past span use row span
        pdf = np.zeros((span + 1, q + 1))  # pdf[g, j]: the first start past g lands j rows past it
        for d in range(q):  # from the last start at g - d, one jump of d + j rows
            src = np.concatenate([np.zeros(d), hv[:span + 1 - d]])  # h[g - d]
            pdf[:, 1:q - d + 1] += src[:, None] * pa[d:][None, :]
        j = np.arange(q + 1, dtype=np.float64)
        mean = pdf @ j
        return Renewal(E, np.cumsum(pdf, axis=1), mean, pdf @ (j * j) - mean * mean)

    def _row(self, g: Num) -> Num:
        last = len(self.excess_mean) - 1
        return np.minimum(g, last).astype(np.int64) if _is_arr(g) else int(min(g, last))

    def row(self, g: float) -> list[float]:
        """The overshoot's distribution function past g (at x = 0..q), as a list."""
        return self._rows[self._row(g)]  # type: ignore[attr-defined]

    def passage(self, g: Num) -> tuple[Num, Num]:
        """(mean, variance) of the rows from a start to the first start more than g rows past it."""
        i = self._row(g)
        if _is_arr(g):
            return g + self.excess_mean[i], self.excess_var[i]
        return g + self._mean[i], self._var[i]  # type: ignore[attr-defined]

    def cdf(self, g: Num, x: Num) -> Num:
        """P(the first start more than g rows past a start lies within x rows past g), linear between
        integers (the thresholds it is asked about sit at expected, fractional, positions)."""
        if not (_is_arr(x) or _is_arr(g)):
            return _row_at(self.row(g), x)
        q = self.excess_cdf.shape[1] - 1
        x = np.clip(x, 0.0, float(q))
        i = np.broadcast_to(self._row(g), np.shape(x))
        stationary = self.excess_cdf[-1]  # most rows of a sweep over r: one interp, no gather
        out = np.interp(x, np.arange(q + 1, dtype=np.float64), stationary)
        near = i < len(self.excess_mean) - 1
        if near.any():
            xn, i_n = x[near], i[near]
            x0 = np.minimum(np.floor(xn), q - 1).astype(np.int64)
            lo, hi = self.excess_cdf[i_n, x0], self.excess_cdf[i_n, x0 + 1]
            out[near] = lo + (hi - lo) * (xn - x0)
        return out


def _row_at(row: list[float], x: float) -> float:
    """An overshoot distribution function (at x = 0..q) at a real x: 0 below, 1 past q, linear between."""
    if x <= 0.0:
        return 0.0
    if x >= len(row) - 1:
        return 1.0
    x0 = int(x)
    return row[x0] + (row[x0 + 1] - row[x0]) * (x - x0)


_SPAN = 4096  # rows of the overshoot table at most

# Gauss-Hermite nodes for E[f(mu + sigma Z)], Z standard normal (a threshold's spread from earlier events)
_GH_Z, _GH_W = np.polynomial.hermite_e.hermegauss(5)
_GH_W = _GH_W / _GH_W.sum()
_GH = list(zip(_GH_Z.tolist(), _GH_W.tolist()))
_REACH = float(_GH_Z[-1])  # the outermost node, in sigmas (2.86)
_LOOP = 12  # at most this many uncertain events summed one by one; past that, the renewal asymptote


def _renewal_count(n1: Num, delta: Num, vf: Num, N: float) -> Num:
    """Expected events starting by N - 1 when many are uncertain: 1 + M(N - 1 - n_1), with the renewal
    function M(y) = (y + 1/2) / Delta + (var - Delta^2) / (2 Delta^2) of an integer-valued spacing."""
    return 1.0 + (N - 1.0 - n1 + 0.5) / delta + (vf - delta * delta) / (2.0 * delta * delta)


def _sd_events_scalar(ren: Renewal, P: float, N: float, q: float, t1: float, g: float
                      ) -> tuple[float, float, float, float]:
    """fixed_events' SD expectation for one r in plain Python (as the array path, term for term):
    (n_1, Delta, expected K, the largest K possible)."""
    prefill = t1 < P
    g1 = max(t1 - P, 0.0)
    m1, v1 = ren.passage(g1)
    n1, v1 = (P, 0.0) if prefill else (t1 + m1 - g1, v1)
    delta, vf = ren.passage(g)
    k_max = max(math.ceil((N - n1) / delta), 0.0) + 1.0
    sd_max = math.sqrt(max(v1 + k_max * vf, 0.0))
    sure = max(max(math.floor((N - 1.0 - q - _REACH * sd_max - (n1 + g)) / delta) + 1.0, 0.0), float(prefill))
    span = int(math.ceil((2 * _REACH * sd_max + q) / delta)) + 2
    if span > _LOOP:
        return n1, delta, _renewal_count(n1, delta, vf, N), sure + span
    row = ren.row(g)  # looked up once: this loop is most of an SD predict()
    count, last = sure, sure
    for i in range(span):
        j = sure + i
        if j == 0:
            p = 1.0 if prefill else ren.cdf(g1, N - 1.0 - t1)
        else:
            tj, sd = n1 + (j - 1.0) * delta + g, math.sqrt(max(v1 + (j - 1.0) * vf, 0.0))
            if tj - _REACH * sd >= N - 1.0:  # every node past the last start: this and later events cannot be
                break
            y, p = N - 1.0 - tj, 0.0
            for z, wz in _GH:
                p += wz * _row_at(row, y - z * sd)
        count += p
        last = j + 1.0 if p > 1e-12 else last
    return n1, delta, count, last


def _first_capacity(policy: Policy, w: Workload, r: Num) -> tuple[Num, Num]:
    """(m, C_0): rows past the valid ones after a growth event, and the prefill's capacity (torch.cat
    keeps no spare row after the prefill)."""
    q = float(w.q)
    cat = (r == 1) * 1.0 if policy.width == "exact" else 0.0
    return _max(r, q), _min(float(w.prompt) + r - cat, float(w.cap))


def fixed_events(policy: Policy, w: Workload, geo: Geometry, prof: Profile, r: Num) -> Events:
    """Growth by r rows: closed form over K events spaced Delta rows apart.

    Plain decoding: K is exact. SD: iterations advance a random A rows. An event comes at the first
    start more than g = m - q rows past the last one (the prefill: past C_0 - q), so events are spaced
    Delta = g + mean excess apart, and event j happens only if it starts at or before the last start
    N - 1: a probability from the excess's distribution, spread by the variance of the events before it.
    Costs are the expectation over events, capacities (memory) the worst case."""
    P, N, q = float(w.prompt), float(w.seq), float(w.q)
    m, c0 = _first_capacity(policy, w, r)
    if w.gamma == 0:
        n1, delta = _max(P, c0), m
        return _fixed_at(policy, w, geo, prof, r, n1, delta, _max(_ceil((N - n1) / delta), 0.0))
    ren = Renewal.of(w.accept, w.gamma)
    if not _is_arr(r):
        n1, delta, count, last = _sd_events_scalar(ren, P, N, q, c0 - q, m - q)
        ev = _fixed_at(policy, w, geo, prof, r, n1, delta, count)
        worst = ev if last == count else _fixed_at(policy, w, geo, prof, r, n1, delta, last)
        return Events(ev.count, ev.alloc_rows_sum_s, ev.copy_rows_sum_s, ev.width_sum, worst.final_capacity,
                      worst.prev_capacity)
    # [R, 1]: events run along axis 1
    r, m, c0 = (np.atleast_1d(np.asarray(v, dtype=np.float64))[:, None] for v in (r, m, c0))
    t1 = c0 - q  # event 1: the first start past t1, the prefill's own P when P > t1
    prefill = (t1 < P) * 1.0
    g1 = np.maximum(t1 - P, 0.0)
    m1, v1 = ren.passage(g1)
    n1, v1 = np.where(prefill > 0, P, t1 + m1 - g1), v1 * (1.0 - prefill)
    g = m - q
    delta, vf = ren.passage(g)
    # events 1..sure surely start by N - 1: thresholds clear of it by q rows and the quadrature's
    # reach (_REACH sigma, sigma the spread at the last event); past 2 _REACH sigma more, none can
    k_max = np.maximum(np.ceil((N - n1) / delta), 0.0) + 1.0
    sd_max = np.sqrt(np.maximum(v1 + k_max * vf, 0.0))
    sure = np.maximum(np.maximum(np.floor((N - 1.0 - q - _REACH * sd_max - (n1 + g)) / delta) + 1.0, 0.0), prefill)
    spans = np.ceil((2 * _REACH * sd_max + q) / delta) + 2.0
    count = _renewal_count(n1, delta, vf, N)[:, 0]
    last = (sure + spans)[:, 0]
    for span in np.unique(spans[spans <= _LOOP]).astype(int).tolist():  # rows by how many events are uncertain
        i = np.nonzero(spans[:, 0] == span)[0]
        j = sure[i] + np.arange(span, dtype=np.float64)  # [R_i, J]: event j + 1
        tj = n1[i] + (j - 1.0) * delta[i] + g[i]  # its threshold: g rows past event j's start (j >= 1)
        sd = np.sqrt(np.maximum(v1[i] + (j - 1.0) * vf[i], 0.0))
        p = ren.cdf(g[i][..., None], N - 1.0 - (tj[..., None] + _GH_Z * sd[..., None])) @ _GH_W  # E over the spread
        p = np.where(j == 0, prefill[i] + (1.0 - prefill[i]) * ren.cdf(g1[i], N - 1.0 - t1[i]), p)
        count[i] = sure[i, 0] + p.sum(axis=1)
        last[i] = sure[i, 0] + np.where(p > 1e-12, np.arange(1, span + 1), 0).max(axis=1)  # the worst case: memory
    r, n1, delta = r[:, 0], n1[:, 0], delta[:, 0]
    ev = _fixed_at(policy, w, geo, prof, r, n1, delta, count)
    worst = _fixed_at(policy, w, geo, prof, r, n1, delta, last)
    return Events(ev.count, ev.alloc_rows_sum_s, ev.copy_rows_sum_s, ev.width_sum, worst.final_capacity,
                  worst.prev_capacity)


def _fixed_at(policy: Policy, w: Workload, geo: Geometry, prof: Profile, r: Num, n1: Num, delta: Num,
              k: Num) -> Events:
    """K = k events of fixed growth by r at n_1, n_1 + Delta, ...: their sizes, costs and attention width."""
    P, N, q, E, cap = float(w.prompt), float(w.seq), float(w.q), w.advance, float(w.cap)
    m, c0 = _first_capacity(policy, w, r)
    has = _min(k, 1.0)
    n_last = _min(n1 + (k - 1.0) * delta, N - 1.0)  # an event happens at a start, and starts stop at N - 1
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
        width = _exact_width_sum(w) + 0.0 * r + 0.0 * k
    else:
        # sum of C_k over events (only the last can be capped) weighted by block lengths
        km = _max(k - 1.0, 0.0)
        s_c = (km * (n1 + m) + delta * km * (km - 1.0) / 2.0 + c_last) * has
        first = (_min(n1, N - 1.0) - P) * has + (N - P) * (1.0 - has)  # the prefill block: to the first event, or N
        width = (first * c0 + delta * s_c - (n_last + delta - N) * c_last * has) / E
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
