"""A profile term: a cost piecewise affine in the bytes x one call touches, t(x) = c0[i] + slope[i] x on
segment i, split at ascending knots; and its JSON form (profile.py holds the schema)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bmc_model.core.errors import BMCError


@dataclass(frozen=True)
class Term:
    c0: tuple[float, ...]
    slope: tuple[float, ...]
    knots: tuple[float, ...] = ()
    r2: float | None = None
    ci95: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if len(self.c0) != len(self.knots) + 1 or len(self.slope) != len(self.c0):
            raise BMCError("profile term: need len(c0) == len(slope) == len(knots) + 1")
        if list(self.knots) != sorted(self.knots):
            raise BMCError("profile term: knots must ascend")

    def __call__(self, x: np.ndarray | float) -> np.ndarray | float:
        if not self.knots:
            return self.c0[0] + self.slope[0] * x
        i = np.searchsorted(np.asarray(self.knots), x, side="right")
        return np.asarray(self.c0)[i] + np.asarray(self.slope)[i] * x

    def segment(self, x: float) -> tuple[float, float]:
        """(c0, slope) of the segment holding x: used by the closed-form optimum."""
        i = int(np.searchsorted(np.asarray(self.knots), x, side="right"))
        return self.c0[i], self.slope[i]

    def to_dict(self) -> dict:
        d: dict = {"c0": list(self.c0), "slope": list(self.slope), "knots": list(self.knots)}
        if self.r2 is not None:
            d["r2"] = self.r2
        if self.ci95:
            d["ci95"] = [list(ci) for ci in self.ci95]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Term:
        return cls(c0=tuple(float(v) for v in d["c0"]), slope=tuple(float(v) for v in d["slope"]),
                   knots=tuple(float(v) for v in d.get("knots", ())),
                   r2=None if d.get("r2") is None else float(d["r2"]),
                   ci95=tuple((float(lo), float(hi)) for lo, hi in d.get("ci95", ())))
