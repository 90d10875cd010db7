"""How fast the model answers: predict() per call, a full r sweep at 32768, `bmc-tune recommend` wall time.

Targets (issue 2): predict() <= 50 us median; sweep over all r at seq 32768 <= 5 ms;
`bmc-tune recommend` under 1 s including interpreter start-up.
Usage: python benchmarks/model_speed.py [--out benchmarks/results/model_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bmc_model import predict
from bmc_model.core.host import fingerprint
from bmc_model.core.predict import get_profile
from bmc_model.core.specs import get_spec
from bmc_model.core.sweep import sweep_r
from bmc_model.core.workload import Geometry, Workload


def per_call(fn, repeats: int = 7, number: int = 200) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t) / number)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/model_speed.json")
    args = ap.parse_args()
    rows = []
    cases = {
        "predict fixed r=128 padded": lambda: predict("llama-7b", 2048, r=128),
        "predict dynamic": lambda: predict("llama-7b", 2048, policy="dynamic"),
        "predict geometric 16384": lambda: predict("llama-7b", 16384, policy="geometric"),
        "predict SD gamma=4": lambda: predict("llama-7b", 2048, r=128, gamma=4, alpha=0.8),
    }
    for name, fn in cases.items():
        rows.append((name, per_call(fn) * 1e6, "us", 50.0))
    prof, geo, w = get_profile(None), Geometry.of(get_spec("llama-7b"), 1, "float32"), Workload(16384, 32768)
    for width in ("padded", "exact", "pad"):
        rows.append((f"sweep all r at seq 32768 ({width})",
                     per_call(lambda width=width: sweep_r(width, w, geo, prof), repeats=5, number=10) * 1e3, "ms", 5.0))
    exe = shutil.which("bmc-tune") or str(Path(sys.executable).with_name("bmc-tune"))
    walls = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([exe, "recommend", "--model", "llama-7b", "--seq", "2048"], check=True, capture_output=True)
        walls.append(time.perf_counter() - t)
    rows.append(("bmc-tune recommend wall (with start-up)", statistics.median(walls), "s", 1.0))
    print(f"host: {fingerprint()['cpu']}, {os.cpu_count()} cores")
    print(f"{'case':45s} {'median':>10s} {'target':>10s}  ok")
    for name, v, unit, target in rows:
        print(f"{name:45s} {v:9.2f}{unit:>2s} {target:8.1f}{unit:>2s}  {'yes' if v <= target else 'NO'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"host": fingerprint(), "rows": [
        {"case": n, "median": v, "unit": u, "target": t, "ok": v <= t} for n, v, u, t in rows]}, indent=1))


if __name__ == "__main__":
    main()
