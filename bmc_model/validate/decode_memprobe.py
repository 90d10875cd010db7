"""Peak resident KV memory of one plain-validate configuration (runtime decode_run), in a fresh process so
that no allocator state left by another configuration (freed-but-kept heap, arenas) can hide or inflate it.

    python -m bmc_model.validate.decode_memprobe '{"spec": {...}, "policy": {...}, "prompt": 1920, "seq": 2048}'

The process builds the decoder (random weights, the same spec and seed as the timed runs), warms up with a
short decode of the same policy, collects garbage and hands freed heap back to the kernel (malloc_trim),
then reads the resident size: the baseline. The measured run synthesizes the prompt's K/V rows (as validate
does), hands the heap back again (the synthesized rows were copied into the cache and freed: glibc may
keep them resident), resets VmHWM (/proc/self/clear_refs) and decodes P..N. `decode_peak_increase`, the
high-water mark over the decode steps minus the baseline, is the measured peak resident KV: everything the
cache holds from the prefill on is inside it. Nothing is subtracted: the one other thing a decode to N
allocates, the decoder's RoPE table for N positions, is built before the baseline; besides the cache the
steps then allocate only one row's activations (hidden and FFN vectors, the attention scores over W rows,
the logits [batch, vocab]), well under a MiB at validate's sizes against tens to hundreds of MiB of KV.
`peak_increase` also covers the prefill (its synthesized rows included). Prints one line, PREFIX + JSON.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

from bmc_model.validate.memprobe import main as _serve
from bmc_model.validate.memprobe import run_probe
from bmc_model.validate.rss import can_measure, peak_rss_bytes, reset_peak_rss, rss_bytes

MODULE = "bmc_model.validate.decode_memprobe"
WARM_PROMPT, WARM_TOKENS = 16, 4


def request(spec: Any, policy: Any, *, prompt: int, seq: int, batch: int = 1, seed: int = 0, threads: int = 2,
            max_len: int | None = None) -> dict:
    """The JSON probe() takes: spec a ModelSpec, policy a Policy; max_len the cache's (default seq)."""
    from dataclasses import asdict

    return {"spec": spec.to_dict(), "policy": asdict(policy), "prompt": int(prompt), "seq": int(seq),
            "batch": int(batch), "seed": int(seed), "threads": int(threads),
            "max_len": int(max_len if max_len is not None else seq)}


def probe(req: dict) -> dict:
    """Measure one configuration in this process (run_decode_probe: in a fresh one); {'error': ...} where the
    host cannot read or reset its resident high-water mark."""
    why = can_measure()
    if why is not None:
        return {"error": why}
    from bmc_model.core.host import release_heap
    from bmc_model.core.policy import Policy
    from bmc_model.core.specs import ModelSpec
    from bmc_model.runtime.decoder import Decoder
    from bmc_model.runtime.generate import DecodeRun, decode_run, gc_paused, set_threads

    set_threads(int(req.get("threads", 2)))
    spec = ModelSpec(**{**req["spec"], "aliases": tuple(req["spec"].get("aliases", ()))})
    pol = Policy(**req["policy"])
    prompt, seq, batch, seed = int(req["prompt"]), int(req["seq"]), int(req.get("batch", 1)), int(req.get("seed", 0))
    max_len = int(req.get("max_len") or seq)
    decoder = Decoder.random(spec, seed=seed)
    warm = min(WARM_PROMPT, prompt)
    decode_run(decoder, pol, prompt=warm, new_tokens=WARM_TOKENS, batch=batch, synth_prompt=True, seed=seed,
               max_len=warm + WARM_TOKENS)
    # The RoPE table grows (by doubling) at the first position past it: grown to max_len here, as the timed
    # runs' decoder has it, it stays out of the figure (at 32 x 128 heads and 2048 rows, 10 MiB with transients)
    decoder._rope(0, max_len)
    gc.collect()
    release_heap()  # freed heap from building and warm-up goes back: every configuration starts from one floor
    base = rss_bytes()
    reset_peak_rss()
    run = DecodeRun(decoder, pol, prompt=prompt, new_tokens=seq - prompt, batch=batch, synth_prompt=True, seed=seed,
                    warmup=0, max_len=max_len)
    prefill_hwm = peak_rss_bytes()
    release_heap()  # the synthesized rows, copied into the cache and freed, are not the cache's
    after_prefill = rss_bytes()
    reset_peak_rss()
    with gc_paused():
        while run.step():
            pass
    decode_hwm = peak_rss_bytes()
    stats = run.cache.stats
    return {"baseline_rss": base, "peak_increase": max(prefill_hwm, decode_hwm) - base,
            "decode_peak_increase": decode_hwm - base, "after_prefill_increase": after_prefill - base,
            "end_increase": rss_bytes() - base, "cache_peak_bytes": stats.peak_bytes,
            "cache_bytes_final": run.cache.nbytes(), "final_capacity": run.cache.capacity,
            "growth_events": stats.growth_events, "hwm_reset": True}


def run_decode_probe(req: dict, timeout: float = 600.0) -> dict:
    """probe(req) in a fresh Python process; {'error': ...} if it fails."""
    return run_probe(req, timeout=timeout, module=MODULE)


if __name__ == "__main__":
    raise SystemExit(_serve(sys.argv[1:], fn=probe, module=MODULE))
