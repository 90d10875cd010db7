"""Log-log terminal chart of a fitted term against the raw medians it was fitted to (no torch)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


def _fmt_bytes(x: float) -> str:
    for unit, f in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if x >= f:
            return f"{x / f:.3g} {unit}"
    return f"{x:.3g} B"


def _fmt_s(t: float) -> str:
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if t >= f:
            return f"{t / f:.3g} {unit}"
    return f"{t / 1e-9:.3g} ns"


def loglog_chart(fitted: Callable[[float], float], raw_x: Sequence[float], raw_t: Sequence[float],
                 knots: Sequence[float] = (), width: int = 64, height: int = 12,
                 x_range: tuple[float, float] | None = None) -> str:
    """'o' raw medians, '.' the fitted curve, '*' where they share a cell, '^' under each knot."""
    pts = [(x, t) for x, t in zip(raw_x, raw_t) if x > 0 and t > 0 and math.isfinite(t)]
    if x_range is None:
        if not pts:
            return "(no raw data to chart)"
        x_range = (min(p[0] for p in pts), max(p[0] for p in pts))
    lo, hi = x_range
    if not (lo > 0 and hi > lo):
        hi = lo * 10 if lo > 0 else 10.0
        lo = lo if lo > 0 else 1.0
    lx0, lx1 = math.log10(lo), math.log10(hi)
    cols = [10 ** (lx0 + (lx1 - lx0) * c / (width - 1)) for c in range(width)]
    curve = [float(fitted(x)) for x in cols]
    ys = [t for _, t in pts] + [y for y in curve if y > 0]
    if not ys:
        return "(nothing positive to chart)"
    ly0, ly1 = math.log10(min(ys)), math.log10(max(ys))
    if ly1 - ly0 < 1e-9:
        ly0, ly1 = ly0 - 0.5, ly1 + 0.5
    grid = [[" "] * width for _ in range(height)]

    def cell(x: float, y: float) -> tuple[int, int]:
        c = round((math.log10(x) - lx0) / (lx1 - lx0) * (width - 1))
        r = height - 1 - round((math.log10(y) - ly0) / (ly1 - ly0) * (height - 1))
        return min(max(r, 0), height - 1), min(max(c, 0), width - 1)

    for x, y in zip(cols, curve):
        if y > 0:
            r, c = cell(x, y)
            grid[r][c] = "."
    for x, y in pts:
        r, c = cell(x, y)
        grid[r][c] = "*" if grid[r][c] == "." else "o"
    lines = []
    for i, row in enumerate(grid):
        y = 10 ** (ly1 - (ly1 - ly0) * i / (height - 1))
        lab = f"{_fmt_s(y):>9} |" if i in (0, height // 2, height - 1) else " " * 9 + " |"
        lines.append(lab + "".join(row))
    axis = [" "] * width
    for k in knots:
        if lo <= k <= hi:
            axis[cell(k, 10**ly0)[1]] = "^"
    lines.append(" " * 10 + "+" + "".join("-" if a == " " else a for a in axis))
    left, right = _fmt_bytes(lo), _fmt_bytes(hi)
    mid = "bytes (log)"
    pad = max(1, width - len(left) - len(right) - len(mid))
    lines.append(" " * 11 + left + " " * (pad // 2) + mid + " " * (pad - pad // 2) + right)
    lines.append(" " * 11 + "o raw median   . fit   * both" + ("   ^ knee" if knots else ""))
    return "\n".join(lines)
