"""Reading the profile's terms and curves: piecewise-affine terms, row-count curves, and the closed-form
sum of a term over an arithmetic progression of sizes."""

from __future__ import annotations

import math

import numpy as np

from bmc_model.core.num import Num, is_array, vceil, vmax, vmin, vwhere
from bmc_model.core.profile import Curve, Profile
from bmc_model.core.term import Term


def term_at(term: Term, x: Num) -> Num:
    """t(x) for one size or an array of sizes."""
    if is_array(x):
        return term(x)
    i = 0
    while i < len(term.knots) and x >= term.knots[i]:
        i += 1
    return term.c0[i] + term.slope[i] * x


def row_factor(prof: Profile, curve: str, slope: float, rows: Num) -> Num:
    """Cost of `rows` token rows relative to one: the measured curve (linear between points, the last
    segment extended), else the linear 1 + slope (rows - 1). An array of rows (requests of a stream): each."""
    if is_array(rows):
        return vwhere(rows == 1, 1.0, _row_factor(prof, curve, slope, rows))
    if rows == 1:
        return 1.0
    return _row_factor(prof, curve, slope, rows)


def _row_factor(prof: Profile, curve: str, slope: float, rows: Num) -> Num:
    pts = prof.curves.get(curve)
    if pts is None:
        return 1.0 + slope * (rows - 1)
    return curve_at(pts, rows)


def curve_at(pts: Curve, rows: Num) -> Num:
    xs, ys = pts
    if is_array(rows):  # the segment the scalar walk below stops at, for each
        i = np.clip(np.searchsorted(np.asarray(xs), rows, side="left"), 1, len(xs) - 1)
        x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        return y[i - 1] + (y[i] - y[i - 1]) * (rows - x[i - 1]) / (x[i] - x[i - 1])
    i = 1
    while i < len(xs) - 1 and rows > xs[i]:
        i += 1
    return ys[i - 1] + (ys[i] - ys[i - 1]) * (rows - xs[i - 1]) / (xs[i] - xs[i - 1])


def weights_row_factor(prof: Profile, rows: Num, nbytes: float, family: str = "weights_rows") -> Num:
    """Cost of `rows` token rows over one for a matmul group of nbytes: from the FAMILY@B curves (linear
    in log B between the two around nbytes, the nearest outside them), else weights_rows. The LM
    head asks family "head_rows", and falls back to the layers' curves where it has none."""
    sized = prof.sized_curves(family)
    if not sized and family != "weights_rows":
        sized = prof.sized_curves()
    if not sized:
        return row_factor(prof, "weights_rows", prof.weights_row_slope, rows)
    if is_array(rows):
        return vwhere(rows == 1, 1.0, _sized_factor(sized, rows, nbytes))
    if rows == 1:
        return row_factor(prof, "weights_rows", prof.weights_row_slope, rows)
    return _sized_factor(sized, rows, nbytes)


def _sized_factor(sized: list[tuple[float, Curve]], rows: Num, nbytes: float) -> Num:
    if nbytes <= sized[0][0]:
        return curve_at(sized[0][1], rows)
    if nbytes >= sized[-1][0]:
        return curve_at(sized[-1][1], rows)
    j = next(i for i, (size, _) in enumerate(sized) if size >= nbytes)
    (size0, curve0), (size1, curve1) = sized[j - 1], sized[j]
    frac = math.log(nbytes / size0) / math.log(size1 / size0)
    return (1 - frac) * curve_at(curve0, rows) + frac * curve_at(curve1, rows)


def touch_rate(prof: Profile) -> Term:
    """Seconds per byte of first touch, by the size of the buffer the bytes belong to."""
    alloc = prof.alloc
    return Term(c0=alloc.slope, slope=(0.0,) * len(alloc.slope), knots=alloc.knots)


def progression_sum(term: Term, start: Num, step: Num, count: Num) -> Num:
    """sum_{k=0}^{count-1} t(start + step k) for a piecewise-affine t, step > 0, in closed form."""
    edges = [-math.inf, *term.knots, math.inf]
    total: Num = 0.0
    span = (np.min(start), np.max(start + step * vmax(count - 1.0, 0.0))) if is_array(start + step + count) else None
    for j in range(len(term.c0)):
        if span is not None and (span[1] < edges[j] or span[0] >= edges[j + 1]):
            continue  # no size of any progression on this segment: it adds exact zeros

        lo = 0.0 if edges[j] == -math.inf else vmin(vmax(vceil((edges[j] - start) / step), 0.0), count)
        hi = count if edges[j + 1] == math.inf else vmin(vmax(vceil((edges[j + 1] - start) / step), 0.0), count)
        members = hi - lo  # the progression's sizes on segment j: k in [lo, hi)
        xsum = members * start + step * (lo + hi - 1.0) * members / 2.0
        total = total + term.c0[j] * members + term.slope[j] * xsum
    return total


def capped_progression_sum(term: Term, start: Num, step: Num, count: Num, top: Num | None) -> Num:
    """sum_{k<count} t(min(start + step k, top)): the progression's sizes stop at top (a sliding layer's
    buffers stop growing at the window); top None: progression_sum itself."""
    if top is None:
        return progression_sum(term, start, step, count)
    below = vmin(vmax(vceil((top - start) / step), 0.0), count)  # sizes under top: k < below
    return progression_sum(term, start, step, below) + (count - below) * term_at(term, top)


def attn_rows_factor(prof: Profile, q: int, group: int = 1) -> float:
    """Attention's per-byte cost at q new token rows over one. With GQA folded, a KV head attends with
    group q query rows where one token row gives it group: the attn_q curve (calibrated on the primary
    geometry) at group q over its value at group. (attn_exact / attn_masked are calibrated per geometry at
    one token row, so they already hold the group rows of one.)"""
    ratio = row_factor(prof, "attn_q", prof.attn_q_slope, group * q)
    return ratio if group == 1 else ratio / row_factor(prof, "attn_q", prof.attn_q_slope, group)
