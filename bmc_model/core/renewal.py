"""Speculative iteration starts as a renewal process (docs/model.md, "Growth events under speculative
decoding"): where the first start more than a gap past another lands."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from bmc_model.core.num import Num, is_array
from bmc_model.core.workload import reach


@dataclass(frozen=True)
class Renewal:
    """SD iteration starts as a renewal process: each iteration advances A rows, A in 1..q with
    P(A >= j) = prod_{i<j} a_i. What growth needs of it: where the first start more than gap rows past
    a start lands (gap = the rows a growth leaves beyond the next q, or the prefill's slack)."""

    E: float
    excess_cdf: np.ndarray  # [span + 1, q + 1], row gap: P(the first start past gap lands within y rows of it)
    excess_mean: np.ndarray  # [span + 1] mean of that excess
    excess_var: np.ndarray  # [span + 1] its variance

    def __post_init__(self) -> None:  # plain lists for scalar calls: numpy's per-call cost dominates there
        object.__setattr__(self, "_rows", self.excess_cdf.tolist())
        object.__setattr__(self, "_mean", self.excess_mean.tolist())
        object.__setattr__(self, "_var", self.excess_var.tolist())

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def of(accept: tuple[float, ...], gamma: int) -> Renewal:
        q, at_least = gamma + 1, reach(accept, gamma)
        pa = np.array(at_least) - np.array(at_least[1:] + [0.0])  # P(A = j), j = 1..q
        # h[y] = P(some start lands exactly y rows past a start): 1 / E once mixed, which takes long
        # when A is nearly always q (starts nearly periodic); walk until settled, at most _SPAN rows
        E, h = float(sum(at_least)), [1.0]
        rev = pa[::-1].tolist()  # rev[q - j] = P(A = j)
        while len(h) <= 8 * q or (len(h) <= _SPAN and max(abs(v * E - 1.0) for v in h[-q:]) > 1e-4):
            y = len(h)
            h.append(sum(pr * hy for pr, hy in zip(rev[max(q - y, 0):], h[max(y - q, 0):])))
        hv, span = np.array(h), len(h) - 1  # rows past span use row span
        pdf = np.zeros((span + 1, q + 1))  # pdf[gap, j]: the first start past gap lands j rows past it
        for back in range(q):  # from the last start at gap - back, one jump of back + j rows
            src = np.concatenate([np.zeros(back), hv[:span + 1 - back]])  # h[gap - back]
            pdf[:, 1:q - back + 1] += src[:, None] * pa[back:][None, :]
        j = np.arange(q + 1, dtype=np.float64)
        mean = pdf @ j
        return Renewal(E, np.cumsum(pdf, axis=1), mean, pdf @ (j * j) - mean * mean)

    def _row(self, gap: Num) -> Num:
        last = len(self.excess_mean) - 1
        return np.minimum(gap, last).astype(np.int64) if is_array(gap) else int(min(gap, last))

    def row(self, gap: float) -> list[float]:
        """The overshoot's distribution function past gap (at y = 0..q), as a list."""
        return self._rows[self._row(gap)]  # type: ignore[attr-defined]

    def passage(self, gap: Num) -> tuple[Num, Num]:
        """(mean, variance) of the rows from a start to the first start more than gap rows past it."""
        i = self._row(gap)
        if is_array(gap):
            return gap + self.excess_mean[i], self.excess_var[i]
        return gap + self._mean[i], self._var[i]  # type: ignore[attr-defined]

    def cdf(self, gap: Num, y: Num) -> Num:
        """P(the first start more than gap rows past a start lies within y rows past gap), linear between
        integers (the thresholds it is asked about sit at expected, fractional, positions)."""
        if not (is_array(y) or is_array(gap)):
            return row_at(self.row(gap), y)
        q = self.excess_cdf.shape[1] - 1
        y = np.minimum(np.maximum(y, 0.0), float(q))
        rows = self._row(gap)
        stationary = self.excess_cdf[-1]  # most rows of a sweep over r: one interp, no gather
        out = np.interp(y, np.arange(q + 1, dtype=np.float64), stationary)
        near_rows = rows < len(self.excess_mean) - 1  # tested on the gaps, before broadcasting them to y
        if np.any(near_rows):
            near = np.broadcast_to(near_rows, np.shape(y))
            yn, i_n = y[near], np.broadcast_to(rows, np.shape(y))[near]
            y0 = np.minimum(np.floor(yn), q - 1).astype(np.int64)
            lo, hi = self.excess_cdf[i_n, y0], self.excess_cdf[i_n, y0 + 1]
            out[near] = lo + (hi - lo) * (yn - y0)
        return out


def row_at(row: list[float], y: float) -> float:
    """An overshoot distribution function (at y = 0..q) at a real y: 0 below, 1 past q, linear between."""
    if y <= 0.0:
        return 0.0
    if y >= len(row) - 1:
        return 1.0
    y0 = int(y)
    return row[y0] + (row[y0 + 1] - row[y0]) * (y - y0)


_SPAN = 4096  # rows of the overshoot table at most
