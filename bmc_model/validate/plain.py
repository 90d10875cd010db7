"""`bmc-tune validate`: run the policies for real, side by side, and hold the model to them.

Every configuration decodes the same tokens from the same cache length P to N with the same
decoder. In a repeat, all configurations run side by side, taking turns step by step
(interleave.py), so the machine's drift hits them alike; when their caches would not fit in RAM
together, they take turns run by run instead (the order rotated each repeat), and the result says
which ("interleave": "step" or "run"). Each measurement is the mean ms per decode step of one run;
the table reports the median over repeats. The prediction for a row is predict() with the same
profile, geometry, policy, P, N and batch.

On the CPU, after each repeat's runs, calibrate/probe.py times the decoder's own matmuls (one row,
and batch rows), torch.cat and one layer's attention at the run's middle length (about two seconds), and
every row is predicted a second time with the profile's weights, cat and attention terms rescaled to what
it measured in that minute ("probed"). It runs beside the configurations, not among them: validate's
rankings (regret, speedups) rest on differences of a percent, and a torch.cat step slows the step after
it. The gap between the two predictions is how far the host has moved since calibration; what is left
is the model's own error.

With refresh, the profile is refreshed before the run, twice within each repeat run step by step and after
each repeat, and each repeat is predicted from the refreshes over its span (repeat_refresh.py).

Memory (CPU, unless memory=False): after every timed repeat, each configuration decodes P..N once more in a
fresh process (decode_memprobe.py), so that no allocator state from another configuration can hide or
inflate its pages, and its peak resident KV (VmHWM over the decode minus the resident size before the
prefill) sits beside predict()'s peak_resident_bytes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from bmc_model.calibrate.plan import DEVICES, stream_bytes
from bmc_model.core.decide import recommend
from bmc_model.core.errors import BMCError
from bmc_model.core.host import fingerprint
from bmc_model.core.policy import NAMED, Policy
from bmc_model.core.predict import predict
from bmc_model.core.profile import Profile
from bmc_model.core.specs import ModelSpec
from bmc_model.core.workload import Geometry
from bmc_model.runtime.device import cuda_free_bytes
from bmc_model.validate.compare import Chosen, Config, refresh_report
from bmc_model.validate.decode_memprobe import request as probe_request
from bmc_model.validate.decode_memprobe import run_decode_probe
from bmc_model.validate.memory import MemoryEstimate, check_fits, estimate_memory, fits, probe_bytes
from bmc_model.validate.plain_result import RowResult, ValidateResult
from bmc_model.validate.repeat_refresh import WITHIN_REFRESHES, RepeatRefresher, repetition_predictions


def plan_configs(rec_policy: Policy, names: list[str], r_grid: list[int], widths: tuple[str, ...]) -> list[Config]:
    """Named baselines, the r grid in each width, and the recommended configuration, without duplicates."""
    out: dict[Policy, Config] = {}
    out[rec_policy] = Config("recommended", rec_policy)
    for n in names:
        pol = NAMED[n]
        out.setdefault(pol, Config(n, pol))
    for r in r_grid:
        for wd in widths:
            pol = Policy("fixed", r, width=wd)  # type: ignore[arg-type]
            out.setdefault(pol, Config(f"r={r} {wd}", pol))
    return list(out.values())


def run_validate(spec: ModelSpec, *, seq: int, prompt: int, batch: int, profile: Profile,
                 names: list[str], r_grid: list[int], widths: tuple[str, ...] = ("padded", "exact"),
                 repeats: int = 3, threads: int | None = None, seed: int = 0, device: str = "cpu",
                 memory: bool = True, refresh: bool = False,
                 progress: Callable[[str], None] | None = None) -> ValidateResult:
    """Measure each configuration `repeats` times, interleaved; compare with predictions.

    refresh: refresh the profile at this model and seq (calibrate/refresh.py; CPU) before the run, within each
    repeat run step by step and after it; each repeat is predicted from the refreshes over its span
    (repeat_refresh.py), and the result's "refresh" says what the errors would have been with the refresh
    before the run alone, and with none.

    memory: after the timed repeats, measure each configuration's peak resident KV once, in a fresh
    process (CPU only: the probe reads the process's resident pages, not the GPU's memory).
    device "cuda": the decoder and caches live on the GPU (weights drawn on the CPU, then moved), steps
    are timed after a synchronize, and the memory checks read the GPU's free memory."""
    if repeats < 1:
        raise BMCError(f"repeats must be >= 1, got {repeats}")
    if device not in DEVICES:
        raise BMCError(f"device must be cpu or cuda, got {device!r}")
    dtype = "float32"
    refresh_now = None
    if refresh:  # before the run, within and after each repeat: repeat_refresh.py
        from bmc_model.calibrate.refresh import refresh_profile

        refresh_now = functools.partial(refresh_profile, profile, model=spec, seq=seq, threads=threads, prompt=prompt,
                                        batch=batch)
    refresher = RepeatRefresher(profile, refresh_now, progress or (lambda _m: None))
    profile = refresher.first
    rec = recommend(model=spec, seq=seq, prompt=prompt, batch=batch, dtype=dtype, profile=profile)
    configs = plan_configs(rec.policy, names, r_grid, widths)
    ests = [estimate_memory(spec, c.policy, prompt=prompt, max_len=seq, batch=batch, dtype=dtype, synth_prompt=True)
            for c in configs]
    avail = cuda_free_bytes() if device == "cuda" else None  # None: host RAM
    mid = (prompt + seq) // 2
    stream = stream_bytes(int(profile.host.get("llc_bytes", 0)))
    probe_b = probe_bytes(spec, cat_rows=mid, attn_width=mid, stream_bytes=stream) if device == "cpu" else 0
    big = max(ests, key=lambda e: e.total_bytes)
    check_fits(MemoryEstimate(big.weights_bytes, big.kv_peak_bytes, big.activation_bytes + probe_b), available=avail,
               what=f"validate at seq {seq}")
    # every cache at once, else whole runs take turns
    lockstep = fits(MemoryEstimate(ests[0].weights_bytes, sum(e.kv_peak_bytes for e in ests),
                                   sum(e.activation_bytes for e in ests) + probe_b), available=avail)

    import torch

    from bmc_model.calibrate.probe import MatmulProbe, probed_profile
    from bmc_model.runtime.decoder import Decoder
    from bmc_model.runtime.generate import DecodeResult, DecodeRun, decode_run, set_threads
    from bmc_model.validate.interleave import run_interleaved

    n_threads = set_threads(threads)
    decoder = Decoder.random(spec, seed=seed)
    if device == "cuda":
        decoder = decoder.to(device)
    times: dict[str, list[float]] = {c.name: [] for c in configs}
    events: dict[str, float] = {}
    tokens_ref = None
    mismatched: list[str] = []
    kw = {"prompt": prompt, "new_tokens": seq - prompt, "batch": batch, "synth_prompt": True, "seed": seed}
    # CPU only: the probe times with perf_counter, no synchronize (a GPU run is predicted from the profile alone)
    probe = MatmulProbe.beside_runs(decoder, (1,) if batch == 1 else (1, batch), mid, stream,
                                    attn_forms=((1, False), (1, True)),  # exact and padded widths, one new row
                                    batch=batch) if device == "cpu" else None

    def repeat_results(rep: int) -> list[tuple[Config, DecodeResult]]:
        if probe is not None:
            probe.restart()
        if lockstep:
            if progress:
                progress(f"repeat {rep + 1}/{repeats}: {len(configs)} configurations side by side, step by step")
            runs = [DecodeRun(decoder, c.policy, **kw) for c in configs]
            run_interleaved(runs, WITHIN_REFRESHES if refresher.refreshing else 0, refresher.pause)
            if probe is not None:  # after the runs, not among them: its torch.cat would slow whichever step follows
                run_interleaved([probe])
            return [(c, r.result()) for c, r in zip(configs, runs)]
        if probe is not None:
            run_interleaved([probe])
        out = []
        for c in configs[rep % len(configs):] + configs[:rep % len(configs)]:
            if progress:
                progress(f"repeat {rep + 1}/{repeats}: {c.name} ({c.policy.label})")
            out.append((c, decode_run(decoder, c.policy, **kw)))
        return out

    t0 = time.perf_counter()
    for rep in range(repeats):
        refresher.start_repeat()
        for c, res in repeat_results(rep):
            times[c.name].append(res.ms_per_token)
            events[c.name] = float(res.cache_stats.growth_events)
            if tokens_ref is None:
                tokens_ref = res.tokens
            elif not torch.equal(tokens_ref, res.tokens) and c.name not in mismatched:
                mismatched.append(c.name)
        refresher.end_repeat()
    wall = time.perf_counter() - t0
    probed, factors = (None, {})
    if probe is not None:
        probed, factors = probed_profile(profile, probe, Geometry.of(spec, batch, dtype))
        probe.close()
    device_name = device if device == "cpu" else f"cuda ({torch.cuda.get_device_name()})"
    resident: dict[str, float] = {}
    how = None
    if memory and device == "cpu":
        del decoder, probe  # the probes' processes build their own: one set of weights in RAM at a time
        resident, how = memory_probes(spec, configs, prompt=prompt, seq=seq, batch=batch, seed=seed,
                                      threads=n_threads, progress=progress)

    pks = {c.name: {"model": spec, "seq": seq, "prompt": prompt, "policy": c.policy, "batch": batch, "dtype": dtype}
           for c in configs}

    def predict_all(prof: Profile) -> dict[str, Any]:
        return {name: predict(**pk, profile=prof) for name, pk in pks.items()}

    first = predict_all(profile)
    spans = repetition_predictions(refresher.spans, predict_all, {id(profile): first}) if refresher.refreshing \
        else None
    rows, kws = [], {}
    for c in configs:
        pk = pks[c.name]
        rows.append(RowResult.of(c, times[c.name], events[c.name], first[c.name],
                                 predict(**pk, profile=probed) if probed is not None else None,
                                 resident.get(c.name),
                                 None if spans is None else (spans[0][c.name], spans[1][c.name])))
        kws[c.name] = (rows[-1].measured_ms, pk)
    return ValidateResult(
        model=spec.name, layers=spec.layers, seq=seq, prompt=prompt, batch=batch, dtype=dtype,
        device=device_name,
        threads=n_threads, repeats=repeats, wall_s=wall, interleave="step" if lockstep else "run", rows=rows,
        recommended=Chosen.of(rec), token_mismatch=mismatched, host=fingerprint(threads=n_threads, dtype=dtype),
        profile={"source": profile.source, "host": profile.host, "date": profile.date},
        geometry_rho_bytes=Geometry.of(spec, batch, dtype).rho,
        probe_factors=factors if probed is not None else None, probe_width=mid, memory_probe=how,
        refresh=refresh_report(profile, kws, refresher))


