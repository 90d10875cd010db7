"""Robust fits of timing medians: affine, piecewise affine with a fitted knee, and ratio slopes.

Residuals are relative, (prediction - y) / y: timing noise is roughly multiplicative and sizes span
five orders of magnitude, so absolute residuals would let the largest sizes decide everything and
leave the intercept (the per-call overhead) to chance. The loss is scipy's soft-L1 with the
transition at F_SCALE relative error: quadratic for ordinary noise, linear for outliers.

Confidence intervals (95%) come from the Jacobian of the (linear) model with a robust residual
scale (1.4826 * MAD of the residuals) and Student's t; R^2 is computed on log time, the fraction
of the variance of log t that the fit explains (the natural scale for log-spaced sizes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from bmc_model.calibrate.stats import MAD_TO_SIGMA
from bmc_model.core.profile import Term

F_SCALE = 0.05  # relative error where soft-L1 turns from quadratic to linear
MATERIAL = 0.05  # a knee must move the curve by more than this somewhere on the data
_TINY = 1e-30


@dataclass(frozen=True)
class SegmentFit:
    c0: float
    slope: float
    c0_ci: tuple[float, float]
    slope_ci: tuple[float, float]
    n: int
    cost: float  # summed soft-L1 loss of relative residuals (for comparing fits on the same points)

    def __call__(self, x: np.ndarray | float) -> np.ndarray | float:
        return self.c0 + self.slope * np.asarray(x, dtype=float)


@dataclass(frozen=True)
class PiecewiseFit:
    segments: tuple[SegmentFit, ...]
    knots: tuple[float, ...]
    r2: float

    def __call__(self, x: np.ndarray | float) -> np.ndarray | float:
        return self.term()(np.asarray(x, dtype=float))

    def term(self) -> Term:
        return Term(c0=tuple(s.c0 for s in self.segments), slope=tuple(s.slope for s in self.segments),
                    knots=self.knots, r2=self.r2, ci95=tuple(s.slope_ci for s in self.segments))


def soft_l1(r: np.ndarray, f_scale: float = F_SCALE) -> float:
    z = (np.asarray(r, dtype=float) / f_scale) ** 2
    return float(np.sum(2.0 * (np.sqrt(1.0 + z) - 1.0)))


def r2_log(y: np.ndarray, pred: np.ndarray) -> float:
    """1 - SS_res / SS_tot on log time; 1.0 when y is constant and matched exactly."""
    ly = np.log(np.maximum(np.asarray(y, dtype=float), _TINY))
    lp = np.log(np.maximum(np.asarray(pred, dtype=float), _TINY))
    ss_res = float(np.sum((ly - lp) ** 2))
    ss_tot = float(np.sum((ly - ly.mean()) ** 2))
    if ss_tot <= 0.0:
        return 1.0 if ss_res <= 1e-24 else 0.0
    return 1.0 - ss_res / ss_tot


def _check(x: np.ndarray, y: np.ndarray, need: int) -> None:
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("fit: x and y must be 1-D arrays of the same length")
    if x.size < need or np.unique(x).size < 2:
        raise ValueError(f"fit: need at least {need} points at 2 distinct sizes, got {x.size}")
    if np.any(y <= 0) or not np.all(np.isfinite(y)) or not np.all(np.isfinite(x)):
        raise ValueError("fit: times must be finite and positive")


def _ci95_half_widths(a_mat: np.ndarray, r: np.ndarray) -> list[float]:
    """95% half-widths of the scaled parameters of a linear relative-residual fit r = a_mat @ p - 1:
    a robust sigma (MAD of the residuals, corrected for the parameters fitted) and Student's t."""
    n, k = a_mat.shape
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(r - np.median(r)))) * math.sqrt(n / max(n - k, 1))
    try:
        cov = sigma**2 * np.linalg.inv(a_mat.T @ a_mat)
    except np.linalg.LinAlgError:
        cov = np.full((k, k), np.inf)
    t = float(stats.t.ppf(0.975, max(n - k, 1)))
    return [t * math.sqrt(max(cov[i, i], 0.0)) for i in range(k)]


