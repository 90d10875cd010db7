"""predict(): the cost and memory of one configuration, and what it is computed in (profile, spec, context)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bmc_model.core import bounds
from bmc_model.core.breakdown import breakdown
from bmc_model.core.errors import BMCError
from bmc_model.core.events import policy_events
from bmc_model.core.lengths import Lengths, expected
from bmc_model.core.num import Num
from bmc_model.core.policy import NAMED, Policy, parse_policy, parse_width
from bmc_model.core.profile import Profile
from bmc_model.core.request import Context, get_profile, request
from bmc_model.core.resident import KVMemory, kv_memory
from bmc_model.core.specs import DTYPE_BYTES, ModelSpec
from bmc_model.core.workload import Geometry, Workload

# get_profile lives in request.py; callers import it from here too
__all__ = ["Prediction", "Priced", "get_profile", "predict", "predict_at", "predict_lengths", "priced",
           "resolve_policy"]


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
    memory_bytes: float  # KV bytes reserved at the end, spare rows included
    reserved_bytes: float  # the most KV bytes reserved at once, the transient double buffer included
    resident_bytes: float  # KV pages resident at the end (core/resident.py)
    peak_resident_bytes: float  # the most KV pages resident at once
    weights_bytes: float
    growth_events: float
    profile: str
    notes: list[str] = field(default_factory=list)  # what the caller should know (a seq past the context)
    # Under an output-length distribution (core/lengths.py; None otherwise): seq is prompt + max_new,
    # ms_per_token E[seconds] / E[new tokens], breakdown likewise, resident_bytes, peak_resident_bytes and
    # growth_events expectations, memory_bytes and reserved_bytes the most over the lengths
    lengths: str | None = None  # the distribution, in words
    expected_new_tokens: float | None = None
    worst_peak_resident_bytes: float | None = None  # the most over the lengths: what a memory cap must hold
    max_new: int | None = None  # where given: the cache is sized for prompt + max_new rows

    @property
    def tokens_per_s(self) -> float:
        return self.batch * 1000.0 / self.ms_per_token

    @property
    def new_tokens(self) -> float:
        """New tokens of one request: ms_per_token * new_tokens / 1000 is its decode seconds."""
        return self.seq - self.prompt if self.expected_new_tokens is None else self.expected_new_tokens

    @property
    def worst_resident(self) -> float:
        """The peak resident KV bytes a memory cap must hold: the worst length's under a distribution."""
        return self.peak_resident_bytes if self.worst_peak_resident_bytes is None else self.worst_peak_resident_bytes

    @property
    def cap_rows(self) -> int:
        """Rows the cache is sized for (static and reserve allocate them): prompt + max_new, else seq, + gamma."""
        return (self.seq if self.max_new is None else self.prompt + self.max_new) + self.gamma

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
                "reserved_bytes": self.reserved_bytes, "resident_bytes": self.resident_bytes,
                "peak_resident_bytes": self.peak_resident_bytes, "growth_events": self.growth_events,
                **self.lengths_dict()}

    def lengths_dict(self) -> dict:
        """The output-length figures, where there are any (nothing in the plain case: its JSON is as always)."""
        if self.lengths is None:
            return {} if self.max_new is None else {"max_new": self.max_new}
        return {"output_length": self.lengths, "max_new": self.max_new,
                "expected_new_tokens": self.expected_new_tokens,
                "worst_peak_resident_bytes": self.worst_peak_resident_bytes}


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


def _granted(ctx: Context, pol: Policy, reserved_bytes: float) -> None:
    """A reserve the OS of the profile's host would refuse cannot run (core/bounds.reserve_granted)."""
    if pol.growth == "reserve":
        bounds.reserve_granted(reserved_bytes, ctx.prof.host)


def weights_bytes(ctx: Context) -> float:
    e = DTYPE_BYTES[ctx.dtype]
    return float((ctx.spec.layers * ctx.spec.layer_params() + ctx.spec.head_params()
                  + (0 if ctx.spec.tied_embeddings else ctx.spec.head_params())) * e)


