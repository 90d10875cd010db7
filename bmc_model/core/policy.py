"""Cache policies: a growth rule (how capacity grows) and a width rule (rows attention reads).

Growth "static" and "reserve" both allocate the largest capacity once. Static is zero-filled (its padded or
pad-P width reads rows never written, which must be finite), so all of it is resident from the start;
reserve is lazily backed (torch.empty: the OS maps a page when it is first written) and attends exact-width
views, so it holds only the rows written. Static with exact width is reserve.

The model (events.py) and the runtime (runtime/cache.py) both obey exactly these rules:

- capacity after prefill of P rows, C0 = initial_capacity(P, cap)
- before writing q rows at valid length n: if n + q > C, C <- grown_capacity(n, q, C, cap)
- attention reads width(n, q, C) rows, masked beyond n + q when that is more than n + q

`cap` is the largest capacity ever needed: final length N (or, where the output length is unknown,
prompt + max_new: Workload.max_len) plus gamma draft rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from bmc_model.core import bounds
from bmc_model.core.errors import BMCError
from bmc_model.core.num import Num, iceil, is_array, vmax, vmin

Growth = Literal["fixed", "geometric", "static", "reserve"]
Width = Literal["padded", "exact", "pad"]


@dataclass(frozen=True)
class Policy:
    growth: Growth = "fixed"
    r: int = 1  # rows added per growth event (fixed)
    factor: float = 2.0  # capacity multiplier per growth event (geometric)
    width: Width = "exact"
    pad: int = 256  # attention width rounded up to a multiple of this (width "pad")

    def __post_init__(self) -> None:
        if self.growth not in ("fixed", "geometric", "static", "reserve"):
            raise BMCError(f"unknown growth {self.growth!r} (fixed, geometric, static, reserve)")
        if self.width not in ("padded", "exact", "pad"):
            raise BMCError(f"unknown width {self.width!r} (padded, exact, pad)")
        if self.growth == "static" and self.width == "exact":
            object.__setattr__(self, "growth", "reserve")  # nothing reads an unwritten row: no zero fill
        if self.growth == "reserve" and self.width != "exact":
            raise BMCError(f"reserve attends exact-width views (width {self.width!r} reads rows never written, "
                           "which must be zero-filled: that is static growth)")
        r = bounds.int_in("r", self.r, 1, bounds.ROWS_MAX)
        pad = bounds.int_in("pad", self.pad, 1, bounds.ROWS_MAX)
        factor = bounds.factor(self.factor) if self.growth == "geometric" else 2.0
        # A field the rule does not read is reset to its default, so that two policies that behave alike
        # compare (and hash) alike and every label parses back to an equal Policy.
        object.__setattr__(self, "r", r if self.growth == "fixed" else 1)
        object.__setattr__(self, "factor", factor)
        object.__setattr__(self, "pad", pad if self.width == "pad" else 256)

    @property
    def width_label(self) -> str:
        return f"pad-{self.pad}" if self.width == "pad" else self.width

    @property
    def preallocated(self) -> bool:
        """The largest capacity is allocated once, at the prefill: the cache never grows."""
        return self.growth in ("static", "reserve")

    @property
    def hf_masked(self) -> bool:
        """Under transformers (BMCCache), the decode step gets a mask: widths past n + q need one, and a
        preallocated cache takes one, since with no mask transformers hands grouped K/V to SDPA's slower
        enable_gqa path on the CPU (docs/results.md#transformers-attention-paths). hf/layer.py obeys this."""
        return self.width != "exact" or self.preallocated

    @property
    def zero_filled(self) -> bool:
        """Attention reads rows past the valid ones (padded, pad-P), so every buffer is zero-filled at
        allocation: resident from the start, whatever the allocator backs lazily."""
        return self.width != "exact"

    @property
    def is_cat(self) -> bool:
        """Fixed r=1 with exact width is exactly HF DynamicCache's torch.cat growth."""
        return bool(self.cat_at(self.r))

    def cat_at(self, r: Num) -> Num:
        """1.0 where this policy's growth with r rows (a number, or an array: a sweep of r) is torch.cat's,
        else 0.0: the one place the rule is written."""
        if self.growth != "fixed" or self.width != "exact":
            return 0.0
        return (r == 1) * 1.0

    @property
    def label(self) -> str:
        if self.growth == "reserve":
            return "reserve"
        if self.growth == "static":
            rule = "static"
        elif self.growth == "geometric":
            rule = f"geometric x{_number(self.factor)}"
        else:
            rule = f"r={self.r}"
        return f"{rule} {self.width_label}"

    def initial_capacity(self, prompt: Num, cap: Num) -> Num:
        """Ints in, an int out (the runtime sizes tensors with it); arrays of prompts and caps (the model over
        many requests) alike."""
        if self.preallocated:
            return cap
        if self.growth == "geometric":
            return vmin(cap, vmax(prompt + 1, iceil(prompt * self.factor)))
        if self.is_cat:
            return vmin(cap, prompt)  # torch.cat: the prefill's P rows, no spare row
        return vmin(cap, prompt + self.r)

    def grown_capacity(self, n: Num, q: int, capacity: Num, cap: Num) -> Num:
        """Capacity after a growth event triggered by writing q rows at valid length n (arrays: the caller
        keeps n + q within cap)."""
        if not (is_array(n) or is_array(cap)) and n + q > cap:
            raise BMCError(f"writing {q} rows at length {n} exceeds the cache's maximum length {cap}")
        if self.preallocated:
            return cap
        if self.growth == "geometric":
            return vmin(cap, vmax(n + q, iceil(capacity * self.factor)))
        return vmin(cap, n + max(self.r, q))

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
    "reserve": Policy("reserve"),  # one lazily backed buffer of the largest length, exact views (vAttention's idea)
}


