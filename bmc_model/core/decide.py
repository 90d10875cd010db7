"""recommend(): the best configuration for one workload, by the rule of core/rule.py.

Candidates are every fixed r in every width mode (a sweep), and every named policy (dynamic, static,
geometric, mlx, llama.cpp, reserve), at every gamma asked. Among the candidates whose peak resident KV
bytes fit --max-mem and whose predicted time is within `tolerance` of the fastest (and never slower than
HF's StaticCache or DynamicCache), the pick holds the least peak resident memory, then the least reserved,
then is the fastest. So no candidate is at least as fast and leaner, or faster and no larger: the pick is
on the Pareto front of everything recommend prints.

Under a distribution of output lengths (core/lengths.py) the same rule reads expected seconds as the speed and
expected peak resident bytes as the memory, and --max-mem caps the worst length's peak; the fixed r weighed
are a grid (lengths.r_grid), each priced over every length at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bmc_model.core import bounds
from bmc_model.core.errors import BMCError
from bmc_model.core.inputs import format_bytes, size
from bmc_model.core.lengths import Lengths
from bmc_model.core.policy import NAMED, WIDTH_HELP, Policy, parse_width
from bmc_model.core.predict import Prediction, predict_at, predict_lengths
from bmc_model.core.profile import Profile
from bmc_model.core.request import Request, request
from bmc_model.core.rule import EPS, Candidate, equal_on_every_axis, pareto_front, pick_index, window
from bmc_model.core.specs import ModelSpec
from bmc_model.core.sweep import Sweep, closed_form_r, sweep_lengths, sweep_r
from bmc_model.core.workload import Workload

WIDTHS = ("padded", "exact", "pad")
# named candidates, beside the sweeps (mlx and dynamic are sweep points too; named, they print as such)
CANDIDATE_NAMES = ("dynamic", "static", "reserve", "geometric", "mlx", "llamacpp")


@dataclass
class Recommendation:
    prediction: Prediction  # the recommended configuration
    sweeps: dict[str, Sweep]  # width label -> cost for every distinct r (1 .. T + gamma; a grid of r under a
    # distribution of output lengths), at the recommended gamma
    argmin_r: dict[str, int | None]  # width label -> exact integer argmin
    chosen_r: dict[str, int | None]  # width label -> the rule's pick within that width's sweep
    closed_form_r: dict[str, float]  # width label -> r* from the closed form
    baselines: dict[str, Prediction]
    no_sd: Prediction | None = None  # best plain decoding, when speculative decoding was asked
    tolerance: float = 0.005
    notes: list[str] = field(default_factory=list)
    pareto: list[Prediction] = field(default_factory=list)  # the front at the recommended gamma, fastest first
    reason: str = ""  # why this pick, in one line

    @property
    def policy(self) -> Policy:
        return self.prediction.policy

    @property
    def r(self) -> int:
        return self.prediction.policy.r

    @property
    def width(self) -> str:
        return self.prediction.width

    @property
    def gamma(self) -> int:
        return self.prediction.gamma

    @property
    def r_closed_form(self) -> float:
        return self.closed_form_r[self.width]

    def speedup_over(self, name: str) -> float:
        return self.baselines[name].ms_per_token / self.prediction.ms_per_token


def width_modes(widths: object, pad: int) -> dict[str, tuple[str, int]]:
    """Width label -> (Policy width, pad) for recommend's `widths`: one label or a comma list as a string,
    or a sequence of labels (parse_width: any case; bare 'pad' rounds to `pad` rows)."""
    if isinstance(widths, np.ndarray):
        widths = widths.tolist()  # 0-d: one item, not a sequence
    if isinstance(widths, str):
        items: list[object] = widths.split(",")
    elif isinstance(widths, Sequence):  # ordered: the first of equal picks wins
        items = list(widths)
    else:
        raise BMCError(f"widths must be a width label or a list of them ({WIDTH_HELP}), got {widths!r}")
    if not items:
        raise BMCError(f"widths must name at least one width ({WIDTH_HELP}), got none")
    out: dict[str, tuple[str, int]] = {}
    for item in items:
        width, p = parse_width(item, pad)
        out.setdefault(Policy(width=width, pad=p).width_label, (width, p))
    return out


@dataclass
class _AtGamma:
    """The candidates at one gamma: the sweeps and the named policies."""

    gamma: int
    sweeps: dict[str, Sweep]
    named: dict[str, Prediction]  # name -> prediction; a reserve the OS refuses is left out
    users: dict[str, Prediction]  # HF's static and dynamic caches, candidates or not: the ceiling

    def fastest(self, cap: float | None) -> float:
        best = [sw.fastest_seconds for sw in self.sweeps.values()]
        best += [_of_prediction(p).seconds for p in self.named.values() if _fits(p, cap)]
        return min(best, default=math.inf)

    def candidates(self, limit: float, cap: float | None) -> list[Candidate]:
        """Those the rule may pick at this gamma: for each sweep, its own pick within `limit` (the rest of
        that sweep is slower or larger than that one), and every named policy within `limit` and the cap."""
        out = []
        for p in self.named.values():  # in offered_names' order
            c = _of_prediction(p)
            if _fits(p, cap) and c.seconds <= limit * (1 + EPS):
                out.append(c)
        for sw in self.sweeps.values():
            i = _sweep_pick(sw, limit)
            if i is not None:
                out.append(_of_sweep(sw, i, self.gamma))
        return out

    def least_need(self) -> tuple[float, str]:
        """(peak resident bytes, label) of the configuration here that needs the least memory."""
        need = [(float(sw.capped_bytes.min()), f"r={int(sw.r[np.argmin(sw.capped_bytes)])} {lab}")
                for lab, sw in self.sweeps.items()]
        need += [(p.worst_resident, p.policy.label) for p in self.named.values()]
        lab_gamma = f", gamma {self.gamma}" if self.gamma else ""
        b, lab = min(need)
        return b, lab + lab_gamma


def _fits(p: Prediction, cap: float | None) -> bool:
    return not cap or p.worst_resident <= cap


def _sweep_pick(sw: Sweep, limit: float) -> int | None:
    idx = np.flatnonzero(sw.feasible)
    i = pick_index(sw.seconds[idx], sw.resident_bytes[idx], sw.reserved_bytes[idx], limit) if len(idx) else None
    return None if i is None else int(idx[i])


def _of_sweep(sw: Sweep, i: int, gamma: int) -> Candidate:
    return Candidate(sw.policy(int(sw.r[i])), gamma, float(sw.seconds[i]), float(sw.resident_bytes[i]),
                     float(sw.reserved_bytes[i]))


def _of_prediction(p: Prediction) -> Candidate:
    return Candidate(p.policy, p.gamma, p.ms_per_token * 1e-3 * p.new_tokens, p.peak_resident_bytes,
                     p.reserved_bytes)


def _predict(req: Request, pol: Policy, gamma: int, notes: tuple[str, ...] = ()) -> Prediction:
    """One configuration of the request: at its seq, or over its output lengths."""
    if req.dist is not None:
        return predict_lengths(req.ctx, pol, req.prompt, req.batch, req.dist, notes)
    return predict_at(req.ctx, pol, req.workload(gamma, pol), notes)


def _sweeps(req: Request, g: int, modes: dict[str, tuple[str, int]], cap: float | None,
            r_grid: np.ndarray | None = None) -> dict[str, Sweep]:
    ctx = req.ctx
    if req.dist is not None:
        rs = None if r_grid is None else sweep_rs(req.dist.max_new, 0, r_grid).astype(np.int64)
        return {lab: sweep_lengths(width, req.prompt, req.batch, req.dist, ctx.geo, ctx.prof, max_mem=cap, pad=p,
                                   rs=rs) for lab, (width, p) in modes.items()}
    r_all = sweep_rs(req.tokens, g, r_grid, req.rows - req.prompt + g)
    sweeps = {}
    for lab, (width, p) in modes.items():
        w = req.workload(g, Policy("fixed", 1, width=width, pad=p), r_all)  # type: ignore[arg-type]
        sweeps[lab] = sweep_r(width, w, ctx.geo, ctx.prof, max_mem=cap, pad=p, r=r_all)
    return sweeps


def r_grid_of(v: object) -> np.ndarray | None:
    """recommend()'s r_grid: None (every r), or a non-empty sequence of r >= 1."""
    if v is None:
        return None
    if isinstance(v, (str, bytes)) or not isinstance(v, (Sequence, np.ndarray)) or not len(v):
        raise BMCError(f"r_grid must be a non-empty list of integers r >= 1, got {v!r}")
    return np.array([bounds.int_in("r_grid", x, 1, bounds.ROWS_MAX) for x in np.asarray(v).tolist()],
                    dtype=np.int64)


