"""choose_many(): recommend()'s pick for each of many requests, among one fixed candidate set, vectorised.

The candidates are recommend()'s restricted to a grid of r: every named policy it offers (reserve, static,
geometric, mlx, llama.cpp, dynamic, as `widths` or `named` say), fixed growth by each r of `r_grid` in every
width, each at gamma 0 and, where a request gives gamma and alpha, at its gamma. The rule is core/rule.py's
(window, pick_rows), in recommend()'s order of offering, so that each pick is recommend(..., r_grid=r_grid,
gamma=[0, gamma])'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bmc_model.core import bounds
from bmc_model.core.columns import Columns, Named, check, columns, labels, named_error
from bmc_model.core.decide import WIDTHS, _named, offered_names, r_grid_of, width_modes
from bmc_model.core.errors import BMCError
from bmc_model.core.inputs import size
from bmc_model.core.many import price_groups, shared_context, sub_context, take
from bmc_model.core.policy import NAMED, Policy
from bmc_model.core.predict import priced
from bmc_model.core.profile import Profile
from bmc_model.core.request import Context, sd_workload
from bmc_model.core.rule import EPS, pick_rows, window
from bmc_model.core.specs import ModelSpec
from bmc_model.core.sweep import sweep_r

DEFAULT_R_GRID = (8, 32, 128, 512, 2048)


@dataclass
class Choices:
    """The pick for each request (index i is request i); `fits` False where nothing fits its max_mem."""

    model: str
    profile: str
    rules: list[Policy]  # each pick's rule (a fixed rule's r is `r`)
    rule: np.ndarray  # index into rules, -1 where nothing fits
    r: np.ndarray  # fixed growth's r (0 for other growth)
    gamma: np.ndarray
    batch: np.ndarray
    tokens: np.ndarray  # new tokens of each request
    seconds: np.ndarray  # predicted decode seconds of the pick
    peak_resident_bytes: np.ndarray
    reserved_bytes: np.ndarray

    def __len__(self) -> int:
        return len(self.rule)

    @property
    def fits(self) -> np.ndarray:
        return self.rule >= 0

    @property
    def ms_per_token(self) -> np.ndarray:
        return self.seconds * 1000.0 / self.tokens

    @property
    def tokens_per_s(self) -> np.ndarray:
        return self.batch * 1000.0 / self.ms_per_token

    def policy(self, i: int) -> Policy | None:
        k = int(self.rule[i])
        if k < 0:
            return None
        pol = self.rules[k]
        return replace(pol, r=int(self.r[i])) if pol.growth == "fixed" else pol

    def labels(self) -> list[str | None]:
        """Each pick's Policy.label (its gamma is `gamma`); None where nothing fits."""
        return labels(self.rules, self.rule, self.r)

    def to_dicts(self) -> list[dict]:
        ms, tps = self.ms_per_token.tolist(), self.tokens_per_s.tolist()
        res, rsv, gam = self.peak_resident_bytes.tolist(), self.reserved_bytes.tolist(), self.gamma.tolist()
        names, rule, r = self.labels(), self.rule.tolist(), self.r.tolist()
        out: list[dict] = []
        for i in range(len(self)):
            k = rule[i]
            if k < 0:
                out.append({"policy": None, "error": "no configuration fits max_mem"})
                continue
            pol = self.rules[k]
            out.append({"policy": names[i], "r": r[i] if pol.growth == "fixed" else None,
                        "width": pol.width_label, "gamma": gam[i], "ms_per_token": ms[i], "tokens_per_s": tps[i],
                        "peak_resident_bytes": res[i], "reserved_bytes": rsv[i]})
        return out


@dataclass
class _Offer:
    """Candidates of one group of requests at one gamma, columns in the order the rule offers them."""

    seconds: list[np.ndarray]
    resident: list[np.ndarray]
    reserved: list[np.ndarray]
    ok: list[np.ndarray]  # fits the cap (and the OS grants it); the window is applied later
    rules: list[tuple[Policy, np.ndarray | None]]  # the rule and, for a sweep, its r [n, R]
    sweep: list[bool]


def _caps(max_mem: object, n: int) -> np.ndarray | None:
    """Per request: the peak resident bytes allowed (inf: no cap), or None for none at all."""
    if isinstance(max_mem, (list, tuple, np.ndarray)) and np.ndim(max_mem) == 1:
        vals = [np.inf if v is None else size("max-mem", v) for v in np.asarray(max_mem, dtype=object).tolist()]
        out = np.asarray(vals, dtype=np.float64)
        if len(out) not in (1, n):
            raise BMCError(f"max_mem has {len(out)} values for {n} requests")
        return np.broadcast_to(out, (n,))
    cap = size("max-mem", max_mem)
    return None if cap is None else np.full(n, cap)