def _number(x: float) -> str:
    """The factor as labels print it: short where that loses nothing (x2, x1.5), else every digit."""
    short = f"{x:g}"
    return short if float(short) == x else repr(x)


WIDTH_HELP = "padded, exact, pad or pad-P, e.g. pad-256"
_PAD_P = re.compile(r"pad-([0-9]+)", re.ASCII)


def parse_width(text: object, pad: int = 256) -> tuple[Width, int]:
    """A width label, any case: 'padded', 'exact', 'pad-P' (what Policy.width_label prints) or 'pad' (rounded
    up to `pad` rows). Returns (Policy.width, Policy.pad)."""
    if not isinstance(text, str):
        raise BMCError(f"width must be one of {WIDTH_HELP}, got {text!r} ({type(text).__name__})")
    key = text.strip().lower()
    if key in ("padded", "exact"):
        return key, 256  # type: ignore[return-value]
    if key == "pad":
        return "pad", pad
    m = _PAD_P.fullmatch(key)
    if m and int(m.group(1)) >= 1:
        return "pad", int(m.group(1))
    raise BMCError(f"unknown width {text!r} ({WIDTH_HELP})")


@dataclass(frozen=True)
class _Rule:
    """A policy as text gives it: r and width None where the text leaves them to the caller's r and width
    (the width then defaults to `default_width`), set where the text fixes them."""

    growth: Growth
    r: int | None = None
    factor: float = 2.0
    width: Width | None = None
    pad: int = 256
    default_width: Width = "exact"

    @classmethod
    def of(cls, pol: Policy) -> _Rule:
        return cls(pol.growth, pol.r if pol.growth == "fixed" else None, pol.factor, pol.width, pol.pad)

    @classmethod
    def named(cls, pol: Policy) -> _Rule:
        """A named policy fixes its r; its width is a default a given width replaces (static with width exact
        is reserve)."""
        return cls(pol.growth, pol.r if pol.growth == "fixed" else None, pol.factor, None, pol.pad, pol.width)

    def complete(self, r: object, width: object, pad: int, text: str) -> Policy:
        if r is not None:
            if self.growth != "fixed":
                how = "grows by a factor" if self.growth == "geometric" else "allocates seq + gamma rows once"
                raise BMCError(f"policy {text!r} {how} and takes no r (r={r!r}): give r without a policy, "
                               "or policy 'fixed' with r")
            if self.r is not None and self.r != r:
                raise BMCError(f"policy {text!r} grows by r={self.r}, which conflicts with r={r!r}: give one")
        rr = self.r if r is None else r
        if self.growth == "fixed" and rr is None:
            raise BMCError(f"policy {text!r} needs r ({text.split(':')[0]}:R, or r=R beside it)")
        w, p = (self.width or self.default_width, self.pad) if width is None else parse_width(width, pad)
        if width is not None and self.width is not None and (w, p if w == "pad" else 256) != (self.width, self.pad):
            raise BMCError(f"policy {text!r} has width {Policy(width=self.width, pad=self.pad).width_label}, "
                           f"which conflicts with width={width!r}: give one")
        return Policy(self.growth, 1 if rr is None else rr, factor=self.factor, width=w, pad=p)  # type: ignore


