"""The golden grid: predict() and recommend() outputs, and the CLI's `recommend --json` and `models`,
over presets, lengths, batches, policies, widths and SD settings on the embedded profile.

`python tests/golden_cases.py` rewrites tests/golden/*.json; tests/test_golden.py checks that the code
reproduces them bit for bit. Rewrite them only for a change that is meant to alter predictions, and say
so in the commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).parent / "golden"
PRESETS = ("llama-7b", "llama3-8b", "mistral-7b", "opt-6.7b", "qwen2.5-coder-1.5b", "smollm2-135m",
           "tinyllama-1.1b", "llama-70b", "gemma3-270m")
POLICIES = ("dynamic", "static", "geometric", "mlx", "llamacpp", "reserve", "bmc:64", "fixed:32:exact",
            "fixed:200:pad-256", "fixed:7:padded")
SD = ({}, {"gamma": 4, "alpha": 0.8}, {"gamma": 7, "alpha": [0.9, 0.7, 0.5], "draft_cost": 0.1},
      {"gamma": 3, "alpha": 0.6, "draft": "qwen2.5-coder-0.5b"})


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float64).tobytes()).hexdigest()


def _pred(p) -> dict:
    return {"policy": p.policy.label, "r": p.r, "width": p.width, "gamma": p.gamma, "advance": p.advance,
            "ms_per_token": p.ms_per_token, "breakdown": p.breakdown, "memory_bytes": p.memory_bytes,
            "reserved_bytes": p.reserved_bytes, "weights_bytes": p.weights_bytes,
            "growth_events": p.growth_events, "model": p.model, "profile": p.profile}


def _rec(rec) -> dict:
    return {"prediction": _pred(rec.prediction),
            "sweeps": {k: {"seconds": _digest(s.seconds), "resident": _digest(s.resident_bytes),
                           "reserved": _digest(s.reserved_bytes),
                           "feasible": int(np.count_nonzero(s.feasible))} for k, s in rec.sweeps.items()},
            "argmin_r": rec.argmin_r, "chosen_r": rec.chosen_r, "closed_form_r": rec.closed_form_r,
            "baselines": {k: _pred(b) for k, b in rec.baselines.items()},
            "no_sd": None if rec.no_sd is None else _pred(rec.no_sd), "notes": rec.notes}


def _or_error(run) -> dict:
    """The output, or the one-line error a bad case gets (bounds are part of the behaviour)."""
    from bmc_model import BMCError

    try:
        return run()
    except BMCError as err:
        return {"error": str(err)}


def predict_cases() -> list[dict]:
    out = []
    for model in PRESETS:
        for seq, prompt in ((2048, None), (700, 123), (16384, 8000)):
            for batch in (1, 4):
                for sd in SD:
                    if sd.get("draft") and model not in ("qwen2.5-coder-1.5b",):
                        continue
                    for policy in POLICIES:
                        out.append({"model": model, "seq": seq, "prompt": prompt, "batch": batch,
                                    "policy": policy, **sd})
    out += [{"model": "llama-7b", "seq": 2048, "r": 40, "width": w} for w in ("padded", "exact")]
    out += [{"model": "smollm2-135m", "seq": 4096, "policy": "bmc:64", "runtime": "hf"},
            {"model": "llama-7b", "seq": 2048, "policy": "static", "dtype": "bfloat16", "layers": 2}]
    return out


def recommend_cases() -> list[dict]:
    out = [{"model": m, "seq": s} for m in PRESETS for s in (2048, 9000)]
    out += [{"model": "llama-7b", "seq": 2048, "batch": 8},
            {"model": "llama-7b", "seq": 2048, "max_mem": 2 * 2**30},
            {"model": "llama-7b", "seq": 4096, "prompt": 100, "tolerance": 0.02},
            {"model": "smollm2-135m", "seq": 1024, "alpha": 0.8, "gamma": "auto"},
            {"model": "llama-7b", "seq": 16384, "alpha": 0.76, "gamma": 7, "layers": 2},
            {"model": "qwen2.5-coder-1.5b", "seq": 2048, "alpha": 0.8, "gamma": "auto",
             "draft": "qwen2.5-coder-0.5b"},
            {"model": "smollm2-135m", "seq": 4096, "runtime": "hf"}]
    return out


CLI_CASES = (["recommend", "--model", "llama-7b", "--seq", "2048", "--json"],
             ["recommend", "--model", "smollm2-135m", "--seq", "1024", "--alpha", "0.8", "--gamma", "auto", "--json"],
             ["models"])


def compute() -> dict[str, object]:
    from typer.testing import CliRunner

    from bmc_model import predict, recommend
    from bmc_model.cli import app

    preds = [_or_error(lambda c=c: _pred(predict(**c))) for c in predict_cases()]
    recs = [_or_error(lambda c=c: _rec(recommend(**c))) for c in recommend_cases()]
    runner = CliRunner()
    cli = [_host_free(runner.invoke(app, args, env={"COLUMNS": "200", "XDG_CACHE_HOME": "/nonexistent"}).output,
                      "--json" in args) for args in CLI_CASES]
    return {"predict": preds, "recommend": recs, "cli": cli}


def _host_free(output: str, is_json: bool) -> object:
    """The output without what depends on the host it runs on (the profile's host warning)."""
    text = "\n".join(line for line in output.splitlines() if not line.startswith("warning:"))
    if not is_json:
        return text
    out = json.loads(text)
    out["profile"].pop("warning", None)
    return out


def write() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for name, value in compute().items():
        (GOLDEN / f"{name}.json").write_text(json.dumps(value, indent=0, sort_keys=True) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent.parent))
    write()
