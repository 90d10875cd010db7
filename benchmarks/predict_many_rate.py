"""How many predictions a second predict_many() and choose_many() answer, beside scalar predict() in the same run.

Targets (issue 18): predict_many over 100,000 requests >= 1,000,000 predictions/s and >= 100x the per-item rate of
scalar predict() timed in the same run, equal to it to 1e-9 relative; choose_many over 100,000 requests >= 50,000
requests/s. Cases are timed interleaved, round by round; medians of the rounds.
Usage: python benchmarks/predict_many_rate.py [--requests 100000] [--rounds 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bmc_model import choose_many, predict, predict_many
from bmc_model.core.host import fingerprint

POLICIES = ("reserve", "static", "geometric", "mlx", "dynamic", "bmc:64", "fixed:128:exact", "fixed:32:pad-256")


def stream(n: int, sd_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """llama3-8b requests: prompt lognormal (median 1000), new tokens lognormal (median 250), batch 1-4, a policy
    each from POLICIES, a fraction with SD (gamma 4, alpha one of 0.5..0.8). "r each": the plain stream with no
    policy and an r per request (16, 64, 256 or 1024: fixed growth, padded)."""
    rng = np.random.default_rng(seed)
    prompt = np.clip(rng.lognormal(np.log(1000), 0.8, n), 16, 8192).astype(np.int64)
    new = np.clip(rng.lognormal(np.log(250), 1.0, n), 8, 4096).astype(np.int64)
    sd = rng.random(n) < sd_fraction
    return {"prompt": prompt, "new_tokens": new, "batch": rng.choice([1, 2, 4], n, p=[0.6, 0.3, 0.1]),
            "policy": np.asarray(POLICIES)[rng.integers(0, len(POLICIES), n)], "gamma": np.where(sd, 4, 0),
            "alpha": np.where(sd, rng.choice([0.5, 0.6, 0.7, 0.8], n), np.nan)}


def element(s: dict[str, np.ndarray], i: int) -> dict:
    kw = {"model": "llama3-8b", "prompt": int(s["prompt"][i]), "seq": int(s["prompt"][i] + s["new_tokens"][i]),
          "batch": int(s["batch"][i]), "policy": str(s["policy"][i]), "gamma": int(s["gamma"][i])}
    if kw["gamma"]:
        kw["alpha"] = float(s["alpha"][i])
    return kw


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--scalar", type=int, default=2_000, help="requests priced one by one with predict()")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/predict_many.json")
    args = ap.parse_args()
    streams = {"plain": stream(args.requests, 0.0, args.seed), "20% SD": stream(args.requests, 0.2, args.seed),
               "all SD": stream(args.requests, 1.0, args.seed)}
    by_r = {k: v for k, v in streams["plain"].items() if k != "policy"}  # one rule, r per request (a tuner's grid)
    grid = np.random.default_rng(args.seed + 1).choice([16, 64, 256, 1024], args.requests)
    by_r["r"] = np.minimum(grid, by_r["prompt"] + by_r["new_tokens"])  # an r is at most the rows (bounds.r)
    sample = [element(streams["20% SD"], i) for i in range(args.scalar)]

    def many(s: dict) -> object:
        return predict_many(model="llama3-8b", **s)

    def choose(s: dict) -> object:
        return choose_many(model="llama3-8b", prompt=s["prompt"], new_tokens=s["new_tokens"], batch=s["batch"],
                           gamma=s["gamma"], alpha=s["alpha"])

    cases: dict[str, tuple[Callable[[], object], int]] = {
        "predict() one by one": (lambda: [predict(**kw) for kw in sample], args.scalar),
        **{f"predict_many, {k}": (lambda s=s: many(s), args.requests) for k, s in streams.items()},
        "predict_many, plain, r each": (lambda: many(by_r), args.requests),
        **{f"choose_many, {k}": (lambda s=s: choose(s), args.requests) for k, s in streams.items() if k != "all SD"},
    }
    rates: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):  # interleaved: each round times every case once
        for name, (fn, count) in cases.items():
            rates[name].append(count / timed(fn))
    med = {k: statistics.median(v) for k, v in rates.items()}

    mixed = predict_many(model="llama3-8b", **{k: v[: args.scalar] for k, v in streams["20% SD"].items()})
    worst = 0.0
    for i, kw in enumerate(sample):
        one = predict(**kw)
        for f in ("ms_per_token", "peak_resident_bytes", "reserved_bytes", "resident_bytes", "growth_events"):
            a, b = getattr(one, f), float(getattr(mixed, f)[i])
            worst = max(worst, abs(a - b) / max(abs(a), 1e-300))
    scalar = med["predict() one by one"]
    targets = {"predict_many, plain": 1e6, "predict_many, 20% SD": 1e6, "predict_many, all SD": 1e6,
               "predict_many, plain, r each": 1e6,
               "choose_many, plain": 5e4, "choose_many, 20% SD": 5e4}
    host = fingerprint()
    print(f"host: {host.get('cpu')}, {os.cpu_count()} cores; {args.requests:,} requests, {args.rounds} rounds "
          f"interleaved, medians")
    print(f"{'case':30s} {'per s':>12s} {'x predict()':>12s} {'target':>10s}  ok")
    rows = []
    for name, rate in med.items():
        target = targets.get(name)
        ok = None if target is None else rate >= target and (not name.startswith("predict_many") or
                                                             rate >= 100 * scalar)
        rows.append({"case": name, "per_s": rate, "rounds": rates[name], "times_scalar": rate / scalar,
                     "target_per_s": target, "ok": ok})
        shown = "" if ok is None else ("yes" if ok else "NO")
        print(f"{name:30s} {rate:12,.0f} {rate / scalar:12.1f} {target or 0:10,.0f}  {shown}")
    print(f"predict_many vs predict() on the {args.scalar:,} requests priced both ways: max relative difference "
          f"{worst:.2e} (target <= 1e-9)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": host,
                               "threads": os.cpu_count(), "requests": args.requests, "rounds": args.rounds,
                               "stream": stream.__doc__, "policies": POLICIES, "rows": rows,
                               "max_rel_difference": worst}, indent=1))


if __name__ == "__main__":
    main()