_LABEL = re.compile(r"(?:r=(?P<r>\S+)|geometric x(?P<factor>\S+)|(?P<static>static)) (?P<width>\S+)")  # or "reserve"


def _spec_of_label(key: str) -> str:
    """'r=40 exact', 'geometric x2 exact', 'static pad-256' (Policy.label) -> the same as a fixed:R:WIDTH spec."""
    m = _LABEL.fullmatch(" ".join(key.split()))
    if m is None:
        return key
    if m["r"] is not None:
        return f"fixed:{m['r']}:{m['width']}"
    if m["factor"] is not None:
        return f"geometric:{m['factor']}:{m['width']}"
    return f"static:{m['width']}"


def _rule(text: str) -> _Rule:
    key = _spec_of_label(text.strip().lower())
    if key in NAMED:
        return _Rule.named(NAMED[key])
    head, *rest = key.split(":")
    if len(rest) > 2 or head not in ("bmc", "fixed", "geometric", "static", "reserve") or "" in rest:
        raise ValueError(key)
    first = rest[0] if rest and rest[0][:1].isdigit() else None
    wtext = rest[-1] if rest and rest[-1] is not first else None
    if len(rest) == 2 and (first is None or wtext is None):
        raise ValueError(key)
    width, pad = parse_width(wtext) if wtext is not None else (None, 256)
    if head in ("bmc", "fixed"):
        rr = None if first is None else int(first)
        return _Rule("fixed", rr, width=width, pad=pad, default_width="padded" if head == "bmc" else "exact")
    if head == "geometric":
        return _Rule("geometric", factor=2.0 if first is None else float(first), width=width, pad=pad)
    if first is not None:
        raise ValueError(key)
    if head == "reserve":
        return _Rule("reserve", width=width, pad=pad)
    return _Rule("static", width=width, pad=pad, default_width="padded")


POLICY_HELP = (f"named: {', '.join(NAMED)}; bmc:R; fixed:R:WIDTH, geometric:G:WIDTH, static:WIDTH; or a label "
               "as recommend prints it: 'r=R WIDTH', 'geometric xG WIDTH', 'static WIDTH', 'reserve'")


def parse_policy(text: object, r: object = None, width: object = None, pad: int = 256) -> Policy:
    """A policy from text, any case: a name ('dynamic', 'static', 'mlx', ...), a spec ('fixed:R:WIDTH',
    'geometric:G:WIDTH', 'static:WIDTH', 'bmc:R': fixed growth, padded unless ':WIDTH' follows) or a label
    as Policy.label prints it ('r=40 exact', 'geometric x2 exact', 'static padded'), which parses back to an
    equal Policy.

    R is r, G the factor, WIDTH a width label (parse_width). `r` and `width`, where given, complete what the
    text leaves open ('bmc' needs r; a named policy's width is a default) and must agree with what it fixes.
    """
    if isinstance(text, Policy):
        return _Rule.of(text).complete(r, width, pad, text.label)
    if not isinstance(text, str):
        raise BMCError(f"policy must be a Policy or a name/spec/label ({POLICY_HELP}), got {text!r}")
    try:
        rule = _rule(text)
    except BMCError as err:  # a precise reason (an unknown width in the spec), said of the whole text
        raise BMCError(f"unknown policy {text!r}: {err}") from None
    except (ValueError, IndexError, OverflowError):
        raise BMCError(f"unknown policy {text!r} ({POLICY_HELP})") from None
    return rule.complete(r, width, pad, text)
