"""Peak resident memory of one generate() run, in a fresh process so that no allocator state left by
another cache's run (freed-but-kept heap, arenas) can hide or inflate its growth.

    python -m bmc_model.validate.memprobe '{"workload": "kv", "kind": "bmc", "seq": 2048, ...}'

The process builds the model, warms up with a short run, hands freed heap back to the kernel
(malloc_trim: otherwise small cache tensors reuse what loading the model freed and do not show, while
large ones are fresh mappings and do), then measures from the resident size just before the measured
run (baseline): `peak_increase` is the high-water mark over the whole run (prefill included) minus the
baseline, `decode_peak_increase` the high-water mark from the first generated token on minus the same
baseline. At the first token the prefill's freed activations go back to the kernel too (malloc_trim again:
glibc keeps them in its heap, resident, and at StaticCache N=8192 on SmolLM2 they read 430-580 MB for
377 MB of KV) before VmHWM is reset through /proc/self/clear_refs, so the decode peak is the cache's own
plus the decode steps' small activations (nothing is subtracted). It prints one line, PREFIX + JSON.

run_probe() runs any probe module this way (decode_memprobe.py: the plain runtime's decode_run).
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

PREFIX = "BMC_MEMPROBE "


def probe(req: dict) -> dict:
    import torch

    from bmc_model.core.host import release_heap
    from bmc_model.core.policy import Policy
    from bmc_model.validate.hf_measure import run_generate
    from bmc_model.validate.rss import peak_rss_bytes, reset_peak_rss, rss_bytes
    from bmc_model.validate.workloads import build, kv_bytes

    torch.set_num_threads(int(req.get("threads", 2)))
    loaded = build(req["workload"], bool(req.get("quick")), int(req.get("seed", 0)), req.get("kv_ffn"))
    pol = Policy(**req["policy"]) if req.get("policy") else None
    kind, batch = req["kind"], int(req["batch"])
    warm_prompt = min(64, int(req["prompt"]))
    trim = bool(req.get("trim"))
    run_generate(loaded.model, kind, pol, warm_prompt + 4, warm_prompt, batch, 4, req.get("prefill", "synthetic"),
                 trim=trim)
    gc.collect()
    release_heap()  # freed heap from loading and warm-up goes back: every cache starts from the same floor
    base = rss_bytes()
    resettable = reset_peak_rss()
    marks: dict[str, int] = {}

    def at_first_token() -> None:
        marks["prefill_hwm"] = peak_rss_bytes()
        release_heap()  # the prefill's freed activations, kept in glibc's heap, are not the cache's
        marks["first_token_rss"] = rss_bytes()
        reset_peak_rss()

    _, cache, _ = run_generate(loaded.model, kind, pol, int(req["seq"]), int(req["prompt"]), batch,
                            int(req["new_tokens"]), req.get("prefill", "synthetic"), int(req.get("seed", 0)),
                            on_first_token=at_first_token, trim=trim)
    decode_hwm = peak_rss_bytes()
    prefill_hwm = marks.get("prefill_hwm", decode_hwm)
    return {"baseline_rss": base, "peak_increase": max(prefill_hwm, decode_hwm) - base,
            "decode_peak_increase": decode_hwm - base,
            "first_token_rss_increase": marks.get("first_token_rss", base) - base,
            "kv_bytes_final": kv_bytes(cache), "hwm_reset": resettable}


def run_probe(req: dict, timeout: float = 1800.0, module: str = "bmc_model.validate.memprobe") -> dict:
    """Run `module`'s probe(req) in a fresh Python process (python -m module JSON, which prints PREFIX + the
    JSON result); {'error': ...} if it fails."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        out = subprocess.run([sys.executable, "-m", module, json.dumps(req)],
                             capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"memory probe timed out after {timeout:.0f} s"}
    for line in reversed(out.stdout.splitlines()):
        if line.startswith(PREFIX):
            return json.loads(line[len(PREFIX):])
    tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"memory probe failed (exit {out.returncode}): {tail}"}


def median_probe(probes: list[dict]) -> dict:
    """One cache's memory probes as one: the median of each numeric field, and every probe under "probes";
    the first error, if any probe failed."""
    failed = [p for p in probes if "error" in p]
    if failed:
        return {**failed[0], "probes": probes}
    out: dict[str, Any] = {}
    for k, v in probes[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = statistics.median(p[k] for p in probes)
        else:
            out[k] = v
    return {**out, "probes": probes} if len(probes) > 1 else out


def main(argv: list[str] | None = None, fn: Callable[[dict], dict] = probe,
         module: str = "bmc_model.validate.memprobe") -> int:
    """python -m `module` JSON: print PREFIX + fn(JSON) as one line (run_probe reads it)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python -m {module} JSON", file=sys.stderr)
        return 2
    print(PREFIX + json.dumps(fn(json.loads(args[0]))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