def fit_affine(x: np.ndarray | list[float], y: np.ndarray | list[float], *, nonneg: bool = True,
               free_c0: bool = False, f_scale: float = F_SCALE) -> SegmentFit:
    """Robust t = c0 + slope * x. With nonneg, slope >= 0 (costs do not shrink with size) and c0 >= 0
    unless free_c0: a segment above a knee only holds for x past the knot, where a line through a
    continuous knee may well cross zero at x = 0."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    _check(x, y, 3)
    # Scale the unknowns to O(1): c0 ~ 1e-6 s and slope ~ 1e-10 s/byte would defeat the solver's
    # tolerances. p = (a, b) with t = ys * (a + b * x / xs).
    ys = float(np.median(y))
    xs = float(np.median(np.abs(x))) or 1.0
    a_mat = np.column_stack([ys / y, ys * x / (xs * y)])  # relative residual = a_mat @ p - 1
    p0 = np.linalg.lstsq(a_mat, np.ones_like(y), rcond=None)[0]
    lo = np.array([-np.inf if free_c0 else 0.0, 0.0]) if nonneg else np.array([-np.inf, -np.inf])
    p0 = np.maximum(p0, lo + 1e-9)
    res = optimize.least_squares(lambda p: a_mat @ p - 1.0, p0, loss="soft_l1", f_scale=f_scale,
                                 bounds=(lo, np.full(2, np.inf)), method="trf", x_scale=1.0)
    p = res.x
    r = a_mat @ p - 1.0
    n = x.size
    ha, hb = _ci95_half_widths(a_mat, r)
    c0, slope = ys * p[0], ys * p[1] / xs
    return SegmentFit(c0=float(c0), slope=float(slope),
                      c0_ci=(float(ys * (p[0] - ha)), float(ys * (p[0] + ha))),
                      slope_ci=(float(ys * (p[1] - hb) / xs), float(ys * (p[1] + hb) / xs)),
                      n=int(n), cost=soft_l1(r, f_scale))


def _knot_between(left: SegmentFit, right: SegmentFit, xl: float, xr: float) -> float:
    """Where the two lines cross inside the gap (a continuous knee), else the gap's geometric middle."""
    if left.slope != right.slope:
        xc = (right.c0 - left.c0) / (left.slope - right.slope)
        if xl < xc < xr:
            return float(xc)
    return float(math.sqrt(xl * xr)) if xl > 0 else 0.5 * (xl + xr)


def _robust_bic(resid: np.ndarray, k: int, keep: float = 0.8) -> float:
    """BIC on the smallest 80% of squared residuals (least trimmed squares): outliers are left out
    of both candidates, so a segment that only isolates an outlier does not pay for its parameters,
    while a real knee (a change of slope over many points) does."""
    n = resid.size
    r2 = np.sort(np.asarray(resid, dtype=float) ** 2)[: max(2, math.ceil(keep * n))]
    return r2.size * math.log(max(float(r2.mean()), 1e-12)) + k * math.log(n)


