"""What predict() and recommend() compute on, every shared argument checked once: the model (spec and
geometry), the profile, the lengths, and the speculative setting (Request); a bad argument is a BMCError
naming it, an option that would do nothing is one too, and a meaningful but unusual one is a note."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bmc_model.core import bounds
from bmc_model.core.breakdown import breakdown
from bmc_model.core.errors import BMCError
from bmc_model.core.inputs import name, path
from bmc_model.core.lengths import Lengths, lengths_of
from bmc_model.core.num import Num
from bmc_model.core.policy import Policy
from bmc_model.core.profile import Profile, default_profile_path, embedded_profile, load_profile
from bmc_model.core.specs import DTYPE_BYTES, ModelSpec, resolve_spec
from bmc_model.core.workload import Geometry, Workload

DEFAULT_MODEL = "llama-7b"
DEFAULT_SEQ = 2048  # predict()'s and recommend()'s seq; with max_new and no seq, the prompt is half of it
GAMMA_AUTO_MAX = 16
# read on the command line and by API callers alike (the CLI passes its options straight through)
_SD_ONLY = "needs --gamma N or --gamma auto: it sets speculative decoding, and does nothing without it"


@functools.lru_cache(maxsize=32)
def _cached_profile(path: str, mtime: float) -> Profile:
    return load_profile(path)


@functools.lru_cache(maxsize=1)
def _embedded() -> Profile:
    return embedded_profile()


@functools.lru_cache(maxsize=8)
def _default_path(xdg: str | None, home: str | None) -> str:
    """The cached default profile's path for these variables (built once: predict() runs per request)."""
    return str(default_profile_path())


def get_profile(profile: Profile | str | Path | None) -> Profile:
    """Like load_profile, but reuses a parsed file until it changes (schedulers call per request)."""
    if isinstance(profile, Profile):
        return profile
    if profile is None:
        default = _default_path(os.environ.get("XDG_CACHE_HOME"), os.environ.get("HOME"))
        try:
            mtime = os.stat(default).st_mtime
        except (FileNotFoundError, NotADirectoryError):  # none calibrated (or XDG_CACHE_HOME is a file)
            return _embedded()
        except OSError:
            return load_profile(None)  # e.g. a cache folder we may not enter: the one-line error, naming the fix
        return _cached_profile(default, mtime)
    where = path("profile", profile)
    try:
        mtime = os.stat(where).st_mtime
    except (OSError, ValueError):
        return load_profile(Path(where))  # raises the proper one-line error
    return _cached_profile(where, mtime)


@functools.lru_cache(maxsize=256)
def _spec(model: str | None, config: str | None, layers: int | None) -> ModelSpec:
    return resolve_spec(model, config, layers)


def model_spec(model: object, config: object = None, layers: int | None = None, arg: str = "model") -> ModelSpec:
    """A preset name or HF id, a ModelSpec, or an HF config.json (`config`, which then defines the model:
    a model beside it is a conflict, not silently ignored). Neither: the default model."""
    if config is not None:
        cfg = path("config", config)
        if model is not None:
            shown = model.name if isinstance(model, ModelSpec) else model
            raise BMCError(f"give either a model or a config, not both (model {shown!r}, config {cfg}): "
                           "the config defines the model")
        return _spec(None, cfg, layers)
    if isinstance(model, ModelSpec):
        return model.with_layers(layers)
    key = name(arg, DEFAULT_MODEL if model is None else model, "a preset name, an HF id or a ModelSpec")
    return _spec(key, None, layers)


@dataclass(frozen=True)
class Context:
    spec: ModelSpec
    geo: Geometry
    prof: Profile
    dtype: str


def context(model, config, layers, batch, dtype, profile, runtime: str = "bmc") -> Context:
    spec = model_spec(model, config, bounds.layers(layers))
    runtime = name("runtime", runtime, "bmc or hf").lower()
    prof = get_profile(profile).for_runtime(runtime)
    dt = prof.dtype if dtype is None else name("dtype", dtype, f"one of {', '.join(DTYPE_BYTES)}").lower()
    if dt not in DTYPE_BYTES:
        raise BMCError(f"unknown dtype {dt!r} (use {', '.join(DTYPE_BYTES)})")
    return Context(spec, _geometry(spec, batch, dt, runtime == "bmc"), prof, dt)


