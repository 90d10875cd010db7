"""The robust fits recover known coefficients from synthetic timings with noise and outliers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmc_model.calibrate.fit import fit_affine, fit_piecewise, fit_ratio_slope, r2_log
from bmc_model.calibrate.stats import reject_outliers, summarize

MiB = 2**20


def noisy(y: np.ndarray, rng: np.random.Generator, rel: float = 0.03, outliers: int = 0) -> np.ndarray:
    """Multiplicative noise, and a few points inflated 2-4x (a preempted sample that survived)."""
    out = y * (1.0 + rel * rng.standard_normal(y.size))
    idx = rng.choice(y.size, size=outliers, replace=False)
    out[idx] *= rng.uniform(2.0, 4.0, size=outliers)
    return out


def test_affine_recovers_coefficients_despite_outliers():
    rng = np.random.default_rng(1)
    x = np.geomspace(4096, 2**30, 30)
    c0, slope = 3e-6, 6.6e-11
    f = fit_affine(x, noisy(c0 + slope * x, rng, outliers=4))
    assert f.slope == pytest.approx(slope, rel=0.04)
    assert f.c0 == pytest.approx(c0, rel=0.1)


def test_confidence_intervals_cover_the_truth_about_95_percent_of_the_time():
    x = np.geomspace(4096, 2**30, 30)
    c0, slope = 3e-6, 6.6e-11
    hits_c0 = hits_slope = 0
    runs = 40
    for seed in range(runs):
        f = fit_affine(x, noisy(c0 + slope * x, np.random.default_rng(100 + seed), outliers=3))
        hits_c0 += f.c0_ci[0] < c0 < f.c0_ci[1]
        hits_slope += f.slope_ci[0] < slope < f.slope_ci[1]
    assert hits_c0 >= 0.8 * runs and hits_slope >= 0.8 * runs


def test_plain_least_squares_would_be_pulled_by_the_outliers():
    # Guards the test above against being vacuous: the outliers do matter to a non-robust fit.
    rng = np.random.default_rng(1)
    x = np.geomspace(4096, 2**30, 30)
    y = noisy(3e-6 + 6.6e-11 * x, rng, outliers=4)
    a = np.column_stack([1 / y, x / y])
    c0_ls, slope_ls = np.linalg.lstsq(a, np.ones_like(y), rcond=None)[0]
    robust = fit_affine(x, y)
    assert abs(c0_ls / 3e-6 - 1) > 3 * abs(robust.c0 / 3e-6 - 1)


def test_piecewise_finds_the_mmap_knee():
    # heap reuse below the (dynamic, up to 32 MiB) mmap threshold, page faults above: a jump + a new slope
    rng = np.random.default_rng(2)
    x = np.geomspace(4096, 2**30, 37)
    knee = 24 * MiB
    true = np.where(x < knee, 1.5e-6 + 1.2e-11 * x, 2e-5 + 4e-10 * x)
    f = fit_piecewise(x, noisy(true, rng, outliers=3))
    assert len(f.knots) == 1
    below, above = x[x < knee].max(), x[x >= knee].min()
    assert below <= f.knots[0] <= above  # the knot falls in the gap holding the true knee
    assert f.segments[0].slope == pytest.approx(1.2e-11, rel=0.06)
    assert f.segments[1].slope == pytest.approx(4e-10, rel=0.06)
    assert f.segments[0].c0 == pytest.approx(1.5e-6, rel=0.1)
    term = f.term()
    assert term.knots == f.knots and len(term.ci95) == 2 and term.r2 > 0.98


def test_piecewise_finds_a_continuous_cache_knee_where_the_lines_cross():
    # copy: in-cache bandwidth then DRAM bandwidth, continuous at the cache size
    x = np.geomspace(16 * 1024, 512 * MiB, 31)
    k = 12 * MiB
    s1, s2 = 2.5e-11, 7e-11
    c0 = 3e-6
    true = np.where(x < k, c0 + s1 * x, c0 + s1 * k + s2 * (x - k))
    f = fit_piecewise(x, noisy(true, np.random.default_rng(3), rel=0.01))
    assert len(f.knots) == 1
    # near a continuous knee both lines agree, so the knot is loosely placed; the curve is not
    assert k / 2 < f.knots[0] < 2 * k
    assert np.max(np.abs(f(x) / true - 1)) < 0.06
    assert f.segments[1].slope == pytest.approx(s2, rel=0.06)


@pytest.mark.parametrize("seed", range(5))
def test_piecewise_does_not_invent_a_knee_on_a_straight_line(seed):
    rng = np.random.default_rng(10 + seed)
    x = np.geomspace(4096, 2**30, 33)
    f = fit_piecewise(x, noisy(1e-6 + 1e-10 * x, rng, outliers=3))
    assert f.knots == ()
    assert f.segments[0].slope == pytest.approx(1e-10, rel=0.04)


def test_knee_can_be_disabled():
    x = np.geomspace(4096, 2**30, 30)
    y = np.where(x < 2**24, 1e-6 + 1e-11 * x, 1e-6 + 4e-10 * x)
    assert fit_piecewise(x, y, knee=False).knots == ()
    assert len(fit_piecewise(x, y).knots) == 1


@given(c0=st.floats(1e-7, 1e-3), slope=st.floats(1e-12, 1e-8), n=st.integers(3, 30))
def test_exact_data_is_recovered_exactly(c0, slope, n):
    x = np.geomspace(1e3, 1e9, n)
    f = fit_affine(x, c0 + slope * x)
    assert f.slope == pytest.approx(slope, rel=1e-4)
    assert f.c0 == pytest.approx(c0, rel=1e-4, abs=1e-6 * (c0 + slope * 1e3))


def test_ratio_slope_recovers_the_per_row_factor():
    rng = np.random.default_rng(4)
    q = np.array([1, 2, 4, 8] * 3, dtype=float)
    ratio = (1 + 0.3 * (q - 1)) * (1 + 0.02 * rng.standard_normal(q.size))
    ratio[5] *= 3.0  # an outlier
    f = fit_ratio_slope(q - 1, ratio)
    assert f.slope == pytest.approx(0.3, rel=0.05)
    assert f.ci95[0] < 0.3 < f.ci95[1]


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        fit_affine([1.0, 2.0], [1.0, 2.0])  # too few points
    with pytest.raises(ValueError):
        fit_affine([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])  # one size only
    with pytest.raises(ValueError):
        fit_affine([1.0, 2.0, 3.0], [1.0, -2.0, 3.0])
    with pytest.raises(ValueError):
        fit_ratio_slope([0.0, 0.0], [1.0, 1.0])


def test_r2_log():
    y = np.array([1.0, 10.0, 100.0])
    assert r2_log(y, y) == pytest.approx(1.0)
    assert r2_log(y, np.full(3, 10.0)) == pytest.approx(0.0)
    assert r2_log(np.ones(3), np.ones(3)) == 1.0


def test_mad_rejection_drops_preempted_samples():
    v = [1.0, 1.02, 0.99, 1.01, 0.98, 1.0, 9.0, 1.03]
    kept = reject_outliers(v)
    assert 9.0 not in kept and len(kept) == 7
    s = summarize(v)
    assert s.kept == 7 and s.total == 8 and s.median == pytest.approx(1.0, abs=0.011)
    assert list(reject_outliers([2.0, 2.0, 2.0, 5.0])) == [2.0, 2.0, 2.0]  # MAD 0: the odd one out goes
    with pytest.raises(ValueError):
        summarize([])


def test_a_steep_upper_segment_stays_positive_from_the_knot_on():
    # copy past the LLC: the line through the DRAM points crosses zero well above the last cached size
    x = np.geomspace(16 * 1024, 64 * MiB, 24)
    y = np.where(x < 14 * MiB, 4e-6 + 1.3e-11 * x, -6.5e-4 + 5.3e-11 * x)
    f = fit_piecewise(x, noisy(y, np.random.default_rng(5), rel=0.01))
    assert len(f.knots) == 1
    grid = np.geomspace(x[0], x[-1], 500)
    assert np.all(np.asarray(f(grid)) > 0)
    assert np.max(np.abs(np.asarray(f(x)) / y - 1)) < 0.05


def test_in_place_layer_fit_survives_a_point_below_the_kernels_charge():
    """A noisy point whose rest is under what attention and writes charge has no relative fit: the line
    through the medians stands, floored at zero (a miniature calibration once failed here)."""
    from bmc_model.calibrate.bench_layers import LayerPoint
    from bmc_model.calibrate.layers import fit_layers
    from bmc_model.core.curves import term_at
    from bmc_model.core.profile import embedded_profile
    from bmc_model.core.specs import get_spec

    prof = embedded_profile()
    spec = get_spec("smollm2-135m")
    pts = [LayerPoint(spec.name, 2, q, rest) for q, rest in ((1, 0.0), (1, 4e-4), (1, 6e-4), (4, 9e-4), (4, 1e-3))]
    fixed, row, raw = fit_layers(pts, prof, get_spec, 64, "float32")
    x = spec.layer_params() * 4
    nets = raw[spec.name]["net_per_layer_s"]
    assert min(nets) <= 0 < term_at(fixed, x) and term_at(row, x) >= 0
    assert term_at(fixed, x) == pytest.approx(sorted(nets[:3])[1])  # the median at one row
