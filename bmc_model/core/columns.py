"""Many requests as columns: each array-able argument read into a scalar or a 1-d array, broadcast to one
length, the categorical ones (policy, width, acceptance) as codes; predict()'s bounds checked over every
request at once, and a bad request named by its index with predict()'s own message for it alone
(predict_many and choose_many both read their requests here)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from bmc_model.core import bounds
from bmc_model.core.errors import BMCError
from bmc_model.core.inputs import integer, is_integer
from bmc_model.core.policy import Policy
from bmc_model.core.predict import predict
from bmc_model.core.profile import Profile
from bmc_model.core.request import DEFAULT_SEQ
from bmc_model.core.specs import ModelSpec

_INT_MAX = 2**62  # an integer column past this is no length (and would overflow int64 arithmetic)


def labels(rules: list[Policy], rule: np.ndarray, r: np.ndarray) -> list[str | None]:
    """Policy.label of each request's rule (a fixed rule at its r; None where rule is -1), built once for each
    distinct (rule, r) rather than once a request."""
    key = (rule.astype(np.int64) + 1) * 2**32 + r.astype(np.int64)
    uniq, inv = np.unique(key, return_inverse=True)
    texts = []
    for k in uniq.tolist():
        i, rr = k // 2**32 - 1, k % 2**32
        pol = None if i < 0 else rules[i]
        texts.append(None if pol is None else (replace(pol, r=rr) if pol.growth == "fixed" else pol).label)
    return np.asarray(texts, dtype=object)[inv.reshape(-1)].tolist()


def _int_column(arg: str, v: object) -> int | np.ndarray | None:
    """None, a Python or numpy integer, or a 1-d array of integers (integral floats accepted)."""
    if v is None or not isinstance(v, (list, tuple, np.ndarray)):
        return None if v is None else integer(arg, v)
    a = np.asarray(v)
    if a.ndim == 0:
        return integer(arg, a.item())
    if a.ndim != 1 or not a.size:
        raise BMCError(f"{arg} must be an integer or a non-empty 1-d array of them, got shape {a.shape}")
    if a.dtype.kind in "iu":
        bad = np.flatnonzero((a < -_INT_MAX) | (a > _INT_MAX))
    elif a.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(a) | (a != np.round(a)) | (np.abs(a) > _INT_MAX))
    else:  # strings, booleans, objects: the first element says what is wrong
        bad = np.arange(a.size)
        for i, x in enumerate(a.tolist()):
            if not is_integer(x):
                bad = np.array([i])
                break
        else:
            bad = np.array([], dtype=np.int64)
            a = np.array(a.tolist(), dtype=np.int64)
    if len(bad):
        i = int(bad[0])
        raise BMCError(f"request {i}: {arg} must be an integer, got {a.tolist()[i]!r}")
    return a.astype(np.int64)


def _text_column(arg: str, v: object) -> tuple[list[object], np.ndarray | None]:
    """(distinct values, codes): a scalar (a Policy, a string or None) is one value and codes None."""
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v.item()
    if not isinstance(v, (list, tuple, np.ndarray)):
        return [v], None
    if isinstance(v, np.ndarray) and v.dtype.kind == "U" and v.ndim == 1 and v.size:
        found = _factorize_text(v)
        if found is not None:
            return found  # type: ignore[return-value]
    items = v.tolist() if isinstance(v, np.ndarray) else list(v)  # Python strings hash fast; numpy's do not
    if not items:
        raise BMCError(f"{arg} must be a value or a non-empty list of them, got an empty list")
    seen: dict[object, int] = {}
    try:
        codes = np.array([seen.setdefault(x, len(seen)) for x in items], dtype=np.int64)
    except TypeError:
        i = next(i for i, x in enumerate(items) if _unhashable(x))
        raise BMCError(f"request {i}: {arg} must be a name or a label, got {items[i]!r}") from None
    return list(seen), codes


def _factorize_text(v: np.ndarray) -> tuple[list[str], np.ndarray] | None:
    """(distinct strings, codes) of a numpy string array by a hash of its characters, in C (a Python dict over
    100,000 numpy strings takes longer than pricing them); None on a hash collision (the caller hashes in
    Python instead)."""
    chars = np.ascontiguousarray(v).view(np.uint32).reshape(len(v), -1).astype(np.uint64)
    weights = (np.arange(1, chars.shape[1] + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)
    distinct, codes = np.unique(chars @ weights, return_inverse=True)  # wraps mod 2^64: a hash
    codes = codes.reshape(-1).astype(np.int64)
    first = np.empty(len(distinct), dtype=np.int64)
    first[codes[::-1]] = np.arange(len(v) - 1, -1, -1)  # of repeated indices the last write stays: the first
    texts = v[first]
    if not np.array_equal(texts[codes], v):
        return None
    return texts.tolist(), codes


def _unhashable(x: object) -> bool:
    try:
        hash(x)
    except TypeError:
        return True
    return False


def _alpha_column(v: object) -> tuple[list[tuple[float, ...]], np.ndarray | None]:
    """(distinct acceptances, codes). A scalar or a list/tuple is predict()'s (one acceptance, or one per draft
    position, for every request); an ndarray is per request: 1-d one rate each, 2-d a row each. NaN: none."""
    if not isinstance(v, np.ndarray) or v.ndim == 0:
        return [bounds.acceptance(v)], None
    if v.ndim > 2 or not v.size or v.dtype.kind not in "iuf":
        raise BMCError(f"alpha as an array must be 1-d (a rate per request) or 2-d (a row per request), of numbers; "
                       f"got {v.dtype} of shape {v.shape}")
    rows = v.astype(np.float64).reshape(len(v), -1)
    none = np.isnan(rows).all(axis=1)
    bad = np.flatnonzero(~none & ~((rows >= 0.0) & (rows < 1.0)).all(axis=1))
    if len(bad):
        i = int(bad[0])
        raise BMCError(f"request {i}: alpha must be in [0, 1), got {rows[i].tolist()}")
    if none.all():  # no request has SD
        return [()], np.zeros(len(rows), dtype=np.int64)
    rows[none] = -1.0  # NaN never equals NaN: one code for every request without SD
    uniq, codes = (np.unique(rows[:, 0], return_inverse=True) if rows.shape[1] == 1 else
                   np.unique(rows, axis=0, return_inverse=True))
    return [() if u.flat[0] < 0 else tuple(np.atleast_1d(u).tolist()) for u in uniq], codes.reshape(-1)


@dataclass
class Columns:
    """The requests as columns: n of each (scalars broadcast), and the categorical ones as codes."""

    n: int
    seq: np.ndarray
    prompt: np.ndarray
    batch: int | np.ndarray
    gamma: np.ndarray
    max_len: np.ndarray | None
    r: np.ndarray | None
    rules: list[tuple[object, object]]  # distinct (policy, width)
    rule_code: np.ndarray
    accepts: list[tuple[float, ...]]
    accept_code: np.ndarray
    given: dict[str, object]  # the arguments as given (for naming a bad element by predict() alone)

    def permuted(self, order: np.ndarray) -> Columns:
        """The numeric columns gathered in `order` (what pricing reads; codes and given stay as they are)."""
        def take(x):
            return x[order] if isinstance(x, np.ndarray) else x
        return replace(self, seq=take(self.seq), prompt=take(self.prompt), batch=take(self.batch),
                       gamma=take(self.gamma), max_len=take(self.max_len), r=take(self.r))

    @property
    def rows(self) -> np.ndarray:
        """The rows each cache is sized for before the drafts: prompt + max_new, else seq (Request.rows)."""
        return self.seq if self.max_len is None else self.max_len


def _length(cols: dict[str, object]) -> int:
    sizes = {k: len(v) for k, v in cols.items() if isinstance(v, np.ndarray) and v.ndim >= 1}
    n = {s for s in sizes.values() if s != 1}
    if len(n) > 1:
        raise BMCError("arrays must have one length (or 1), got " + ", ".join(f"{k} {s}" for k, s in sizes.items()))
    return n.pop() if n else 1


def _full(x: int | np.ndarray, n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(x, dtype=np.int64), (n,))


def columns(seq: object, prompt: object, new_tokens: object, batch: object, r: object, width: object,
             policy: object, gamma: object, alpha: object, max_new: object) -> Columns:
    given = {"seq": seq, "prompt": prompt, "new_tokens": new_tokens, "batch": batch, "r": r, "width": width,
             "policy": policy, "gamma": gamma, "alpha": alpha, "max_new": max_new}
    ints = {k: _int_column(k, given[k]) for k in ("seq", "prompt", "new_tokens", "batch", "r", "gamma", "max_new")}
    pols, pcode = _text_column("policy", policy)
    widths, wcode = _text_column("width", width)
    accepts, acode = _alpha_column(alpha)
    n = _length({**ints, "policy": pcode, "width": wcode, "alpha": acode})
    if new_tokens is not None:
        if seq is not None:
            raise BMCError("give seq or new_tokens, not both (seq = prompt + new_tokens)")
        if prompt is None:
            raise BMCError("new_tokens needs prompt (seq = prompt + new_tokens)")
        ints["seq"] = ints["prompt"] + ints["new_tokens"]  # type: ignore[operator]
    s, p, m = ints["seq"], ints["prompt"], ints["max_new"]
    if m is None:
        s = DEFAULT_SEQ if s is None else s
        p = s // 2 if p is None else p  # type: ignore[operator]
        max_len = None
    else:  # core/request.ends(): the prompt defaults to seq // 2 (1024 without seq), seq to prompt + max_new
        p = (DEFAULT_SEQ // 2 if s is None else s // 2) if p is None else p  # type: ignore[operator]
        max_len = _full(p + m, n)  # type: ignore[operator]
        s = max_len if s is None else s
    pc = np.zeros(n, dtype=np.int64) if pcode is None else np.broadcast_to(pcode, (n,))
    wc = np.zeros(n, dtype=np.int64) if wcode is None else np.broadcast_to(wcode, (n,))
    if pcode is None and wcode is None:  # one rule for all (the common call: no sort needed)
        uniq, rule_code = np.zeros(1, dtype=np.int64), np.zeros(n, dtype=np.int64)
    else:
        uniq, rule_code = np.unique(pc * len(widths) + wc, return_inverse=True)
    rules = [(pols[int(k) // len(widths)], widths[int(k) % len(widths)]) for k in uniq]
    b = ints["batch"]
    return Columns(n, _full(s, n), _full(p, n), 1 if b is None else (_full(b, n) if isinstance(b, np.ndarray) else b),
                    _full(0 if ints["gamma"] is None else ints["gamma"], n), max_len,
                    None if ints["r"] is None else _full(ints["r"], n), rules, rule_code.reshape(-1), accepts,
                    np.zeros(n, dtype=np.int64) if acode is None else np.broadcast_to(acode, (n,)), given)


def element(given: dict[str, object], i: int) -> dict[str, object]:
    """Request i's arguments as predict() takes them."""
    out = {}
    for k, v in given.items():
        if k == "alpha" and isinstance(v, np.ndarray) and v.ndim >= 1:
            row = np.atleast_1d(v[i if len(v) > 1 else 0]).astype(np.float64)
            v = None if np.isnan(row).all() else (row.tolist() if row.size > 1 else float(row[0]))
        elif isinstance(v, (list, tuple, np.ndarray)) and k != "alpha" and np.ndim(v) >= 1:
            v = v[i if len(v) > 1 else 0]
            v = v.item() if isinstance(v, np.generic) else v
        out[k] = v
    if out.get("new_tokens") is not None:
        out["seq"] = int(out["prompt"]) + int(out.pop("new_tokens"))  # type: ignore[call-overload]
    else:
        out.pop("new_tokens", None)
    return out


