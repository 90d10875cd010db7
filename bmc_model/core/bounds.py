"""What a size may be: every bound on a user's argument in one place, for predict(), recommend(), the CLI
(through them) and any server in front of them.

Two kinds. Absolute ceilings keep a number from reaching numpy at all when no model could mean it (a
20-digit batch, a seq whose sweep would fill the RAM). Bounds from the model and the host then say what
is meaningful for this request: a KV cache larger than the host's memory is an error (nothing could run
it), a seq past the model's trained context only a note (validation deliberately runs a geometry past its
context, and the cost of the cache does not depend on what the positions mean).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bmc_model.core import host
from bmc_model.core.errors import BMCError
from bmc_model.core.inputs import format_bytes, integer, is_real, real
from bmc_model.core.specs import ModelSpec

SEQ_MAX = 2**22  # 4M positions: past every model's context today; the sweep's arrays stay a few MB
BATCH_MAX = 65536
LAYERS_MAX = 4096
GAMMA_MAX = 1024  # draft tokens per iteration; speculation pays at a few, 16 is what "auto" tries
ROWS_MAX = 2**31 - 1  # any row count a Policy may hold (r, pad): past this no cache has a meaning
DRAFT_COST_MAX = 10.0  # a drafter 10x the target's step never pays
# geometric growth: under 0.1% a step is fixed growth by a few rows (and walking its ~log(N)/0.001 events one
# by one takes seconds); past 1024 the first growth reaches any cap
FACTOR_MIN, FACTOR_MAX = 1.001, 1024.0


def int_in(arg: str, v: object, low: int, high: int, why: str = "") -> int:
    """An integer in [low, high]; `why` explains the upper bound where it is not obvious."""
    n = integer(arg, v)
    if not low <= n <= high:
        raise BMCError(f"{arg} must be an integer in [{low}, {high}]{why}, got {n}")
    return n


def seq(v: object) -> int:
    return int_in("seq", v, 2, SEQ_MAX)


def prompt(v: object, seq: int) -> int:
    """The prompt length, default seq // 2; at least one token must be left to generate."""
    if v is None:
        return seq // 2
    return int_in("prompt", v, 1, seq - 1, f" (shorter than seq {seq})")


def max_new(v: object, prompt: int) -> int:
    """The most new tokens a request may generate: the cache is sized for prompt + max_new rows."""
    return int_in("max-new", v, 1, SEQ_MAX - prompt, f" (prompt {prompt} + max-new at most {SEQ_MAX})")


def batch(v: object) -> int:
    return int_in("batch", v, 1, BATCH_MAX)


def layers(v: object) -> int | None:
    return None if v is None else int_in("layers", v, 1, LAYERS_MAX)


def gamma(v: object, tokens: int) -> int:
    """Draft tokens per iteration: the last verify must still end inside the generation."""
    high = min(GAMMA_MAX, tokens - 1)
    return int_in("gamma", v, 0, high, f" (smaller than the {tokens} tokens to generate)" if high < GAMMA_MAX else "")


def r(v: object, seq: int, gamma: int) -> int:
    """Rows per growth event as a user gives it: past seq + gamma the cache never grows twice, so a larger r
    means nothing more (a Policy built in code may hold any r up to ROWS_MAX)."""
    return int_in("r", v, 1, seq + gamma, " (seq + gamma: a larger r grows no differently)")


def pad(v: object) -> int:
    return int_in("pad", v, 1, ROWS_MAX)


def factor(v: object) -> float:
    x = real("geometric factor", v)
    if not FACTOR_MIN <= x <= FACTOR_MAX:
        raise BMCError(f"geometric factor must be in [{FACTOR_MIN:g}, {FACTOR_MAX:g}], got {v!r}")
    return x


def tolerance(v: object) -> float:
    x = real("tolerance", v)
    if not 0.0 <= x < 1.0:
        raise BMCError(f"tolerance must be in [0, 1), got {v!r}")
    return x


def draft_cost(v: object) -> float | None:
    if v is None:
        return None
    x = real("draft cost", v)
    if not 0.0 <= x < DRAFT_COST_MAX:
        raise BMCError(f"draft cost ratio must be in [0, {DRAFT_COST_MAX:g}), got {v!r}")
    return x


