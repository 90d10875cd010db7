"""HF generate() with DynamicCache, StaticCache, BMCCache and BMCCache(policy="reserve"): measured decode
ms/token and peak resident memory beside the cost model's predictions (the measurement behind
`bmc-tune validate --hf`).

    python benchmarks/hf_generate.py --quick            # smoke run, tiny sizes, about a minute
    python benchmarks/hf_generate.py                    # full: kv N=2048,4096 B=1,4; smollm2 N=1024,4096,8192

Run the full one on a quiet machine: it takes tens of minutes (see --reps, --new-tokens, --no-memory).
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
    ap.add_argument("--out", type=Path, help="JSON output path")
    args = ap.parse_args(argv)

    from bmc_model.validate.hf_generate import validate_hf
    from bmc_model.validate.report import hf_table

    err = Console(stderr=True)
    try:
        result = validate_hf(workloads=args.workload, contexts=args.contexts, batches=args.batches,
                             new_tokens=args.new_tokens, reps=args.reps, threads=args.threads,
                             profile=args.profile, policy=args.policy, memory=not args.no_memory,
                             prefill=args.prefill, quick=args.quick, seed=args.seed, trim=args.trim,
                             kv_ffn=args.kv_ffn, memory_reps=args.mem_reps,
                             progress=lambda m: err.print(f"[dim]{m}[/dim]"))
    except BMCError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or ROOT / "benchmarks" / "results" / ("hf_generate_quick.json" if args.quick else "hf_generate.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    data = result.to_dict()
    out.write_text(json.dumps(data, indent=1))
    Console(width=max(170, Console().width)).print(hf_table(result))
    print(json.dumps(data["checks"], indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
