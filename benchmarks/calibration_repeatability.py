"""Repeatability of `bmc-tune calibrate --quick`: two runs in a row must agree on what matters.

Targets (issue 3): the recommended r for llama-7b at seq 2048 within 25% between the two runs
(max/min - 1 <= 0.25) and the predicted ms/token within 10%; each quick run within 30 s wall
(interpreter start-up included). Also reported: each term at a representative size, and the
cross regret (the other run's r judged by this run's profile), since near a flat optimum two
quite different r can be equally good.
Run it on a quiet machine: timings from a shared one measure the neighbours.
Usage: python benchmarks/calibration_repeatability.py [--runs 2] [--threads N] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bmc_model import predict, recommend
from bmc_model.core.host import fingerprint
from bmc_model.core.profile import read_profile

MiB = 2**20
PROBES = {  # term -> a size the llama-7b decode at 2048 actually uses (bytes)
    "alloc": 32 * MiB, "copy": 32 * MiB, "write": 16 * 1024, "attn_exact": 64 * MiB, "attn_masked": 64 * MiB,
    "weights": 808 * MiB,
}


def spread(values: list[float]) -> float:
    """max/min - 1: how far apart the runs are (0 = identical)."""
    lo, hi = min(values), max(values)
    return float("inf") if lo <= 0 else hi / lo - 1.0


def calibrate_once(path: Path, threads: int | None) -> float:
    cmd = [sys.executable, "-c", "from bmc_model.cli import main; main()", "calibrate", "--quick", "--json",
           "--out", str(path)]
    if threads:
        cmd += ["--threads", str(threads)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--model", default="llama-7b")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--out", default="benchmarks/results/calibration_repeatability.json")
    ap.add_argument("--keep", default=None, help="folder to keep the profiles in (default: a temporary one)")
    args = ap.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="bmc-repeat-"))
    folder.mkdir(parents=True, exist_ok=True)
    runs = []
    for i in range(args.runs):
        path = folder / f"quick-{i + 1}.json"
        wall = calibrate_once(path, args.threads)
        rec = recommend(model=args.model, seq=args.seq, profile=path)
        prof = read_profile(path)
        runs.append({"profile": str(path), "wall_s": wall, "r": rec.r, "width": rec.width,
                     "ms_per_token": rec.prediction.ms_per_token,
                     "noisy_fraction": prof.raw.get("meta", {}).get("noisy_fraction"),
                     "terms_at_probe_s": {k: float(prof.terms[k](x)) for k, x in PROBES.items()},
                     "scalars": dict(prof.scalars)})
    # cross regret: run j's recommended configuration predicted with run i's profile
    regret = []
    for i, a in enumerate(runs):
        for j, b in enumerate(runs):
            if i != j:
                rec_b = recommend(model=args.model, seq=args.seq, profile=b["profile"])
                other = predict(model=args.model, seq=args.seq, policy=rec_b.policy, profile=a["profile"])
                regret.append(other.ms_per_token / a["ms_per_token"] - 1.0)
    r_spread = spread([float(r["r"]) for r in runs])
    ms_spread = spread([r["ms_per_token"] for r in runs])
    checks = {
        "recommended r within 25%": (r_spread, 0.25, r_spread <= 0.25),
        "predicted ms/token within 10%": (ms_spread, 0.10, ms_spread <= 0.10),
        "quick run within 30 s": (max(r["wall_s"] for r in runs), 30.0, max(r["wall_s"] for r in runs) <= 30.0),
    }
    con = Console()
    t = Table(title=f"calibrate --quick x{args.runs}: {args.model}, seq {args.seq}")
    for col in ("run", "wall s", "r", "width", "ms/token", "noisy sizes"):
        t.add_column(col, justify="right")
    for i, r in enumerate(runs):
        noisy = r["noisy_fraction"]
        t.add_row(str(i + 1), f"{r['wall_s']:.1f}", str(r["r"]), r["width"], f"{r['ms_per_token']:.2f}",
                  "-" if noisy is None else f"{noisy:.0%}")
    con.print(t)
    tt = Table(title="Terms at a representative size (spread = max/min - 1)")
    for col in ("term", "size", *[f"run {i + 1}" for i in range(len(runs))], "spread"):
        tt.add_column(col, justify="right")
    for k, x in PROBES.items():
        vals = [r["terms_at_probe_s"][k] for r in runs]
        tt.add_row(k, f"{x / MiB:.3g} MiB", *[f"{v * 1e3:.4g} ms" for v in vals], f"{spread(vals):.1%}")
    for k in runs[0]["scalars"]:
        vals = [r["scalars"][k] for r in runs]
        tt.add_row(k, "-", *[f"{v:.4g}" for v in vals], f"{spread(vals):.1%}" if min(vals) > 0 else "-")
    con.print(tt)
    c = Table(title="Checks")
    for col in ("check", "value", "target", "ok"):
        c.add_column(col)
    for name, (v, target, ok) in checks.items():
        c.add_row(name, f"{v:.3g}", f"{target:g}", "yes" if ok else "NO")
    c.add_row("cross regret (other run's r, this profile)", f"{max(regret):.2%}" if regret else "-", "-", "-")
    con.print(c)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"host": fingerprint(args.threads), "model": args.model, "seq": args.seq, "runs": runs,
              "r_spread": r_spread, "ms_spread": ms_spread, "cross_regret": regret,
              "checks": {k: {"value": v, "target": tg, "ok": ok} for k, (v, tg, ok) in checks.items()}}
    out.write_text(json.dumps(result, indent=1))
    con.print(f"written to {out}")


if __name__ == "__main__":
    main()
