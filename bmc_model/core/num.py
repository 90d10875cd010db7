"""Scalar-or-array arithmetic for the cost model: each function takes Python numbers (predict(), pure Python
for speed) or numpy arrays (the vectorised sweep over r, over output lengths, or over many requests at once:
core/many.py), with the same operations in the same order, so that both give the same numbers."""

from __future__ import annotations

import math

import numpy as np

Num = float | np.ndarray


def is_array(x: object) -> bool:
    return type(x) is np.ndarray


def vmin(x: Num, y: Num) -> Num:
    return np.minimum(x, y) if type(x) is np.ndarray or type(y) is np.ndarray else min(x, y)


def vmax(x: Num, y: Num) -> Num:
    return np.maximum(x, y) if type(x) is np.ndarray or type(y) is np.ndarray else max(x, y)


def vfloat(x: object) -> Num:
    """float(x), or float64 for an array (a workload's seq over many output lengths at once)."""
    return np.asarray(x, dtype=np.float64) if type(x) is np.ndarray else float(x)  # type: ignore[arg-type]


def vceil(x: Num) -> Num:
    return np.ceil(x) if type(x) is np.ndarray else float(math.ceil(x))


def iceil(x: Num) -> Num:
    """The ceiling as an int for a Python number (a row count the runtime sizes tensors with), else float64."""
    return np.ceil(x) if type(x) is np.ndarray else math.ceil(x)


def vwhere(cond: object, x: Num, y: Num) -> Num:
    """x where cond else y, elementwise for arrays (both sides are evaluated there)."""
    if type(cond) is np.ndarray:
        return np.where(cond, x, y)
    return x if cond else y


def vany(x: object) -> bool:
    return bool(np.any(x)) if type(x) is np.ndarray else bool(x)