def _offer(sub: Context, c: Columns, idx: np.ndarray, h: int, accept: tuple[float, ...], modes: dict,
           names: list[str], users: list[str], grid: np.ndarray, cap: np.ndarray, dspec: ModelSpec | None,
           cost: float | None) -> tuple[_Offer, list[np.ndarray]]:
    """(the candidates at gamma h, the seconds of HF's StaticCache and DynamicCache where they fit)."""
    P, N, B = c.prompt[idx], c.seq[idx], take(c.batch, idx)
    max_len = None if c.max_len is None else c.max_len[idx]
    tokens = (N - P).astype(np.float64)
    limit = sub.prof.host.get("reserve_limit_bytes")
    off = _Offer([], [], [], [], [], [])
    ceiling: list[np.ndarray] = []
    for name in names + users:
        pol = NAMED[name]
        x = priced(pol, sd_workload(sub, pol, P, N, B, h, accept, max_len, dspec, cost), sub.geo, sub.prof)
        ms = sum(x.ms.values())
        secs = ms * 1e-3 * tokens  # as decide._of_prediction
        res, rsv = np.broadcast_to(x.mem.resident_peak, idx.shape), np.broadcast_to(x.mem.reserved_peak, idx.shape)
        fits = res <= cap
        if pol.growth == "reserve" and limit is not None:
            fits = fits & (rsv <= limit)
        if name in ("static", "dynamic"):
            ceiling.append(np.where(fits, secs, np.inf))
        if name in names:
            off.seconds.append(secs), off.resident.append(res), off.reserved.append(rsv), off.ok.append(fits)
            off.rules.append((pol, None)), off.sweep.append(False)
    n, R = len(idx), len(grid)
    rows = N if max_len is None else max_len
    r = np.minimum(grid[None, :], (rows - P + h)[:, None]).astype(np.float64)  # decide.sweep_rs, per request
    flat = r.reshape(-1)
    rep = np.repeat(np.arange(n), R)
    Pf, Nf = P[rep], N[rep]
    Bf = B[rep] if isinstance(B, np.ndarray) else B
    mf = None if max_len is None else max_len[rep]
    geo = sub.geo if not isinstance(sub.geo.rho, np.ndarray) else replace(sub.geo, rho=sub.geo.rho[rep])
    subf = Context(sub.spec, geo, sub.prof, sub.dtype)
    for width, pad in modes.values():
        pol = Policy("fixed", 1, width=width, pad=pad)
        sw = sweep_r(width, sd_workload(subf, pol, Pf, Nf, Bf, h, accept, mf, dspec, cost, flat), geo, sub.prof,
                     pad=pad, r=flat)
        secs, res, rsv = (a.reshape(n, R) for a in (sw.seconds, sw.resident_bytes, sw.reserved_bytes))
        off.seconds.append(secs), off.resident.append(res), off.reserved.append(rsv)
        off.ok.append(res <= cap[:, None]), off.rules.append((pol, r)), off.sweep.append(True)
    return off, ceiling


def choose_many(model: str | ModelSpec | None = None, seq: object = None, prompt: object = None,
                new_tokens: object = None, batch: object = 1, gamma: object = 0, alpha: object = None,
                draft: str | ModelSpec | None = None, draft_cost: float | None = None, dtype: str | None = None,
                profile: Profile | str | Path | None = None, layers: int | None = None,
                config: str | Path | None = None, runtime: str = "bmc", max_new: object = None,
                max_mem: object = None, tolerance: float = 0.005, widths: str | Sequence[str] = WIDTHS,
                r_grid: Sequence[int] = DEFAULT_R_GRID, named: Sequence[str] | None = None, pad: int = 256) -> Choices:
    """For each request, recommend()'s pick among this module's candidate set (recommend(..., r_grid=r_grid,
    gamma=[0, gamma_i]) where request i has SD, else gamma 0).

    Array-able as in predict_many(): seq, prompt, new_tokens, batch, gamma, alpha, max_new; max_mem too (a size
    per request, None for none). The rest, as in recommend(), are one for all.
    """
    c = columns(seq, prompt, new_tokens, batch, None, None, None, gamma, alpha, max_new)
    try:
        return _choose(c, model, dtype, profile, layers, config, draft, draft_cost, runtime, max_mem, tolerance,
                       widths, r_grid, named, pad)
    except Named as bad:
        raise named_error(c, bad, model=model, dtype=dtype, profile=profile, layers=layers, config=config,
                          draft=draft, draft_cost=draft_cost, runtime=runtime) from None