def _named(names: Sequence[str]) -> frozenset[str]:
    if isinstance(names, str) or not all(n in CANDIDATE_NAMES for n in names):
        raise BMCError(f"named must be a list of {', '.join(CANDIDATE_NAMES)}, got {names!r}")
    return frozenset(names)


def offered_names(modes: dict[str, tuple[str, int]], offered: frozenset[str] | None) -> list[str]:
    """The named candidates, in the order the rule offers them (reserve foremost: of exactly equal candidates the
    first wins, and a sweep point equal to reserve is reserve): those whose width is in `modes`, or the names in
    `offered`."""
    names = [n for n in CANDIDATE_NAMES if (NAMED[n].width_label in modes if offered is None else n in offered)]
    return sorted(names, key=lambda n: n != "reserve")


def sweep_rs(tokens: int, gamma: int, r_grid: np.ndarray | None, flat: int | None = None) -> np.ndarray:
    """The fixed r a sweep weighs: every distinct r, 1 .. T + gamma, or the grid's, each past `flat` taken as
    `flat` (which it equals: the capacity clamps at the cache's rows + gamma; T + gamma unless max_new sizes the
    cache for more)."""
    if r_grid is None:
        return np.arange(1, tokens + gamma + 1, dtype=np.float64)
    return np.unique(np.minimum(r_grid, tokens + gamma if flat is None else flat)).astype(np.float64)


