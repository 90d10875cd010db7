"""layer_fixed and layer_row: a decoder layer's cost beyond its weight matmuls, from bench_layers' points.

A point is one forward of an L-layer decoder at q new rows over PROMPT cached rows, minus its matmuls:
    rest(L, q) = step_s + L * (attention(q) + writes(q) + fixed + (q - 1) * row)
where attention and writes are what the cost model's terms charge for them (cost.attention_s and
write_s, the same functions breakdown uses) and step_s comes from the tiny decoder. So per geometry
    (rest - step_s) / L - charge(q) = fixed + (q - 1) * row
is a line in q (fitted robustly), and fixed, row become terms over the layer's weight bytes: the linear
interpolation between the geometries' values, flat past the ends (Term with knots at the geometries).
"""

from __future__ import annotations

from collections.abc import Callable

from bmc_model.calibrate.fit import fit_affine
from bmc_model.core.errors import BMCError
from bmc_model.core.profile import Profile, Term
from bmc_model.core.specs import DTYPE_BYTES, ModelSpec


def through(xs: list[float], ys: list[float]) -> Term:
    """The piecewise-linear Term through (x, y) points (ascending x), constant before the first and after
    the last; one point gives a constant."""
    pts = sorted(zip(xs, ys))
    if not pts:
        raise BMCError("through(): no points")
    c0, slope = [pts[0][1]], [0.0]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        s = (y1 - y0) / (x1 - x0) if x1 > x0 else 0.0
        # through the lower end exactly: a floored 0 there must not come back as -1e-20 s (an unphysical cost)
        xa, ya = (x0, y0) if y0 <= y1 else (x1, y1)
        c0.append(ya - s * xa)
        slope.append(s)
    c0.append(pts[-1][1])
    slope.append(0.0)
    knots = [x for x, _ in pts]
    return Term(c0=tuple(c0), slope=tuple(slope), knots=tuple(knots))


def _through_medians(xs: list[int], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope) of the line through the median y at the smallest x and at the largest (one x: flat)."""
    import statistics

    lo, hi = min(xs), max(xs)
    y_lo = statistics.median(y for x, y in zip(xs, ys) if x == lo)
    if hi == lo:
        return y_lo, 0.0
    slope = (statistics.median(y for x, y in zip(xs, ys) if x == hi) - y_lo) / (hi - lo)
    return y_lo - slope * lo, slope


def fit_layers(points: list, prof: Profile, spec_of: Callable[[str], ModelSpec], prompt: int, dtype: str
               ) -> tuple[Term, Term, dict]:
    """points: bench_layers.LayerPoint; prof: the profile fitted so far (terms, curves, step_s)."""
    from bmc_model.core.breakdown import attention_s, write_s
    from bmc_model.core.workload import Geometry

    e = DTYPE_BYTES[dtype]
    by: dict[str, list] = {}
    for p in points:
        by.setdefault(p.model, []).append(p)
    xs, fixed, row, raw = [], [], [], {}
    for name, pts in by.items():
        spec = spec_of(name)
        geo = Geometry.of(spec, 1, dtype)
        qs = [p.q for p in pts]
        net = [(p.rest_s - prof.step_s) / p.layers
               - attention_s(prof, geo.rho, prompt + p.q, p.q, masked=p.q > 1, group=geo.group)
               - write_s(prof, geo.rho, p.q)
               for p in pts]
        if min(net) > 0:
            try:
                f = fit_affine([q - 1 for q in qs], net)
            except ValueError as ex:
                raise BMCError(f"calibration: cannot fit the in-place layer cost of {name} ({ex})") from None
            c0, slope = f.c0, f.slope
        else:  # a point at or below what attention and writes charge: no relative fit, a line through medians
            c0, slope = _through_medians([q - 1 for q in qs], net)
        x = float(spec.layer_params() * e)
        xs.append(x)
        fixed.append(max(c0, 0.0))
        row.append(max(slope, 0.0))
        raw[name] = {"layer_bytes": x, "layers": pts[0].layers, "q": qs, "rest_s": [p.rest_s for p in pts],
                     "net_per_layer_s": net, "fixed_s": fixed[-1], "row_s": row[-1]}
    return through(xs, fixed), through(xs, row), raw