@functools.lru_cache(maxsize=256)
def _geometry(spec: ModelSpec, batch: int, dtype: str, folded: bool) -> Geometry:
    return Geometry.of(spec, batch, dtype, folded=folded)


def is_auto(gamma: object) -> bool:
    return isinstance(gamma, str) and gamma.strip().lower() == "auto"


def gammas(gamma: object, tokens: int, auto: bool) -> tuple[int, ...]:
    """None or 0: plain decoding; an integer (or its digits); recommend only: "auto" (0..16) or a list of
    integers (the gammas to weigh, e.g. [0, 4]: with and without SD)."""
    if is_auto(gamma):
        if not auto:
            raise BMCError("gamma 'auto' is for recommend(): predict() prices one gamma")
        return tuple(range(0, min(GAMMA_AUTO_MAX, tokens - 1) + 1))
    if isinstance(gamma, (list, tuple)):
        if not auto:
            raise BMCError(f"gamma must be one integer for predict(), got {gamma!r}")
        if not gamma:
            raise BMCError("gamma as a list must name at least one gamma, got an empty list")
        return tuple(sorted({bounds.gamma(g, tokens) for g in gamma}))
    if isinstance(gamma, str):
        key = gamma.strip()
        if not key.isdigit() or not key.isascii():
            raise BMCError(f"gamma must be a non-negative integer{' or auto' if auto else ''}, got {gamma!r}")
        if len(key) > 9:  # int() refuses thousands of digits; the bound says it better
            raise BMCError(f"gamma must be at most {bounds.GAMMA_MAX}, got {gamma}")
        gamma = int(key)
    return (0,) if gamma is None else (bounds.gamma(gamma, tokens),)


@dataclass(frozen=True)
class Request:
    ctx: Context
    seq: int
    prompt: int
    batch: int
    gammas: tuple[int, ...]  # the gammas to consider: one, or 0..16 for "auto"
    accept: tuple[float, ...]
    draft: ModelSpec | None
    draft_cost: float | None
    notes: tuple[str, ...]
    max_len: int | None = None  # prompt + max_new where max_new was given (None: seq)
    dist: Lengths | None = None  # the output lengths, where they are a distribution (seq is then max_len)

    @property
    def tokens(self) -> int:
        return self.seq - self.prompt

    @property
    def rows(self) -> int:
        """The rows the cache may need before the drafts: max_len, else seq."""
        return self.seq if self.max_len is None else self.max_len

    def plain(self) -> Workload:
        return Workload(self.prompt, self.seq, self.batch, max_len=self.max_len)

    def workload(self, gamma: int, pol: Policy, r: Num | None = None) -> Workload:
        return sd_workload(self.ctx, pol, self.prompt, self.seq, self.batch, gamma, self.accept, self.max_len,
                           self.draft, self.draft_cost, r)


def sd_workload(ctx: Context, pol: Policy, prompt: int | np.ndarray, seq: int | np.ndarray,
                batch: int | np.ndarray, gamma: int, accept: tuple[float, ...], max_len: int | np.ndarray | None,
                draft: ModelSpec | None, draft_cost: float | None, r: Num | None = None) -> Workload:
    """The workload at this gamma; the draft's cache grows under `pol` (at every r at once in a sweep; arrays of
    prompt, seq, batch and max_len: one request each)."""
    plain = Workload(prompt, seq, batch, max_len=max_len) if gamma else None
    step = draft_step_s(ctx, pol, plain, draft, draft_cost, r) if plain is not None else 0.0
    return Workload(prompt, seq, batch, gamma, accept, step, max_len)


