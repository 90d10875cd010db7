"""HF generate() with DynamicCache, StaticCache, BMCCache and BMCCache(policy="reserve"): measured decode
ms/token and peak resident memory beside the cost model's predictions (the measurement behind
`bmc-tune validate --hf`).

    python benchmarks/hf_generate.py --quick            # smoke run, tiny sizes, about a minute
    python benchmarks/hf_generate.py                    # full: kv N=2048,4096 B=1,4; smollm2 N=1024,4096,8192
    python benchmarks/hf_generate.py --ranges           # real decode ranges: prompt P, then P new tokens

Every case runs the four caches and the BMCCache grid (bmc_model/validate/hf_grid.py; --no-grid: the four
only) side by side, and reports the tuned BMCCache's regret over the grid. Run the full one on a quiet
machine: it takes tens of minutes (see --reps, --new-tokens, --no-memory).

--ranges decodes whole ranges instead of 256 tokens at the end of a context: prompt P, P new tokens (N = 2P),
P = 1024 and 4096 for SmolLM2 and 2048 for the kv workload, batch 1, each token timed by the streamer, the
caches interleaved step by step, and each cache's peak resident size from its fresh-process probe. A range is
thousands of steps whose mean already averages the step-to-step scatter, so it runs one repetition and one
memory probe per cache unless --reps / --mem-reps say otherwise; even so it takes about two hours here (the
progress lines print each case's predicted time). Writes benchmarks/results/hf_generate_ranges[_quick].json,
rewritten after each range, so an interrupted run keeps the ranges it finished.
Writes a JSON file (default benchmarks/results/hf_generate[_quick].json) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from bmc_model.core.errors import BMCError  # noqa: E402

RANGES = {"smollm2": (1024, 4096), "kv": (2048,)}  # prompt P of each range; P new tokens follow
QUICK_RANGES = {"smollm2": (32,), "kv": (32,)}
RANGE_REPS = 1  # per range: see the docstring


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    ap.add_argument("--workload", action="append", choices=["kv", "smollm2"],
                    help="repeatable; default both (smollm2 when installed)")
    ap.add_argument("--contexts", type=_ints, help="final lengths N, comma separated (default per workload)")
    ap.add_argument("--batches", type=_ints, help="batch sizes, comma separated (default per workload)")
    ap.add_argument("--new-tokens", type=int, help="tokens decoded per run; prompt = N - this (default 256)")
    ap.add_argument("--reps", type=int, help="interleaved repetitions per case (default 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--policy", help="BMCCache policy, e.g. bmc:64 or fixed:128:exact (default: recommend())")
    ap.add_argument("--profile", help="profile JSON (default: calibrated, else embedded)")
    ap.add_argument("--prefill", choices=["synthetic", "model"], default="synthetic")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-RSS subprocesses")
    ap.add_argument("--mem-reps", type=int, help="peak-RSS subprocesses per cache, median reported (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trim", action="store_true", help="BMCCache(trim=True): malloc_trim after growth events")
    ap.add_argument("--kv-ffn", type=int, help="the kv workload's FFN width (default 4096; 11008: Llama-2-7b's)")
    ap.add_argument("--no-grid", action="store_true", help="only the four caches: no BMCCache grid, no regret")
    ap.add_argument("--ranges", action="store_true",
                    help="only the decode ranges: prompt P, P new tokens (smollm2 P=1024,4096; kv P=2048)")
    ap.add_argument("--out", type=Path, help="JSON output path")
    args = ap.parse_args(argv)

    from bmc_model.validate.hf_generate import validate_hf

    err = Console(stderr=True)
    common = dict(threads=args.threads, profile=args.profile, policy=args.policy, memory=not args.no_memory,
                  prefill=args.prefill, quick=args.quick, seed=args.seed, trim=args.trim, kv_ffn=args.kv_ffn,
                  grid=() if args.no_grid else None, progress=lambda m: err.print(f"[dim]{m}[/dim]"))
    try:
        if args.ranges:
            return _ranges(args, validate_hf, common)
        result = validate_hf(workloads=args.workload, contexts=args.contexts, batches=args.batches,
                             new_tokens=args.new_tokens, reps=args.reps, memory_reps=args.mem_reps, **common)
    except BMCError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or ROOT / "benchmarks" / "results" / ("hf_generate_quick.json" if args.quick else "hf_generate.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    data = result.to_dict()
    out.write_text(json.dumps(data, indent=1))
    _show(result)
    print(json.dumps(data["checks"], indent=1))
    print(f"wrote {out}")
    return 0


def _show(result) -> None:
    from bmc_model.validate.report import hf_summary, hf_table

    con = Console(width=max(170, Console().width))
    con.print(hf_table(result))
    con.print(hf_summary(result))


def _ranges(args: argparse.Namespace, validate_hf, common: dict) -> int:
    """Each (workload, P): validate_hf with P new tokens after a P-token prompt, batch 1; one JSON of all."""
    from bmc_model.validate import smollm2

    if args.contexts or args.batches or args.new_tokens:
        raise BMCError("--ranges sets contexts, batches and new tokens itself (2P, 1, P)")
    table = QUICK_RANGES if args.quick else RANGES
    names = args.workload or [w for w in table if w != "smollm2" or smollm2.available()]
    out = args.out or ROOT / "benchmarks" / "results" / (
        "hf_generate_ranges_quick.json" if args.quick else "hf_generate_ranges.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    done: list[dict] = []
    for name in names:
        for p in table[name]:
            result = validate_hf(workloads=[name], contexts=(2 * p,), batches=(1,), new_tokens=p,
                                 reps=args.reps or RANGE_REPS, memory_reps=args.mem_reps or 1, **common)
            done.append({"workload": name, "prompt": p, "new_tokens": p, **result.to_dict()})
            regrets = [d["regret_pct"] for d in done if d["regret_pct"] is not None]
            out.write_text(json.dumps({"schema": 1, "kind": "hf-generate-ranges",
                                       "regret_pct": max(regrets, default=None), "ranges": done}, indent=1))
            _show(result)
            print(f"wrote {out} ({len(done)} ranges)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