def _at_gamma(req: Request, g: int, modes: dict[str, tuple[str, int]], cap: float | None,
              offered: frozenset[str] | None = None, r_grid: np.ndarray | None = None) -> _AtGamma:
    sweeps = _sweeps(req, g, modes, cap, r_grid)
    named, users = {}, {}
    names = offered_names(modes, offered)
    for name in names + [n for n in ("dynamic", "static") if n not in names]:
        pol = NAMED[name]
        try:
            pred = _predict(req, pol, g)
        except BMCError:  # a reserve the OS would refuse is no candidate
            if pol.growth != "reserve":
                raise
            continue
        if name in names:
            named[name] = pred
        if name in ("static", "dynamic"):
            users[name] = pred
    return _AtGamma(g, sweeps, named, users)


def _ceiling(at: list[_AtGamma], cap: float | None) -> float:
    """The faster of HF's StaticCache and DynamicCache, at any gamma, among those that fit."""
    return min((_of_prediction(p).seconds for a in at for p in a.users.values() if _fits(p, cap)),
               default=math.inf)


def _no_fit(least: tuple[float, str], max_mem: float) -> BMCError:
    """Nothing fits the cap: say what the smallest configuration would need."""
    need, lab = least
    return BMCError(f"no configuration fits in --max-mem {max_mem:.4g} bytes ({format_bytes(max_mem)}) of KV cache: "
                    f"the smallest ({lab}) needs {format_bytes(need)} resident at its peak")


def _choose(cands: list[Candidate], limit: float) -> Candidate:
    i = pick_index(np.array([c.seconds for c in cands]), np.array([c.resident_bytes for c in cands]),
                   np.array([c.reserved_bytes for c in cands]), limit)
    return cands[i]  # type: ignore[index]


