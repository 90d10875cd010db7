"""Run every benchmark of a Plan, fit the terms and scalars, and build the Profile."""

from __future__ import annotations

import gc
import glob
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import torch

from bmc_model.calibrate import bench_attention as ba
from bmc_model.calibrate import bench_layers as bl
from bmc_model.calibrate import bench_lazy, load
from bmc_model.calibrate import bench_memory as bm
from bmc_model.calibrate import bench_overhead as bo
from bmc_model.calibrate import bench_weights as bw
from bmc_model.calibrate.assemble import Measurements, build_profile
from bmc_model.calibrate.plan import Plan, check_options, make_plan
from bmc_model.calibrate.pool import Pool
from bmc_model.calibrate.runner import CpuTimer, NullReporter, Point, Reporter, Settings, Timer, run_cases
from bmc_model.core.errors import BMCError
from bmc_model.core.host import available_ram_bytes, fingerprint, memory_facts, release_heap
from bmc_model.core.profile import Profile
from bmc_model.runtime.device import cuda_free_bytes

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CudaTimer:
    """CUDA events around the timed calls; stop() waits for the GPU."""

    def __init__(self) -> None:
        self._a = torch.cuda.Event(enable_timing=True)
        self._b = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        torch.cuda.synchronize()
        self._a.record()

    def stop(self) -> float:
        self._b.record()
        self._b.synchronize()
        return self._a.elapsed_time(self._b) / 1e3


def release_free_memory() -> None:
    """Collect garbage, then hand the heap's free pages back to the kernel (host.release_heap)."""
    gc.collect()
    release_heap()


def llc_bytes(device: str = "cpu") -> int:
    """Last-level cache size (sysfs on Linux, the L2 on a GPU); 32 MiB when unknown."""
    if device == "cuda":
        return int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or 32 * 2**20)
    best = (0, 0)
    for d in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        try:
            with open(os.path.join(d, "level")) as f:
                level = int(f.read())
            with open(os.path.join(d, "size")) as f:
                s = f.read().strip().upper()
            size = int(s[:-1]) * {"K": 2**10, "M": 2**20, "G": 2**30}[s[-1]] if s[-1] in "KMG" else int(s)
        except (OSError, ValueError, KeyError):
            continue
        best = max(best, (level, size))
    return best[1] or 32 * 2**20


@dataclass
class CalibrationResult:
    profile: Profile
    plan: Plan
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def cat_residual(self) -> float | None:
        """Median |measured / predicted - 1| of torch.cat against alloc + copy."""
        return self.profile.raw.get("cat", {}).get("median_abs_rel_residual")


def resolve_device(device: str) -> None:
    if device == "cuda":
        cuda_free_bytes()  # raises when there is no GPU


def calibrate(quick: bool = False, device: str = "cpu", threads: int | None = None, dtype: str = "float32",
              model: str | None = None, *, reporter: Reporter | None = None, seed: int = 0) -> CalibrationResult:
    """Measure this host and return the fitted profile (not written: see write_profile)."""
    specs = check_options(device, threads, dtype, model)
    resolve_device(device)
    t_start = time.perf_counter()
    rep = reporter or NullReporter()
    old_threads = torch.get_num_threads()
    nthreads = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    torch.set_num_threads(nthreads)
    try:
        free = cuda_free_bytes() if device == "cuda" else available_ram_bytes()
        plan = make_plan(quick=quick, device=device, dtype=dtype, threads=nthreads, specs=specs, available_ram=free,
                         llc_bytes=llc_bytes(device))
        with torch.inference_mode():
            prof = _measure(plan, rep, np.random.default_rng(seed))
    finally:
        torch.set_num_threads(old_threads)
    elapsed = time.perf_counter() - t_start
    prof.raw["meta"]["elapsed_s"] = elapsed
    return CalibrationResult(profile=prof, plan=plan, notes=list(prof.raw["meta"]["notes"]), elapsed_s=elapsed)


def _hf_overhead(plan: Plan, reps: int, rng: np.random.Generator, rep: Reporter, bench_s: dict[str, float]
                 ) -> list[tuple[int, float]]:
    """transformers generate()'s own step and layer overhead (hf_overhead.py); measure only where _has_hf."""
    from bmc_model.calibrate.hf_overhead import step_times

    rep.begin("hf_overhead", reps * len(plan.overhead_layers))
    t0 = time.perf_counter()
    pts = bo.interleaved_medians(plan.overhead_layers, reps, plan.overhead_tokens, step_times, rng,
                                 step=lambda: rep.step("hf_overhead"))
    bench_s["hf_overhead"] = time.perf_counter() - t0
    rep.end("hf_overhead")
    return pts