def _choose(c: Columns, model: object, dtype: object, profile: object, layers: object, config: object,
            draft: object, draft_cost: object, runtime: str, max_mem: object, tolerance: object, widths: object,
            r_grid: object, named: object, pad: object) -> Choices:
    tol = bounds.tolerance(tolerance)
    modes = width_modes(widths, bounds.pad(pad))
    grid = r_grid_of(r_grid)
    assert grid is not None
    names = offered_names(modes, None if named is None else _named(named))  # type: ignore[arg-type]
    users = [u for u in ("dynamic", "static") if u not in names]
    ctx, dspec, cost = shared_context(c, model, dtype, profile, layers, config, draft, draft_cost, runtime)
    check(c, ctx.spec, ctx.geo.rho, ctx.prof, draft, draft_cost)
    caps = _caps(max_mem, c.n)
    n = c.n
    rules: list[Policy] = []
    out_rule, out_r, out_g = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    out_s, out_res, out_rsv = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    for _, acc, idx in price_groups(c, ctx.geo):
        g = int(c.gamma[idx[0]])
        sub = sub_context(ctx, c, idx)
        cap = np.full(len(idx), np.inf) if caps is None else caps[idx]
        offers = []
        ceiling: list[np.ndarray] = []
        for h in ((0, g) if g else (0,)):
            off, ceil = _offer(sub, c, idx, h, c.accepts[acc], modes, names, users, grid, cap, dspec, cost)
            offers.append((h, off))
            ceiling += ceil
        fastest = np.full(len(idx), np.inf)
        for _, off in offers:
            for secs, ok, sweep in zip(off.seconds, off.ok, off.sweep):
                best = np.where(ok, secs, np.inf)
                fastest = np.minimum(fastest, best.min(axis=1) if sweep else best)
        ceil_s = np.minimum.reduce(ceiling) if ceiling else np.full(len(idx), np.inf)
        limit = window(fastest, ceil_s, tol)
        within = limit * (1 + EPS)
        pool_s, pool_res, pool_rsv, pool_ok, pool_what = [], [], [], [], []
        for h, off in offers:
            for secs, res, rsv, ok, (pol, r), sweep in zip(off.seconds, off.resident, off.reserved, off.ok,
                                                           off.rules, off.sweep):
                if not sweep:
                    pool_s.append(secs), pool_res.append(res), pool_rsv.append(rsv)
                    pool_ok.append(ok & (secs <= within)), pool_what.append((h, pol, None))
                    continue
                j = pick_rows(secs, res, rsv, ok & (secs <= within[:, None]))  # the sweep's own pick first
                rows = np.arange(len(idx))
                jj = np.maximum(j, 0)
                pool_s.append(secs[rows, jj]), pool_res.append(res[rows, jj]), pool_rsv.append(rsv[rows, jj])
                pool_ok.append(j >= 0), pool_what.append((h, pol, r[rows, jj]))  # type: ignore[index]
        S, RES, RSV, OK = (np.stack(a, axis=1) for a in (pool_s, pool_res, pool_rsv, pool_ok))
        pick = pick_rows(S, RES, RSV, OK)
        rows = np.arange(len(idx))
        k = np.maximum(pick, 0)
        out_s[idx], out_res[idx], out_rsv[idx] = S[rows, k], RES[rows, k], RSV[rows, k]
        for col, (h, pol, r) in enumerate(pool_what):
            mine = pick == col
            if not mine.any():
                continue
            if pol not in rules:
                rules.append(pol)
            at = idx[mine]
            out_rule[at], out_g[at] = rules.index(pol), h
            out_r[at] = r[mine] if r is not None else (pol.r if pol.growth == "fixed" else 0)
    unfit = out_rule < 0
    out_s[unfit] = out_res[unfit] = out_rsv[unfit] = np.nan
    return Choices(model=ctx.spec.name, profile=ctx.prof.describe(), rules=rules, rule=out_rule, r=out_r, gamma=out_g,
                   batch=np.broadcast_to(np.asarray(c.batch, dtype=np.int64), (n,)).copy(),
                   tokens=(c.seq - c.prompt).astype(np.float64), seconds=out_s, peak_resident_bytes=out_res,
                   reserved_bytes=out_rsv)

