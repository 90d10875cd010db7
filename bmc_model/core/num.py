"""Scalar-or-array arithmetic for the cost model: each function takes Python numbers (predict(), pure Python
for speed) or numpy arrays (the vectorised sweep over r)."""

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


def vceil(x: Num) -> Num:
    return np.ceil(x) if type(x) is np.ndarray else float(math.ceil(x))
