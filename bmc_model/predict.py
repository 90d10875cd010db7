"""The public entry points: predict() for one configuration, recommend() for the best one."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bmc_model.cost import Geometry, Workload, breakdown, memory, policy_events, total_seconds
from bmc_model.errors import BMCError
from bmc_model.optimize import Sweep, closed_form_r, sweep_r
from bmc_model.policy import NAMED, Policy, parse_policy
from bmc_model.profile import Profile, load_profile
from bmc_model.specs import DTYPE_BYTES, ModelSpec, resolve_spec

WIDTHS = ("padded", "exact", "pad")
GAMMA_AUTO_MAX = 16


@dataclass
class Prediction:
    model: str
    policy: Policy
    seq: int
    prompt: int
    batch: int
    dtype: str
    gamma: int
    advance: float  # E: tokens kept per target forward pass
    ms_per_token: float  # wall ms per decode position (the whole batch advances one token)
    breakdown: dict[str, float]  # ms per token by term; sums to ms_per_token
    memory_bytes: float  # KV bytes held at the end, spare rows included
    peak_memory_bytes: float  # largest KV footprint, transient double buffer included
    weights_bytes: float
    growth_events: float
    profile: str

    @property
    def tokens_per_s(self) -> float:
        return self.batch * 1000.0 / self.ms_per_token

    @property
    def r(self) -> int | None:
        return self.policy.r if self.policy.growth == "fixed" else None

    @property
    def width(self) -> str:
        return self.policy.width_label

    def to_dict(self) -> dict:
        return {"policy": self.policy.label, "r": self.r, "width": self.width, "gamma": self.gamma,
                "ms_per_token": self.ms_per_token, "tokens_per_s": self.tokens_per_s,
                "breakdown_ms": self.breakdown, "memory_bytes": self.memory_bytes,
                "peak_memory_bytes": self.peak_memory_bytes, "growth_events": self.growth_events}


@functools.lru_cache(maxsize=32)
def _cached_profile(path: str, mtime: float) -> Profile:
    return load_profile(path)


def get_profile(profile: Profile | str | Path | None) -> Profile:
    """Like load_profile, but reuses a parsed file until it changes (schedulers call per request)."""
    if isinstance(profile, Profile):
        return profile
    if profile is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "bmc-tune", "profile.json")  # as profile.default_profile_path()
        try:
            return _cached_profile(path, os.stat(path).st_mtime)
        except FileNotFoundError:
            return _embedded()
    path = os.fspath(profile)
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return load_profile(Path(path))  # raises the proper one-line error
    return _cached_profile(path, mtime)


@functools.lru_cache(maxsize=1)
def _embedded() -> Profile:
    from bmc_model.profile import embedded_profile

    return embedded_profile()


@functools.lru_cache(maxsize=256)
def _spec(model: str, config: str | None, layers: int | None) -> ModelSpec:
    return resolve_spec(model, config, layers)


def _as_spec(model: str | ModelSpec | None, config: str | Path | None, layers: int | None) -> ModelSpec:
    if isinstance(model, ModelSpec):
        return model.with_layers(layers)
    return _spec(model or "llama-7b", None if config is None else str(config), layers)


def _check_int(name: str, v: object, low: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise BMCError(f"{name} must be an integer >= {low}, got {v!r}")
    return v


def acceptance(alpha: float | Sequence[float] | None) -> tuple[float, ...]:
    if alpha is None:
        return ()
    vals = (alpha,) if isinstance(alpha, (int, float)) else tuple(alpha)
    for a in vals:
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= a < 1.0 or math.isnan(a):
            raise BMCError(f"alpha must be in [0, 1), got {a!r}")
    return tuple(float(a) for a in vals)


def resolve_policy(policy: Policy | str | None, r: int | None, width: str | None, pad: int = 256) -> Policy:
    if isinstance(policy, Policy):
        return policy
    if r is not None:
        _check_int("r", r)
    if policy is None:
        if r is None:
            return NAMED["dynamic"]
        return Policy("fixed", r, width=width or "padded", pad=pad)  # type: ignore[arg-type]
    pol = parse_policy(policy, r)
    if width is not None and pol.growth == "fixed" and policy in ("fixed", "bmc"):
        pol = Policy("fixed", pol.r, width=width, pad=pad)  # type: ignore[arg-type]
    return pol


@dataclass(frozen=True)
class _Ctx:
    spec: ModelSpec
    geo: Geometry
    prof: Profile
    dtype: str


def _context(model, config, layers, batch, dtype, profile, runtime: str = "bmc") -> _Ctx:
    spec = _as_spec(model, config, layers)
    prof = get_profile(profile).for_runtime(runtime)
    dt = dtype or prof.dtype
    if dt not in DTYPE_BYTES:
        raise BMCError(f"unknown dtype {dt!r} (use {', '.join(DTYPE_BYTES)})")
    return _Ctx(spec, Geometry.of(spec, batch, dt, folded=runtime == "bmc"), prof, dt)


def _draft_step_s(ctx: _Ctx, draft, draft_cost, policy: Policy, prompt: int, seq: int, batch: int,
                  r=None) -> float:
    """Seconds of one draft step: a draft model's own plain decode, or a cost ratio, or 0.

    The draft's cache grows under the same policy as the target's (for every r at once in a sweep).
    """
    if draft is not None and draft_cost is not None:
        raise BMCError("give either a draft model or a draft cost ratio, not both")
    if draft_cost is not None:
        if not 0.0 <= draft_cost < 10.0:
            raise BMCError(f"draft cost ratio must be in [0, 10), got {draft_cost}")
        plain = Workload(prompt, seq, batch)
        return draft_cost * sum(breakdown(policy, plain, ctx.geo, ctx.prof, r).values()) / plain.tokens
    if draft is None:
        return 0.0
    dspec = _as_spec(draft, None, None)
    if dspec.vocab != ctx.spec.vocab:
        raise BMCError(f"draft {dspec.name} has vocabulary {dspec.vocab}, target {ctx.spec.name} has "
                       f"{ctx.spec.vocab}: they must match")
    dgeo = Geometry.of(dspec, batch, ctx.dtype)
    plain = Workload(prompt, seq, batch)
    return sum(breakdown(policy, plain, dgeo, ctx.prof, r).values()) / plain.tokens


def _predict(ctx: _Ctx, pol: Policy, w: Workload) -> Prediction:
    ev = policy_events(pol, w, ctx.geo, ctx.prof)
    parts = breakdown(pol, w, ctx.geo, ctx.prof, ev=ev)
    scale = 1000.0 / w.tokens
    ms = {k: float(v) * scale for k, v in parts.items()}
    steady, peak = memory(pol, w, ctx.geo, ctx.prof, ev=ev)
    e = DTYPE_BYTES[ctx.dtype]
    wbytes = float((ctx.spec.layers * ctx.spec.layer_params() + ctx.spec.head_params()
                    + (0 if ctx.spec.tied_embeddings else ctx.spec.head_params())) * e)
    return Prediction(model=ctx.spec.name, policy=pol, seq=w.seq, prompt=w.prompt, batch=w.batch, dtype=ctx.dtype,
                      gamma=w.gamma, advance=w.advance, ms_per_token=sum(ms.values()), breakdown=ms,
                      memory_bytes=float(steady), peak_memory_bytes=float(peak), weights_bytes=wbytes,
                      growth_events=float(ev.count), profile=ctx.prof.describe())


def predict(model: str | ModelSpec | None = "llama-7b", seq: int = 2048, prompt: int | None = None,
            policy: Policy | str | None = None, r: int | None = None, width: str | None = None,
            batch: int = 1, dtype: str | None = None, profile: Profile | str | Path | None = None,
            layers: int | None = None, config: str | Path | None = None, gamma: int = 0,
            alpha: float | Sequence[float] | None = None, draft: str | ModelSpec | None = None,
            draft_cost: float | None = None, runtime: str = "bmc") -> Prediction:
    """Predicted decode cost per token for one growth policy, r, width and workload.

    `policy` is a Policy, a name (dynamic, static, geometric, mlx, llamacpp, floor, bmc:R,
    fixed:R:WIDTH, ...) or None with `r` (growth by r rows, padded width unless `width`).
    `seq` is the length at the end of generation, `prompt` the length before (default seq // 2).
    With gamma > 0: speculative decoding, alpha the acceptance (scalar or per draft position),
    the drafter a model (`draft`), a cost ratio to the target step (`draft_cost`), or neither
    (prompt lookup: drafting costs only the per-iteration overhead).
    `runtime` is the code that runs the model: "bmc" (bmc_model.runtime) or "hf" (transformers
    generate(), whose per-step and per-layer overhead the profile may hold as hf_step_s / hf_layer_s).
    """
    _check_int("seq", seq, 2)
    prompt = seq // 2 if prompt is None else prompt
    _check_int("prompt", prompt)
    _check_int("batch", batch)
    pol = resolve_policy(policy, r, width)
    ctx = _context(model, config, layers, batch, dtype, profile, runtime)
    acc = acceptance(alpha)
    if gamma and not acc:
        raise BMCError("speculative decoding (gamma > 0) needs an acceptance rate alpha")
    plain_pol = pol
    w = Workload(prompt, seq, batch, gamma, acc,
                 _draft_step_s(ctx, draft, draft_cost, plain_pol, prompt, seq, batch) if gamma else 0.0)
    return _predict(ctx, pol, w)


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
    _check_int("seq", seq, 2)
    prompt = seq // 2 if prompt is None else prompt
    _check_int("prompt", prompt)
    _check_int("batch", batch)
    if max_mem is not None and not max_mem > 0:
        raise BMCError(f"max-mem must be a positive number of bytes, got {max_mem}")
    if not 0 <= tolerance < 1:
        raise BMCError(f"tolerance must be in [0, 1), got {tolerance}")
    ctx = _context(model, config, layers, batch, dtype, profile, runtime)
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
        _check_int("gamma", gamma, 0)
        if gamma and not acc:
            raise BMCError("speculative decoding (gamma > 0) needs an acceptance rate alpha")
        gammas = [gamma]

    best: tuple[float, int, str, int] | None = None  # (seconds, gamma, width, r)
    per_gamma: dict[int, dict[str, Sweep]] = {}
    ceilings: dict[int, float] = {}  # gamma -> predicted seconds of the better of static and dynamic
    def workload(g: int, pol: Policy, r=None) -> Workload:
        return Workload(prompt, seq, batch, g, acc,
                        _draft_step_s(ctx, draft, draft_cost, pol, prompt, seq, batch, r) if g else 0.0)

    r_all = np.arange(1, seq + 1, dtype=np.float64)
    for g in gammas:
        sweeps = {}
        for wd in widths:
            w = workload(g, Policy("fixed", 1, width=wd, pad=pad), r_all)  # type: ignore[arg-type]
            sw = sweep_r(wd, w, ctx.geo, ctx.prof, max_mem=max_mem, pad=pad)
            sweeps[_label(wd, pad)] = sw
        # The tolerance trades speed for memory, but never below what users run today: no pick is
        # predicted slower than HF's StaticCache or DynamicCache at this gamma.
        ceiling = min(float(total_seconds(NAMED[b], workload(g, NAMED[b]), ctx.geo, ctx.prof))
                      for b in ("static", "dynamic"))
        ceilings[g] = ceiling
        cands = [(float(sw.seconds[rr - 1]), g, lab, rr) for lab, sw in sweeps.items()
                 if (rr := sw.smallest_within(tolerance, ceiling)) is not None]
        if cands:
            top = min(cands)
            floor = min(float(sw.seconds[sw.feasible].min()) for sw in sweeps.values() if sw.feasible.any())
            # a width mode ahead by less than the tolerance is not resolved by the model: prefer exact
            # (no mask, no padded rows read), the mode least exposed to error in the attention terms
            near = min(floor * (1.0 + tolerance), max(ceiling, floor))
            exact = [c for c in cands if c[2] == "exact" and c[0] <= near]
            pick = exact[0] if exact else top
            if best is None or pick[0] < best[0] * (1.0 - 1e-12):
                best = pick
        per_gamma[g] = sweeps
    if best is None:
        raise BMCError(f"no configuration fits in --max-mem {max_mem:.0f} bytes of KV cache")
    _, g_best, w_best, r_best = best
    sweeps = per_gamma[g_best]
    best_pol = sweeps[w_best].policy(r_best)
    w = workload(g_best, best_pol)
    pred = _predict(ctx, best_pol, w)

    baselines: dict[str, Prediction] = {}
    base_pols = {"dynamic": NAMED["dynamic"], "static": NAMED["static"], "geometric": NAMED["geometric"],
                 "mlx": NAMED["mlx"], "llamacpp": NAMED["llamacpp"]}
    cap_s = ceilings[g_best]
    rp = sweeps["padded"].smallest_within(tolerance, cap_s) if "padded" in sweeps else None
    if w_best != "padded" and rp is not None:
        base_pols["bmc-padded"] = sweeps["padded"].policy(rp)
    if w_best != "exact":
        base_pols["exact-same-r"] = Policy("fixed", r_best, width="exact")
    for name, pol in base_pols.items():
        baselines[name] = _predict(ctx, pol, workload(g_best, pol))
    no_sd = None
    if gammas != [0]:
        plain = Workload(prompt, seq, batch)
        baselines["dynamic-no-sd"] = _predict(ctx, NAMED["dynamic"], plain)
        if 0 in per_gamma:
            cands = [(per_gamma[0][k], per_gamma[0][k].smallest_within(tolerance, ceilings[0])) for k in per_gamma[0]]
            sw0, r0 = min(((s, r) for s, r in cands if r is not None), key=lambda t: t[0].seconds[t[1] - 1])
            no_sd = _predict(ctx, sw0.policy(r0), plain)
        else:
            no_sd = _predict(ctx, pred.policy, plain)
    closed = {lab: closed_form_r(w, ctx.geo, ctx.prof, sw.width) for lab, sw in sweeps.items()}
    notes = []
    if g_best == 0 and gammas != [0]:
        notes.append("no SD: speculative decoding does not pay at this acceptance and draft cost")
    return Recommendation(prediction=pred, sweeps=sweeps, argmin_r={k: s.argmin for k, s in sweeps.items()},
                          chosen_r={k: s.smallest_within(tolerance, cap_s) for k, s in sweeps.items()},
                          closed_form_r=closed, baselines=baselines, no_sd=no_sd, tolerance=tolerance, notes=notes)
