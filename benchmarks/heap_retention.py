"""Peak resident KV bytes of growth policies replayed on bare tensors, each in a fresh process: what glibc's
heap keeps of freed buffers (docs/model.md, "What the model leaves out").

    python benchmarks/heap_retention.py        # about a minute; writes benchmarks/results/heap_retention.json

Per case: L layers of [1, H, rows, D] fp32 K and V, P prompt rows written, then N - P tokens appended by
torch.cat, grown by r rows (torch.empty + copy), written into a reserve (torch.empty of N rows) or into a
zero-filled static buffer. `pre` bytes are allocated and freed first, as a prefill's activations are: a
freed mapping of up to 32 MiB raises glibc's mmap threshold, after which smaller buffers come from the heap.
The peak is the resident high-water mark (VmHWM, reset after malloc_trim) over the baseline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CASES = [  # (kind, layers, kv_heads, head_dim, prompt, seq, pre bytes, r)
    *[(k, 30, 3, 64, 2048, 4096, pre, 64) for pre in (0, 26_000_000) for k in ("cat", "fixed", "reserve", "static")],
    *[(k, 2, 32, 128, 1920, 2048, pre, 64) for pre in (0, 33_000_000) for k in ("cat", "fixed", "reserve", "static")],
]

CHILD = r'''
import json, sys, torch
from bmc_model.core.host import release_heap
from bmc_model.validate.rss import peak_rss_bytes, reset_peak_rss, rss_bytes
torch.set_num_threads(2)
kind, L, H, D, P, N, pre, r = sys.argv[1], *map(int, sys.argv[2:])
if pre:
    for _ in range(3):
        x = torch.ones(pre // 4)
        del x
release_heap()
base = rss_bytes()
reset_peak_rss()
new = torch.ones(1, H, 1, D)
if kind == "cat":
    bufs = [torch.ones(1, H, P, D) for _ in range(2 * L)]
else:
    make = {"static": torch.zeros, "reserve": torch.empty}.get(kind, torch.empty)
    bufs = [make(1, H, N if kind in ("static", "reserve") else P + r, D) for _ in range(2 * L)]
    for b in bufs:
        b[:, :, :P] = 1.0
n = P
for _ in range(N - P):
    for t in range(2 * L):
        if kind == "cat":
            bufs[t] = torch.cat([bufs[t], new], dim=2)
            continue
        if n + 1 > bufs[t].shape[2]:
            grown = torch.empty(1, H, n + r, D)
            grown[:, :, :n] = bufs[t][:, :, :n]
            bufs[t] = grown
        bufs[t][:, :, n:n + 1] = new
    n += 1
print(json.dumps({"peak_bytes": peak_rss_bytes() - base, "end_bytes": rss_bytes() - base}))
'''


def main() -> int:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    rows = []
    for kind, L, H, D, P, N, pre, r in CASES:
        out = subprocess.run([sys.executable, "-c", CHILD, kind, *map(str, (L, H, D, P, N, pre, r))],
                             capture_output=True, text=True, check=True, env=env)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        kv = 2 * L * H * N * D * 4
        rows.append({"kind": kind, "layers": L, "kv_heads": H, "head_dim": D, "prompt": P, "seq": N,
                     "pre_bytes": pre, "r": r if kind == "fixed" else None, "kv_bytes": kv, **got,
                     "peak_over_kv": got["peak_bytes"] / kv})
        print(f"{kind:8s} L={L:2d} {H}x{D} P={P} N={N} pre={pre / 1e6:5.1f} MB  KV {kv / 2**20:7.1f} MiB  "
              f"peak {got['peak_bytes'] / 2**20:7.1f} MiB  ({rows[-1]['peak_over_kv']:.2f}x)")
    out_path = Path(__file__).parent / "results" / "heap_retention.json"
    out_path.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
