"""Scalar-or-array arithmetic for the cost model: each function takes Python numbers (predict(), pure Python
for speed) or numpy arrays (the vectorised sweep over r)."""

from __future__ import annotations

import math

import numpy as np

Num = float | np.ndarray


def is_array(x: object) -> bool:
    return type(x) is np.ndarray


def vmin(a: Num, b: Num) -> Num:
    return np.minimum(a, b) if type(a) is np.ndarray or type(b) is np.ndarray else min(a, b)


def vmax(a: Num, b: Num) -> Num:
    return np.maximum(a, b) if type(a) is np.ndarray or type(b) is np.ndarray else max(a, b)


def vceil(a: Num) -> Num:
    return np.ceil(a) if type(a) is np.ndarray else float(math.ceil(a))
