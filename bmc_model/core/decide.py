"""recommend(): the best configuration for one workload, and every rule that decides it (tolerance,
tie-breaks, the ceiling of what users run today)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bmc_model.core import bounds
from bmc_model.core.breakdown import total_seconds
from bmc_model.core.errors import BMCError
from bmc_model.core.inputs import format_bytes, size
from bmc_model.core.policy import NAMED, WIDTH_HELP, Policy, parse_width
from bmc_model.core.predict import Prediction, predict_at
from bmc_model.core.profile import Profile
from bmc_model.core.request import Request, request
from bmc_model.core.specs import ModelSpec
from bmc_model.core.sweep import Sweep, closed_form_r, sweep_r

WIDTHS = ("padded", "exact", "pad")


def smallest_within(sweep: Sweep, tol: float, ceiling: float = math.inf) -> int | None:
    """Smallest r whose cost is within tol of the sweep's best and at most `ceiling` seconds (never below
    the best itself): near-equal speed, less memory."""
    best = sweep.argmin
    if best is None:
        return None
    top = sweep.seconds_at(best)
    limit = min(top * (1.0 + tol), max(ceiling, top))
    ok = sweep.feasible & (sweep.seconds <= limit)
    return int(sweep.r[np.argmax(ok)])


@dataclass
class Recommendation:
    prediction: Prediction  # the recommended configuration
    sweeps: dict[str, Sweep]  # width label -> cost for every distinct r (1 .. T + gamma), at the recommended gamma
    argmin_r: dict[str, int | None]  # width label -> exact integer argmin
    chosen_r: dict[str, int | None]  # width label -> smallest r within tolerance of the argmin
    closed_form_r: dict[str, float]  # width label -> r* from the closed form
    baselines: dict[str, Prediction]
    no_sd: Prediction | None = None  # best plain decoding, when speculative decoding was asked
    tolerance: float = 0.005
    notes: list[str] = field(default_factory=list)

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
    """The sweeps at one gamma and what they pick."""

    gamma: int
    sweeps: dict[str, Sweep]  # width label -> cost for every distinct r
    ceiling: float  # predicted seconds of the better of static and dynamic
    pick: tuple[float, int, str, int] | None  # (seconds, gamma, width label, r); None: nothing fits

    def least_need(self) -> tuple[float, int, str, int]:
        """(peak KV bytes, gamma, width label, r) of the configuration here that needs the least memory."""
        return min((float(sw.peak_bytes.min()), self.gamma, lab, int(sw.r[np.argmin(sw.peak_bytes)]))
                   for lab, sw in self.sweeps.items())


def _at_gamma(req: Request, g: int, modes: dict[str, tuple[str, int]], cap: float | None,
              tolerance: float) -> _AtGamma:
    ctx = req.ctx
    r_all = np.arange(1, req.tokens + g + 1, dtype=np.float64)  # every distinct r at this gamma
    sweeps = {}
    for lab, (width, p) in modes.items():
        w = req.workload(g, Policy("fixed", 1, width=width, pad=p), r_all)  # type: ignore[arg-type]
        sweeps[lab] = sweep_r(width, w, ctx.geo, ctx.prof, max_mem=cap, pad=p)
    # The tolerance trades speed for memory, but never below what users run today: no pick is
    # predicted slower than HF's StaticCache or DynamicCache at this gamma.
    ceiling = min(float(total_seconds(NAMED[base], req.workload(g, NAMED[base]), ctx.geo, ctx.prof))
                  for base in ("static", "dynamic"))
    cands = [(sw.seconds_at(rr), g, lab, rr) for lab, sw in sweeps.items()
             if (rr := smallest_within(sw, tolerance, ceiling)) is not None]
    if not cands:
        return _AtGamma(g, sweeps, ceiling, None)
    floor = min(float(sw.seconds[sw.feasible].min()) for sw in sweeps.values() if sw.feasible.any())
    # a width mode ahead by less than the tolerance is not resolved by the model: prefer exact
    # (no mask, no padded rows read), the mode least exposed to error in the attention terms
    near = min(floor * (1.0 + tolerance), max(ceiling, floor))
    exact = [cand for cand in cands if cand[2] == "exact" and cand[0] <= near]
    return _AtGamma(g, sweeps, ceiling, exact[0] if exact else min(cands))


def _no_fit(least: tuple[float, int, str, int], max_mem: float) -> BMCError:
    """Nothing fits the cap: say what the smallest configuration would need."""
    need, gamma, lab, r = least
    sd = f", gamma {gamma}" if gamma else ""
    return BMCError(f"no configuration fits in --max-mem {max_mem:.4g} bytes ({format_bytes(max_mem)}) of KV cache: "
                    f"the smallest (r={r} {lab}{sd}) needs {format_bytes(need)} at its peak")


def recommend(model: str | ModelSpec | None = None, seq: int = 2048, prompt: int | None = None,
              batch: int = 1, dtype: str | None = None, profile: Profile | str | Path | None = None,
              layers: int | None = None, config: str | Path | None = None, gamma: int | str | None = None,
              alpha: float | Sequence[float] | None = None, draft: str | ModelSpec | None = None,
              draft_cost: float | None = None, max_mem: float | str | None = None, pad: int = 256,
              tolerance: float = 0.005, widths: str | Sequence[str] = WIDTHS, runtime: str = "bmc") -> Recommendation:
    """The fastest growth configuration (width mode, r, and gamma with SD) for one workload.

    `model`/`config` as in predict() (default llama-7b; not both).
    Sweeps every distinct r (1 .. T + gamma; a larger r costs the same) for each width mode; within a mode
    it picks the smallest r predicted within `tolerance` of that mode's argmin (same speed, less memory)
    and not slower than the static and dynamic baselines (unless nothing in that mode is). `max_mem` caps
    the peak KV bytes: a number or a size such as "2GiB". gamma: None/0 plain decoding, an int, or "auto"
    (0..16, 0 meaning no SD); alpha, draft and draft_cost need it. widths: labels as Policy.width_label
    prints them ("padded", "exact", "pad-P"; "pad" rounds to `pad` rows), one string or a sequence.
    """
    req = request(model, seq, prompt, batch, dtype, profile, layers, config, gamma, alpha, draft, draft_cost,
                  runtime, auto=True)
    tolerance = bounds.tolerance(tolerance)
    cap = size("max-mem", max_mem)
    modes = width_modes(widths, bounds.pad(pad))
    ctx = req.ctx

    # only the best gamma's sweeps and gamma 0's are kept: 17 gammas of 3 sweeps as long as T + gamma each
    # would hold gigabytes at a long seq
    best: _AtGamma | None = None
    at0: _AtGamma | None = None
    least: tuple[float, int, str, int] | None = None
    for g in req.gammas:
        at = _at_gamma(req, g, modes, cap, tolerance)
        at0 = at if g == 0 else at0
        need = at.least_need()
        least = need if least is None else min(least, need)
        if at.pick is not None and (best is None or at.pick[0] < best.pick[0] * (1.0 - 1e-12)):  # type: ignore
            best = at
    if best is None or best.pick is None:
        raise _no_fit(least, cap or 0.0)  # type: ignore[arg-type]
    _, gamma_best, width_best, r_best = best.pick
    sweeps = best.sweeps
    best_pol = sweeps[width_best].policy(r_best)
    w = req.workload(gamma_best, best_pol)
    pred = predict_at(ctx, best_pol, w, req.notes)

    baselines: dict[str, Prediction] = {}
    base_pols = {"dynamic": NAMED["dynamic"], "static": NAMED["static"], "geometric": NAMED["geometric"],
                 "mlx": NAMED["mlx"], "llamacpp": NAMED["llamacpp"]}
    cap_s = best.ceiling
    rp = smallest_within(sweeps["padded"], tolerance, cap_s) if "padded" in sweeps else None
    if width_best != "padded" and rp is not None:
        base_pols["bmc-padded"] = sweeps["padded"].policy(rp)
    if width_best != "exact":
        base_pols["exact-same-r"] = Policy("fixed", r_best, width="exact")
    for name, pol in base_pols.items():
        baselines[name] = predict_at(ctx, pol, req.workload(gamma_best, pol))
    no_sd = None
    if req.gammas != (0,):
        plain = req.plain()
        baselines["dynamic-no-sd"] = predict_at(ctx, NAMED["dynamic"], plain)
        if at0 is not None:
            pairs = [(sw, smallest_within(sw, tolerance, at0.ceiling)) for sw in at0.sweeps.values()]
            sw0, r0 = min(((sw, r) for sw, r in pairs if r is not None), key=lambda pair: pair[0].seconds_at(pair[1]))
            no_sd = predict_at(ctx, sw0.policy(r0), plain)
        else:
            no_sd = predict_at(ctx, pred.policy, plain)
    closed = {lab: closed_form_r(w, ctx.geo, ctx.prof, sw.width) for lab, sw in sweeps.items()}
    notes = list(req.notes)
    if gamma_best == 0 and req.gammas != (0,):
        notes.append("no SD: speculative decoding does not pay at this acceptance and draft cost")
    return Recommendation(prediction=pred, sweeps=sweeps, argmin_r={lab: sw.argmin for lab, sw in sweeps.items()},
                          chosen_r={lab: smallest_within(sw, tolerance, cap_s) for lab, sw in sweeps.items()},
                          closed_form_r=closed, baselines=baselines, no_sd=no_sd, tolerance=tolerance, notes=notes)
