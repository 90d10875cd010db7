"""Re-predict stored `validate --refresh`, `validate --sd --refresh` or `validate --hf --refresh` results from
the refreshes they stored.

Each refresh's factors rebuild its profile from the calibrated one (core.refresh.refreshed); each repeat is
predicted from the refreshes over its span, by their mean, their median and their trimmed mean (the largest and
the smallest left out), and a row by the median of its repeats', beside the error the run stored. `--drop TERM`
also re-predicts without that factor. Measures nothing: it asks how a statistic would have read the very same
runs. Usage: python benchmarks/repredict_refreshed.py PROFILE RESULT.json [RESULT.json ...] [--drop TERM]
[--out FILE.json]
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


def trimmed_mean(xs: list[float]) -> float:
    """The mean without the largest and the smallest value (the median below four values)."""
    return statistics.median(xs) if len(xs) < 4 else statistics.fmean(sorted(xs)[1:-1])


COMBINE: dict[str, Callable[[list[float]], float]] = {"mean": statistics.fmean, "median": statistics.median,
                                                      "trimmed": trimmed_mean}


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


def profiles(base: Any, refs: list[dict[str, Any]], drop: str | None) -> list[Any]:
    """Each stored refresh's profile (None: the refresh was skipped), without the `drop` factor if given."""
    out = []
    for r in refs:
        if "factors" not in r:
            out.append(None)
            continue
        r = {**r, "factors": {k: v for k, v in r["factors"].items() if k != drop}}
        out.append(refreshed(base, Refresh.from_dict(r)))
    return out


def combined(ms: list[list[float | None]]) -> dict[str, float]:
    """Each repeat's predictions over its span -> the median over repeats, by each statistic."""
    return {name: statistics.median(combine([x for x in span if x is not None]) for span in ms)
            for name, combine in COMBINE.items()}


def repredict_plain(base: Any, result: dict[str, Any], drop: str | None) -> list[dict[str, Any]]:
    refs = result["refresh"]["refreshes"]
    profs = profiles(base, refs, drop)
    reps = result["repeats"]
    step = (len(refs) - 1) // reps  # refreshes from one repeat's end to the next's
    out = []
    for row in result["rows"]:
        kw = row_keywords(result, row)
        ms = [None if p is None else predict(**kw, profile=p).ms_per_token for p in profs]
        spans = [ms[i * step: i * step + step + 1] for i in range(reps)]
        got = {"name": row["name"], "stored_error_pct": row["error_pct"]}
        got |= {f"error_pct_{k}": 100.0 * (v / row["measured_ms"] - 1.0) for k, v in combined(spans).items()}
        out.append(got)
    return out


def hf_spans(refs: list[dict[str, Any]]) -> list[list[int]]:
    """One case's refreshes (in order) -> each repetition's span, by index: the refresh before it (the case's
    first, or the one after the repetition before), those within and the one after it."""
    spans: list[list[int]] = []
    last = 0  # the refresh the next repetition starts from
    for i, r in enumerate(refs):
        if r["when"] == "before":
            last = i
            continue
        if not spans or spans[-1][-1] == last:  # the span before closed at `last`: a new repetition
            spans.append([last])
        spans[-1].append(i)
        if r["when"].startswith("after rep"):
            last = i
    return spans


def hf_spec(result: dict[str, Any], row: dict[str, Any]) -> Any:
    if row["workload"] != "kv":
        return get_spec(row["model"])
    from transformers import LlamaConfig

    from bmc_model.core.specs import spec_from_config_dict
    from bmc_model.validate.workloads import KV_GEOMETRY, KV_QUICK

    geo = KV_QUICK if result.get("quick") else KV_GEOMETRY
    return spec_from_config_dict(LlamaConfig(**geo).to_dict(), name=row["model"])


def repredict_hf(base: Any, result: dict[str, Any], drop: str | None) -> list[dict[str, Any]]:
    by_case: dict[str, list[dict[str, Any]]] = {}
    for r in result["refreshes"]:
        by_case.setdefault(r["case"], []).append(r)
    out = []
    for row in result["rows"]:
        case = f"{row['workload']} N={row['seq']} B={row['batch']}"
        refs = by_case[case]
        profs = profiles(base, refs, drop)
        kw = {"model": hf_spec(result, row), "seq": row["seq"], "prompt": row["prompt"], "batch": row["batch"],
              "dtype": "float32", "policy": parse_policy(row["policy"]), "runtime": "hf"}
        ms = [None if p is None else predict(**kw, profile=p).ms_per_token for p in profs]
        spans = [[ms[i] for i in span] for span in hf_spans(refs)]
        got = {"name": f"{case} {row['cache']}", "stored_error_pct": row["error_pct"]}
        got |= {f"error_pct_{k}": 100.0 * (v / row["measured_ms_per_token"] - 1.0)
                for k, v in combined(spans).items()}
        out.append(got)
    return out


def repredict(profile: str, result: dict[str, Any], drop: str | None = None) -> list[dict[str, Any]]:
    base = load_profile(profile).calibrated
    fn = repredict_hf if result.get("kind") == "hf-generate" else repredict_plain
    return fn(base, result, drop)


def summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    out = {}
    for name in ("stored", *COMBINE):
        errs = [abs(r["stored_error_pct" if name == "stored" else f"error_pct_{name}"]) for r in rows]
        out[f"median_abs_{name}"] = statistics.median(errs)
        out[f"max_abs_{name}"] = max(errs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile")
    ap.add_argument("results", nargs="+")
    ap.add_argument("--drop", help="a factor to leave out as well (e.g. hf_layer_fixed)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    report = []
    for path in args.results:
        result = json.loads(Path(path).read_text())
        for drop in (None, args.drop) if args.drop else (None,):
            rows = repredict(args.profile, result, drop)
            s = summary(rows)
            said = "  ".join(f"{k}: {s[f'median_abs_{k}']:.1f} / {s[f'max_abs_{k}']:.1f}%" for k in ("stored",
                                                                                                    *COMBINE))
            print(f"{Path(path).name}{f' without {drop}' if drop else ''}: |error| median / max  {said}")
            report.append({"result": path, "without": drop, "rows": rows, **s})
    if args.out:
        args.out.write_text(json.dumps({"profile": args.profile, "runs": report}, indent=1))


if __name__ == "__main__":
    main()
