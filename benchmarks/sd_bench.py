"""Speculative decoding on BMC's spare rows vs torch.cat growth: measured vs predicted.

Runs bmc_model.validate.speculative.measure_sd: plain decoding and SD, each on torch.cat growth and
on the recommended configuration, interleaved, median of repeats; prints a table and writes JSON.

The default synthetic workload: Llama-2-7b geometry cut to 2 layers, 2048-row prompt, oracle acceptance
0.8 (SYNTHETIC acceptance, see validate/sd_workloads.py); run it on a quiet machine.
What SD+BMC gains over SD+cat is the growth cost cat pays per iteration against the rest of it, so
it rises with the context: predicted 1.08x at a 2048-row prompt, 1.37x at 8192, 1.69x at 16384
(alpha 0.8, gamma 7, embedded profile; --prompt 16384 --repeats 2 takes about 9 minutes;
results/sd_bench_synthetic_16k.json, and _recalibrated.json with a fresh profile, --profile).
Each run also times the decoder's own matmuls at 1 and gamma + 1 rows, torch.cat and attention
alongside the decode runs and predicts a second time with what it found (the "probed" columns;
calibrate/probe.py).
Real acceptance: --workload smollm2 (prompt lookup on real text), --workload qwen (draft model; heavy).

Usage:
  python benchmarks/sd_bench.py                                  # the default synthetic workload
  python benchmarks/sd_bench.py --prompt 16384 --out benchmarks/results/sd_bench_synthetic_16k.json
  python benchmarks/sd_bench.py --workload smollm2 --new-tokens 128
  python benchmarks/sd_bench.py --workload qwen --gamma 4        # needs the Qwen packages, ~10 GB RAM
  python benchmarks/sd_bench.py --quick                          # tiny smoke run (seconds)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from bmc_model.core.errors import BMCError
from bmc_model.core.specs import get_spec
from bmc_model.validate.report import sd_text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="synthetic", choices=["synthetic", "smollm2", "qwen"])
    ap.add_argument("--model", default="llama-7b", help="synthetic workload: model geometry")
    ap.add_argument("--layers", type=int, default=2, help="synthetic workload: layers kept")
    ap.add_argument("--prompt", type=int, default=2048, help="synthetic workload: prompt rows")
    ap.add_argument("--alpha", default="0.8", help="synthetic workload: oracle acceptance (A or A1,A2,...)")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--gamma", default="auto", help="draft tokens per iteration, or auto (the tuner's choice)")
    ap.add_argument("--probe-gamma", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--profile", default=None, help="profile JSON (default: the user's, else embedded)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--acceptance-out", default=None, help="also write the measured acceptance (recommend --alpha)")
    ap.add_argument("--out", default=None, help="JSON output (default benchmarks/results/sd_bench_<workload>.json)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script, no real figures")
    args = ap.parse_args(argv)

    from bmc_model.validate.speculative import measure_sd

    alpha = [float(a) for a in args.alpha.split(",")]
    model: object = args.model
    if args.quick:
        model = dataclasses.replace(get_spec(args.model), name=f"{args.model}-quick", hidden=128, heads=4, kv_heads=4,
                                    head_dim=32, ffn=256, vocab=512)
        args.prompt, args.new_tokens, args.repeats = min(args.prompt, 128), min(args.new_tokens, 24), 1
        args.probe_gamma = min(args.probe_gamma, 4)
    try:
        out = measure_sd(args.workload, model=model, layers=args.layers, prompt=args.prompt,  # type: ignore[arg-type]
                         alpha=alpha[0] if len(alpha) == 1 else alpha, new_tokens=args.new_tokens, gamma=args.gamma,
                         probe_gamma=args.probe_gamma, repeats=args.repeats, threads=args.threads,
                         profile=args.profile, seed=args.seed, acceptance_out=args.acceptance_out,
                         progress=lambda m: print(m, file=sys.stderr, flush=True))
    except BMCError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(sd_text(out))
    data = {**out.to_dict(), "quick": args.quick}
    path = Path(args.out or f"benchmarks/results/sd_bench_{args.workload}{'_quick' if args.quick else ''}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