def acceptance(v: object) -> tuple[float, ...]:
    """alpha: a rate, or one per draft position (the last repeats), each in [0, 1); () for none."""
    if v is None:
        return ()
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v.item()
    if is_real(v):
        vals: Sequence[object] = (v,)
    elif isinstance(v, (Sequence, np.ndarray)) and not isinstance(v, (str, bytes)):
        vals = list(v)
        if not vals:
            raise BMCError("alpha must be a rate or a non-empty list of rates, got an empty list")
    else:
        raise BMCError(f"alpha must be a rate in [0, 1) or a list of them, got {v!r} ({type(v).__name__})")
    out = []
    for a in vals:
        x = real("alpha", a)
        if not 0.0 <= x < 1.0:
            raise BMCError(f"alpha must be in [0, 1), got {a!r}")
        out.append(x)
    return tuple(out)


def kv_bytes(spec: ModelSpec, rho: float, rows: int) -> float:
    """K and V of every layer at `rows` rows (rho: one K row of one layer, whole batch, in the dtype used); a
    sliding-window layer holds at most its window (counted at that least, so nothing runnable is refused)."""
    sliding = spec.sliding_count
    window = spec.sliding_window or 0
    return 2.0 * rho * ((spec.layers - sliding) * rows + sliding * min(rows, window))


def host_ram(host_info: dict) -> tuple[int, str]:
    """(bytes, whose): the profile's host RAM where it recorded one, else this host's; 0 where unknown."""
    ram = host_info.get("ram_bytes")
    if is_real(ram) and ram > 0:  # type: ignore[operator]
        return int(ram), "the profile's host"  # type: ignore[call-overload]
    return host.ram_bytes(), "this host"


def _largest_seq(spec: ModelSpec, rho: float, gamma: int, ram: int) -> int:
    """The largest seq whose cache fits in `ram` (1 where not even seq 2 does): kv_bytes rises with seq."""
    lo, hi = 1, SEQ_MAX
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if kv_bytes(spec, rho, mid + gamma) <= ram else (lo, mid - 1)
    return lo


def kv_fits(spec: ModelSpec, rho: float, seq: int, gamma: int, host_info: dict) -> None:
    """The cache at the final length (seq + gamma rows) must fit in the host's RAM: a larger one cannot be
    run, so a cost for it means nothing. The message gives the largest seq that fits."""
    ram, whose = host_ram(host_info)
    need = kv_bytes(spec, rho, seq + gamma)
    if ram <= 0 or need <= ram:
        return
    largest = _largest_seq(spec, rho, gamma, ram)
    fix = (f"the largest seq that fits is {largest}" if largest >= 2 else
           "not even seq 2 fits: lower batch or layers")
    window = f", {spec.sliding_count} of them over a {spec.sliding_window}-row window" if spec.sliding_count else ""
    raise BMCError(f"seq {seq}: the KV cache would need {format_bytes(need)} ({spec.layers} layers{window}, "
                   f"{seq + gamma} rows of {rho:.0f} bytes for K and for V), more than the {format_bytes(ram)} "
                   f"of RAM of {whose}; {fix}")


def reserve_granted(reserve_bytes: float, host_info: dict) -> None:
    """A reserve the OS would refuse (its overcommit policy: host.reserve_limit_bytes, recorded by calibrate)
    cannot be run."""
    limit = host_info.get("reserve_limit_bytes")
    if limit is None or reserve_bytes <= limit:
        return
    mode = host_info.get("overcommit_mode")
    how = f" (vm.overcommit_memory = {mode})" if mode is not None else ""
    raise BMCError(f"a reserve of {format_bytes(reserve_bytes)} is more than the OS of the profile's host grants"
                   f"{how}: {format_bytes(limit)}; lower seq or batch, or use a growth policy")


def context_note(spec: ModelSpec, seq: int) -> str | None:
    """A note, not an error, for a seq past the model's trained context (max_position_embeddings)."""
    if spec.max_context is None or seq <= spec.max_context:
        return None
    return (f"seq {seq} is past {spec.name}'s context of {spec.max_context} positions (max_position_embeddings): "
            "the cost is that of its geometry at this length")
