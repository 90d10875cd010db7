"""predict_many(): predict() over many requests at once, for schedulers.

Every array-able argument is a scalar or a 1-d array, broadcast together. Requests are grouped by what the
equations branch on (the policy's rule, gamma, the acceptance, which side of a sliding window they end on),
and each group is priced by the same functions predict() calls (core/predict.priced), on arrays. A bad
element is named by its index, with the message predict() gives for it alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bmc_model.core import bounds
from bmc_model.core.columns import Columns, Named, among, check, columns, labels, named_error
from bmc_model.core.errors import BMCError
from bmc_model.core.policy import NAMED, Policy
from bmc_model.core.predict import Priced, priced, resolve, weights_bytes
from bmc_model.core.profile import Profile
from bmc_model.core.request import Context, context, model_spec, sd_workload
from bmc_model.core.specs import ModelSpec
from bmc_model.core.workload import Geometry

# the terms of Prediction.breakdown, in its order
TERMS = ("weights", "attention_useful", "attention_redundant", "kv_write", "growth_alloc", "growth_copy",
         "overhead", "sd_iteration", "draft")
_SCALAR_MAX = 4  # a group this small is priced request by request with Python numbers


@dataclass
class Predictions:
    """predict() for each request, as arrays (index i is request i)."""

    model: str
    dtype: str
    profile: str
    seq: np.ndarray
    prompt: np.ndarray
    batch: np.ndarray
    gamma: np.ndarray
    r: np.ndarray  # fixed growth's r; 0 for other growth
    group: np.ndarray  # index into `policies`: each request's rule (a fixed rule's r is `r`)
    policies: list[Policy]
    advance: np.ndarray
    ms_per_token: np.ndarray
    breakdown: dict[str, np.ndarray]
    memory_bytes: np.ndarray
    reserved_bytes: np.ndarray
    resident_bytes: np.ndarray
    peak_resident_bytes: np.ndarray
    growth_events: np.ndarray
    weights_bytes: float
    max_new: np.ndarray | None = None
    notes: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ms_per_token)

    @property
    def tokens_per_s(self) -> np.ndarray:
        return self.batch * 1000.0 / self.ms_per_token

    def policy(self, i: int) -> Policy:
        pol = self.policies[int(self.group[i])]
        return replace(pol, r=int(self.r[i])) if pol.growth == "fixed" else pol

    def labels(self) -> list[str]:
        return labels(self.policies, self.group, self.r)  # type: ignore[return-value]

    def to_dicts(self) -> list[dict]:
        """One dict per request, with Prediction.to_dict()'s keys (and the request's model and lengths)."""
        cols = {"ms_per_token": self.ms_per_token, "tokens_per_s": self.tokens_per_s,
                "memory_bytes": self.memory_bytes, "reserved_bytes": self.reserved_bytes,
                "resident_bytes": self.resident_bytes, "peak_resident_bytes": self.peak_resident_bytes,
                "growth_events": self.growth_events}
        lists = {k: v.tolist() for k, v in cols.items()}
        parts = {k: v.tolist() for k, v in self.breakdown.items()}
        seq, prompt, batch, gamma = (a.tolist() for a in (self.seq, self.prompt, self.batch, self.gamma))
        max_new = None if self.max_new is None else self.max_new.tolist()
        names, widths, fixed = self.labels(), [p.width_label for p in self.policies], [p.growth == "fixed"
                                                                                       for p in self.policies]
        group, r = self.group.tolist(), self.r.tolist()
        out = []
        for i in range(len(self)):
            g = group[i]
            d = {"model": self.model, "seq": seq[i], "prompt": prompt[i], "batch": batch[i], "policy": names[i],
                 "r": r[i] if fixed[g] else None, "width": widths[g], "gamma": gamma[i],
                 **{k: v[i] for k, v in lists.items()}, "breakdown_ms": {k: v[i] for k, v in parts.items()}}
            if max_new is not None:
                d["max_new"] = max_new[i]
            out.append(d)
        return out


def _rule(c: Columns, k: int, idx: np.ndarray) -> tuple[Policy, bool]:
    """Rule k's Policy (for fixed growth with r per request: r 1, and True), checked as predict() checks it for
    each of the requests `idx` (core/predict.resolve: an r at most rows + gamma)."""
    pol_arg, width = c.rules[k]
    i0 = int(idx[0])
    r0 = None if c.r is None else int(c.r[i0])
    rows, gamma = int(c.rows[i0]), int(c.gamma[i0])
    try:
        pol = resolve(pol_arg, r0, width, rows, gamma)
    except BMCError as err:
        raise Named(i0, str(err)) from None
    if pol.growth != "fixed":
        return pol, False
    if c.r is None:
        if isinstance(pol_arg, str) and pol_arg.strip().lower() not in NAMED:  # an r spelt in the text is the user's
            among(idx, pol.r > c.rows[idx] + c.gamma[idx], "r out of range")
        return pol, False
    if pol_arg is None:  # r alone: growth by each request's r
        return replace(pol, r=1), True
    try:  # does the policy fix its own r (mlx, fixed:64:exact)? Then every request's r must be it
        resolve(pol_arg, None, width, rows, gamma)
    except BMCError:
        return replace(pol, r=1), True
    among(idx, c.r[idx] != pol.r, f"r conflicts with policy {pol_arg!r}")
    return pol, False


def price_groups(c: Columns, geo: Geometry) -> list[tuple[int, int, np.ndarray]]:
    """(rule, acceptance, request indices) for each group priced as one: its gamma and sliding side too."""
    slide = (c.seq > geo.window).astype(np.int64) if geo.sliding_layers else np.zeros(c.n, dtype=np.int64)
    g_max = int(c.gamma.max()) + 1
    key = ((c.rule_code * len(c.accepts) + c.accept_code) * g_max + c.gamma) * 2 + slide
    if c.n == 1 or (key == key[0]).all():
        return [(int(c.rule_code[0]), int(c.accept_code[0]), np.arange(c.n))]
    if key.max() < 4 * c.n:  # few small keys: one pass each, no sort
        parts = [np.flatnonzero(key == k) for k in np.flatnonzero(np.bincount(key))]
    else:
        order = np.argsort(key, kind="stable")
        parts = np.split(order, np.flatnonzero(np.diff(key[order])) + 1)
    return [(int(c.rule_code[ix[0]]), int(c.accept_code[ix[0]]), ix) for ix in parts]


def predict_many(model: str | ModelSpec | None = None, seq: object = None, prompt: object = None,
                 policy: object = None, r: object = None, width: object = None, batch: object = 1,
                 dtype: str | None = None, profile: Profile | str | Path | None = None, layers: int | None = None,
                 config: str | Path | None = None, gamma: object = 0, alpha: object = None,
                 draft: str | ModelSpec | None = None, draft_cost: float | None = None, runtime: str = "bmc",
                 max_new: object = None, new_tokens: object = None) -> Predictions:
    """predict() for each of many requests, equal to it (within 1e-9 relative) and far faster per request.

    Array-able (a scalar, or a 1-d array or list of length n; length 1 broadcasts): seq, prompt, new_tokens
    (instead of seq: seq = prompt + new_tokens), batch, r, width, policy, gamma, max_new, and alpha (a scalar or a
    list/tuple is predict()'s, the same for every request; an ndarray is per request: 1-d a rate each, 2-d a row
    of per-position rates each, NaN where a request has no SD). The rest are one for all. seq defaults to 2048
    and prompt to seq // 2, as in predict(). A bad request raises BMCError "request i: " and predict()'s message.
    """
    c = columns(seq, prompt, new_tokens, batch, r, width, policy, gamma, alpha, max_new)
    try:
        return _price(c, model, dtype, profile, layers, config, draft, draft_cost, runtime)
    except Named as bad:
        raise named_error(c, bad, model=model, dtype=dtype, profile=profile, layers=layers, config=config,
                          draft=draft, draft_cost=draft_cost, runtime=runtime) from None


def shared_context(c: Columns, model: object, dtype: object, profile: object, layers: object, config: object,
                draft: object, draft_cost: object, runtime: str) -> tuple[Context, ModelSpec | None, float | None]:
    """(the context, with one row of the geometry per request where batch varies; the draft model; the draft
    cost ratio): the arguments one for all, checked as predict() checks them."""
    batch1 = c.batch if isinstance(c.batch, int) else 1
    ctx = context(model, config, layers, bounds.batch(batch1), dtype, profile, runtime)
    if isinstance(c.batch, np.ndarray):  # rho scales with the batch
        ctx = Context(ctx.spec, replace(ctx.geo, rho=c.batch.astype(np.float64) * ctx.geo.rho), ctx.prof, ctx.dtype)
    cost = bounds.draft_cost(draft_cost)
    if draft is not None and cost is not None:
        raise BMCError("give either a draft model or a draft cost ratio, not both")
    dspec = None if draft is None else model_spec(draft, arg="draft")
    if dspec is not None and dspec.vocab != ctx.spec.vocab:
        raise BMCError(f"draft {dspec.name} has vocabulary {dspec.vocab}, target {ctx.spec.name} has "
                       f"{ctx.spec.vocab}: they must match")
    return ctx, dspec, cost


def _price(c: Columns, model: object, dtype: object, profile: object, layers: object, config: object,
           draft: object, draft_cost: object, runtime: str) -> Predictions:
    ctx, dspec, cost = shared_context(c, model, dtype, profile, layers, config, draft, draft_cost, runtime)
    check(c, ctx.spec, ctx.geo.rho, ctx.prof, draft, draft_cost)
    n = c.n
    out = {k: np.empty(n) for k in ("advance", "reserved_end", "reserved_peak", "resident_end", "resident_peak",
                                    "events", "ms")}
    terms = {k: np.empty(n) for k in TERMS}
    group = np.empty(n, dtype=np.int64)
    r_out = np.zeros(n, dtype=np.int64)
    policies: list[Policy] = []
    limit = ctx.prof.host.get("reserve_limit_bytes")
    groups = price_groups(c, ctx.geo)
    # the columns in group order, once: each group is then a slice (views in, plain copies out), and each
    # output is put back in the requests' order by one scatter at the end
    order = np.concatenate([ix for *_, ix in groups]) if len(groups) > 1 else None
    cs = c if order is None else c.permuted(order)
    if order is not None and isinstance(ctx.geo.rho, np.ndarray):
        ctx = Context(ctx.spec, replace(ctx.geo, rho=ctx.geo.rho[order]), ctx.prof, ctx.dtype)
    start = 0
    for rule, acc, idx in groups:
        pol, per_request_r = _rule(c, rule, idx)
        g = int(c.gamma[idx[0]])
        at = slice(start, start + len(idx))
        start += len(idx)
        if len(idx) <= _SCALAR_MAX:  # a few requests (a rare alpha): Python numbers beat numpy's per-call cost
            for j in range(at.start, at.stop):
                x, adv = _price_one(ctx, cs, j, pol, per_request_r, g, c.accepts[acc], dspec, cost)
                if pol.growth == "reserve" and limit is not None:
                    among(idx[j - at.start:j - at.start + 1], np.asarray(x.mem.reserved_peak > limit),
                           "the OS would refuse the reserve")
                for k in TERMS:
                    terms[k][j] = x.ms[k]
                out["ms"][j], out["advance"][j], out["events"][j] = sum(x.ms.values()), adv, x.events
                out["reserved_end"][j], out["reserved_peak"][j] = x.mem.reserved_end, x.mem.reserved_peak
                out["resident_end"][j], out["resident_peak"][j] = x.mem.resident_end, x.mem.resident_peak
            if pol not in policies:
                policies.append(pol)
            group[at] = policies.index(pol)
            r_out[at] = cs.r[at] if per_request_r else (pol.r if pol.growth == "fixed" else 0)  # type: ignore
            continue
        if pol not in policies:
            policies.append(pol)
        group[at] = policies.index(pol)
        r_out[at] = cs.r[at] if per_request_r else (pol.r if pol.growth == "fixed" else 0)  # type: ignore[index]
        sub = sub_context(ctx, cs, at)
        rr = cs.r[at].astype(np.float64) if per_request_r else None  # type: ignore[union-attr]
        max_len = None if cs.max_len is None else cs.max_len[at]
        P, N, B = cs.prompt[at], cs.seq[at], take(cs.batch, at)
        w = sd_workload(sub, pol, P, N, B, g, c.accepts[acc], max_len, dspec, cost, rr)
        x = priced(pol, w, sub.geo, sub.prof, rr)
        if pol.growth == "reserve" and limit is not None:
            among(idx, np.asarray(x.mem.reserved_peak) > limit, "the OS would refuse the reserve")
        for k in TERMS:
            terms[k][at] = x.ms[k]
        out["ms"][at] = sum(x.ms.values())
        out["advance"][at] = w.advance
        out["reserved_end"][at], out["reserved_peak"][at] = x.mem.reserved_end, x.mem.reserved_peak
        out["resident_end"][at], out["resident_peak"][at] = x.mem.resident_end, x.mem.resident_peak
        out["events"][at] = x.events
    if order is not None:  # back in the requests' order: one scatter for the inverse, then gathers
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        out, terms = ({k: v[back] for k, v in d.items()} for d in (out, terms))
        group, r_out = group[back], r_out[back]
    rows = c.seq if c.max_len is None else c.max_len
    past = int(np.count_nonzero(rows > ctx.spec.max_context)) if ctx.spec.max_context else 0
    notes = [f"{past} of {n} requests run past {ctx.spec.name}'s context of {ctx.spec.max_context} positions "
             "(max_position_embeddings): the cost is that of its geometry at those lengths"] if past else []
    return Predictions(model=ctx.spec.name, dtype=ctx.dtype, profile=ctx.prof.describe(), seq=c.seq.copy(),
                       prompt=c.prompt.copy(), batch=np.broadcast_to(np.asarray(c.batch, dtype=np.int64), (n,)).copy(),
                       gamma=c.gamma.copy(), r=r_out, group=group, policies=policies, advance=out["advance"],
                       ms_per_token=out["ms"], breakdown=terms, memory_bytes=out["reserved_end"],
                       reserved_bytes=out["reserved_peak"], resident_bytes=out["resident_end"],
                       peak_resident_bytes=out["resident_peak"], growth_events=out["events"],
                       weights_bytes=weights_bytes(ctx),
                       max_new=None if c.max_len is None else c.max_len - c.prompt, notes=notes)


def _price_one(ctx: Context, cs: Columns, j: int, pol: Policy, per_request_r: bool, g: int,
               accept: tuple[float, ...], dspec: ModelSpec | None, cost: float | None) -> tuple[Priced, float]:
    """Request j of the columns, priced with Python numbers by the same priced() (predict()'s own path)."""
    rho = ctx.geo.rho[j] if isinstance(ctx.geo.rho, np.ndarray) else ctx.geo.rho
    sub = Context(ctx.spec, replace(ctx.geo, rho=float(rho)), ctx.prof, ctx.dtype)
    P, N, B = int(cs.prompt[j]), int(cs.seq[j]), int(cs.batch[j]) if isinstance(cs.batch, np.ndarray) else cs.batch
    max_len = None if cs.max_len is None else int(cs.max_len[j])
    r = float(cs.r[j]) if per_request_r else None  # type: ignore[index]
    w = sd_workload(sub, pol, P, N, B, g, accept, max_len, dspec, cost, r)
    return priced(pol, w, sub.geo, sub.prof, r), w.advance


def take(x: int | np.ndarray, idx: np.ndarray | slice) -> int | np.ndarray:
    return x[idx] if isinstance(x, np.ndarray) else x


def sub_context(ctx: Context, c: Columns, idx: np.ndarray | slice) -> Context:
    """The context of one group: its requests' rows of the geometry where batch varies."""
    if not isinstance(c.batch, np.ndarray):
        return ctx
    return Context(ctx.spec, replace(ctx.geo, rho=ctx.geo.rho[idx]), ctx.prof, ctx.dtype)  # type: ignore[index]

