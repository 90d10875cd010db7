"""Robust summaries of repeated timings: median after rejecting outliers by the MAD rule."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# 1.4826 * MAD estimates the standard deviation of normal noise; timing noise is right-skewed
# (preemption, page-cache hiccups), so samples beyond k robust sigmas are dropped before the median.
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class Summary:
    median: float
    mad: float  # median absolute deviation of the kept samples
    kept: int
    total: int


def mad(values: np.ndarray) -> float:
    v = np.asarray(values, dtype=float)
    return float(np.median(np.abs(v - np.median(v)))) if v.size else 0.0


def reject_outliers(values: list[float] | np.ndarray, k: float = 3.5) -> np.ndarray:
    """Samples within k robust sigmas of the median (all of them when the MAD is zero)."""
    v = np.asarray(values, dtype=float)
    if v.size < 3:
        return v
    med = np.median(v)
    scale = MAD_TO_SIGMA * mad(v)
    if scale == 0.0:
        # More than half the samples are identical: keep those, drop anything else as an outlier.
        return v[v == med] if np.count_nonzero(v == med) * 2 > v.size else v
    return v[np.abs(v - med) <= k * scale]


def summarize(values: list[float] | np.ndarray, k: float = 3.5) -> Summary:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("summarize: no samples")
    kept = reject_outliers(v, k)
    return Summary(median=float(np.median(kept)), mad=mad(kept), kept=int(kept.size), total=int(v.size))