def _layers_in_place(plan: Plan, rng: np.random.Generator, rep: Reporter, bench_s: dict[str, float],
                     notes: list[str]) -> list:
    """The runtime decoder's non-matmul work per layer at the calibration geometries (bench_layers.py)."""
    if plan.device != "cpu":
        notes.append("in-place layer cost not measured on CUDA (each matmul would need a synchronize): "
                     "predictions use the tiny decoder's layer_s")
        return []
    rounds = plan.layer_rounds
    rep.begin("layers", rounds * len(plan.specs) * len(plan.layer_q_rows))
    t0 = time.perf_counter()
    pts = bl.layer_points(plan.specs, rounds, TORCH_DTYPES[plan.dtype], plan.elem, plan.stream_bytes,
                          available_ram_bytes() // 4, rng, step=lambda: rep.step("layers"),
                          q_rows=plan.layer_q_rows, steps=plan.layer_steps)
    bench_s["layers"] = time.perf_counter() - t0
    rep.end("layers")
    return pts


def _has_hf(plan: Plan, notes: list[str]) -> bool:
    """Whether transformers' terms are measured: on the CPU in fp32, with the hf extra installed (else said)."""
    if plan.device != "cpu" or plan.dtype != "float32":
        return False
    try:
        import transformers  # noqa: F401
    except ImportError:
        notes.append("transformers not installed: no hf_* terms (HF predictions use step_s / layer_s and the "
                     "runtime's own layer terms)")
        return False
    return True


def _hf_layers_in_place(plan: Plan, rng: np.random.Generator, rep: Reporter, bench_s: dict[str, float]) -> list:
    """transformers' decoder layers in place at the calibration geometries (bench_hf_layers.py)."""
    from bmc_model.calibrate import bench_hf_layers as bh

    rounds = plan.layer_rounds
    rep.begin("hf_layers", bh.point_count(plan.specs, rounds))
    t0 = time.perf_counter()
    pts = bh.hf_layer_points(plan.specs, rounds, TORCH_DTYPES[plan.dtype], plan.elem, plan.stream_bytes,
                             available_ram_bytes() // 4, rng, step=lambda: rep.step("hf_layers"),
                             steps=plan.layer_steps)
    bench_s["hf_layers"] = time.perf_counter() - t0
    rep.end("hf_layers")
    return pts


def _lazy_backing(plan: Plan, rep: Reporter, bench_s: dict[str, float], notes: list[str]) -> bench_lazy.LazyResult:
    """Whether never-written allocated bytes are resident (bench_lazy.py)."""
    rep.begin("lazy_backing", bench_lazy.REPEATS)
    t0 = time.perf_counter()
    got = bench_lazy.measure(plan.device, step=lambda: rep.step("lazy_backing"))
    bench_s["lazy_backing"] = time.perf_counter() - t0
    rep.end("lazy_backing")
    if got.note:
        notes.append(got.note)
    return got