class Named(Exception):
    """Request `index` is bad, as `fallback` says unless predict() alone says better."""

    def __init__(self, index: int, fallback: str) -> None:
        self.index, self.fallback = index, fallback


def first(mask: np.ndarray, fallback: str) -> None:
    bad = np.flatnonzero(mask)
    if len(bad):
        raise Named(int(bad[0]), fallback)


def among(idx: np.ndarray, mask: np.ndarray, fallback: str) -> None:
    """As _first, over the requests `idx` of one group (mask: theirs, or one for all)."""
    bad = idx[np.broadcast_to(mask, idx.shape)]
    if len(bad):
        raise Named(int(bad.min()), fallback)


def check(c: Columns, spec: ModelSpec, rho: float | np.ndarray, prof: Profile, draft: object,
           draft_cost: object) -> None:
    """predict()'s bounds (core/bounds.py, core/request.py), each over every request at once."""
    s, p, g = c.seq, c.prompt, c.gamma
    first((s < 2) | (s > bounds.SEQ_MAX), "seq out of range")
    first((p < 1) | (p >= s) if c.max_len is None else (p < 1) | (c.max_len - p > bounds.SEQ_MAX - p) | (s > c.max_len)
           | (c.max_len <= p), "prompt, seq or max_new out of range")
    b = np.asarray(c.batch)
    first(np.broadcast_to((b < 1) | (b > bounds.BATCH_MAX), (c.n,)), "batch out of range")
    first((g < 0) | (g > np.minimum(bounds.GAMMA_MAX, s - p - 1)), "gamma out of range")
    sd = g > 0
    has_alpha = np.array([len(a) > 0 for a in c.accepts])[c.accept_code]
    first(sd != has_alpha, "alpha is given where gamma is 0, or missing where it is not")
    if draft is not None or draft_cost is not None:
        first(~sd, "draft and draft_cost need gamma")
    if c.r is not None:
        first((c.r < 1) | (c.r > c.rows + g), "r out of range")
    ram, _ = bounds.host_ram(prof.host)
    if ram > 0:
        rows = (s if c.max_len is None else c.max_len) + g
        window = spec.sliding_window or 0
        need = 2.0 * rho * ((spec.layers - spec.sliding_count) * rows + spec.sliding_count * np.minimum(rows, window))
        first(np.broadcast_to(need > ram, (c.n,)), "the KV cache would not fit in RAM")


def named_error(c: Columns, bad: Named, **one_for_all: object) -> BMCError:
    """The error for the bad request: "request i: " and the message predict() gives it alone (with the
    arguments that are one for all), else the check's own words."""
    try:
        predict(**one_for_all, **element(c.given, bad.index))  # type: ignore[arg-type]
    except BMCError as err:
        return BMCError(f"request {bad.index}: {err}")
    return BMCError(f"request {bad.index}: {bad.fallback}")
