"""`bmc-tune validate --sd`: speculative decoding on cat growth and on BMC's spare rows, measured
against the model.

One call measures, side by side (in each repeat the four runs take turns step by step, the one
furthest behind in tokens next: interleave.py; so the machine's drift hits every configuration
alike; when their caches would not fit in RAM together, whole runs take turns, rotated each repeat;
each figure is the median over repeats of one run's ms per token):
  plain-cat   target alone, torch.cat growth (HF DynamicCache)
  plain-bmc   target alone, the configuration recommend() picks for plain decoding
  sd-cat      speculative decoding, torch.cat growth (draft model, if any, on cat too)
  sd-bmc      speculative decoding, the configuration recommend() picks for SD at this gamma
and compares each with predict() for the same policy, profile, geometry, P, N, gamma and the
per-position acceptance measured in that very run (the drafter: draft=None for prompt lookup
and the oracle, the draft's ModelSpec for a draft model).

After each repeat's runs (beside them, not among them: its torch.cat and first touches slow the step after
it, as plain validate's module docstring says), a probe times the decoder's own matmuls at 1 and gamma + 1
rows, torch.cat and one layer's attention (1 and gamma + 1 rows) at the run's middle length (probe.py):
every row is also predicted with the profile's weights and cat costs rescaled to what the probe measured in
the same minutes (one-row time, m-row ratios, cat, attention: "probed"), which separates host drift since
calibration from the model's own error.

With refresh, the profile is refreshed before the run, twice within each repeat run step by step and after
each repeat, and each repeat is predicted from the refreshes over its span (repeat_refresh.py).

Before the timed runs: one untimed plain cat run (the reference tokens every run is checked
against, and the oracle's source) and one untimed SD probe at `probe_gamma` (or the given
gamma) that measures the acceptance recommend() needs to choose gamma and the policy.
The workloads are in sd_workloads.py, the result's shape in sd_result.py.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from bmc_model.calibrate.plan import stream_bytes
from bmc_model.calibrate.probe import MatmulProbe, probed_profile
from bmc_model.core.decide import recommend
from bmc_model.core.errors import BMCError
from bmc_model.core.host import fingerprint
from bmc_model.core.policy import NAMED
from bmc_model.core.predict import Prediction, get_profile, predict
from bmc_model.core.profile import Profile
from bmc_model.core.specs import ModelSpec
from bmc_model.core.workload import Geometry
from bmc_model.runtime.generate import DecodeResult, DecodeRun, set_threads
from bmc_model.runtime.speculative import SDResult, SDRun
from bmc_model.validate.acceptance import check_writable, write_acceptance
from bmc_model.validate.compare import Chosen, Config, refresh_report
from bmc_model.validate.interleave import run_interleaved
from bmc_model.validate.memory import MemoryEstimate, check_fits, estimate_memory, fits, probe_bytes
from bmc_model.validate.repeat_refresh import WITHIN_REFRESHES, RepeatRefresher, repetition_predictions
from bmc_model.validate.sd_result import (
    Acceptance,
    AcceptanceProbe,
    SDRowResult,
    SDValidateResult,
    Tuner,
    VerifyMatmuls,
)
from bmc_model.validate.sd_workloads import SDWorkload, build_workload

CAT = NAMED["dynamic"]
DTYPE = "float32"


def measure_sd(workload: str | SDWorkload = "synthetic", *, new_tokens: int = 128, gamma: int | str = "auto",
               probe_gamma: int = 8, repeats: int = 3, profile: Profile | str | Path | None = None,
               threads: int | None = None, seed: int = 0, acceptance_out: str | Path | None = None,
               model: str | ModelSpec = "llama-7b", layers: int | None = 2, prompt: int = 2048,
               alpha: float | Sequence[float] = 0.8, warmup: int = 2, refresh: bool = False,
               progress: Callable[[str], None] | None = None) -> SDValidateResult:
    """Measure plain and speculative decoding on cat and on the recommended BMC configuration.

    workload: "synthetic" (model / layers / prompt / alpha / seed apply), "smollm2", "qwen", or a
    prepared SDWorkload. gamma: draft tokens per iteration, or "auto" (the tuner's choice from the
    probed acceptance; when the tuner says "no SD", the SD rows run at probe_gamma to show it).
    acceptance_out: also write the measured acceptance where `recommend --alpha FILE` reads it.
    Returns an SDValidateResult (to_dict(): the JSON validate --sd prints).
    """
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 2:
        raise BMCError(f"new_tokens must be an integer >= 2, got {new_tokens!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise BMCError(f"repeats must be a positive integer, got {repeats!r}")
    if gamma != "auto":
        if isinstance(gamma, str):
            try:
                gamma = int(gamma)
            except ValueError:
                raise BMCError(f"gamma must be a positive integer or 'auto', got {gamma!r}") from None
        if isinstance(gamma, bool) or not isinstance(gamma, int) or not 1 <= gamma < new_tokens:
            raise BMCError(f"gamma must be an integer in 1..{new_tokens - 1} (below the tokens to generate), "
                           f"got {gamma!r}")
    if gamma == "auto" and (isinstance(probe_gamma, bool) or not isinstance(probe_gamma, int)
                            or not 1 <= probe_gamma < new_tokens):
        raise BMCError(f"probe gamma must be an integer in 1..{new_tokens - 1}, got {probe_gamma!r}")
    if acceptance_out is not None:
        check_writable(Path(acceptance_out))
    prof = get_profile(profile)
    wl = workload if isinstance(workload, SDWorkload) else build_workload(
        workload, model=model, layers=layers, prompt=prompt, alpha=alpha, seed=seed)
    dec, spec = wl.decoder, wl.decoder.spec
    P = wl.prompt_len
    N = P + new_tokens
    refresh_now = None
    if refresh:  # at the workload's own model and length, before the run, within and after each repeat
        from bmc_model.calibrate.refresh import refresh_profile

        refresh_now = functools.partial(refresh_profile, prof, model=spec, seq=N, threads=threads, prompt=P)
    refresher = RepeatRefresher(prof, refresh_now, progress or (lambda _m: None))
    prof = refresher.first
    g_max = max(probe_gamma, gamma if isinstance(gamma, int) else 16)
    one = estimate_memory(spec, CAT, prompt=P, max_len=N + g_max, q=g_max + 1, dtype=DTYPE,
                          synth_prompt=wl.synth_prompt)
    mid, stream = (P + N) // 2, stream_bytes(int(prof.host.get("llc_bytes", 0)))
    probe_b = probe_bytes(spec, cat_rows=mid, attn_width=mid, stream_bytes=stream)  # the MatmulProbe below
    check_fits(MemoryEstimate(one.weights_bytes, one.kv_peak_bytes, one.activation_bytes + probe_b),
               what=f"SD validation at length {N + g_max}")
    # the four runs' caches at once (cat's peak is the largest, so four of it bound them)
    lockstep = fits(MemoryEstimate(one.weights_bytes, 4 * one.kv_peak_bytes, 4 * one.activation_bytes + probe_b))
    n_threads = set_threads(threads)
    say = progress or (lambda _m: None)
    t_wall = time.perf_counter()

    ref_tokens: list[int] = []  # x[P..N] of the reference run: the oracle drafter's source

    def stepper(c: Config, keep_logits: bool = False) -> DecodeRun | SDRun:
        kw = {"prompt": wl.prompt, "new_tokens": new_tokens, "synth_prompt": wl.synth_prompt, "seed": seed,
              "warmup": warmup, "keep_logits": keep_logits}
        if c.gamma == 0:
            return DecodeRun(dec, c.policy, **kw)
        return SDRun(dec, c.policy, wl.make_drafter(ref_tokens), gamma=c.gamma, **kw)

    def alone(c: Config, keep_logits: bool = False) -> DecodeResult | SDResult:
        run = stepper(c, keep_logits)
        run_interleaved([run])
        return run.result()

    say("reference: plain decoding with torch.cat (untimed)")
    ref = alone(Config("reference", CAT, 0), keep_logits=True)
    ref_tokens.extend(ref.all_tokens[0].tolist())
    g_probe = gamma if isinstance(gamma, int) else probe_gamma
    say(f"acceptance probe: speculative decoding, gamma {g_probe} (untimed)")
    probe = alone(Config("probe", CAT, g_probe))
    alpha_probe = probe.stats.alpha_list(smooth=True)  # for the tuner only; predictions use each run's raw rates

    common = {"model": spec, "seq": N, "prompt": P, "batch": 1, "dtype": DTYPE, "profile": prof}
    draft_kw = {"draft": wl.draft_spec}
    rec_plain = recommend(**common)
    rec_auto = recommend(**common, gamma="auto", alpha=alpha_probe, **draft_kw)
    g_run = gamma if isinstance(gamma, int) else (rec_auto.gamma or probe_gamma)
    rec_sd = rec_auto if rec_auto.gamma == g_run else recommend(**common, gamma=g_run, alpha=alpha_probe, **draft_kw)
    if refresh_now is not None:  # verification's m-row matmuls drift apart from one row's (docs/results.md)
        refresher.retarget(functools.partial(refresh_now, rows=(1, g_run + 1)), f"before, at {g_run + 1} rows")
        prof = refresher.first
    configs = [Config("plain-cat", CAT, 0), Config("plain-bmc", rec_plain.policy, 0),
               Config("sd-cat", CAT, g_run), Config("sd-bmc", rec_sd.policy, g_run)]

    times: dict[str, list[float]] = {c.name: [] for c in configs}
    # the m-row matmuls of verification, timed alongside the runs (probe.py): one sample set for all repeats
    mprobe = MatmulProbe.beside_runs(dec, (1, g_run + 1), mid, stream)
    last: dict[str, DecodeResult | SDResult] = {}
    mismatch: dict[str, int | None] = {c.name: None for c in configs}  # first step differing from the reference

    def repeat_results(rep: int) -> list[tuple[Config, DecodeResult | SDResult]]:
        if lockstep:
            say(f"repeat {rep + 1}/{repeats}: {', '.join(c.name for c in configs)} side by side, step by step")
            runs = [stepper(c) for c in configs]
            run_interleaved(runs, WITHIN_REFRESHES if refresher.refreshing else 0, refresher.pause)
            mprobe.restart()  # after the runs, not among them: its torch.cat would slow whichever step follows
            run_interleaved([mprobe])
            return [(c, r.result()) for c, r in zip(configs, runs)]
        out: list[tuple[Config, DecodeResult | SDResult]] = []
        mprobe.restart()
        run_interleaved([mprobe])
        k = rep % len(configs)
        for c in configs[k:] + configs[:k]:
            say(f"repeat {rep + 1}/{repeats}: {c.name} ({c.policy.label}, gamma {c.gamma})")
            out.append((c, alone(c)))
        return out

    for rep in range(repeats):
        refresher.start_repeat()
        for c, res in repeat_results(rep):
            times[c.name].append(res.ms_per_token)
            last[c.name] = res
            diff = (res.tokens[0] != ref.tokens[0]).nonzero()
            if len(diff) and mismatch[c.name] is None:
                mismatch[c.name] = int(diff[0])
        refresher.end_repeat()
    wall = time.perf_counter() - t_wall

    ratios = mprobe.ratios()
    geo = Geometry.of(spec, 1, DTYPE)
    prof_probed, drift = probed_profile(prof, mprobe, geo)
    cat_ms, attn_ms = mprobe.cat_ms(), mprobe.attn_ms()
    mprobe.close()
    kws_by_name = {}
    for c in configs:
        sd = last[c.name] if isinstance(last[c.name], SDResult) else None
        acc = sd.stats.alpha_list() if sd is not None else None  # the rates this very run measured
        kws_by_name[c.name] = {**common, "policy": c.policy, "gamma": c.gamma, "alpha": acc,
                               **(draft_kw if c.gamma else {})}

    def predict_all(p: Profile) -> dict[str, Prediction]:
        return {name: predict(**{**kw, "profile": p}) for name, kw in kws_by_name.items()}

    first = predict_all(prof)
    spans = repetition_predictions(refresher.spans, predict_all, {id(prof): first}) if refresher.refreshing else None
    rows, kws = [], {}
    for c in configs:
        res, kw = last[c.name], kws_by_name[c.name]
        sd = res if isinstance(res, SDResult) else None
        rows.append(SDRowResult.of(c, times[c.name], res.cache_stats.growth_events, mismatch[c.name], first[c.name],
                                   predict(**{**kw, "profile": prof_probed}), sd,
                                   None if spans is None else (spans[0][c.name], spans[1][c.name])))
        kws[c.name] = (rows[-1].measured_ms, {k: v for k, v in kw.items() if k != "profile"})

    bmc_sd: SDResult = last["sd-bmc"]  # type: ignore[assignment]
    acceptance = Acceptance.of(bmc_sd.stats, gamma=g_run, synthetic=wl.synthetic_acceptance, drafter=bmc_sd.drafter,
                               workload=wl.name, probe=AcceptanceProbe(g_probe, probe.stats.overall, alpha_probe))
    if acceptance_out is not None:
        write_acceptance(acceptance_out, asdict(acceptance))
    return SDValidateResult(
        workload=wl.name, workload_note=wl.note, model=spec.name, layers=spec.layers, prompt=P, seq=N,
        new_tokens=new_tokens, synthetic_prompt=wl.synth_prompt,
        draft_model=wl.draft_spec.name if wl.draft_spec is not None else None,
        gamma=g_run, gamma_requested=gamma, repeats=repeats, threads=n_threads, wall_s=wall,
        interleave="step" if lockstep else "run", rows=rows, acceptance=acceptance,
        verify_matmuls=VerifyMatmuls.of(mprobe, drift, prof, geo, g_run + 1, ratios, cat_ms, attn_ms),
        tuner=Tuner.of(rec_auto), recommended_plain=Chosen.of(rec_plain), recommended_sd=Chosen.of(rec_sd),
        host=fingerprint(threads=n_threads, dtype=DTYPE),
        profile={"source": prof.source, "host": prof.host, "date": prof.date}, geometry_rho_bytes=geo.rho,
        refresh=refresh_report(prof, kws, refresher))