def predict_lengths(ctx: Context, pol: Policy, prompt: int, batch: int, dist: Lengths,
                    notes: tuple[str, ...] = ()) -> Prediction:
    """predict_at over a distribution of output lengths (plain decoding): ms/token is E[seconds] / E[new
    tokens], a ratio of expectations, so a long request weighs by its tokens."""
    x = expected(pol, prompt, batch, dist, ctx.geo, ctx.prof)
    _granted(ctx, pol, x.reserved_peak)
    scale = 1000.0 / x.tokens
    ms = {name: v * scale for name, v in x.seconds.items()}
    return Prediction(model=ctx.spec.name, policy=pol, seq=prompt + dist.max_new, prompt=prompt, batch=batch,
                      dtype=ctx.dtype, gamma=0, advance=1.0, ms_per_token=sum(ms.values()), breakdown=ms,
                      memory_bytes=x.reserved_end, reserved_bytes=x.reserved_peak, resident_bytes=x.resident_end,
                      peak_resident_bytes=x.resident_peak, weights_bytes=weights_bytes(ctx), growth_events=x.events,
                      profile=ctx.prof.describe(), notes=list(notes), lengths=dist.describe(),
                      expected_new_tokens=x.tokens, worst_peak_resident_bytes=x.worst_resident_peak,
                      max_new=dist.max_new)


@dataclass(frozen=True)
class Priced:
    """One configuration's figures, each a float or, over many requests (core/many.py), an array: the one
    path predict() and predict_many() both compute with."""

    ms: dict[str, Num]  # ms per token by term
    mem: KVMemory
    events: Num  # growth events


def priced(pol: Policy, w: Workload, geo: Geometry, prof: Profile, r: Num | None = None) -> Priced:
    ev = policy_events(pol, w, geo, prof, r)
    parts = breakdown(pol, w, geo, prof, r, ev=ev)
    scale = 1000.0 / w.tokens
    return Priced({name: v * scale for name, v in parts.items()}, kv_memory(pol, w, geo, prof, r, ev=ev), ev.count)


def predict_at(ctx: Context, pol: Policy, w: Workload, notes: tuple[str, ...] = ()) -> Prediction:
    x = priced(pol, w, ctx.geo, ctx.prof)
    ms = {name: float(v) for name, v in x.ms.items()}
    mem = x.mem
    _granted(ctx, pol, float(mem.reserved_peak))
    return Prediction(model=ctx.spec.name, policy=pol, seq=w.seq, prompt=w.prompt, batch=w.batch, dtype=ctx.dtype,
                      gamma=w.gamma, advance=w.advance, ms_per_token=sum(ms.values()), breakdown=ms,
                      memory_bytes=float(mem.reserved_end), reserved_bytes=float(mem.reserved_peak),
                      resident_bytes=float(mem.resident_end), peak_resident_bytes=float(mem.resident_peak),
                      weights_bytes=weights_bytes(ctx), growth_events=float(x.events), profile=ctx.prof.describe(),
                      notes=list(notes),
                      max_new=None if w.max_len is None else w.max_len - w.prompt)


def predict(model: str | ModelSpec | None = None, seq: int = 2048, prompt: int | None = None,
            policy: Policy | str | None = None, r: int | None = None, width: str | None = None,
            batch: int = 1, dtype: str | None = None, profile: Profile | str | Path | None = None,
            layers: int | None = None, config: str | Path | None = None, gamma: int = 0,
            alpha: float | Sequence[float] | None = None, draft: str | ModelSpec | None = None,
            draft_cost: float | None = None, runtime: str = "bmc", max_new: int | None = None,
            mean_new: float | None = None, lengths: Lengths | str | Path | None = None) -> Prediction:
    """Predicted decode cost per token for one growth policy, r, width and workload.

    `model` is a preset name, an HF id or a ModelSpec (default llama-7b), or None with `config` (an HF
    config.json); giving both is an error.
    `policy` is a Policy, a name (dynamic, static, geometric, mlx, llamacpp, reserve), a spec (bmc:R,
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
    `max_new` caps the new tokens a request may generate: the cache is sized for prompt + max_new rows (the
    prompt defaults to seq // 2, seq to prompt + max_new where None), while generation ends at seq; or,
    with `mean_new` (geometric stopping, mean_new in (0, max_new]) or `lengths` (a file of observed
    new-token counts, one per line, or a Lengths), where each request stops: the Prediction is then the
    expectation over that distribution (its fields say how; plain decoding only).
    Every bad argument raises BMCError; numpy integers and floats are accepted wherever Python ones are.
    """
    req = request(model, seq, prompt, batch, dtype, profile, layers, config, gamma, alpha, draft, draft_cost,
                  runtime, max_new=max_new, mean_new=mean_new, lengths=lengths)
    pol = resolve_policy(policy, r, width, req.rows, req.gammas[0])
    if req.dist is not None:
        return predict_lengths(req.ctx, pol, req.prompt, req.batch, req.dist, req.notes)
    return predict_at(req.ctx, pol, req.workload(req.gammas[0], pol), req.notes)
