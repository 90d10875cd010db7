"""Reading the profile's terms and curves: piecewise-affine terms, row-count curves, and the closed-form
sum of a term over an arithmetic progression of sizes."""

from __future__ import annotations

import math

from bmc_model.core.num import Num, is_array, vceil, vmax, vmin
from bmc_model.core.profile import Curve, Profile, Term


def term_at(term: Term, x: Num) -> Num:
    """t(x) for one size or an array of sizes."""
    if is_array(x):
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
    return curve_at(pts, m)


def curve_at(pts: Curve, m: float) -> float:
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
        return curve_at(sized[0][1], m)
    if nbytes >= sized[-1][0]:
        return curve_at(sized[-1][1], m)
    j = next(i for i, (b, _) in enumerate(sized) if b >= nbytes)
    (b0, c0), (b1, c1) = sized[j - 1], sized[j]
    f = math.log(nbytes / b0) / math.log(b1 / b0)
    return (1 - f) * curve_at(c0, m) + f * curve_at(c1, m)


def touch_rate(prof: Profile) -> Term:
    """Seconds per byte of first touch, by the size of the buffer the bytes belong to."""
    a = prof.alloc
    return Term(c0=a.slope, slope=(0.0,) * len(a.slope), knots=a.knots)


def progression_sum(term: Term, a: Num, d: Num, count: Num) -> Num:
    """sum_{k=0}^{count-1} t(a + d k) for a piecewise-affine t, d > 0, in closed form."""
    edges = [-math.inf, *term.knots, math.inf]
    total: Num = 0.0
    for j in range(len(term.c0)):
        lo = 0.0 if edges[j] == -math.inf else vmin(vmax(vceil((edges[j] - a) / d), 0.0), count)
        hi = count if edges[j + 1] == math.inf else vmin(vmax(vceil((edges[j + 1] - a) / d), 0.0), count)
        n = hi - lo
        xsum = n * a + d * (lo + hi - 1.0) * n / 2.0
        total = total + term.c0[j] * n + term.slope[j] * xsum
    return total


def attn_rows_factor(prof: Profile, q: int, group: int = 1) -> float:
    """Attention's per-byte cost at q new token rows over one. With GQA folded, a KV head attends with g q
    query rows where one token row gives it g: the attn_q curve (calibrated on the primary geometry) at g q
    over its value at g. (attn_exact / attn_masked are calibrated per geometry at one token row, so they
    already hold the g rows of one.)"""
    f = row_factor(prof, "attn_q", prof.attn_q_slope, group * q)
    return f if group == 1 else f / row_factor(prof, "attn_q", prof.attn_q_slope, group)