def _measure(plan: Plan, rep: Reporter, rng: np.random.Generator) -> Profile:
    dev, dt, e = plan.device, TORCH_DTYPES[plan.dtype], plan.elem
    timer: Timer = CudaTimer() if dev == "cuda" else CpuTimer()
    st = Settings(rounds=plan.rounds)
    p = plan.primary
    bench_s: dict[str, float] = {}
    notes: list[str] = []
    cpu0 = load.snapshot()

    def run(name: str, cases: list) -> list[Point]:
        t0 = time.perf_counter()
        pts = run_cases(name, cases, budget_s=plan.budgets[name], timer=timer, rng=rng, settings=st, reporter=rep,
                        notes=notes)
        bench_s[name] = time.perf_counter() - t0
        return pts

    hf = _has_hf(plan, notes)
    sd = run("sd_iter", [bo.sd_iter_case(p.vocab, plan.sd_gamma, dev)])[0]
    lazy = _lazy_backing(plan, rep, bench_s, notes)  # before the benchmarks that leave buffers cached
    # Allocation costs depend on what the heap holds: each benchmark starts from a trimmed heap, as a
    # fresh decode would, and the two that allocate come before copy's many buffers.
    release_free_memory()
    cat = run("cat", bm.cat_cases(p, plan.cat_rows, dt, dev, plan.stream_bytes))
    release_free_memory()
    alloc = run("alloc", bm.alloc_cases(plan.alloc_sizes, dt, dev, plan.alloc_call))
    release_free_memory()
    copy = run("copy", bm.copy_cases(p, plan.copy_rows, dt, dev, plan.copy_contiguous, plan.stream_bytes))
    # The rest reads cold data carved from one pool (pool.py), built once the allocation
    # benchmark has given its memory back.
    stream = plan.stream_bytes
    biggest = max(bw.scaled_shapes(plan.specs[j % len(plan.specs)], x, e)[1] for j, x in enumerate(plan.weight_sizes))
    attn_biggest = max(ba.kv_bytes(s, max(plan.attn_widths) + ba.VIEW_SLACK, e) for s in plan.specs)
    with Pool(max(stream, biggest, int(attn_biggest)), dt, dev) as pool:
        write = run("write", bm.write_cases(pool, p, plan.write_shapes))
        exact = run("attn_exact", ba.attn_cases(pool, plan.specs, plan.attn_widths, "exact", stream))
        masked = run("attn_masked", ba.attn_cases(pool, plan.specs, plan.attn_widths, "masked", stream))
        gqa_cases = ba.attn_cases(pool, plan.specs, plan.attn_widths, "gqa", stream) if hf else []
        gqa = run("attn_gqa", gqa_cases) if gqa_cases else []
        attn_q = run("attn_q", ba.attn_q_cases(pool, p, plan.q_widths, plan.q_rows, stream))
        weights = run("weights", bw.size_cases(pool, plan.specs, plan.weight_sizes, stream))
        wrows = run("weights_rows", bw.row_cases(pool, plan.specs, plan.row_counts, stream))
        rows_x = next(pt.x for pt in wrows if pt.key[0] == p.name)  # type: ignore[index]
        hrows = run("head_rows", bw.head_row_cases(pool, plan.specs, plan.row_counts, stream))
    # framework overhead: the runtime's own decoder at a tiny geometry (times itself)
    reps = plan.rounds + 1
    rep.begin("overhead", reps * len(plan.overhead_layers))
    t0 = time.perf_counter()
    try:
        over, how = bo.overhead_points(plan.overhead_layers, reps, plan.overhead_tokens, plan.dtype, dt, dev, rng,
                                       step=lambda: rep.step("overhead"))
    except ImportError as ex:
        raise BMCError(f"calibration: the runtime decoder is unavailable ({ex})") from None
    bench_s["overhead"] = time.perf_counter() - t0
    rep.end("overhead")
    hf_over = _hf_overhead(plan, reps, rng, rep, bench_s) if hf else []
    layer_pts = _layers_in_place(plan, rng, rep, bench_s, notes)
    hf_layer_pts = _hf_layers_in_place(plan, rng, rep, bench_s) if hf else []
    m = Measurements(alloc=alloc, copy=copy, cat=cat, write=write, attn_exact=exact, attn_masked=masked,
                     attn_q=attn_q, weights=weights, weights_rows=wrows, rows_x=rows_x, head_rows=hrows, sd_iter=sd,
                     overhead=over,
                     overhead_loop=how, overhead_prompt=bo.TINY_PROMPT + bo.WARMUP_STEPS,
                     overhead_tokens=plan.overhead_tokens, hf_overhead=hf_over, layers=layer_pts,
                     hf_layers=hf_layer_pts, attn_gqa=gqa,
                     layers_prompt=bl.PROMPT, lazy_backing=lazy.value, lazy_raw=lazy.raw, bench_s=bench_s, notes=notes,
                     others_cpu=load.others_share(cpu0, load.snapshot()))
    host = fingerprint(plan.threads, plan.device, plan.dtype)
    host["torch_threads"] = torch.get_num_threads()
    host["llc_bytes"] = llc_bytes(dev)
    host.update(memory_facts())  # overcommit_mode, reserve_limit_bytes: what the OS would grant at once
    if dev == "cuda":
        host["gpu"] = torch.cuda.get_device_name(0)
    return build_profile(plan, m, host, datetime.now(timezone.utc).isoformat(timespec="seconds"))
