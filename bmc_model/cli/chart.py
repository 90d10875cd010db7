"""Terminal line charts: a few series on a character grid, optional log-scaled x."""

from __future__ import annotations

import math
from collections.abc import Sequence

MARKS = "*o+x#@"


def line_chart(series: dict[str, tuple[Sequence[float], Sequence[float]]], width: int = 64, height: int = 14,
               logx: bool = True, x_label: str = "r", y_label: str = "ms/token",
               highlight: tuple[float, float] | None = None) -> str:
    if highlight and not _plottable(*highlight):
        highlight = None
    pts = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys) if _plottable(x, y)]
    pts += [highlight] if highlight else []  # in range: the curves are samples, the optimum may lie between
    if not pts:
        return "(nothing to plot)"

    def fx(x: float) -> float:
        return math.log10(x) if logx else x

    x0, x1 = min(fx(p[0]) for p in pts), max(fx(p[0]) for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-9)
    grid = [[" "] * width for _ in range(height)]

    def put(x: float, y: float, ch: str) -> None:
        c = round((fx(x) - x0) / (x1 - x0) * (width - 1))
        r = height - 1 - round((y - y0) / (y1 - y0) * (height - 1))
        grid[r][c] = ch

    for (xs, ys), mark in zip(series.values(), MARKS):
        for x, y in zip(xs, ys):
            if _plottable(x, y):
                put(x, y, mark)
    if highlight:
        put(*highlight, "R")
    lines = []
    for i, row in enumerate(grid):
        y = y1 - (y1 - y0) * i / (height - 1)
        lab = f"{y:9.3g} |" if i in (0, height // 2, height - 1) else " " * 9 + " |"
        lines.append(lab + "".join(row))
    lo, hi = (10**x0, 10**x1) if logx else (x0, x1)
    lines.append(" " * 10 + "+" + "-" * width)
    axis = f"{lo:<10.4g}{x_label + (' (log)' if logx else ''):^{width - 20}}{hi:>10.4g}"
    lines.append(" " * 11 + axis)
    legend = "   ".join(f"{m} {n}" for n, m in zip(series, MARKS))
    lines.append(" " * 11 + legend + ("   R recommended" if highlight else "") + f"   (y: {y_label})")
    return "\n".join(lines)


def _plottable(x: float, y: float) -> bool:
    """Finite y at a finite x > 0 (the x axis is logarithmic): NaN marks an infeasible r."""
    return math.isfinite(x) and math.isfinite(y) and x > 0