def memory_probes(spec: ModelSpec, configs: list[Config], *, prompt: int, seq: int, batch: int, seed: int,
                  threads: int, progress: Callable[[str], None] | None = None
                  ) -> tuple[dict[str, float], dict[str, Any]]:
    """Each configuration's measured peak resident KV bytes (decode_peak_increase of one fresh-process probe,
    nothing subtracted), and how they were measured: the probes' wall time, what was subtracted, and the
    error of any probe that failed (its configuration then has no figure)."""
    out: dict[str, float] = {}
    failed: dict[str, str] = {}
    t0 = time.perf_counter()
    for i, c in enumerate(configs):
        if progress:
            progress(f"memory probe {i + 1}/{len(configs)}: {c.name} ({c.policy.label}), fresh process")
        got = run_decode_probe(probe_request(spec, c.policy, prompt=prompt, seq=seq, batch=batch, seed=seed,
                                             threads=threads))
        if "error" in got:
            failed[c.name] = str(got["error"])
        else:
            out[c.name] = float(got["decode_peak_increase"])
    how = {"measured": "VmHWM over the decode steps minus the resident size before the prefill, one fresh "
                       "process per configuration (RoPE table grown to N before the baseline)",
           "subtracted_bytes": 0, "wall_s": time.perf_counter() - t0, "failed": failed}
    return out, how