def draft_step_s(ctx: Context, pol: Policy, plain: Workload, draft: ModelSpec | None, draft_cost: float | None,
                 r: Num | None = None) -> Num:
    """Seconds of one draft step: a draft model's own plain decode, or a cost ratio to the target's, or 0 (prompt
    lookup). `plain` is the target's workload without SD (arrays: one step per request)."""
    if draft_cost is not None:
        return draft_cost * sum(breakdown(pol, plain, ctx.geo, ctx.prof, r).values()) / plain.tokens
    if draft is None:
        return 0.0
    dgeo = Geometry.of(draft, plain.batch, ctx.dtype)
    return sum(breakdown(pol, plain, dgeo, ctx.prof, r).values()) / plain.tokens


def _draft(draft: object, target: ModelSpec) -> ModelSpec | None:
    if draft is None:
        return None
    dspec = model_spec(draft, arg="draft")
    if dspec.vocab != target.vocab:
        raise BMCError(f"draft {dspec.name} has vocabulary {dspec.vocab}, target {target.name} has "
                       f"{target.vocab}: they must match")
    return dspec


def ends(seq: object, prompt: object, max_new: object, dist: bool) -> tuple[int, int, int | None]:
    """(prompt, seq, max_len). Without max_new: as always, max_len None (seq, or with a distribution seq
    itself caps it). With max_new: the prompt defaults to seq // 2 (seq 2048 where None), max_len is
    prompt + max_new, and seq (default max_len) is at most max_len; with a distribution seq is max_len
    (generation ends where each request stops)."""
    if max_new is None:
        n = bounds.seq(seq)
        p = bounds.prompt(prompt, n)
        return p, n, (n if dist else None)
    given = None if seq is None else bounds.seq(seq)
    if given is not None:
        p = bounds.prompt(prompt, given)
    else:
        p = DEFAULT_SEQ // 2 if prompt is None else bounds.int_in("prompt", prompt, 1, bounds.SEQ_MAX - 1)
    cap = p + bounds.max_new(max_new, p)
    if dist:
        return p, cap, cap
    n = cap if given is None else given
    if n > cap:
        raise BMCError(f"seq ({n}) must be at most prompt + max-new ({p} + {cap - p} = {cap}): max-new caps "
                       "the rows a request may reach")
    return p, n, cap


def request(model: object, seq: object, prompt: object, batch: object, dtype: object, profile: object,
            layers: object, config: object, gamma: object, alpha: object, draft: object, draft_cost: object,
            runtime: object, auto: bool = False, max_new: object = None, mean_new: object = None,
            lengths: object = None) -> Request:
    """Every argument predict() and recommend() share, checked; `auto`: gamma may be "auto". max_new,
    mean_new and lengths: the output length (ends(); core/lengths.py)."""
    has_dist = mean_new is not None or lengths is not None
    p, n, max_len = ends(seq, prompt, max_new, has_dist)
    b = bounds.batch(batch)
    ctx = context(model, config, layers, b, dtype, profile, runtime)  # type: ignore[arg-type]
    gs = gammas(gamma, n - p, auto)
    sd = max(gs) > 0 or is_auto(gamma)
    if has_dist and sd:
        raise BMCError("an output-length distribution (mean-new, lengths) is not modelled with speculative "
                       "decoding yet: give one or the other")
    dist = lengths_of(mean_new, lengths, n - p) if has_dist else None
    for arg, value in (("--alpha", alpha), ("--draft", draft), ("--draft-cost", draft_cost)):
        if value is not None and not sd:
            raise BMCError(f"{arg} {_SD_ONLY}")
    accept = bounds.acceptance(alpha)
    if sd and not accept:
        raise BMCError(f"{'gamma auto' if is_auto(gamma) else 'speculative decoding (gamma > 0)'} needs an "
                       "acceptance rate alpha")
    if draft is not None and draft_cost is not None:
        raise BMCError("give either a draft model or a draft cost ratio, not both")
    cost = bounds.draft_cost(draft_cost)
    dspec = _draft(draft, ctx.spec)
    rows = n if max_len is None else max_len  # the cache is sized for these, however soon a request stops
    bounds.kv_fits(ctx.spec, ctx.geo.rho, rows, max(gs), ctx.prof.host)
    notes = tuple(note for note in (bounds.context_note(ctx.spec, rows),) if note)
    return Request(ctx, n, p, b, gs, accept, dspec, cost, notes, max_len, dist)
