"""Re-predict a stored `validate --refresh` or `validate --sd --refresh` result from the refreshes it stored.

Each refresh's factors rebuild its profile from the calibrated one (core.refresh.refreshed); each repeat is
predicted from the refreshes over its span, by their mean and by their median, and a row by the median of its
repeats', beside the error the run stored. Measures nothing: it asks how a statistic would have read the very
same run. Usage: python benchmarks/repredict_refreshed.py PROFILE RESULT.json [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bmc_model.core.policy import parse_policy
from bmc_model.core.predict import predict
from bmc_model.core.profile import load_profile
from bmc_model.core.refresh import Refresh, refreshed
from bmc_model.core.specs import get_spec
from bmc_model.runtime.speculative import SDStats

COMBINE: dict[str, Callable[[list[float]], float]] = {"mean": statistics.fmean, "median": statistics.median}


def row_keywords(result: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """predict()'s keywords for a stored row but the profile (an SD row at the rates its run measured)."""
    spec = get_spec(result["model"].split("[")[0]).with_layers(result["layers"])
    kw: dict[str, Any] = {"model": spec, "seq": result["seq"], "prompt": result["prompt"],
                          "batch": result.get("batch") or 1, "dtype": "float32", "policy": parse_policy(row["policy"])}
    if row.get("gamma"):
        acc = row["acceptance"]
        stats = SDStats(**{k: acc[k] for k in ("gamma", "iterations", "tokens", "reached", "accepted", "proposed")})
        kw |= {"gamma": row["gamma"], "alpha": stats.alpha_list()}
    return kw


def repredict(profile: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    base = load_profile(profile).calibrated
    refs = result["refresh"]["refreshes"]
    profs = [refreshed(base, Refresh.from_dict(r)) if "factors" in r else None for r in refs]
    reps = result["repeats"]
    step = (len(refs) - 1) // reps  # refreshes from one repeat's end to the next's
    out = []
    for row in result["rows"]:
        kw = row_keywords(result, row)
        ms = [None if p is None else predict(**kw, profile=p).ms_per_token for p in profs]
        got = {"name": row["name"], "stored_error_pct": row["error_pct"]}
        for name, combine in COMBINE.items():
            by_rep = [combine([x for x in ms[i * step: i * step + step + 1] if x is not None]) for i in range(reps)]
            got[f"error_pct_{name}"] = 100.0 * (statistics.median(by_rep) / row["measured_ms"] - 1.0)
        out.append(got)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile")
    ap.add_argument("result")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = repredict(args.profile, json.loads(Path(args.result).read_text()))
    for r in rows:
        print(f"{r['name']:14} stored {r['stored_error_pct']:6.1f}%  mean {r['error_pct_mean']:6.1f}%  "
              f"median {r['error_pct_median']:6.1f}%")
    for name in COMBINE:
        print(f"max |error|, {name} over each span: {max(abs(r[f'error_pct_{name}']) for r in rows):.1f}%")
    if args.out:
        args.out.write_text(json.dumps({"profile": args.profile, "result": args.result, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
