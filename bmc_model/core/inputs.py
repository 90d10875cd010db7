"""One user argument read into the type the model computes with: an integer, a real, a name, a path, a size.

Python and numpy scalars are accepted alike (numpy's are what schedulers hold); anything else is a one-line
BMCError that names the argument, never a TypeError from deep inside the model. Ranges live in bounds.py.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np

from bmc_model.core.errors import BMCError


def _kind(v: object) -> str:
    return f"{v!r} ({type(v).__name__})"


def is_integer(v: object) -> bool:
    """int or a numpy integer, never a bool (True is an int to Python, never a length to a user)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def is_real(v: object) -> bool:
    return is_integer(v) or (isinstance(v, (float, np.floating)) and not isinstance(v, bool))


def integer(name: str, v: object) -> int:
    if not is_integer(v):
        raise BMCError(f"{name} must be an integer, got {_kind(v)}")
    return int(v)  # type: ignore[call-overload]


def real(name: str, v: object) -> float:
    """A finite real number (NaN and infinities mean nothing as a rate, a ratio or a size)."""
    if not is_real(v):
        raise BMCError(f"{name} must be a number, got {_kind(v)}")
    x = float(v)  # type: ignore[arg-type]
    if not math.isfinite(x):
        raise BMCError(f"{name} must be a finite number, got {v!r}")
    return x


def name(arg: str, v: object, what: str) -> str:
    """A non-empty string, stripped; `what` says what it names (for the message)."""
    if not isinstance(v, str):
        raise BMCError(f"{arg} must be {what}, got {_kind(v)}")
    text = v.strip()
    if not text:
        raise BMCError(f"{arg} must be {what}, got an empty string")
    return text


def path(arg: str, v: object) -> str:
    """A file path (str or os.PathLike), as a string."""
    if isinstance(v, os.PathLike):
        v = os.fspath(v)
    if isinstance(v, bytes) or not isinstance(v, str):
        raise BMCError(f"{arg} must be a file path, got {_kind(v)}")
    if not v.strip():
        raise BMCError(f"{arg} must be a file path, got an empty string")
    if any(ord(c) < 32 for c in v):  # NUL is refused by the OS with a ValueError; a newline is never meant
        raise BMCError(f"{arg} must be a file path, got {v!r} (a control character)")
    return v


SIZE_HELP = "K/M/G/T are 10^3, 10^6, 10^9, 10^12 bytes; Ki/Mi/Gi/Ti 2^10, 2^20, 2^30, 2^40; a final B is optional"
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmgt]i?)?b?\s*")


def parse_bytes(text: str | None) -> float | None:
    """'8G', '512MiB', '1e9' -> bytes (the CLI's --max-mem and the API's max_mem share it)."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise BMCError(f"a size must be a string such as 8G or 512MiB, got {_kind(text)}")
    m = _SIZE.fullmatch(text.lower())
    if not m:
        raise BMCError(f"cannot read a size from {text!r} (e.g. 8G, 512MiB, 1e9)")
    value = float(m.group(1)) * _UNITS[m.group(2) or ""]
    if value <= 0:
        raise BMCError(f"size must be positive, got {text!r}")
    if not math.isfinite(value):
        raise BMCError(f"size too large, got {text!r}")
    return value


def size(arg: str, v: object) -> float | None:
    """A byte count: a number, or a string with a unit as parse_bytes reads it; None stays None."""
    if v is None:
        return None
    if isinstance(v, str):
        try:
            return parse_bytes(v)
        except BMCError as err:  # say which argument the size was for
            raise BMCError(f"{arg}: {err}") from None
    x = real(arg, v)
    if not x > 0:
        raise BMCError(f"{arg} must be a positive number of bytes, got {v!r}")
    return x


def format_bytes(n: float) -> str:
    """Bytes in binary units, 3 significant figures: messages that say how much."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} bytes"