def fit_piecewise(x: np.ndarray | list[float], y: np.ndarray | list[float], *, knee: bool = True,
                  min_points: int = 4, f_scale: float = F_SCALE) -> PiecewiseFit:
    """Affine, or two affine segments split at a fitted knee when that is clearly better.

    The knee is searched over every gap between consecutive distinct sizes that leaves at least
    `min_points` points on each side; the candidate with the least summed soft-L1 loss wins, and it
    replaces the single line only if it lowers a robust BIC (5 parameters: two lines and the knot,
    against 2, plus 2 ln(candidates) for having searched) and moves the curve by more than 5% at some
    measured size. The segments are fitted independently:
    a jump at the knee (glibc switching from the heap to fresh mmap'd pages) is allowed.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    _check(x, y, 3)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    one = fit_affine(x, y, f_scale=f_scale)
    best: tuple[float, SegmentFit, SegmentFit, float] | None = None
    tried = 0
    if knee:
        ux = np.unique(x)
        for i in range(1, ux.size):
            xl, xr = ux[i - 1], ux[i]
            left, right = x <= xl, x >= xr
            if (left.sum() < min_points or right.sum() < min_points or np.unique(x[left]).size < 2
                    or np.unique(x[right]).size < 2):
                continue
            tried += 1
            fl = fit_affine(x[left], y[left], f_scale=f_scale)
            fr = fit_affine(x[right], y[right], free_c0=True, f_scale=f_scale)
            knot = _knot_between(fl, fr, float(xl), float(xr))
            if fr(knot) <= 0:  # the upper line must stay positive down to the knot: move the knot up
                zero = -fr.c0 / fr.slope if fr.slope > 0 else math.inf
                if zero >= xr:
                    continue
                knot = math.sqrt(zero * xr) if zero > 0 else float(xr)
            cost = fl.cost + fr.cost
            if best is None or cost < best[0]:
                best = (cost, fl, fr, knot)
    fit = PiecewiseFit(segments=(one,), knots=(), r2=0.0)
    if best is not None:
        _, fl, fr, knot = best
        two = PiecewiseFit(segments=(fl, fr), knots=(knot,), r2=0.0)
        # the knot was picked as the best of `tried` positions: charge for that search too
        extra = 2.0 * math.log(max(tried, 1))
        better = _robust_bic(two(x) / y - 1.0, 5) + extra < _robust_bic(one(x) / y - 1.0, 2)
        material = float(np.max(np.abs(two(x) / one(x) - 1.0))) > MATERIAL  # else the line says the same
        if better and material:
            fit = two
    return PiecewiseFit(segments=fit.segments, knots=fit.knots, r2=r2_log(y, fit(x)))


@dataclass(frozen=True)
class SlopeFit:
    slope: float
    ci95: tuple[float, float]
    n: int


def fit_ratio_slope(u: np.ndarray | list[float], ratio: np.ndarray | list[float],
                    f_scale: float = F_SCALE) -> SlopeFit:
    """Robust s in ratio = 1 + s * u (u = extra rows, ratio = t(rows) / t(1 row)), through (0, 1)."""
    u = np.asarray(u, dtype=float)
    ratio = np.asarray(ratio, dtype=float)
    keep = u > 0  # the u = 0 points are 1 by construction and carry no information
    u, ratio = u[keep], ratio[keep]
    if u.size < 2 or np.any(ratio <= 0):
        raise ValueError("fit_ratio_slope: need at least 2 positive ratios at u > 0")
    a = (u / ratio)[:, None]  # relative residual (1 + s u) / ratio - 1 = a s - (1 - 1/ratio)
    b = 1.0 - 1.0 / ratio
    s0 = np.linalg.lstsq(a, b, rcond=None)[0]
    res = optimize.least_squares(lambda s: a @ s - b, s0, loss="soft_l1", f_scale=f_scale)
    s = float(res.x[0])
    r = a[:, 0] * s - b
    n = u.size
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(r - np.median(r)))) * math.sqrt(n / max(n - 1, 1))
    half = float(stats.t.ppf(0.975, max(n - 1, 1))) * sigma / math.sqrt(float(np.sum(a[:, 0] ** 2)))
    return SlopeFit(slope=s, ci95=(s - half, s + half), n=int(n))


@dataclass(frozen=True)
class PlaneFit:
    """t = c0 + slope * x + per_z * z, with 95% intervals and R^2 on log time."""

    c0: float
    slope: float
    per_z: float
    slope_ci: tuple[float, float]
    per_z_ci: tuple[float, float]
    r2: float


def fit_plane(x: np.ndarray | list[float], z: np.ndarray | list[float], y: np.ndarray | list[float],
              f_scale: float = F_SCALE) -> PlaneFit:
    """Robust non-negative t = c0 + slope * x + per_z * z on relative residuals (soft-L1).

    Weight streaming: x bytes and z output rows, each GEMV row having a fixed cost besides its bytes,
    which is why a narrow matrix streams slower than a wide one of the same size."""
    x, z, y = (np.asarray(v, dtype=float) for v in (x, z, y))
    _check(x, y, 4)
    ys, xs, zs = float(np.median(y)), float(np.median(x)) or 1.0, float(np.median(z)) or 1.0
    a_mat = np.column_stack([ys / y, ys * x / (xs * y), ys * z / (zs * y)])
    p0 = np.maximum(np.linalg.lstsq(a_mat, np.ones_like(y), rcond=None)[0], 1e-9)
    res = optimize.least_squares(lambda p: a_mat @ p - 1.0, p0, loss="soft_l1", f_scale=f_scale,
                                 bounds=(np.zeros(3), np.full(3, np.inf)), method="trf")
    p = res.x
    r = a_mat @ p - 1.0
    h = _ci95_half_widths(a_mat, r)
    pred = ys * (a_mat @ p) * y / ys  # back to seconds
    return PlaneFit(c0=ys * p[0], slope=ys * p[1] / xs, per_z=ys * p[2] / zs,
                    slope_ci=(ys * (p[1] - h[1]) / xs, ys * (p[1] + h[1]) / xs),
                    per_z_ci=(ys * (p[2] - h[2]) / zs, ys * (p[2] + h[2]) / zs), r2=r2_log(y, pred))