def _reason(pick: Prediction, fastest: Candidate, tolerance: float, tied: int) -> str:
    mem = f"{format_bytes(pick.peak_resident_bytes)} resident at its peak, {format_bytes(pick.reserved_bytes)} reserved"
    if pick.worst_peak_resident_bytes is not None:  # over a distribution: the expected peak, and the worst
        mem = (f"{format_bytes(pick.peak_resident_bytes)} resident at its peak in expectation, "
               f"{format_bytes(pick.worst_peak_resident_bytes)} at worst, {format_bytes(pick.reserved_bytes)} reserved")
    if fastest.policy == pick.policy and fastest.gamma == pick.gamma:
        head = f"{pick.policy.label} is the fastest"
        tail = (f" and, of the {tied} configurations within {tolerance:.1%} of it, holds the least memory ({mem})"
                if tied > 1 else f" ({mem})")
        return head + tail
    ms = fastest.seconds * 1000.0 / pick.new_tokens
    return (f"{pick.policy.label} holds the least memory ({mem}) of the {tied} configurations within "
            f"{tolerance:.1%} of the fastest ({fastest.label}, {ms:.2f} ms/token)")


def recommend(model: str | ModelSpec | None = None, seq: int = 2048, prompt: int | None = None,
              batch: int = 1, dtype: str | None = None, profile: Profile | str | Path | None = None,
              layers: int | None = None, config: str | Path | None = None, gamma: int | str | None = None,
              alpha: float | Sequence[float] | None = None, draft: str | ModelSpec | None = None,
              draft_cost: float | None = None, max_mem: float | str | None = None, pad: int = 256,
              tolerance: float = 0.005, widths: str | Sequence[str] = WIDTHS, runtime: str = "bmc",
              max_new: int | None = None, mean_new: float | None = None,
              lengths: Lengths | str | Path | None = None, named: Sequence[str] | None = None,
              r_grid: Sequence[int] | None = None) -> Recommendation:
    """The configuration (growth policy, width, r, and gamma with SD) for one workload, by the rule in this
    module's docstring.

    `model`/`config` as in predict() (default llama-7b; not both). Candidates: every distinct r
    (1 .. T + gamma; a larger r costs the same) in each width mode, and the named policies (those whose
    width is in `widths`, or the names in `named`: CANDIDATE_NAMES). `max_mem` caps
    the peak resident KV bytes: a number or a size such as "2GiB". gamma: None/0 plain decoding, an int,
    or "auto" (0..16, 0 meaning no SD); alpha, draft and draft_cost need it. widths: labels as
    Policy.width_label prints them ("padded", "exact", "pad-P"; "pad" rounds to `pad` rows), one string or
    a sequence. max_new, mean_new, lengths: the output length, as in predict(); under a distribution the
    rule reads expected figures (this module's docstring). gamma may also be a list of the gammas to weigh
    (e.g. [0, 4]). r_grid: the fixed r to weigh (sweep_rs), instead of every r (a grid under a distribution).
    """
    req = request(model, seq, prompt, batch, dtype, profile, layers, config, gamma, alpha, draft, draft_cost,
                  runtime, auto=True, max_new=max_new, mean_new=mean_new, lengths=lengths)
    tolerance = bounds.tolerance(tolerance)
    cap = size("max-mem", max_mem)
    modes = width_modes(widths, bounds.pad(pad))
    ctx = req.ctx

    # every gamma's candidates are needed before the fastest is known; a gamma's sweeps are kept only as
    # its pick set (a few candidates): 17 gammas of 3 sweeps as long as T + gamma would hold gigabytes
    offered = None if named is None else _named(named)
    grid = r_grid_of(r_grid)
    ats = [_at_gamma(req, g, modes, cap, offered, grid) for g in req.gammas]
    fastest_s = min(a.fastest(cap) for a in ats)
    if not math.isfinite(fastest_s):
        raise _no_fit(min(a.least_need() for a in ats), cap or 0.0)
    ceiling = _ceiling(ats, cap)
    limit = window(fastest_s, ceiling, tolerance)
    pool = [c for a in ats for c in a.candidates(limit, cap)]
    choice = _choose(pool, limit)
    best = next(a for a in ats if a.gamma == choice.gamma)
    pred = _predict(req, choice.policy, choice.gamma, req.notes)
    at0 = next((a for a in ats if a.gamma == 0), None)

    baselines: dict[str, Prediction] = dict(best.named)
    sweeps = best.sweeps
    chosen = {lab: _sweep_pick(sw, window(sw.fastest_seconds, ceiling, tolerance)) for lab, sw in sweeps.items()}
    chosen_r = {lab: None if i is None else int(sweeps[lab].r[i]) for lab, i in chosen.items()}
    if "padded" in sweeps and pred.policy.width != "padded" and chosen_r["padded"] is not None:
        pol = sweeps["padded"].policy(chosen_r["padded"])
        baselines["bmc-padded"] = _predict(req, pol, choice.gamma)
    if pred.policy.growth == "fixed" and pred.policy.width != "exact":
        pol = Policy("fixed", pred.policy.r, width="exact")
        baselines["exact-same-r"] = _predict(req, pol, choice.gamma)
    no_sd = None
    if req.gammas != (0,):
        plain = req.plain()
        baselines["dynamic-no-sd"] = predict_at(ctx, NAMED["dynamic"], plain)
        if at0 is not None:
            limit0 = window(at0.fastest(cap), ceiling, tolerance)
            c0 = at0.candidates(limit0, cap) if math.isfinite(limit0) else []
            pick0 = _choose(c0, limit0) if c0 else None
            no_sd = predict_at(ctx, pick0.policy, plain) if pick0 is not None else None
        else:
            no_sd = predict_at(ctx, NAMED["dynamic"] if pred.policy.growth == "fixed" else pred.policy, plain)
    top = min(c.seconds for c in pool)
    fastest = next(c for c in pool if c.seconds <= top * (1 + EPS))
    if any(equal_on_every_axis(c, choice) for c in pool if c.seconds <= top * (1 + EPS)):
        fastest = choice
    front = pareto_front([_of_prediction(p) for p in best.named.values() if _fits(p, cap)]
                         + [_of_sweep(sw, i, best.gamma) for sw in sweeps.values() for i in _front_indices(sw)])
    pareto = [_predict(req, c.policy, c.gamma) for c in _thin(front, pred.policy)]
    at_mean = req.workload(choice.gamma, pred.policy) if req.dist is None else _at_mean(req, req.dist)
    closed = {lab: closed_form_r(at_mean, ctx.geo, ctx.prof, sw.width) for lab, sw in sweeps.items()}
    # a named pick whose width was not swept (reserve beside padded sweeps): its r* too, so r_closed_form answers
    closed.setdefault(pred.width, closed_form_r(at_mean, ctx.geo, ctx.prof, pred.policy.width))
    notes = list(req.notes)
    if req.dist is not None:
        notes.append(req.dist.describe())
    if choice.gamma == 0 and req.gammas != (0,):
        notes.append("no SD: speculative decoding does not pay at this acceptance and draft cost")
    return Recommendation(prediction=pred, sweeps=sweeps, argmin_r={lab: sw.argmin for lab, sw in sweeps.items()},
                          chosen_r=chosen_r, closed_form_r=closed, baselines=baselines, no_sd=no_sd,
                          tolerance=tolerance, notes=notes, pareto=pareto,
                          reason=_reason(pred, fastest, tolerance, len(pool)))


def _at_mean(req: Request, dist: Lengths) -> Workload:
    """The closed form's workload under a distribution: the expected length (r* is then indicative only)."""
    return Workload(req.prompt, req.prompt + max(round(dist.mean), 1), req.batch, max_len=req.rows)


def _front_indices(sw: Sweep) -> np.ndarray:
    """The r of one sweep on its own (seconds, peak resident) front: a cumulative minimum of the resident
    bytes in order of time, each strictly leaner than every faster one."""
    idx = np.flatnonzero(sw.feasible)
    order = idx[np.lexsort((sw.reserved_bytes[idx], sw.resident_bytes[idx], sw.seconds[idx]))]
    res = sw.resident_bytes[order]
    prior = np.concatenate(([np.inf], np.minimum.accumulate(res)[:-1]))
    return order[res < prior * (1 - EPS)]


def _thin(front: list[Candidate], keep: Policy, most: int = 24) -> list[Candidate]:
    """At most `most` points of the front, evenly spaced, its two ends and the pick kept."""
    if len(front) <= most:
        return front
    idx = set(np.linspace(0, len(front) - 1, most - 1).round().astype(int).tolist())
    idx |= {i for i, c in enumerate(front) if c.policy == keep}
    return [front[i] for i in sorted(idx)]
