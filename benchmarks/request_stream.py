"""A stream of requests priced by the model: recommend()'s pick per request (choose_many) against one policy for
every request (predict_many): HF's DynamicCache and StaticCache, mlx-lm's step of 256, and the one fixed r whose
total over the stream is least.

    python benchmarks/request_stream.py [--requests 100000] [--seed 0] [--model llama3-8b] [--sd-fraction 0.2]

Predictions only: no model runs (about 10 s at the default size on a 2-core host). The stream is drawn with
numpy's default_rng(seed), each request independently (the distribution is printed and recorded):
  prompt      lognormal, median 1000, sigma 1.0, rounded, clipped to [16, 8192] and to the model's context - 64
  max_new     the cap the request was admitted with: min(4096, context - prompt), as a server caps a request
              at its context; StaticCache and reserve size the cache for prompt + max_new
  new tokens  lognormal, median 250, sigma 1.0, rounded, clipped to [1, max_new] (to [gamma + 1, max_new]
              with speculative decoding); generation ends there, seq = prompt + new tokens
  batch       1, 2, 4 or 8 with weights 0.5, 0.25, 0.15, 0.1
  SD          a --sd-fraction of requests with speculative decoding, gamma 4 (prompt lookup: no draft model),
              alpha one of 0.5, 0.6, 0.7, 0.8 with equal weight: rounded rates, so that the model prices each
              rate's requests as one group
A request whose KV cache at prompt + max_new + gamma rows would not fit the profile host's RAM is drawn again
(the count is recorded). Every fixed policy keeps each request's gamma and alpha; the per-request pick may turn
SD off. A request's decode seconds are ms_per_token * new tokens / 1000; an option's total is their sum (the
requests one after another). choose_many is told each request's seq, as recommend() is: that pick knows the
output length a scheduler would not; "length unknown" is choose_many's pick for the request run to max_new (all
a scheduler knows at admission), priced where the request really stops. Writes
benchmarks/results/request_stream.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import bmc_model
from bmc_model import BMCError, choose_many, get_spec, load_profile, predict_many
from bmc_model.core.bounds import host_ram
from bmc_model.core.host import fingerprint
from bmc_model.core.specs import DTYPE_BYTES

ROOT = Path(__file__).resolve().parent

PROMPT = {"dist": "lognormal", "median": 1000, "sigma": 1.0, "clip": [16, 8192], "room": 64}
NEW = {"dist": "lognormal", "median": 250, "sigma": 1.0, "clip": [1, 4096]}
MAX_NEW = 4096
BATCH = {1: 0.5, 2: 0.25, 4: 0.15, 8: 0.1}
GAMMA = 4
ALPHAS = (0.5, 0.6, 0.7, 0.8)
R_GRID = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)  # the global r's grid, and choose_many's r_grid
WIDTHS = ("padded", "exact", "pad-256")
FIXED = (("DynamicCache", "dynamic"), ("StaticCache", "static"), ("mlx-lm (256)", "mlx"))
TOP = 8


# -- the stream -----------------------------------------------------------------------------------------------

def draw(rng: np.random.Generator, n: int, context: int | None, sd_fraction: float) -> dict[str, np.ndarray]:
    """n requests of the stated distribution (before the RAM check)."""
    lo, hi = PROMPT["clip"]
    if context is not None:
        hi = min(hi, context - PROMPT["room"])
    prompt = np.clip(np.round(rng.lognormal(np.log(PROMPT["median"]), PROMPT["sigma"], n)), lo, hi).astype(np.int64)
    max_new = np.full(n, MAX_NEW, dtype=np.int64) if context is None else np.minimum(MAX_NEW, context - prompt)
    new = np.round(rng.lognormal(np.log(NEW["median"]), NEW["sigma"], n)).astype(np.int64)
    sd = rng.random(n) < sd_fraction
    new = np.clip(new, np.where(sd, GAMMA + 1, NEW["clip"][0]), np.minimum(NEW["clip"][1], max_new))
    batch = rng.choice(np.array(list(BATCH)), n, p=np.array(list(BATCH.values())))
    alpha = np.where(sd, rng.choice(np.array(ALPHAS), n), np.nan)
    return {"prompt": prompt, "new_tokens": new, "max_new": max_new, "batch": batch.astype(np.int64),
            "gamma": np.where(sd, GAMMA, 0).astype(np.int64), "alpha": alpha}


def kv_need(spec, dtype: str, s: dict[str, np.ndarray]) -> np.ndarray:
    """Bytes of K and V at prompt + max_new + gamma rows, the whole batch (core/bounds.kv_bytes, per request)."""
    rows = (s["prompt"] + s["max_new"] + s["gamma"]).astype(np.float64)
    rho = s["batch"] * spec.kv_heads * spec.head_dim * DTYPE_BYTES[dtype]
    window = spec.sliding_window or 0
    return 2.0 * rho * ((spec.layers - spec.sliding_count) * rows + spec.sliding_count * np.minimum(rows, window))


def stream(rng: np.random.Generator, n: int, spec, dtype: str, ram: int,
           sd_fraction: float) -> tuple[dict[str, np.ndarray], int]:
    """(the stream, how many draws were refused for RAM and drawn again)."""
    s = draw(rng, n, spec.max_context, sd_fraction)
    redrawn = 0
    for _ in range(1000):
        bad = np.flatnonzero(kv_need(spec, dtype, s) > ram) if ram > 0 else np.array([], dtype=np.int64)
        if not len(bad):
            return s, redrawn
        redrawn += len(bad)
        fresh = draw(rng, len(bad), spec.max_context, sd_fraction)
        for k in s:
            s[k][bad] = fresh[k]
    raise SystemExit(f"error: requests still do not fit in {ram / 2**30:.1f} GiB after 1000 redraws")


def described(spec, context: int | None, sd_fraction: float) -> dict:
    hi = PROMPT["clip"][1] if context is None else min(PROMPT["clip"][1], context - PROMPT["room"])
    return {"prompt": {**PROMPT, "clip": [PROMPT["clip"][0], hi]},
            "max_new": f"min({MAX_NEW}, context - prompt)" if context else MAX_NEW, "context": context,
            "new_tokens": {**NEW, "clip": ["1 (gamma + 1 with SD)", "min(4096, max_new)"]},
            "batch": {str(k): v for k, v in BATCH.items()},
            "sd": {"fraction": sd_fraction, "gamma": GAMMA, "alpha": list(ALPHAS), "alpha_weights": "equal",
                   "drafter": "none (prompt lookup)"}}


def text_of(d: dict, n: int, seed: int, redrawn: int) -> str:
    p, nt = d["prompt"], d["new_tokens"]
    return "\n".join([
        f"stream: {n} requests, seed {seed}, each drawn independently ({redrawn} redrawn: KV at prompt + max_new "
        "past the profile host's RAM)",
        f"  prompt      lognormal median {p['median']}, sigma {p['sigma']}, rounded, clipped to {p['clip']}",
        f"  max_new     {d['max_new']} (context {d['context']}): the admission cap; StaticCache/reserve size for "
        "prompt + max_new",
        f"  new tokens  lognormal median {nt['median']}, sigma {nt['sigma']}, rounded, clipped to [1, max_new] "
        f"([{GAMMA + 1}, max_new] with SD)",
        "  batch       " + ", ".join(f"{k}: {v}" for k, v in d["batch"].items()),
        f"  SD          {d['sd']['fraction']:.0%} of requests, gamma {GAMMA}, alpha one of "
        f"{', '.join(map(str, ALPHAS))} (equal weights; rounded so the model groups them), no draft model"])


# -- pricing --------------------------------------------------------------------------------------------------

def figures(name: str, policy: str, seconds: np.ndarray, peak: np.ndarray, reserved: np.ndarray, wall: float,
            sd: np.ndarray, **extra: object) -> dict:
    return {"option": name, "policy": policy, "total_decode_s": float(seconds.sum()),
            "plain_decode_s": float(seconds[~sd].sum()), "sd_decode_s": float(seconds[sd].sum()),
            "mean_peak_resident_bytes": float(peak.mean()),
            "p99_peak_resident_bytes": float(np.percentile(peak, 99)),
            "sum_peak_resident_bytes": float(peak.sum()), "mean_reserved_bytes": float(reserved.mean()),
            "wall_s": wall, **extra}


def price(common: dict, policy: str, tokens: np.ndarray) -> tuple[np.ndarray, object, float]:
    t = time.perf_counter()
    x = predict_many(policy=policy, **common)
    wall = time.perf_counter() - t
    return x.ms_per_token * tokens / 1000.0, x, wall


def kind_of(ch, i: int, new_tokens: int) -> str:
    """Request i's pick, with an r equal to its own new tokens + gamma (a grid r past them, clamped as
    recommend() clamps it: the cache grows once, to its final length) written r=T+gamma."""
    pol = ch.policy(i)
    g = int(ch.gamma[i])
    if pol.growth == "fixed" and int(ch.r[i]) == new_tokens + g:
        label = f"r=T+gamma {pol.width_label}" if g else f"r=T {pol.width_label}"
    else:
        label = pol.label
    return label + (f", gamma {g}" if g else "")


def host_facts() -> dict:
    return {**fingerprint(), "python": platform.python_version(), "platform": platform.platform(),
            "bmc_tune": bmc_model.__version__, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def table(rows: list[dict], base: dict) -> str:
    mib, gib = 2.0**20, 2.0**30

    def x(r: dict, key: str) -> str:
        return f"{r[key] / base[key]:.4f}" if base[key] else "-"

    head = ["option", "priced as", "decode s", "x choice", "x plain", "x SD", "mean peak MiB", "p99 peak MiB",
            "sum peak GiB", "mean reserved MiB", "wall s*"]
    cells = [head] + [[r["option"], r["policy"], f"{r['total_decode_s']:.4g}", x(r, "total_decode_s"),
                       x(r, "plain_decode_s"), x(r, "sd_decode_s"),
                       f"{r['mean_peak_resident_bytes'] / mib:.0f}", f"{r['p99_peak_resident_bytes'] / mib:.0f}",
                       f"{r['sum_peak_resident_bytes'] / gib:.0f}", f"{r['mean_reserved_bytes'] / mib:.0f}",
                       f"{r['wall_s']:.2f}"] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in cells)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=100_000, help="requests in the stream (default 100000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="llama3-8b", help="a preset (default llama3-8b)")
    ap.add_argument("--sd-fraction", type=float, default=0.2, help="share of requests with SD (default 0.2)")
    ap.add_argument("--profile", type=Path, default=None, help="profile (default: the calibrated one, else the "
                    "embedded default)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "request_stream.json")
    args = ap.parse_args()
    if args.requests < 1 or not 0.0 <= args.sd_fraction <= 1.0:
        ap.error("--requests must be positive and --sd-fraction in [0, 1]")

    prof = load_profile(args.profile)
    spec = get_spec(args.model)
    dtype = predict_many(spec, seq=2, prompt=1, profile=prof).dtype  # the dtype predict() prices at
    ram, _ = host_ram(prof.host)
    rng = np.random.default_rng(args.seed)
    s, redrawn = stream(rng, args.requests, spec, dtype, ram, args.sd_fraction)
    dist = described(spec, spec.max_context, args.sd_fraction)
    print(text_of(dist, args.requests, args.seed, redrawn))
    print(f"model {spec.name} ({dtype}); profile {prof.describe()}")
    tokens = s["new_tokens"].astype(np.float64)
    sd = s["gamma"] > 0
    common = {"model": spec, "prompt": s["prompt"], "new_tokens": s["new_tokens"], "max_new": s["max_new"],
              "batch": s["batch"], "gamma": s["gamma"], "alpha": s["alpha"], "profile": prof}

    try:
        t = time.perf_counter()
        ch = choose_many(r_grid=R_GRID, **common)
        wall = time.perf_counter() - t
        if not ch.fits.all():
            raise BMCError(f"{int((~ch.fits).sum())} requests have no pick")
        picks = [lab + (f", gamma {g}" if g else "") for lab, g in zip(ch.labels(), ch.gamma.tolist())]
        hist = Counter(picks)
        kinds = Counter(kind_of(ch, i, int(s["new_tokens"][i])) for i in range(len(ch)))
        choice = figures("per-request choice", "choose_many", ch.seconds, ch.peak_resident_bytes, ch.reserved_bytes,
                         wall, sd, sd_kept=int((ch.gamma[sd] > 0).sum()), sd_requests=int(sd.sum()),
                         sd_kept_by_alpha={str(a): [int((ch.gamma[sd & (s["alpha"] == a)] > 0).sum()),
                                                    int((sd & (s["alpha"] == a)).sum())] for a in ALPHAS},
                         distinct_picks=len(hist))
        rows = [choice]
        # a scheduler that knows only the cap: the pick for a request running to max_new, priced where it stops
        t = time.perf_counter()
        plan = choose_many(r_grid=R_GRID, **{**common, "new_tokens": s["max_new"]})
        kept = plan.gamma > 0
        x = predict_many(**{**common, "policy": plan.labels(), "gamma": plan.gamma,
                            "alpha": np.where(kept, s["alpha"], np.nan)})
        rows.append(figures("per-request choice, length unknown", "choose_many at max_new",
                            x.ms_per_token * tokens / 1000.0, x.peak_resident_bytes, x.reserved_bytes,
                            time.perf_counter() - t, sd, sd_kept=int(kept[sd].sum()),
                            top_picks=Counter(plan.labels()).most_common(4)))
        for name, policy in FIXED:
            secs, x, wall = price(common, policy, tokens)
            rows.append(figures(name, f"{policy}: {x.policy(0).label}", secs, x.peak_resident_bytes, x.reserved_bytes,
                                wall, sd))
        # one r for all, at most every request's rows (prompt + max_new)
        longest = int((s["prompt"] + s["max_new"]).min())
        candidates = []
        for width in WIDTHS:
            for r in (r for r in R_GRID if r <= longest):
                secs, x, wall = price(common, f"fixed:{r}:{width}", tokens)
                candidates.append((figures("one global r", x.policy(0).label, secs, x.peak_resident_bytes,
                                           x.reserved_bytes, wall, sd), r, width))
    except BMCError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    best, best_r, best_width = min(candidates, key=lambda c: c[0]["total_decode_s"])
    rows.append({**best, "r": best_r, "width": best_width,
                 "grid_wall_s": sum(c[0]["wall_s"] for c in candidates), "grid_size": len(candidates)})
    base = choice["total_decode_s"]
    for r in rows:
        r["ratio_to_choice"] = r["total_decode_s"] / base

    print()
    print(table(rows, choice))
    print(f"* wall time of the choose_many / predict_many call: informational, not a benchmark, measured beside "
          f"other work; the global r's grid ({len(candidates)} predict_many calls) took "
          f"{rows[-1]['grid_wall_s']:.1f} s")
    ranked = sorted(candidates, key=lambda c: c[0]["total_decode_s"])
    print(f"one global r: {best['policy']} of r in {list(R_GRID)} x widths {', '.join(WIDTHS)}; best four: "
          + ", ".join(f"{c[0]['policy']} x{c[0]['total_decode_s'] / base:.5f}" for c in ranked[:4])
          + "; best of each width: " + ", ".join(
              f"{c[0]['policy']} x{c[0]['total_decode_s'] / base:.5f}"
              for c in (min((c for c in candidates if c[2] == w), key=lambda c: c[0]["total_decode_s"])
                        for w in WIDTHS)))
    print(f"per-request picks: {len(hist)} distinct labels; SD kept on {choice['sd_kept']} of "
          f"{choice['sd_requests']} SD requests (by alpha: "
          + ", ".join(f"{a} {k}/{m}" for a, (k, m) in choice["sd_kept_by_alpha"].items()) + f"). Top {TOP} labels: "
          + ", ".join(f"{lab} {k}" for lab, k in hist.most_common(TOP)))
    print(f"top {TOP} picks, T = the request's new tokens (r=T: a grid r clamped to them, as recommend() clamps):")
    for lab, k in kinds.most_common(TOP):
        print(f"  {k:7d}  {k / len(ch):6.1%}  {lab}")
    rest = len(ch) - sum(k for _, k in kinds.most_common(TOP))
    if rest:
        print(f"  {rest:7d}  {rest / len(ch):6.1%}  (others)")
    raw_rest = len(ch) - sum(k for _, k in hist.most_common(TOP))

    report = {"host": host_facts(), "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "inputs": {"model": spec.name, "dtype": dtype, "requests": args.requests, "seed": args.seed,
                         "distribution": dist, "redrawn_for_ram": redrawn, "ram_bytes": ram,
                         "r_grid": list(R_GRID), "widths": list(WIDTHS),
                         "stream_stats": {k: {"mean": float(v.mean()), "median": float(np.median(v)),
                                              "p99": float(np.percentile(v, 99)), "count": len(v)}
                                          for k, v in ((k, v[~np.isnan(v)] if k == "alpha" else v)
                                                       for k, v in s.items() if k != "gamma") if len(v)}},
              "profile": prof.describe(),
              "wall_note": "wall_s: informational, not a benchmark, measured beside other work",
              "options": rows,
              "choice_histogram": [{"pick": lab, "count": k} for lab, k in hist.most_common(TOP)]
              + ([{"pick": "(others)", "count": raw_rest}] if raw_rest else []),
              "choice_kinds_note": "r=T (r=T+gamma): r equal to the request's new tokens (+ gamma), a grid r clamped",
              "choice_kinds": [{"pick": lab, "count": k} for lab, k in kinds.most_common(TOP)]
              + ([{"pick": "(others)", "count": rest}] if rest else []),
              "global_r_candidates": [{"policy": c[0]["policy"], "r": c[1], "width": c[2],
                                       "total_decode_s": c[0]["total_decode_s"],
                                       "ratio_to_choice": c[0]["total_decode_s"] / base,
                                       "mean_peak_resident_bytes": c[0]["mean_peak_resident_bytes"],
                                       "wall_s": c[0]["wall_s"]} for c in candidates]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
