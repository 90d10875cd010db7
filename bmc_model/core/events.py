"""Growth events over a generation: when the cache grows, what each event costs, and the attention width
summed over iterations. Plain decoding is exact; under speculative decoding the events are taken in
expectation over the renewal process of iteration starts (renewal.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bmc_model.core.curves import capped_progression_sum, term_at, touch_rate
from bmc_model.core.num import Num, iceil, is_array, vany, vceil, vfloat, vmax, vmin, vwhere
from bmc_model.core.policy import Policy
from bmc_model.core.profile import Profile
from bmc_model.core.renewal import Renewal, row_at
from bmc_model.core.sliding import sliding_count, sliding_policy, sliding_width_sum
from bmc_model.core.workload import Geometry, Workload


@dataclass
class Events:
    """Growth events over the generation and the attention width summed over iterations."""

    count: Num  # K
    alloc_rows_sum_s: Num  # sum_k alloc(rho C_k) (exact width: alloc(rho (C_k - n_k))), s per tensor
    copy_rows_sum_s: Num  # sum_k copy(rho n_k) (exact width: cat(rho n_k)), seconds per tensor
    width_sum: Num  # sum over iterations of W rows
    final_capacity: Num  # C_K (C_0 when K = 0)
    prev_capacity: Num  # C_{K-1}, the buffer alive beside C_K at the last event (0 when K = 0)
    last_valid: Num = 0.0  # n_K, the valid rows the last event copies (P when K = 0)
    sliding: Events | None = None  # the sliding layers' own, beside the full layers' (core/sliding.py)


def _avg_pad(p1: float, slack: Num) -> Num:
    """The mean over s in [0, slack] of the mean of min(U, s), U uniform on [0, p1]: the extra rows width
    "pad" reads (p1 = pad - 1)."""
    if p1 <= 0:
        return 0.0 * slack
    slack = vmax(slack, 1e-12)
    small = slack / 2.0 - slack * slack / (6.0 * p1)
    large = (p1 * p1 / 3.0 + (slack - p1) * p1 / 2.0) / slack
    if is_array(slack):
        return np.where(slack <= p1, small, large)
    return small if slack <= p1 else large


def exact_width_sum(w: Workload) -> float:
    it = w.tokens / w.advance
    return it * (w.prompt + w.q) + w.advance * it * (it - 1.0) / 2.0


# Gauss-Hermite nodes for the mean of f(mu + sigma Z), Z standard normal (a threshold's spread from earlier events)
_GH_Z, _GH_W = np.polynomial.hermite_e.hermegauss(5)
_GH_W = _GH_W / _GH_W.sum()
_GH = list(zip(_GH_Z.tolist(), _GH_W.tolist()))
_REACH = float(_GH_Z[-1])  # the outermost node, in sigmas (2.86)
_LOOP = 12  # at most this many uncertain events summed one by one; past that, the renewal asymptote


def _renewal_count(n1: Num, delta: Num, vf: Num, N: float) -> Num:
    """Expected events starting by N - 1 when many are uncertain: 1 + M(N - 1 - n_1), with the renewal
    function M(y) = (y + 1/2) / Delta + (var - Delta^2) / (2 Delta^2) of an integer-valued spacing."""
    return 1.0 + (N - 1.0 - n1 + 0.5) / delta + (vf - delta * delta) / (2.0 * delta * delta)


def _sd_events_scalar(ren: Renewal, P: float, N: float, q: float, t1: float, gap: float
                      ) -> tuple[float, float, float, float]:
    """fixed_events' SD expectation for one r in plain Python (as the array path, term for term):
    (n_1, Delta, expected K, the largest K possible)."""
    prefill = t1 < P
    gap1 = max(t1 - P, 0.0)
    mean1, v1 = ren.passage(gap1)
    n1, v1 = (P, 0.0) if prefill else (t1 + mean1 - gap1, v1)
    delta, vf = ren.passage(gap)
    k_max = max(math.ceil((N - n1) / delta), 0.0) + 1.0
    sd_max = math.sqrt(max(v1 + k_max * vf, 0.0))
    sure = max(max(math.floor((N - 1.0 - q - _REACH * sd_max - (n1 + gap)) / delta) + 1.0, 0.0), float(prefill))
    span = int(math.ceil((2 * _REACH * sd_max + q) / delta)) + 2
    if span > _LOOP:
        return n1, delta, _renewal_count(n1, delta, vf, N), sure + span
    row = ren.row(gap)  # looked up once: this loop is most of an SD predict()
    lo1, hi1 = (P, P) if prefill else (t1 + 1.0, t1 + q)  # where event 1 can start
    count, k_worst = sure, sure
    for i in range(span):
        j = sure + i
        if j == 0:
            p = 1.0 if prefill else ren.cdf(gap1, N - 1.0 - t1)
        else:
            tj, sd = n1 + (j - 1.0) * delta + gap, math.sqrt(max(v1 + (j - 1.0) * vf, 0.0))
            if tj - _REACH * sd >= N - 1.0:  # every node past the last start: this and later events cannot be
                break
            # the spread's nodes stay where the threshold can be: each spacing is gap + 1 .. gap + q rows
            lo, hi = lo1 + (j - 1.0) * (gap + 1.0) + gap, hi1 + (j - 1.0) * (gap + q) + gap
            p = 0.0
            for z, wz in _GH:
                p += wz * row_at(row, N - 1.0 - min(max(tj + z * sd, lo), hi))
        count += p
        k_worst = j + 1.0 if p > 1e-12 else k_worst
    return n1, delta, count, k_worst


def _first_capacity(policy: Policy, w: Workload, r: Num) -> tuple[Num, Num]:
    """(m, C_0): rows past the valid ones after a growth event, and the prefill's capacity (torch.cat
    keeps no spare row after the prefill)."""
    q = float(w.q)
    return vmax(r, q), vmin(vfloat(w.prompt) + r - policy.cat_at(r), vfloat(w.cap))


def prefill_spare_touch_s(prof: Profile, rho: float, c_init: Num, P: float, N: float) -> Num:
    """The first touch of the prefill buffer's spare rows, written one by one as decoding reaches them (up to
    the first event, or to N): seconds per tensor. torch.cat keeps no spare row; reserve's are all of them."""
    return term_at(touch_rate(prof), rho * c_init) * rho * vmax(vmin(c_init, N) - P, 0.0)


