"""What a calibration measures: geometries, size grids, time budgets, capped by free RAM.

Pure Python (no torch): the CLI validates and describes a plan before torch is imported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bmc_model.core.errors import BMCError
from bmc_model.core.specs import DTYPE_BYTES, ModelSpec, get_spec

DEVICES = ("cpu", "cuda")
# Without --model: a small set of common head geometries (MHA 32x128, GQA 6:1 x128, GQA 3:1 x64).
DEFAULT_MODELS = ("llama-7b", "qwen2.5-coder-1.5b", "smollm2-135m")
QUICK_MODELS = ("llama-7b", "qwen2.5-coder-1.5b")
MiB = 2**20
MIN_FREE_RAM = 256 * MiB

# Seconds of timed samples per benchmark in a full run. cat's profile term is a mean over calls whose page faults
# are now and then slow: it needs a dozen calls a size.
FULL_BUDGET = {"sd_iter": 1.5, "copy": 11.0, "cat": 12.0, "alloc": 13.0, "write": 3.0, "attn_exact": 11.0,
               "attn_masked": 11.0, "attn_gqa": 6.0, "attn_q": 7.5, "weights": 13.0, "weights_rows": 10.0,
               "head_rows": 5.0, "overhead": 7.5}
# --quick: coarser size grids (below) at about the full run's seconds per size, over a fifth of its samples;
# alloc's half of a full run's cases (no raw-only "call" cases), copy's likewise (no contiguous copy)
QUICK_BUDGET = {"sd_iter": 0.3, "copy": 1.4, "cat": 1.8, "alloc": 0.8, "write": 0.5, "attn_exact": 1.2,
                "attn_masked": 1.2, "attn_gqa": 0.6, "attn_q": 1.0, "weights": 1.6, "weights_rows": 1.4,
                "head_rows": 0.8, "overhead": 1.2}


def budgets(quick: bool) -> dict[str, float]:
    return dict(QUICK_BUDGET if quick else FULL_BUDGET)
# m token rows for the weights_rows / head_rows curves: every verify pass of gamma 0..16 (q = gamma + 1),
# since the m-row cost is not smooth in m (BLAS picks its kernel by shape: docs/results.md#one-pass), then 32
# for batches. --quick keeps the powers of two.
ROW_COUNTS = (*range(1, 18), 32)


@dataclass(frozen=True)
class Plan:
    quick: bool
    device: str
    dtype: str
    threads: int
    specs: tuple[ModelSpec, ...]  # geometries for attention and weights; specs[0] also for KV copies
    rounds: int
    budgets: dict[str, float]
    alloc_sizes: tuple[int, ...]  # bytes
    copy_rows: tuple[int, ...]  # rows of specs[0]
    cat_rows: tuple[int, ...]
    write_shapes: tuple[tuple[int, int], ...]  # (batch, q rows)
    attn_widths: tuple[int, ...]
    q_rows: tuple[int, ...]
    q_widths: tuple[int, ...]
    weight_sizes: tuple[int, ...]  # bytes of one layer's matrices
    stream_bytes: int  # a timed call streams at least this much distinct data (twice the LLC): cold
    copy_contiguous: bool  # also time the contiguous copy (a raw-only cross-check; full runs)
    alloc_call: bool  # also time torch.empty without its touch (a raw-only cross-check; full runs)
    row_counts: tuple[int, ...]  # m rows for weights_row_slope
    overhead_layers: tuple[int, ...]
    overhead_tokens: int
    layer_q_rows: tuple[int, ...] = (1, 4, 8, 16)  # q of the in-place layer forwards (bench_layers.py)
    layer_steps: int = 5  # forwards per (geometry, q) and round
    layer_rounds: int = 4
    sd_gamma: int = 4
    notes: tuple[str, ...] = field(default=())

    @property
    def elem(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def primary(self) -> ModelSpec:
        return self.specs[0]

    def describe(self) -> dict:
        return {"quick": self.quick, "device": self.device, "dtype": self.dtype, "threads": self.threads,
                "models": [s.name for s in self.specs], "rounds": self.rounds, "budgets_s": self.budgets,
                "alloc_max_bytes": max(self.alloc_sizes), "copy_max_rows": max(self.copy_rows),
                "weights_max_bytes": max(self.weight_sizes), "stream_bytes": self.stream_bytes,
                "attn_max_rows": max(self.attn_widths), "notes": list(self.notes)}


def check_options(device: str, threads: int | None, dtype: str, model: str | None) -> list[ModelSpec]:
    """Validate what needs no torch; returns the geometries. Raises BMCError (one line)."""
    if device not in DEVICES:
        raise BMCError(f"unknown device {device!r} (use {' or '.join(DEVICES)})")
    if threads is not None and threads < 1:
        raise BMCError(f"--threads must be at least 1, got {threads}")
    if dtype not in DTYPE_BYTES:
        raise BMCError(f"unknown dtype {dtype!r} (use {', '.join(DTYPE_BYTES)})")
    return [get_spec(model)] if model else []


def log_grid(lo: float, hi: float, per_octave: float) -> list[float]:
    if hi <= lo:
        return [lo]
    n = max(2, int(round(math.log2(hi / lo) * per_octave)) + 1)
    return [float(v) for v in np.geomspace(lo, hi, n)]


def _int_grid(lo: float, hi: float, per_octave: float, multiple: int = 1) -> tuple[int, ...]:
    vals = sorted({max(multiple, int(round(v / multiple)) * multiple) for v in log_grid(lo, hi, per_octave)})
    return tuple(vals)


def _cap(name: str, want: int, limit: int, notes: list[str], avail: int) -> int:
    if want <= limit:
        return want
    notes.append(f"{name} sizes capped at {limit / MiB:.0f} MiB (asked {want / MiB:.0f} MiB): "
                 f"only {avail / MiB:.0f} MiB of RAM is free")
    return limit


STREAM_MIN, STREAM_MAX = 64 * MiB, 256 * MiB


def stream_bytes(llc_bytes: int) -> int:
    """Bytes a cold benchmark cycles through: twice the last-level cache, within 64..256 MiB. The upper bound
    because a VM's reported LLC may be a whole socket's, shared with other tenants: on a host reporting 300 MiB
    copies ran as slowly streaming 128 MiB as 600 (docs/results.md#cold-as-in-decoding), and 600 MiB a call
    doubled calibration's time."""
    return min(max(2 * llc_bytes, STREAM_MIN), STREAM_MAX)


def layers_for(spec: ModelSpec, elem: int, stream_bytes: int) -> int:
    """Layers whose weights stream at least stream_bytes (stream_bytes(): past the last-level cache, a real
    decode's cold start)."""
    return max(1, math.ceil(stream_bytes / max(1, spec.layer_params() * elem)))


def make_plan(*, quick: bool, device: str, dtype: str, threads: int, specs: list[ModelSpec],
              available_ram: int, llc_bytes: int) -> Plan:
    if available_ram < MIN_FREE_RAM:
        raise BMCError(f"too little free RAM to calibrate: {available_ram / MiB:.0f} MiB available, "
                       f"need at least {MIN_FREE_RAM / MiB:.0f} MiB")
    if not specs:
        specs = [get_spec(m) for m in (QUICK_MODELS if quick else DEFAULT_MODELS)]
    e = DTYPE_BYTES[dtype]
    notes: list[str] = []
    # Largest sizes: the issue asks 4 KB .. 1 GB for the allocation; buffers must also fit in RAM
    # next to the rest of the process, so each benchmark takes at most a fraction of what is free.
    alloc_max = _cap("allocation", (256 if quick else 1024) * MiB, available_ram // 4, notes, available_ram)
    # copy and cat keep every size's buffers for the whole benchmark (about 4x the largest)
    copy_max = _cap("copy", (128 if quick else 512) * MiB, available_ram // 16, notes, available_ram)
    wmax = _cap("weight", (512 if quick else 1536) * MiB, available_ram // 4, notes, available_ram)
    if device == "cpu" and dtype != "float32" and quick:
        wmax = min(wmax, 256 * MiB)  # CPUs without native half-precision GEMV run it ~8x slower
    p = specs[0]
    row = p.kv_heads * p.head_dim * e  # one K row of the primary geometry, batch 1
    copy_rows = _int_grid(1, max(2, copy_max // row), 1 if quick else 3)
    attn_max = 4096 if quick else 8192
    attn_bytes = max(2 * s.kv_heads * s.head_dim * e * attn_max for s in specs)
    if attn_bytes > available_ram // 8:
        attn_max = max(256, attn_max * (available_ram // 8) // attn_bytes)
        notes.append(f"attention widths capped at {attn_max} rows by free RAM")
    # --quick: a point every other octave (attention and weight streaming are near-lines in bytes)
    widths = _int_grid(16, attn_max, 0.5 if quick else 3)
    # from a small model's layer (the intercept: four calls' overhead) to past 1 GB
    weight_sizes = _int_grid(256 * 1024, wmax, 0.5 if quick else 2, multiple=4096)
    # --quick: half the upper bound (copies streaming 128 MiB ran within 7% of 600 MiB's rate on a host reporting
    # 300 MiB), which halves the small sizes' calls
    stream = min(stream_bytes(llc_bytes), STREAM_MAX // 2) if quick else stream_bytes(llc_bytes)
    cat_top = min(copy_rows[-1], 8192 if quick else 16384)  # past glibc's 32 MiB mmap ceiling
    return Plan(
        quick=quick, device=device, dtype=dtype, threads=threads, specs=tuple(specs), rounds=3 if quick else 4,
        budgets=budgets(quick),
        alloc_sizes=_int_grid(4096, alloc_max, 2 if quick else 3, multiple=e),
        copy_rows=copy_rows,
        cat_rows=_int_grid(16, cat_top, 1),  # enough points to place the page-fault knee
        write_shapes=tuple((b, q) for b in ((1, 4) if quick else (1, 2, 4, 8)) for q in (1, 2, 4, 8, 16)),
        attn_widths=widths,
        q_rows=(1, 2, 4, 8),
        q_widths=(256, 1024, 2048) if quick else (256, 512, 1024, 2048, 4096),
        weight_sizes=weight_sizes,
        stream_bytes=int(stream),
        copy_contiguous=not quick,
        alloc_call=not quick,
        row_counts=(1, 2, 4, 8, 16) if quick else ROW_COUNTS,
        overhead_layers=(1, 2, 4) if quick else (1, 2, 4, 6, 8),
        overhead_tokens=16 if quick else 32,
        layer_q_rows=(1, 4, 16) if quick else (1, 4, 8, 16),
        layer_steps=3 if quick else 5,
        layer_rounds=1 if quick else 4,
        notes=tuple(notes),
    )
