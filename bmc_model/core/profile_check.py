"""Is a profile physical? Checked on every load (Profile.from_dict), so a bad file is one error naming the
entry, not a negative ms/token, a division by zero or a NaN in a chart after the tables printed.

The rules, each no stricter than what calibration produces (calibrate/assemble.py, fit.py, layers.py):
  size terms (every term but the in-place ones): slopes >= 0, since a call on more bytes costs no less (the
      fits are bounded so), and t(x) > 0 over each segment, checked at its ends, the first from x = 1 byte;
      with slope >= 0 its start is its minimum. A later segment's c0 may be negative: the embedded alloc's
      is -1.87e4 us past its knee, where the line is steep and x large (fit_piecewise keeps t > 0 there).
  in-place terms (layer_fixed, layer_row and their hf_ twins, hf_matmul_ratio; x the layer's weight bytes): lines
      through per-geometry values floored at 0 (layers.through), which may fall between geometries: t(x) >= 0 at
      every segment's ends from x = 0, and no fall past the last knot; hf_matmul_ratio > 0 at every geometry.
  knots finite and > 0; r2 finite; ci95 one [lo, hi] per segment (shown only: a singular fit's is infinite).
  scalars finite and >= 0 (fit_overhead floors the overheads at 0, the row slopes are clamped at 0); a fraction
      (lazy_backing) within [0, 1] (bench_lazy clips it so).
  curves: >= 2 points, x finite and ascending from 1, ratios finite and > 0; a FAMILY@B curve's B > 0.
  host: a dtype this bmc-tune knows; threads and cores positive integers; overcommit_mode 0, 1 or 2;
      reserve_limit_bytes a finite number >= 0 (the memory model may compare bytes against it).
  and no time, slope or ratio absurdly large (MAX_SECONDS, MAX_SLOPE, MAX_RATIO): predictions stay finite.
  refresh (core/refresh.py): factors name terms the profile has, each finite and within 1/MAX_FACTOR ..
      MAX_FACTOR (past that the host is another one: calibrate again); an ISO-8601 time, seq >= 2; row ratios
      both parts or neither, rows ascending from 1 with at least 2 points.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING

from bmc_model.core.errors import BMCError
from bmc_model.core.profile import FRACTION_SCALARS, IN_PLACE_TERMS, Curve, Profile
from bmc_model.core.refresh import NEEDED_PARTS, ROW_PARTS
from bmc_model.core.specs import DTYPE_BYTES
from bmc_model.core.term import Term

if TYPE_CHECKING:
    from bmc_model.core.refresh import Refresh

# Bounds far past anything measured that keep every prediction finite (a cost of 1e300 s overflows in the sums
# over a decode): no call takes more than a million seconds, or a second a byte; no ratio exceeds a million.
MAX_SECONDS = 1e6
MAX_SLOPE = 1.0
MAX_RATIO = 1e6
MAX_FACTOR = 100.0  # a term that moved a hundredfold since calibration is another host, not drift


def check_profile(prof: Profile) -> None:
    """Raise BMCError("profile SOURCE: <entry>: <what is wrong>") at the first unphysical entry."""
    problem = first_problem(prof)
    if problem:
        raise BMCError(f"profile {prof.source}: {problem}")


def first_problem(prof: Profile) -> str | None:
    for name, term in prof.terms.items():
        problem = term_problem(term, in_place=name in IN_PLACE_TERMS)
        if problem is None and name == "hf_matmul_ratio" and min(
                [term.c0[0], *(c0 + slope * x for c0, slope, x in zip(term.c0[1:], term.slope[1:], term.knots))]) <= 0:
            problem = "a ratio of matmul times must be > 0 at every geometry"
        if problem:
            return f"term {name!r}: {problem}"
    for name, value in prof.scalars.items():
        if not (math.isfinite(value) and value >= 0):
            return f"scalar {name!r} is {value:g}: it must be finite and >= 0"
        if name in FRACTION_SCALARS and value > 1:
            return f"scalar {name!r} is {value:g}: a fraction, it must be within [0, 1]"
        top = MAX_SECONDS if name.endswith("_s") else MAX_RATIO
        if value > top:
            return f"scalar {name!r} is {value:g}: more than {top:g}{' s' if name.endswith('_s') else ''}, not a cost"
    for name, curve in prof.curves.items():
        problem = curve_problem(name, curve)
        if problem:
            return f"curve {name!r}: {problem}"
    return host_problem(prof.host)


def term_problem(term: Term, in_place: bool = False) -> str | None:
    for what, values in (("c0", term.c0), ("slope", term.slope), ("knots", term.knots)):
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        if bad is not None:
            return f"{what}[{bad}] is {values[bad]}: it must be finite"
    big = next((v for v in term.c0 if abs(v) > MAX_SECONDS), None)
    if big is not None:
        return f"c0 {big:g} s is more than {MAX_SECONDS:g} s in size: not a cost"
    steep = next((v for v in term.slope if v > MAX_SLOPE), None)
    if steep is not None:
        return f"slope {steep:g} s/B is more than {MAX_SLOPE:g} s a byte: not a cost"
    if term.knots and term.knots[0] <= 0:
        return f"knot {term.knots[0]:g} bytes: knots must be > 0"
    if term.r2 is not None and not math.isfinite(term.r2):
        return f"r2 is {term.r2}: it must be finite"
    if term.ci95 and len(term.ci95) != len(term.slope):
        return f"ci95 has {len(term.ci95)} pairs for {len(term.slope)} segments"
    edges = [0.0 if in_place else min([1.0, *term.knots]), *term.knots, math.inf]
    for i, (c0, slope) in enumerate(zip(term.c0, term.slope)):
        where = _segment(i, len(term.c0), edges)
        if slope < 0 and (not in_place or i == len(term.c0) - 1):
            why = "a cost cannot shrink as the bytes grow" if not in_place else "it would fall below 0 for large x"
            return f"slope {slope:.4g} s/B on {where} is negative: {why}"
        ends = (edges[i], edges[i + 1]) if math.isfinite(edges[i + 1]) else (edges[i],)
        for x in ends:
            t = c0 + slope * x
            if t < 0 or (t == 0 and not in_place):
                return f"t({x:.4g} B) = {t:.4g} s on {where}: a cost must be {'>= 0' if in_place else '> 0'}"
    return None


def _segment(i: int, n: int, edges: list[float]) -> str:
    if n == 1:
        return "its one segment"
    return f"segment {i} (x from {edges[i]:.4g} to {edges[i + 1]:.4g} B)"


def curve_problem(name: str, curve: Curve) -> str | None:
    head, at, size = name.partition("@")
    if at:
        try:
            b = float(size)
        except ValueError:
            b = math.nan
        if not (math.isfinite(b) and b > 0):
            return f"{head}@B needs B, the bytes it was measured on, a number > 0; got {size!r}"
    x, ratio = curve
    if len(x) < 2:
        return f"needs at least 2 points, has {len(x)}"
    if not all(math.isfinite(v) for v in x) or x[0] != 1.0 or any(b <= a for a, b in zip(x, x[1:])):
        return f"x must ascend from 1, got {list(x)[:6]}"
    bad = next((i for i, v in enumerate(ratio) if not (math.isfinite(v) and 0 < v <= MAX_RATIO)), None)
    if bad is not None:
        return f"ratio[{bad}] is {ratio[bad]}: ratios must be finite, > 0 and at most {MAX_RATIO:g}"
    return None


def host_problem(host: dict) -> str | None:
    dtype = host.get("dtype")
    if dtype is not None and (not isinstance(dtype, str) or dtype not in DTYPE_BYTES):
        return f"host dtype {dtype!r} is not one of {', '.join(DTYPE_BYTES)}"
    for key in ("threads", "cores"):
        v = host.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            return f"host {key} must be a positive integer, got {v!r}"
    mode = host.get("overcommit_mode")
    if mode is not None and (isinstance(mode, bool) or not isinstance(mode, int) or mode not in (0, 1, 2)):
        return f"host overcommit_mode must be 0, 1 or 2, got {mode!r}"
    limit = host.get("reserve_limit_bytes")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))
                              or not math.isfinite(limit) or limit < 0):
        return f"host reserve_limit_bytes must be a finite number >= 0, got {limit!r}"
    device = host.get("device")
    if device is not None and not isinstance(device, str):
        return f"host device must be a string, got {device!r}"
    return None


def refresh_problem(refresh: Refresh, prof: Profile) -> str | None:
    """What is wrong with a refresh section for prof (as calibrated), or None."""
    try:
        datetime.fromisoformat(refresh.at.replace("Z", "+00:00"))
    except ValueError:
        return f"refresh 'at' is {refresh.at!r:.40}: it must be an ISO-8601 time"
    if refresh.seq < 2:
        return f"refresh 'seq' is {refresh.seq}: it must be at least 2"
    if refresh.batch < 1:
        return f"refresh 'batch' is {refresh.batch}: it must be at least 1"
    if not (math.isfinite(refresh.seconds) and 0 <= refresh.seconds <= MAX_SECONDS):
        return f"refresh 'seconds' is {refresh.seconds:g}: it must be finite and >= 0"
    for name, f in refresh.factors.items():
        if name not in prof.terms:
            return f"refresh factor {name!r}: this profile has no such term"
        if not (math.isfinite(f) and 1 / MAX_FACTOR <= f <= MAX_FACTOR):
            return (f"refresh factor {name!r} is {f:g}: it must be finite and within [{1 / MAX_FACTOR:g}, "
                    f"{MAX_FACTOR:g}] (further off, calibrate again)")
    ratios = refresh.row_ratios
    if ratios and (not set(NEEDED_PARTS) <= set(ratios) or not set(ratios) <= set(ROW_PARTS)):
        optional = ", ".join(repr(p) for p in ROW_PARTS if p not in NEEDED_PARTS)
        return (f"refresh row_ratios has parts {sorted(ratios)}: it needs {' and '.join(map(repr, NEEDED_PARTS))} "
                f"(and may have {optional})")
    for part, by_rows in ratios.items():
        rows = sorted(by_rows)
        if len(rows) < 2 or rows[0] != 1:
            return f"refresh row_ratios {part!r} has rows {rows[:6]}: it needs 1 and at least one more"
        bad = next((m for m in rows if not (math.isfinite(by_rows[m]) and 0 < by_rows[m] <= MAX_RATIO)), None)
        if bad is not None:
            return (f"refresh row_ratios {part!r}[{bad}] is {by_rows[bad]}: ratios must be finite, > 0 and at "
                    f"most {MAX_RATIO:g}")
    return None
