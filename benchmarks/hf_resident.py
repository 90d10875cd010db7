"""transformers generate() on real SmolLM2-135M: speed and peak resident KV per cache, each run in a fresh
process, the processes alternating cache by cache (issue 16's targets).

    python benchmarks/hf_resident.py [--reps 2] [--quick] [--cases full,stopped] [--profile FILE]
    # about 10 minutes; --quick: 128 new tokens; --profile: what BMCCache.tuned reads (default: the default one)

Cases (prompt 1024, fp32, 2 threads, greedy, EOS suppressed):
  full:    1024 new tokens; DynamicCache, StaticCache, BMCCache.tuned(seq=2048), BMCCache reserve
  stopped: max_new_tokens=2048, generation stopped after 256 tokens by a stopping criterion (as EOS
           would); StaticCache and BMCCache reserve sized for the 2048, BMCCache.tuned(seq=3072), and
           BMCCache.tuned told the lengths (max_new=2048, mean_new=256: geometric stopping)
A run's peak resident KV is its resident high-water mark during the decode (VmHWM, reset at the first
token after handing the prefill's freed heap back with malloc_trim) minus its resident size before the
prefill. Writes benchmarks/results/hf_resident.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = 1024


def child(case: str, kind: str, new_tokens: int, stop_after: int | None, profile: str | None) -> dict:
    import gc

    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    from bmc_model.calibrate.token_clock import TokenClock
    from bmc_model.core.host import release_heap
    from bmc_model.hf import BMCCache
    from bmc_model.validate.rss import peak_rss_bytes, reset_peak_rss, rss_bytes
    from bmc_model.validate.workloads import build, make_cache, make_inputs

    torch.set_num_threads(2)
    model = build("smollm2").model
    seq = PROMPT + new_tokens

    def cache_for(n: int):
        if kind == "tuned":
            return BMCCache.tuned(model, seq=n, prompt=PROMPT, profile=profile)
        if kind == "tuned-mean":  # told the output length's distribution: geometric, mean = where it stops
            return BMCCache.tuned(model, seq=n, prompt=PROMPT, profile=profile, max_new=new_tokens,
                                  mean_new=stop_after or new_tokens)
        return make_cache(kind, model, n, None)

    class StopAt(StoppingCriteria):
        def __call__(self, input_ids, scores, **kw):  # noqa: ANN001
            return input_ids.shape[1] >= PROMPT + (stop_after or new_tokens)

    def generate(ids, cache, clock, n_new):
        return model.generate(ids, attention_mask=torch.ones_like(ids), cache=cache, max_new_tokens=n_new,
                              min_new_tokens=min(n_new, stop_after or n_new), do_sample=False, streamer=clock,
                              stopping_criteria=StoppingCriteriaList([StopAt()]), pad_token_id=0)

    warm = make_inputs(model, 64, 1, 1)
    model.generate(warm, attention_mask=torch.ones_like(warm), max_new_tokens=4, min_new_tokens=4, do_sample=False,
                   pad_token_id=0)
    ids = make_inputs(model, PROMPT, 1, 0)
    cache = cache_for(seq)
    gc.collect()
    release_heap()
    base = rss_bytes()

    def at_first_token() -> None:
        release_heap()  # the prefill's freed activations: not the cache's
        reset_peak_rss()

    clock = TokenClock(at_first_token)
    out = generate(ids, cache, clock, new_tokens)
    peak = peak_rss_bytes() - base
    label = getattr(getattr(cache, "policy", None), "label", type(cache).__name__)
    return {"case": case, "cache": kind, "policy": label, "heap_trims": getattr(cache, "heap_trims", 0),
            "tokens": int(out.shape[1] - PROMPT),
            "ms_per_token": clock.decode_ms_per_token(), "peak_resident_bytes": peak,
            "tokens_sha": hash(tuple(out[0].tolist())) & 0xFFFFFFFF}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cases", default="full,stopped")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--out", default="hf_resident.json", help="file name under benchmarks/results/")
    ap.add_argument("--child", nargs=5)
    a = ap.parse_args()
    if a.child:
        case, kind, n, stop, prof = a.child
        print("RESULT " + json.dumps(child(case, kind, int(n), None if stop == "-" else int(stop),
                                           None if prof == "-" else prof)), flush=True)
        return 0
    cases = set(a.cases.split(","))
    full = 128 if a.quick else 1024
    plan = [("full", k, full, None) for k in ("dynamic", "static", "tuned", "reserve")] if "full" in cases else []
    stopped = [("stopped", k, 2048, 256) for k in ("static", "reserve", "tuned", "tuned-mean")
               ] if "stopped" in cases else []
    if not plan:  # the stopped case alone: repeat it instead
        plan, stopped = stopped, []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rows = []
    for rep in range(a.reps):
        order = plan[rep % len(plan):] + plan[:rep % len(plan)]
        for case, kind, n, stop in order + (stopped if rep == 0 else []):
            out = subprocess.run([sys.executable, __file__, "--child", case, kind, str(n), str(stop or "-"),
                              a.profile or "-"],
                                 capture_output=True, text=True, env=env)
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(out.stderr[-2000:], file=sys.stderr)
                return 1
            row = {**json.loads(line[7:]), "rep": rep}
            rows.append(row)
            print(f"{row['case']:8s} {row['cache']:8s} {row['policy']:20s} {row['tokens']:5d} tokens "
                  f"{row['ms_per_token']:7.2f} ms/token  peak resident {row['peak_resident_bytes'] / 2**20:7.1f} MiB",
                  flush=True)
    summary = {}
    for case, kind in {(r["case"], r["cache"]) for r in rows}:
        mine = [r for r in rows if r["case"] == case and r["cache"] == kind]
        summary[f"{case}/{kind}"] = {"policy": mine[0]["policy"],
                                     "ms_per_token": statistics.median(r["ms_per_token"] for r in mine),
                                     "peak_resident_bytes": statistics.median(r["peak_resident_bytes"] for r in mine),
                                     "same_tokens": len({r["tokens_sha"] for r in rows if r["case"] == case}) == 1}
    out_path = ROOT / "benchmarks" / "results" / a.out
    out_path.write_text(json.dumps({"prompt": PROMPT, "reps": a.reps, "profile": a.profile, "rows": rows,
                                    "summary": summary},
                                   indent=1) + "\n")
    for k, v in sorted(summary.items()):
        mib = v["peak_resident_bytes"] / 2**20
        print(f"{k:18s} {v['policy']:20s} {v['ms_per_token']:7.2f} ms/token  {mib:7.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
