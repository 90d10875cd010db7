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
    P(A >= j) = prod_{i<j} a_i. What growth needs of it: where the first start more than g rows past
    a start lands (g = the rows a growth leaves beyond the next q, or the prefill's slack)."""

    E: float
    excess_cdf: np.ndarray  # [G + 1, q + 1]: P(first start past g lands within x rows of g), x = 0..q
    excess_mean: np.ndarray  # [G + 1] mean of that excess
    excess_var: np.ndarray  # [G + 1] its variance

    def __post_init__(self) -> None:  # plain lists for scalar calls: numpy's per-call cost dominates there
        object.__setattr__(self, "_rows", self.excess_cdf.tolist())
        object.__setattr__(self, "_mean", self.excess_mean.tolist())
        object.__setattr__(self, "_var", self.excess_var.tolist())

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def of(accept: tuple[float, ...], gamma: int) -> Renewal:
        q, at_least = gamma + 1, reach(accept, gamma)
        pa = np.array(at_least) - np.array(at_least[1:] + [0.0])  # P(A = a), a = 1..q
        # h[x] = P(some start lands exactly x rows past a start): 1 / E once mixed, which takes long
        # when A is nearly always q (starts nearly periodic); walk until settled, at most _SPAN rows
        E, h = float(sum(at_least)), [1.0]
        rev = pa[::-1].tolist()  # rev[q - a] = P(A = a)
        while len(h) <= 8 * q or (len(h) <= _SPAN and max(abs(v * E - 1.0) for v in h[-q:]) > 1e-4):
            x = len(h)
            h.append(sum(w * v for w, v in zip(rev[max(q - x, 0):], h[max(x - q, 0):])))
        hv, span = np.array(h), len(h) - 1  # rows past span use row span
        pdf = np.zeros((span + 1, q + 1))  # pdf[g, j]: the first start past g lands j rows past it
        for d in range(q):  # from the last start at g - d, one jump of d + j rows
            src = np.concatenate([np.zeros(d), hv[:span + 1 - d]])  # h[g - d]
            pdf[:, 1:q - d + 1] += src[:, None] * pa[d:][None, :]
        j = np.arange(q + 1, dtype=np.float64)
        mean = pdf @ j
        return Renewal(E, np.cumsum(pdf, axis=1), mean, pdf @ (j * j) - mean * mean)

    def _row(self, g: Num) -> Num:
        last = len(self.excess_mean) - 1
        return np.minimum(g, last).astype(np.int64) if is_array(g) else int(min(g, last))

    def row(self, g: float) -> list[float]:
        """The overshoot's distribution function past g (at x = 0..q), as a list."""
        return self._rows[self._row(g)]  # type: ignore[attr-defined]

    def passage(self, g: Num) -> tuple[Num, Num]:
        """(mean, variance) of the rows from a start to the first start more than g rows past it."""
        i = self._row(g)
        if is_array(g):
            return g + self.excess_mean[i], self.excess_var[i]
        return g + self._mean[i], self._var[i]  # type: ignore[attr-defined]

    def cdf(self, g: Num, x: Num) -> Num:
        """P(the first start more than g rows past a start lies within x rows past g), linear between
        integers (the thresholds it is asked about sit at expected, fractional, positions)."""
        if not (is_array(x) or is_array(g)):
            return row_at(self.row(g), x)
        q = self.excess_cdf.shape[1] - 1
        x = np.clip(x, 0.0, float(q))
        i = np.broadcast_to(self._row(g), np.shape(x))
        stationary = self.excess_cdf[-1]  # most rows of a sweep over r: one interp, no gather
        out = np.interp(x, np.arange(q + 1, dtype=np.float64), stationary)
        near = i < len(self.excess_mean) - 1
        if near.any():
            xn, i_n = x[near], i[near]
            x0 = np.minimum(np.floor(xn), q - 1).astype(np.int64)
            lo, hi = self.excess_cdf[i_n, x0], self.excess_cdf[i_n, x0 + 1]
            out[near] = lo + (hi - lo) * (xn - x0)
        return out


def row_at(row: list[float], x: float) -> float:
    """An overshoot distribution function (at x = 0..q) at a real x: 0 below, 1 past q, linear between."""
    if x <= 0.0:
        return 0.0
    if x >= len(row) - 1:
        return 1.0
    x0 = int(x)
    return row[x0] + (row[x0 + 1] - row[x0]) * (x - x0)


_SPAN = 4096  # rows of the overshoot table at most