def fixed_events(policy: Policy, w: Workload, geo: Geometry, prof: Profile, r: Num, window: int | None = None
                 ) -> Events:
    """Growth by r rows: closed form over K events spaced Delta rows apart.

    Plain decoding: K is exact. SD: iterations advance a random A rows. An event comes at the first
    start more than gap = m - q rows past the last one (the prefill: past C_0 - q), so events are spaced
    Delta = gap + mean excess apart, and event j happens only if it starts at or before the last start
    N - 1: a probability from the excess's distribution, spread by the variance of the events before it.
    Costs are the expectation over events, capacities (memory) the worst case. With a window: a sliding
    layer's events, at the same times, their sizes capped (_fixed_at)."""
    P, N, q = vfloat(w.prompt), vfloat(w.seq), float(w.q)  # arrays: one generation per element
    m, c_init = _first_capacity(policy, w, r)
    if w.gamma == 0:
        n1, delta = vmax(P, c_init), m
        return _fixed_at(policy, w, geo, prof, r, n1, delta, vmax(vceil((N - n1) / delta), 0.0), window)
    ren = Renewal.of(w.accept, w.gamma)
    if not (is_array(r) or is_array(P) or is_array(N)):
        n1, delta, count, k_worst = _sd_events_scalar(ren, P, N, q, c_init - q, m - q)
        ev = _fixed_at(policy, w, geo, prof, r, n1, delta, count, window)
        worst = ev if k_worst == count else _fixed_at(policy, w, geo, prof, r, n1, delta, k_worst, window)
        return Events(ev.count, ev.alloc_rows_sum_s, ev.copy_rows_sum_s, ev.width_sum, worst.final_capacity,
                      worst.prev_capacity, worst.last_valid)
    # [R, 1]: events run along axis 1 (R: the r of a sweep, or the requests of a stream)
    r, m, c_init, P, N = (v[:, None] for v in np.broadcast_arrays(*(np.atleast_1d(np.asarray(x, dtype=np.float64))
                                                                    for x in (r, m, c_init, P, N))))
    t1 = c_init - q  # event 1: the first start past t1, the prefill's own P when P > t1
    prefill = (t1 < P) * 1.0
    gap1 = np.maximum(t1 - P, 0.0)
    mean1, v1 = ren.passage(gap1)
    n1, v1 = np.where(prefill > 0, P, t1 + mean1 - gap1), v1 * (1.0 - prefill)
    gap = m - q
    delta, vf = ren.passage(gap)
    # events 1..sure surely start by N - 1: thresholds clear of it by q rows and the quadrature's
    # reach (_REACH sigma, sigma the spread at the last event); past 2 _REACH sigma more, none can
    k_max = np.maximum(np.ceil((N - n1) / delta), 0.0) + 1.0
    sd_max = np.sqrt(np.maximum(v1 + k_max * vf, 0.0))
    sure = np.maximum(np.maximum(np.floor((N - 1.0 - q - _REACH * sd_max - (n1 + gap)) / delta) + 1.0, 0.0), prefill)
    spans = np.ceil((2 * _REACH * sd_max + q) / delta) + 2.0
    count = _renewal_count(n1, delta, vf, N)[:, 0]
    k_worst = (sure + spans)[:, 0]
    lo1, hi1 = np.where(prefill > 0, P, t1 + 1.0), np.where(prefill > 0, P, t1 + q)  # where event 1 can start
    uncertain = np.unique(spans[spans <= _LOOP]).astype(int).tolist()
    for span in uncertain:  # rows by how many events are uncertain
        i = slice(None) if len(uncertain) == 1 and (spans <= _LOOP).all() else np.nonzero(spans[:, 0] == span)[0]
        j = sure[i] + np.arange(span, dtype=np.float64)  # [R_i, J]: event j + 1
        tj = n1[i] + (j - 1.0) * delta[i] + gap[i]  # its threshold: gap rows past event j's start (j >= 1)
        sd = np.sqrt(np.maximum(v1[i] + (j - 1.0) * vf[i], 0.0))
        lo = lo1[i] + (j - 1.0) * (gap[i] + 1.0) + gap[i]  # each spacing is gap + 1 .. gap + q rows
        hi = hi1[i] + (j - 1.0) * (gap[i] + q) + gap[i]
        nodes = np.minimum(np.maximum(tj[..., None] + _GH_Z * sd[..., None], lo[..., None]), hi[..., None])
        p = ren.cdf(gap[i][..., None], N[i][..., None] - 1.0 - nodes) @ _GH_W  # over the spread
        first = np.flatnonzero(sure[i, 0] == 0)  # event 1 uncertain: the prefill's, or a first passage
        if len(first):
            at = first if isinstance(i, slice) else i[first]
            p[first, 0] = (prefill[at] + (1.0 - prefill[at]) * ren.cdf(gap1[at], N[at] - 1.0 - t1[at]))[:, 0]
        count[i] = sure[i, 0] + p.sum(axis=1)
        k_worst[i] = sure[i, 0] + np.where(p > 1e-12, np.arange(1, span + 1), 0).max(axis=1)  # for memory
    r, n1, delta = r[:, 0], n1[:, 0], delta[:, 0]
    ev = _fixed_at(policy, w, geo, prof, r, n1, delta, count, window)
    worst = _fixed_at(policy, w, geo, prof, r, n1, delta, k_worst, window)
    return Events(ev.count, ev.alloc_rows_sum_s, ev.copy_rows_sum_s, ev.width_sum, worst.final_capacity,
                  worst.prev_capacity, worst.last_valid)


