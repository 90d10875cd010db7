"""Refresh a profile: re-time the terms that drift (probe.py) at one model's sizes in a few seconds, and return
the profile with a new refresh section (core/refresh.py): the calibrated terms as they were, new factors
measured against them (never against an earlier refresh: no compounding). Nothing is written here.

What is timed, for `model` decoding `batch` sequences to `seq` from seq // 2 (predict()'s default prompt): one
layer's matrices and the LM head at the model's shapes, one token row (and `rows` and the batch, for row
ratios); torch.cat and one layer's attention (exact and padded, one row; and, for a GQA model with a profile that
has hf_attn_gqa, transformers' exact-width path) at the decode's middle width; first
touch of one K tensor at the sizes a growing cache allocates: its first, middle and last (prompt + 1, the middle,
seq - 1 rows; not seq: Llama-2-7b's K at 2048 rows is 32 MiB, glibc's mmap ceiling, which first-touches at ten
times the cost of the 2047 rows the decode last allocates). K/V sizes are the batch's: torch.cat's cost per byte
is not one line across that ceiling, and a batch of four moves a tensor past it. For a profile that prices
transformers (hf_matmul_ratio), also one layer's matrices as transformers holds them, unfused, at every row
count: the fused four's m-row ratio is not the seven's (probe.hf_ratio_factor). Everything cold (stream_bytes,
as calibration). For runtime "hf" (transformers), also transformers' framework cost in place at the model's
geometry (hf_layer_probe.py), where the profile has it.

Torch is imported only to measure; importing this module registers refresh_for as the refresher that layers
below calibrate reach through core/refresh.py (BMCCache.tuned(refresh=True)).
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bmc_model.calibrate import hf_layer_probe
from bmc_model.calibrate.plan import stream_bytes
from bmc_model.core.errors import BMCError
from bmc_model.core.host import available_ram_bytes
from bmc_model.core.profile import Profile, load_profile
from bmc_model.core.profile_check import check_profile, refresh_problem
from bmc_model.core.refresh import Ratios, Refresh, refreshed, register_refresher
from bmc_model.core.request import DEFAULT_MODEL, DEFAULT_SEQ, model_spec
from bmc_model.core.specs import DTYPE_BYTES, ModelSpec
from bmc_model.core.workload import Geometry

DEFAULT_BUDGET_S = 8.0  # of measuring, buffers included: `calibrate --refresh` stays within ~15 s with imports
MIN_STEPS = 3  # a median needs a few samples, whatever the budget
MAX_STEPS = 400
CAT_SPAN = 16  # bench_memory.CAT_SPAN (kept torch-free here; only the memory estimate reads it)


@dataclass(frozen=True)
class RefreshPlan:
    spec: ModelSpec
    seq: int
    batch: int  # sequences decoded together: K/V sizes are the batch's, and the matmuls run at its rows
    dtype: str  # the profile's: its terms were calibrated in it
    rows: tuple[int, ...]  # token rows per matmul, 1 first; more than one: row ratios too
    width: int  # torch.cat and attention rows: the decode's middle
    alloc_sizes: tuple[int, ...]  # bytes of one K tensor at the sizes a growing cache allocates
    stream_bytes: int
    budget_s: float
    hf_layers: int = 0  # layers of the in-place transformers probe (hf_layer_probe.py); 0: none
    hf_matrices: bool = False  # also one layer as transformers holds it, unfused (a profile with hf_matmul_ratio)

    def nbytes(self) -> int:
        """What the probe holds, roughly: the weight copies, cat's sources and successors, attention's pool."""
        e = DTYPE_BYTES[self.dtype]
        parts = (self.spec.layer_params(), self.spec.head_params(), *((self.spec.layer_params(),) * self.hf_matrices))
        weights = sum(max(1, -(-self.stream_bytes // (n * e))) * n * e for n in parts)
        row = self.batch * self.spec.kv_heads * self.spec.head_dim * e
        cat = max(self.stream_bytes, self.width * row) + 2 * (self.width + CAT_SPAN) * row
        attn = max(self.stream_bytes, 2 * (self.width + 64) * row)
        return int(weights + cat + attn + max(self.alloc_sizes) + self.hf_layers * self.spec.layer_params() * e)


def plan_refresh(profile: Profile, model: ModelSpec | str, seq: int, budget_s: float,
                 rows: tuple[int, ...] = (1,), prompt: int | None = None, batch: int = 1,
                 runtime: str = "bmc") -> RefreshPlan:
    """Check what needs no torch (one-line BMCError each) and size the measurement. prompt: rows cached when
    decoding starts (default seq // 2): torch.cat and attention are timed at the decode's middle width. batch:
    sequences decoded together (the matmuls are also timed at that many rows). runtime "hf": transformers'
    framework cost is timed too, where the profile has its in-place terms."""
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 2:
        raise BMCError(f"seq must be an integer of at least 2, got {seq!r}")
    if isinstance(budget_s, bool) or not isinstance(budget_s, (int, float)) or not 0 < budget_s <= 600:
        raise BMCError(f"budget_s must be a number of seconds in (0, 600], got {budget_s!r}")
    if not rows or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in rows) or 1 not in rows:
        raise BMCError(f"rows must be positive integers including 1, got {rows!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise BMCError(f"batch must be a positive integer, got {batch!r}")
    if runtime not in ("bmc", "hf"):
        raise BMCError(f"runtime must be 'bmc' or 'hf', got {runtime!r}")
    device = profile.host.get("device", "cpu")
    if device != "cpu":
        raise BMCError(f"refresh re-times on the CPU; profile {profile.source} is for {device}: calibrate it again")
    spec = model_spec(model)
    prompt = seq // 2 if prompt is None else prompt
    if isinstance(prompt, bool) or not isinstance(prompt, int) or not 1 <= prompt < seq:
        raise BMCError(f"prompt must be an integer in [1, seq), got {prompt!r} with seq {seq}")
    width = (prompt + seq) // 2
    row = batch * spec.kv_heads * spec.head_dim * DTYPE_BYTES[profile.dtype]
    streamed = stream_bytes(int(profile.host.get("llc_bytes", 0) or 0))
    hf_layers = (hf_layer_probe.probe_layers(spec, profile.dtype, streamed)
                 if runtime == "hf" and hf_layer_probe.can_probe(profile) else 0)
    if hf_layers and importlib.util.find_spec("transformers") is None:
        raise BMCError("refreshing for runtime 'hf' times transformers' own decoder: install the hf extra "
                       "(pip install 'bmc-tune[hf]')")
    plan = RefreshPlan(spec=spec, seq=seq, batch=batch, dtype=profile.dtype, rows=tuple(sorted({*rows, batch})),
                       width=width,
                       alloc_sizes=tuple(sorted({n * row for n in (min(prompt + 1, seq - 1), width, seq - 1)})),
                       stream_bytes=streamed, budget_s=float(budget_s), hf_layers=hf_layers,
                       hf_matrices=profile.hf_matmul_ratio is not None)
    avail = available_ram_bytes()
    if avail and plan.nbytes() > avail // 2:
        gib = 2**30
        raise BMCError(f"refreshing at {spec.name}'s sizes (seq {seq}, batch {batch}) needs about "
                       f"{plan.nbytes() / gib:.1f} GiB, more than half the {avail / gib:.1f} GiB available: use a "
                       "shorter seq, a smaller batch or a smaller model")
    return plan


def measure(plan: RefreshPlan, calibrated: Profile, threads: int | None = None) -> tuple[dict[str, float], Ratios]:
    """Run the probe within the plan's budget; the factors against `calibrated`, and row ratios (rows > 1)."""
    import torch

    from bmc_model.calibrate.probe import CAT_CALLS, GQA, MatmulProbe, probe_factors

    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise BMCError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    cat_calls = min(2 * plan.spec.layers, CAT_CALLS)
    probe = MatmulProbe(plan.spec, plan.rows, steps=MAX_STEPS, cat_rows=plan.width, stream_bytes=plan.stream_bytes,
                        cat_calls=cat_calls, attn_width=plan.width,
                        attn_forms=((1, False), (1, True)), alloc_sizes=plan.alloc_sizes, dtype=plan.dtype,
                        batch=plan.batch, attn_grouped=GQA in calibrated.terms, hf_matrices=plan.hf_matrices)
    try:
        hf = (hf_layer_probe.hf_framework_factor(calibrated, plan.spec, plan.batch, plan.hf_layers)
              if plan.hf_layers else None)
        # warm-up: first calls, thread pool, page tables, and a whole CAT_SPAN cycle of every cat tensor: their
        # first frees move glibc's mmap threshold, and a decode some steps in pays its blocks as they are after
        for _ in range(1 + -(-CAT_SPAN // cat_calls)):
            probe.step()
        probe.discard()
        n, step_s = 0, 0.0  # the longest step so far: a busy host's steps vary, and the budget is a ceiling
        while n < MIN_STEPS or (n < MAX_STEPS and time.perf_counter() - t0 + step_s <= plan.budget_s):
            s0 = time.perf_counter()
            probe.step()
            step_s = max(step_s, time.perf_counter() - s0)
            n += 1
        factors = probe_factors(calibrated, probe, Geometry.of(plan.spec, plan.batch, plan.dtype))
        if hf is not None:
            factors[hf_layer_probe.TERM] = hf
        ratios = probe.ratios() if len(plan.rows) > 1 else {}
    finally:
        probe.close()
        torch.set_num_threads(before)
    return factors, ratios


def refresh_profile(profile: Profile | str | Path | None = None, *, model: ModelSpec | str = DEFAULT_MODEL,
                    seq: int = DEFAULT_SEQ, budget_s: float = DEFAULT_BUDGET_S, rows: tuple[int, ...] = (1,),
                    threads: int | None = None, prompt: int | None = None, batch: int = 1,
                    runtime: str = "bmc") -> Profile:
    """`profile` (a Profile, a file, or None: the default one) refreshed for `model` decoding to `seq`: its
    calibrated terms with new factors, measured within about budget_s seconds. rows: token rows to time the
    matmuls at, 1 among them; more than one also stores row ratios (SD verification, batches). threads: torch
    threads while measuring (None: as set). prompt: where the decode starts (default seq // 2): a run that knows
    its own should say, since torch.cat's cost per byte is not one line across glibc's mmap ceiling; batch
    likewise (sequences decoded together). runtime "hf": also transformers' framework cost, in place
    (hf_layer_probe.py). Does not write: core.profile.write_profile does."""
    prof = load_profile(profile)
    base = prof.calibrated
    plan = plan_refresh(base, model, seq, budget_s, rows, prompt, batch, runtime)
    t0 = time.perf_counter()
    factors, ratios = measure(plan, base, threads)
    refresh = Refresh(at=datetime.now(timezone.utc).isoformat(timespec="seconds"), model=plan.spec.name, seq=seq,
                      batch=batch, seconds=round(time.perf_counter() - t0, 3), factors=factors, row_ratios=ratios)
    problem = refresh_problem(refresh, base)
    if problem:
        raise BMCError(f"refreshing {base.source}: measured {problem}; the host is far from its calibration: "
                       "run `bmc-tune calibrate`")
    out = refreshed(base, refresh)
    check_profile(out)
    return out


def refresh_for(profile: Profile, spec: ModelSpec, seq: int, prompt: int | None = None, batch: int = 1) -> Profile:
    """The refresher core/refresh.py hands to layers below calibrate (BMCCache.tuned(refresh=True)). Not
    runtime "hf": its framework factor helped one validate --hf run and hurt two (docs/results.md)."""
    return refresh_profile(profile, model=spec, seq=seq, prompt=prompt, batch=batch)


register_refresher(refresh_for)
