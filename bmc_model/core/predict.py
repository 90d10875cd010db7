"""predict(): the cost and memory of one configuration, and what it is computed in (profile, spec, context)."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bmc_model.core.breakdown import breakdown, memory
from bmc_model.core.errors import BMCError
from bmc_model.core.events import policy_events
from bmc_model.core.policy import NAMED, Policy, parse_policy
from bmc_model.core.profile import Profile, default_profile_path, embedded_profile, load_profile
from bmc_model.core.specs import DTYPE_BYTES, ModelSpec, resolve_spec
from bmc_model.core.workload import Geometry, Workload


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
        path = str(default_profile_path())
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
    return embedded_profile()


@functools.lru_cache(maxsize=256)
def _spec(model: str, config: str | None, layers: int | None) -> ModelSpec:
    return resolve_spec(model, config, layers)


def _as_spec(model: str | ModelSpec | None, config: str | Path | None, layers: int | None) -> ModelSpec:
    if isinstance(model, ModelSpec):
        return model.with_layers(layers)
    return _spec(model or "llama-7b", None if config is None else str(config), layers)


def check_int(name: str, v: object, low: int = 1) -> int:
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
        check_int("r", r)
    if policy is None:
        if r is None:
            return NAMED["dynamic"]
        return Policy("fixed", r, width=width or "padded", pad=pad)  # type: ignore[arg-type]
    pol = parse_policy(policy, r)
    if width is not None and pol.growth == "fixed" and policy in ("fixed", "bmc"):
        pol = Policy("fixed", pol.r, width=width, pad=pad)  # type: ignore[arg-type]
    return pol


@dataclass(frozen=True)
class Context:
    spec: ModelSpec
    geo: Geometry
    prof: Profile
    dtype: str


def context(model, config, layers, batch, dtype, profile, runtime: str = "bmc") -> Context:
    spec = _as_spec(model, config, layers)
    prof = get_profile(profile).for_runtime(runtime)
    dt = dtype or prof.dtype
    if dt not in DTYPE_BYTES:
        raise BMCError(f"unknown dtype {dt!r} (use {', '.join(DTYPE_BYTES)})")
    return Context(spec, Geometry.of(spec, batch, dt, folded=runtime == "bmc"), prof, dt)


def draft_step_s(ctx: Context, draft, draft_cost, policy: Policy, prompt: int, seq: int, batch: int,
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


def predict_at(ctx: Context, pol: Policy, w: Workload) -> Prediction:
    ev = policy_events(pol, w, ctx.geo, ctx.prof)
    parts = breakdown(pol, w, ctx.geo, ctx.prof, ev=ev)
    scale = 1000.0 / w.tokens
    ms = {name: float(v) * scale for name, v in parts.items()}
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
    check_int("seq", seq, 2)
    prompt = seq // 2 if prompt is None else prompt
    check_int("prompt", prompt)
    check_int("batch", batch)
    pol = resolve_policy(policy, r, width)
    ctx = context(model, config, layers, batch, dtype, profile, runtime)
    acc = acceptance(alpha)
    if gamma and not acc:
        raise BMCError("speculative decoding (gamma > 0) needs an acceptance rate alpha")
    plain_pol = pol
    w = Workload(prompt, seq, batch, gamma, acc,
                 draft_step_s(ctx, draft, draft_cost, plain_pol, prompt, seq, batch) if gamma else 0.0)
    return predict_at(ctx, pol, w)