def _fixed_at(policy: Policy, w: Workload, geo: Geometry, prof: Profile, r: Num, n1: Num, delta: Num,
              k: Num, window: int | None = None) -> Events:
    """K = k events of fixed growth by r at n_1, n_1 + Delta, ...: their sizes, costs and attention width.

    window: a sliding layer's (exact width), which keeps min(n, S - 1) rows: each event copies those and
    allocates them plus the same room as a full layer's, so every size drops the max(n - (S - 1), 0) rows
    past the window, and sums over events stop growing at it."""
    P, N, q, E, cap = vfloat(w.prompt), vfloat(w.seq), float(w.q), w.advance, vfloat(w.cap)
    m, c_init = _first_capacity(policy, w, r)
    has = vmin(k, 1.0)
    n_last = vmin(n1 + (k - 1.0) * delta, N - 1.0)  # an event happens at a start, and starts stop at N - 1
    c_last = vmin(n_last + m, cap) * has + c_init * (1.0 - has)
    c_prev = (c_init + (n_last - delta + m - c_init) * vmin(vmax(k - 1.0, 0.0), 1.0)) * has
    rho = geo.rho
    last_valid = n_last * has + P * (1.0 - has)
    top_copy = top_alloc = None  # sizes past these are the window's (None: no window)
    if window is not None:
        keep = window - 1.0
        drop_p, drop_prev = vmax(P - keep, 0.0), vmax(n_last - delta - keep, 0.0)
        c_last = c_last - vmax(n_last - keep, 0.0) * has - drop_p * (1.0 - has)
        c_prev = c_prev - (drop_p + (drop_prev - drop_p) * vmin(vmax(k - 1.0, 0.0), 1.0)) * has
        n_last = vmin(n_last, keep)  # the rows the last event copies
        top_copy, top_alloc = rho * keep, rho * (keep + m)
    cat = prof.cat
    if policy.width == "exact" and cat is not None:
        # torch.empty + copy: the copy first-touches the valid rows' pages (as torch.cat does); the
        # spare rows' pages are touched later by the writes, charged here
        # rows charged at the first-touch rate of the buffer they sit in (its size picks the segment)
        rate = touch_rate(prof)
        alloc = capped_progression_sum(rate, rho * (n1 + m), rho * delta, vmax(k - 1.0, 0.0), top_alloc) * rho * m
        alloc = alloc + term_at(rate, rho * c_last) * rho * (c_last - n_last) * has
        if window is None:
            alloc = alloc + prefill_spare_touch_s(prof, rho, c_init, P, N)
        copy = capped_progression_sum(cat, rho * n1, rho * delta, k, top_copy)
    else:
        alloc = capped_progression_sum(prof.alloc, rho * (n1 + m), rho * delta, vmax(k - 1.0, 0.0), top_alloc)
        alloc = alloc + term_at(prof.alloc, rho * c_last) * has
        copy = capped_progression_sum(prof.copy, rho * n1, rho * delta, k, top_copy)
    if policy.width == "exact":
        exact = exact_width_sum(w) if window is None else sliding_width_sum(w, window)
        width = exact + 0.0 * r + 0.0 * k
    else:
        # sum of C_k over events (only the last can be capped) weighted by block lengths
        km = vmax(k - 1.0, 0.0)
        s_c = (km * (n1 + m) + delta * km * (km - 1.0) / 2.0 + c_last) * has
        first = (vmin(n1, N - 1.0) - P) * has + (N - P) * (1.0 - has)  # the prefill block: to the first event, or N
        width = (first * c_init + delta * s_c - (n_last + delta - N) * c_last * has) / E
        if policy.width == "pad":
            p1 = float(policy.pad - 1)
            mid_pad = vmax(k - 1.0, 0.0) * delta * _avg_pad(p1, m - q)
            last_pad = (N - n_last) * _avg_pad(p1, c_last - n_last - q) * has
            extra = (first * _avg_pad(p1, vmax(c_init - P - q, 0.0)) + mid_pad + last_pad) / E
            width = vmin(exact_width_sum(w) + extra, width)
    return Events(k, alloc, copy, width, c_last, c_prev, last_valid)


