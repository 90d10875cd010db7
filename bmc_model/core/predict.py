"""predict(): the cost and memory of one configuration, and what it is computed in (profile, spec, context)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bmc_model.core import bounds
from bmc_model.core.breakdown import breakdown, memory
from bmc_model.core.errors import BMCError
from bmc_model.core.events import policy_events
from bmc_model.core.policy import NAMED, Policy, parse_policy, parse_width
from bmc_model.core.profile import Profile
from bmc_model.core.request import Context, get_profile, request
from bmc_model.core.specs import DTYPE_BYTES, ModelSpec
from bmc_model.core.workload import Workload

# get_profile lives in request.py; callers import it from here too
__all__ = ["Prediction", "get_profile", "predict", "predict_at", "resolve_policy"]


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
    notes: list[str] = field(default_factory=list)  # what the caller should know (a seq past the context)

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


def resolve_policy(policy: object, r: object, width: object, seq: int, gamma: int) -> Policy:
    """resolve(), remembered for the arguments a scheduler repeats per request (a pure function of them)."""
    try:
        return _resolve_cached(policy, r, width, seq, gamma)
    except TypeError:  # unhashable arguments (a list): resolve() names what is wrong with them
        return resolve(policy, r, width, seq, gamma)


def resolve(policy: object, r: object, width: object, seq: int, gamma: int) -> Policy:
    """The policy from predict()'s policy, r and width (see parse_policy for how they combine).

    No policy: r alone is fixed growth by r with padded width (or `width`); neither is HF's DynamicCache;
    a width alone names no growth, which is an error rather than a guess. An r a user gives is at most
    seq + gamma (past that the cache never grows twice)."""
    if width is not None:
        parse_width(width)  # an unknown width says so before anything says what it needs
    if r is not None:
        r = bounds.r(r, seq, gamma)
    if policy is None:
        if r is None:
            if width is not None:
                raise BMCError(f"width {width!r} needs r or a policy (e.g. r=64, width={width!r}; or "
                               f"policy='static', width={width!r})")
            return NAMED["dynamic"]
        policy = "bmc"  # fixed growth by r, padded unless width says otherwise
    pol = parse_policy(policy, r, width)
    if r is None and pol.growth == "fixed" and isinstance(policy, str) and policy.strip().lower() not in NAMED:
        bounds.r(pol.r, seq, gamma)  # an r spelt in a policy string is the user's too (not a named one's)
    return pol


_resolve_cached = functools.lru_cache(maxsize=1024, typed=True)(resolve)  # typed: r=True is not r=1


def predict_at(ctx: Context, pol: Policy, w: Workload, notes: tuple[str, ...] = ()) -> Prediction:
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
                      growth_events=float(ev.count), profile=ctx.prof.describe(), notes=list(notes))


def predict(model: str | ModelSpec | None = None, seq: int = 2048, prompt: int | None = None,
            policy: Policy | str | None = None, r: int | None = None, width: str | None = None,
            batch: int = 1, dtype: str | None = None, profile: Profile | str | Path | None = None,
            layers: int | None = None, config: str | Path | None = None, gamma: int = 0,
            alpha: float | Sequence[float] | None = None, draft: str | ModelSpec | None = None,
            draft_cost: float | None = None, runtime: str = "bmc") -> Prediction:
    """Predicted decode cost per token for one growth policy, r, width and workload.

    `model` is a preset name, an HF id or a ModelSpec (default llama-7b), or None with `config` (an HF
    config.json); giving both is an error.
    `policy` is a Policy, a name (dynamic, static, geometric, mlx, llamacpp, floor), a spec (bmc:R,
    fixed:R:WIDTH, geometric:G:WIDTH, static:WIDTH) or a label as Policy.label prints it ("r=40 exact"),
    any case; or None with `r` (growth by r rows, padded width unless `width`). `width` (padded, exact,
    pad-P) replaces a named policy's width (static + exact is static exact) and must agree with one a spec
    spells; r must agree with a policy's own r. A width alone, or r with a policy that has none, is an error.
    `seq` is the length at the end of generation, `prompt` the length before (default seq // 2); sizes are
    bounded as core/bounds.py says (a seq past the model's context gives a note in `notes`).
    With gamma > 0: speculative decoding, alpha the acceptance (scalar or per draft position),
    the drafter a model (`draft`), a cost ratio to the target step (`draft_cost`), or neither
    (prompt lookup: drafting costs only the per-iteration overhead); alpha, draft and draft_cost need it.
    `model` or `config` (an HF config.json) names the model, not both.
    `runtime` is the code that runs the model: "bmc" (bmc_model.runtime) or "hf" (transformers
    generate(), whose per-step and per-layer overhead the profile may hold as hf_step_s / hf_layer_s).
    Every bad argument raises BMCError; numpy integers and floats are accepted wherever Python ones are.
    """
    req = request(model, seq, prompt, batch, dtype, profile, layers, config, gamma, alpha, draft, draft_cost,
                  runtime)
    pol = resolve_policy(policy, r, width, req.seq, req.gammas[0])
    return predict_at(req.ctx, pol, req.workload(req.gammas[0], pol), req.notes)
