"""Cache policies: a growth rule (how capacity grows) and a width rule (rows attention reads).

The model (events.py) and the runtime (runtime/cache.py) both obey exactly these rules:

- capacity after prefill of P rows, C0 = initial_capacity(P, cap)
- before writing q rows at valid length n: if n + q > C, C <- grown_capacity(n, q, C, cap)
- attention reads width(n, q, C) rows, masked beyond n + q when that is more than n + q

`cap` is the largest capacity ever needed: final length N plus gamma draft rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from bmc_model.core.errors import BMCError

Growth = Literal["fixed", "geometric", "static"]
Width = Literal["padded", "exact", "pad"]


@dataclass(frozen=True)
class Policy:
    growth: Growth = "fixed"
    r: int = 1  # rows added per growth event (fixed)
    factor: float = 2.0  # capacity multiplier per growth event (geometric)
    width: Width = "exact"
    pad: int = 256  # attention width rounded up to a multiple of this (width "pad")

    def __post_init__(self) -> None:
        if self.growth not in ("fixed", "geometric", "static"):
            raise BMCError(f"unknown growth {self.growth!r} (fixed, geometric, static)")
        if self.width not in ("padded", "exact", "pad"):
            raise BMCError(f"unknown width {self.width!r} (padded, exact, pad)")
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise BMCError(f"r must be a positive integer, got {self.r!r}")
        if self.growth == "geometric" and not self.factor > 1.0:
            raise BMCError(f"geometric factor must be > 1, got {self.factor}")
        if self.pad < 1:
            raise BMCError(f"pad must be a positive integer, got {self.pad}")

    @property
    def width_label(self) -> str:
        return f"pad-{self.pad}" if self.width == "pad" else self.width

    @property
    def is_cat(self) -> bool:
        """Fixed r=1 with exact width is exactly HF DynamicCache's torch.cat growth."""
        return self.growth == "fixed" and self.r == 1 and self.width == "exact"

    @property
    def label(self) -> str:
        if self.growth == "static":
            rule = "static"
        elif self.growth == "geometric":
            rule = f"geometric x{self.factor:g}"
        else:
            rule = f"r={self.r}"
        return f"{rule} {self.width_label}"

    def initial_capacity(self, prompt: int, cap: int) -> int:
        if self.growth == "static":
            return cap
        if self.growth == "geometric":
            return min(cap, max(prompt + 1, math.ceil(prompt * self.factor)))
        if self.is_cat:
            return min(cap, prompt)  # torch.cat: the prefill's P rows, no spare row
        return min(cap, prompt + self.r)

    def grown_capacity(self, n: int, q: int, capacity: int, cap: int) -> int:
        """Capacity after a growth event triggered by writing q rows at valid length n."""
        if n + q > cap:
            raise BMCError(f"writing {q} rows at length {n} exceeds the cache's maximum length {cap}")
        if self.growth == "static":
            return cap
        if self.growth == "geometric":
            return min(cap, max(n + q, math.ceil(capacity * self.factor)))
        return min(cap, n + max(self.r, q))

    def width_rows(self, n: int, q: int, capacity: int) -> int:
        if self.width == "padded":
            return capacity
        if self.width == "exact":
            return n + q
        return min(capacity, -(-(n + q) // self.pad) * self.pad)


NAMED = {
    "dynamic": Policy("fixed", 1, width="exact"),  # HF DynamicCache: torch.cat every token
    "static": Policy("static", width="padded"),  # HF StaticCache: whole buffer, masked
    "geometric": Policy("geometric", factor=2.0, width="exact"),  # rten: doubling capacity
    "mlx": Policy("fixed", 256, width="exact"),  # mlx-lm KVCache: step 256, returns a view
    "llamacpp": Policy("static", width="pad", pad=256),  # llama.cpp: n_ctx buffer, pad 256
    "floor": Policy("static", width="exact"),  # preallocated exact views: zero management
}


def parse_policy(text: str, r: int | None = None) -> Policy:
    """'dynamic', 'static', 'mlx', ... or 'fixed:R:WIDTH', 'geometric:G:WIDTH', 'static:WIDTH'.

    R is r, G the factor, WIDTH padded, exact or pad-P. 'bmc' is fixed r with padded width (needs r).
    """
    key = text.strip().lower()
    if key in NAMED:
        return NAMED[key]
    parts = key.split(":")
    try:
        if parts[0] == "bmc":
            rr = int(parts[1]) if len(parts) > 1 else r
            if rr is None:
                raise BMCError("policy 'bmc' needs r (bmc:R)")
            return Policy("fixed", rr, width="padded")
        width, pad = _parse_width(parts[-1]) if len(parts) > 1 and not parts[-1][0].isdigit() else ("exact", 256)
        if parts[0] == "fixed":
            rr = int(parts[1]) if len(parts) > 1 and parts[1][0].isdigit() else r
            if rr is None:
                raise BMCError("policy 'fixed' needs r (fixed:R:WIDTH)")
            return Policy("fixed", rr, width=width, pad=pad)
        if parts[0] == "geometric":
            factor = float(parts[1]) if len(parts) > 1 and parts[1][0].isdigit() else 2.0
            return Policy("geometric", factor=factor, width=width, pad=pad)
        if parts[0] == "static":
            return Policy("static", width=width, pad=pad)
    except BMCError:
        raise
    except (ValueError, IndexError):
        pass
    raise BMCError(f"unknown policy {text!r} (named: {', '.join(NAMED)}, bmc:R, or fixed:R:WIDTH, "
                   "geometric:G:WIDTH, static:WIDTH with WIDTH padded|exact|pad-P)")


def _parse_width(text: str) -> tuple[Width, int]:
    if text in ("padded", "exact"):
        return text, 256  # type: ignore[return-value]
    if text.startswith("pad-"):
        return "pad", int(text[4:])
    raise ValueError(text)
