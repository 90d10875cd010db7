"""recommend(): the best configuration for one workload, and every rule that decides it (tolerance,
tie-breaks, the ceiling of what users run today)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bmc_model.core.breakdown import total_seconds
from bmc_model.core.errors import BMCError
from bmc_model.core.policy import NAMED, Policy
from bmc_model.core.predict import Prediction, acceptance, check_int, context, draft_step_s, predict_at
from bmc_model.core.profile import Profile
from bmc_model.core.specs import ModelSpec
from bmc_model.core.sweep import Sweep, closed_form_r, sweep_r
from bmc_model.core.workload import Workload

WIDTHS = ("padded", "exact", "pad")
GAMMA_AUTO_MAX = 16


def smallest_within(sweep: Sweep, tol: float, ceiling: float = math.inf) -> int | None:
    """Smallest r whose cost is within tol of the sweep's best and at most `ceiling` seconds (never below
    the best itself): near-equal speed, less memory."""
    best = sweep.argmin
    if best is None:
        return None
    top = float(sweep.seconds[best - 1])
    limit = min(top * (1.0 + tol), max(ceiling, top))
    ok = sweep.feasible & (sweep.seconds <= limit)
    return int(sweep.r[np.argmax(ok)])


@dataclass
class Recommendation:
    prediction: Prediction  # the recommended configuration
    sweeps: dict[str, Sweep]  # width label -> cost for every r, at the recommended gamma
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


def _label(width: str, pad: int) -> str:
    return f"pad-{pad}" if width == "pad" else width


def recommend(model: str | ModelSpec | None = "llama-7b", seq: int = 2048, prompt: int | None = None,
              batch: int = 1, dtype: str | None = None, profile: Profile | str | Path | None = None,
              layers: int | None = None, config: str | Path | None = None, gamma: int | str | None = None,
              alpha: float | Sequence[float] | None = None, draft: str | ModelSpec | None = None,
              draft_cost: float | None = None, max_mem: float | None = None, pad: int = 256,
              tolerance: float = 0.005, widths: Sequence[str] = WIDTHS, runtime: str = "bmc") -> Recommendation:
    """The fastest growth configuration (width mode, r, and gamma with SD) for one workload.

    Sweeps every integer r in [1, seq] for each width mode; within a mode it picks the smallest r
    predicted within `tolerance` of that mode's argmin (same speed, less memory) and not slower than
    the static and dynamic baselines (unless nothing in that mode is). `max_mem` caps
    the peak KV bytes. gamma: None/0 plain decoding, an int, or "auto" (0..16, 0 meaning no SD).
    """
    check_int("seq", seq, 2)
    prompt = seq // 2 if prompt is None else prompt
    check_int("prompt", prompt)
    check_int("batch", batch)
    if max_mem is not None and not max_mem > 0:
        raise BMCError(f"max-mem must be a positive number of bytes, got {max_mem}")
    if not 0 <= tolerance < 1:
        raise BMCError(f"tolerance must be in [0, 1), got {tolerance}")
    ctx = context(model, config, layers, batch, dtype, profile, runtime)
    acc = acceptance(alpha)
    tokens = seq - prompt
    if gamma in (None, 0):
        gammas = [0]
    elif gamma == "auto":
        if not acc:
            raise BMCError("gamma auto needs an acceptance rate alpha")
        gammas = list(range(0, min(GAMMA_AUTO_MAX, tokens - 1) + 1))
    else:
        if isinstance(gamma, str):
            try:
                gamma = int(gamma)
            except ValueError:
                raise BMCError(f"gamma must be a non-negative integer or 'auto', got {gamma!r}") from None
        check_int("gamma", gamma, 0)
        if gamma and not acc:
            raise BMCError("speculative decoding (gamma > 0) needs an acceptance rate alpha")
        gammas = [gamma]

    best: tuple[float, int, str, int] | None = None  # (seconds, gamma, width, r)
    per_gamma: dict[int, dict[str, Sweep]] = {}
    ceilings: dict[int, float] = {}  # gamma -> predicted seconds of the better of static and dynamic
    def workload(gamma: int, pol: Policy, r=None) -> Workload:
        return Workload(prompt, seq, batch, gamma, acc,
                        draft_step_s(ctx, draft, draft_cost, pol, prompt, seq, batch, r) if gamma else 0.0)

    r_all = np.arange(1, seq + 1, dtype=np.float64)
    for gamma in gammas:
        sweeps = {}
        for width in widths:
            w = workload(gamma, Policy("fixed", 1, width=width, pad=pad), r_all)  # type: ignore[arg-type]
            sw = sweep_r(width, w, ctx.geo, ctx.prof, max_mem=max_mem, pad=pad)
            sweeps[_label(width, pad)] = sw
        # The tolerance trades speed for memory, but never below what users run today: no pick is
        # predicted slower than HF's StaticCache or DynamicCache at this gamma.
        ceiling = min(float(total_seconds(NAMED[base], workload(gamma, NAMED[base]), ctx.geo, ctx.prof))
                      for base in ("static", "dynamic"))
        ceilings[gamma] = ceiling
        cands = [(float(sw.seconds[rr - 1]), gamma, lab, rr) for lab, sw in sweeps.items()
                 if (rr := smallest_within(sw, tolerance, ceiling)) is not None]
        if cands:
            top = min(cands)
            floor = min(float(sw.seconds[sw.feasible].min()) for sw in sweeps.values() if sw.feasible.any())
            # a width mode ahead by less than the tolerance is not resolved by the model: prefer exact
            # (no mask, no padded rows read), the mode least exposed to error in the attention terms
            near = min(floor * (1.0 + tolerance), max(ceiling, floor))
            exact = [cand for cand in cands if cand[2] == "exact" and cand[0] <= near]
            pick = exact[0] if exact else top
            if best is None or pick[0] < best[0] * (1.0 - 1e-12):
                best = pick
        per_gamma[gamma] = sweeps
    if best is None:
        raise BMCError(f"no configuration fits in --max-mem {max_mem:.0f} bytes of KV cache")
    _, gamma_best, width_best, r_best = best
    sweeps = per_gamma[gamma_best]
    best_pol = sweeps[width_best].policy(r_best)
    w = workload(gamma_best, best_pol)
    pred = predict_at(ctx, best_pol, w)

    baselines: dict[str, Prediction] = {}
    base_pols = {"dynamic": NAMED["dynamic"], "static": NAMED["static"], "geometric": NAMED["geometric"],
                 "mlx": NAMED["mlx"], "llamacpp": NAMED["llamacpp"]}
    cap_s = ceilings[gamma_best]
    rp = smallest_within(sweeps["padded"], tolerance, cap_s) if "padded" in sweeps else None
    if width_best != "padded" and rp is not None:
        base_pols["bmc-padded"] = sweeps["padded"].policy(rp)
    if width_best != "exact":
        base_pols["exact-same-r"] = Policy("fixed", r_best, width="exact")
    for name, pol in base_pols.items():
        baselines[name] = predict_at(ctx, pol, workload(gamma_best, pol))
    no_sd = None
    if gammas != [0]:
        plain = Workload(prompt, seq, batch)
        baselines["dynamic-no-sd"] = predict_at(ctx, NAMED["dynamic"], plain)
        if 0 in per_gamma:
            pairs = [(sw, smallest_within(sw, tolerance, ceilings[0])) for sw in per_gamma[0].values()]
            sw0, r0 = min(((sw, r) for sw, r in pairs if r is not None), key=lambda pair: pair[0].seconds[pair[1] - 1])
            no_sd = predict_at(ctx, sw0.policy(r0), plain)
        else:
            no_sd = predict_at(ctx, pred.policy, plain)
    closed = {lab: closed_form_r(w, ctx.geo, ctx.prof, sw.width) for lab, sw in sweeps.items()}
    notes = []
    if gamma_best == 0 and gammas != [0]:
        notes.append("no SD: speculative decoding does not pay at this acceptance and draft cost")
    return Recommendation(prediction=pred, sweeps=sweeps, argmin_r={lab: sw.argmin for lab, sw in sweeps.items()},
                          chosen_r={lab: smallest_within(sw, tolerance, cap_s) for lab, sw in sweeps.items()},
                          closed_form_r=closed, baselines=baselines, no_sd=no_sd, tolerance=tolerance, notes=notes)
