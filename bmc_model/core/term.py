"""A profile term: a cost piecewise affine in the bytes x one call touches, t(x) = c0[i] + slope[i] x on
segment i, split at ascending knots; and its JSON form (profile.py holds the schema, profile_check.py what
is physical)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bmc_model.core.errors import BMCError


def as_number(value: object, what: str) -> float:
    """A JSON number as a float. Strings, booleans and null are refused rather than coerced: a profile
    holding "1e-5" or true was not written by bmc-tune, and float() would accept both."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BMCError(f"{what} must be a number, got {_show(value)}")
    try:
        return float(value)
    except OverflowError:  # a JSON integer with hundreds of digits
        raise BMCError(f"{what} is out of range, got {_show(value)}") from None


def as_numbers(value: object, what: str) -> tuple[float, ...]:
    if not isinstance(value, list):
        raise BMCError(f"{what} must be a list of numbers, got {_show(value)}")
    return tuple(as_number(v, f"{what}[{i}]") for i, v in enumerate(value))


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Term:
    c0: tuple[float, ...]
    slope: tuple[float, ...]
    knots: tuple[float, ...] = ()
    r2: float | None = None
    ci95: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if len(self.c0) != len(self.knots) + 1 or len(self.slope) != len(self.c0):
            raise BMCError(f"a term needs len(c0) == len(slope) == len(knots) + 1, got {len(self.c0)}, "
                           f"{len(self.slope)} and {len(self.knots)}")
        if list(self.knots) != sorted(self.knots):
            raise BMCError("a term's knots must ascend")

    def __call__(self, x: np.ndarray | float) -> np.ndarray | float:
        if not self.knots:
            return self.c0[0] + self.slope[0] * x
        i = np.searchsorted(np.asarray(self.knots), x, side="right")
        return np.asarray(self.c0)[i] + np.asarray(self.slope)[i] * x

    def segment(self, x: float | np.ndarray) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
        """(c0, slope) of the segment holding x (an array: each element's): used by the closed-form optimum."""
        i = np.searchsorted(np.asarray(self.knots), x, side="right")
        if isinstance(x, np.ndarray):
            return np.asarray(self.c0)[i], np.asarray(self.slope)[i]
        return self.c0[int(i)], self.slope[int(i)]

    def to_dict(self) -> dict:
        d: dict = {"c0": list(self.c0), "slope": list(self.slope), "knots": list(self.knots)}
        if self.r2 is not None:
            d["r2"] = self.r2
        if self.ci95:
            d["ci95"] = [list(ci) for ci in self.ci95]
        return d

    @classmethod
    def from_dict(cls, d: object) -> Term:
        """Types and lengths only; whether the numbers are physical is profile_check's to say."""
        if not isinstance(d, dict):
            raise BMCError(f"must be an object with c0, slope and knots, got {_show(d)}")
        for key in ("c0", "slope"):
            if key not in d:
                raise BMCError(f"missing {key!r}")
        ci95 = d.get("ci95", [])
        if not isinstance(ci95, list) or any(not isinstance(ci, list) or len(ci) != 2 for ci in ci95):
            raise BMCError(f"ci95 must be a list of [lo, hi] pairs, got {_show(ci95)}")
        return cls(c0=as_numbers(d["c0"], "c0"), slope=as_numbers(d["slope"], "slope"),
                   knots=as_numbers(d.get("knots", []), "knots"),
                   r2=None if d.get("r2") is None else as_number(d["r2"], "r2"),
                   ci95=tuple((lo, hi) for lo, hi in (as_numbers(ci, f"ci95[{i}]") for i, ci in enumerate(ci95))))