def stepped_events(policy: Policy, w: Workload, geo: Geometry, prof: Profile) -> Events:
    """Static and geometric growth: few events, walked one by one. Arrays (one generation per element: output
    lengths, or requests) walk together, an element's sums stopping at its own end (adding zeros after)."""
    P, q, E = vfloat(w.prompt), w.q, w.advance
    N, cap = vfloat(w.seq), vfloat(w.cap)
    rho = geo.rho
    zero = 0.0 * (N + P + cap + rho)
    exact = policy.width == "exact" and prof.cat is not None  # as in fixed_events
    rate = touch_rate(prof)
    p1 = float(policy.pad - 1)
    c0 = vfloat(policy.initial_capacity(P, cap))
    alloc, copy, width, extra, count = zero, zero, zero, zero, zero
    final, prev, last = c0 + zero, zero, P + zero
    cap_now, start, live = c0, P, True
    while vany(live):
        n_e = vmax(start, cap_now - q + E)
        grows = (n_e < N) & (cap_now < cap)  # an event before generation ends
        # the block from `start` at cap_now rows: to the event, or to the end (decode positions before N)
        rows = vmax(vmin(vwhere(grows, n_e, math.inf), N) - start, 0.0) * live
        width = width + rows * cap_now
        if policy.width == "pad":
            extra = extra + rows * _avg_pad(p1, vmax(cap_now - start - q, 0.0))
        live = live & grows
        if not vany(live):
            break
        n_c = iceil(n_e)
        fits = n_c + q <= cap
        if is_array(fits):
            new = np.where(fits, policy.grown_capacity(np.minimum(n_c, cap - q), q, cap_now, cap), cap)
        else:
            new = policy.grown_capacity(n_c, q, cap_now, cap) if fits else cap
        b = live * 1.0
        if exact:
            alloc = alloc + b * (term_at(rate, rho * new) * rho * (new - n_e))
            copy = copy + b * term_at(prof.cat, rho * n_e)  # type: ignore[arg-type]
        else:
            alloc = alloc + b * term_at(prof.alloc, rho * new)
            copy = copy + b * term_at(prof.copy, rho * n_e)
        count = count + b
        prev, final, last = vwhere(live, final, prev), vwhere(live, new, final), vwhere(live, n_c, last)
        start, cap_now = vwhere(live, n_e, start), vwhere(live, new, cap_now)
    if exact:
        alloc = alloc + prefill_spare_touch_s(prof, rho, c0, P, N)
    width = width / E
    if policy.width == "exact":
        width = exact_width_sum(w) + zero
    elif policy.width == "pad":
        width = vmin(exact_width_sum(w) + extra / E, width)
    return Events(count, alloc, copy, width, vfloat(final), vfloat(prev), vfloat(last))


def sliding_events(policy: Policy, w: Workload, geo: Geometry, prof: Profile, r: Num | None = None) -> Events:
    """A sliding layer's events under `policy` (its rule: core/sliding.sliding_policy)."""
    rule = sliding_policy(policy, geo.window)
    step = (float(policy.r) if r is None else r) if policy.growth == "fixed" else float(rule.r)
    return fixed_events(rule, w, geo, prof, step, geo.window)


def policy_events(policy: Policy, w: Workload, geo: Geometry, prof: Profile, r: Num | None = None) -> Events:
    """The full-attention layers' events, with the sliding layers' in `.sliding`; when every layer slides,
    theirs alone."""
    sliding = sliding_count(geo, w)
    if sliding == geo.layers:
        return sliding_events(policy, w, geo, prof, r)
    if policy.growth == "fixed":
        ev = fixed_events(policy, w, geo, prof, float(policy.r) if r is None else r)
    else:
        ev = stepped_events(policy, w, geo, prof)
    if sliding:
        ev.sliding = sliding_events(policy, w, geo, prof, r)
    return ev
