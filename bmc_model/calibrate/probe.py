"""The terms that drift on a shared host, timed in a few seconds: a model's matmuls at one and at m token
rows, torch.cat, first touch (alloc) and one layer's attention; and the factors that rescale a profile to
what was measured (probe_factors: measured over what the profile charges at those sizes).

Why: an m-row matmul (speculative verification) is compute-bound where a one-row GEMV is bandwidth-bound, and
on a shared host their ratio, torch.cat's and first touch's page faults and attention's cost all move within
minutes, so a profile calibrated earlier carries a level that may have passed (figures: docs/results.md,
"Probe"). Two users, one timing path (MatmulProbe.step):
  validate (plain.py, speculative.py) times its decoder's own weights beside its runs and predicts twice, with
      the stored profile and with probed_profile's; the gap is host drift, what remains the model's own error.
  calibrate --refresh (refresh.py) times a ModelSpec's geometry alone: one layer's matrices at the model's
      shapes and its LM head, cycled over distinct copies of at least stream_bytes so they are cold (as
      bench_weights.py times them), whatever the model's size; the one-row time is scaled to all its layers.

torch.cat is timed as calibration times it (bench_memory.cat_cases: fresh buffers, cold sources), first touch
likewise (bench_memory.alloc_cases' "touch": torch.empty and a write of every page), both reported as means, as
calibration's cat and alloc terms are: slow page faults come in bursts and every decode step pays them.
Attention is timed in the decoder's form (bench_attention.attn_case: folded GQA rows, the additive mask, cold
K/V), at the runs' own width, which calibration's curve may only reach by extrapolating.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from bmc_model.calibrate.bench_attention import VIEW_SLACK, attn_case, kv_bytes
from bmc_model.calibrate.bench_memory import alloc_cases, cat_cases
from bmc_model.calibrate.pool import Pool
from bmc_model.core.breakdown import attention_s, matmul_s
from bmc_model.core.curves import term_at
from bmc_model.core.errors import BMCError
from bmc_model.core.profile import Profile
from bmc_model.core.refresh import Ratios, rescaled
from bmc_model.core.specs import ModelSpec
from bmc_model.core.workload import Geometry
from bmc_model.runtime.decoder import Decoder

PARTS = ("layers", "head")
HF_PART = "hf_layers"  # one layer's matrices as transformers holds them (unfused): timed where the profile prices it
HF_RATIO = "hf_matmul_ratio"
STEPS = 12  # steps of a probe beside validate's runs, per repeat
CAT_CALLS = 4  # at most this many torch.cat calls a step (a decode step makes 2 * layers)
ALLOC_SAMPLE_S = 5e-4  # first touches back to back for at least this long a sample, as calibration's runner times
# them (runner.Settings.target_sample_s, after a warm-up call): the allocator in the state calibration saw
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Streamed:
    """The matrices a probe streams for one part, and how many of the model's instances one pass stands for."""

    groups: list[list[torch.Tensor]]  # [out, in] matrices, one list per layer (or head) streamed in turn
    scale: float  # instances of the model's part over groups streamed: 1 for a decoder's own weights


def decoder_weights(dec: Decoder) -> dict[str, Streamed]:
    """The weights the runs stream, in their order: cold as in decoding."""
    return {"layers": Streamed([[lw.wqkv, lw.wo, lw.w_in, lw.w_down] for lw in dec.w.layers], 1.0),
            "head": Streamed([[dec.w.lm_head]], 1.0)}


def spec_weights(stack: ExitStack, spec: ModelSpec, dtype: torch.dtype, stream_bytes: int,
                 hf: bool = False) -> dict[str, Streamed]:
    """One layer's matrices and the LM head at spec's shapes, each in copies of >= stream_bytes (cold): a
    model too large to allocate whole is timed at its real shapes, its layers' time scaled from one. hf: also
    one layer as transformers holds it (HF_PART: seven unfused matrices, whose m-row cost is not the fused
    four's)."""
    out = {}
    elem = torch.empty((), dtype=dtype).element_size()
    parts = (("layers", spec.layer_matrices(), spec.layers), ("head", [(spec.vocab, spec.hidden)], 1))
    if hf:
        parts += ((HF_PART, spec.hf_layer_matrices(), spec.layers),)
    for part, shapes, count in parts:
        numel = sum(o * i for o, i in shapes)
        copies = max(1, -(-stream_bytes // (numel * elem)))
        pool = stack.enter_context(Pool(copies * numel * elem, dtype, "cpu"))
        out[part] = Streamed(pool.views(list(shapes), copies), count / copies)
    return out


def batched(spec: ModelSpec, batch: int) -> ModelSpec:
    """spec with batch sequences' K/V as one: [batch, kv_heads, n, head_dim] timed as [1, batch * kv_heads, n,
    head_dim], the same bytes in the same order. torch.cat along the rows copies each (sequence, head) block
    alike, and SDPA runs batch and heads as one loop; the query groups per KV head stay as they are."""
    if batch == 1:
        return spec
    return dataclasses.replace(spec, name=f"{spec.name} x{batch}", heads=spec.heads * batch,
                               kv_heads=spec.kv_heads * batch)


GQA = "hf_attn_gqa"  # transformers' exact-width GQA attention: timed where the profile has it and the model groups

WINDOWS = 5  # a first-touch mean is the median of this many consecutive windows' means


def burst_robust_mean(samples: list[float]) -> float:
    """The median of the means of WINDOWS consecutive windows (the plain mean with fewer samples). Slow first
    touches come in bursts (docs/results.md#slow-first-touches): a refresh of a few seconds that catches one
    put torch.cat at 1.6x its cost in the runs that followed; a window mean keeps the usual share of slow
    touches, the median drops the window a burst fell in."""
    if len(samples) < 2 * WINDOWS:
        return statistics.fmean(samples)
    k = len(samples) / WINDOWS
    return statistics.median(statistics.fmean(samples[round(i * k):round((i + 1) * k)]) for i in range(WINDOWS))


@dataclass
class MatmulProbe:
    model: Decoder | ModelSpec  # a decoder: its own weights; a spec: one layer and the head at its shapes
    rows: tuple[int, ...]  # token rows per matmul, 1 first (the ratios' denominator)
    steps: int  # probe steps, each timing every row count once
    cat_rows: int = 0  # also time torch.cat of a [1, kv_heads, cat_rows, head_dim] tensor with a row (0: no)
    stream_bytes: int = 0  # cat sources (and a spec's matrices) cycle through this many bytes: cold, as in decoding
    cat_calls: int = 1  # cat calls per step: a decode step's 2 * layers gives its slow page faults as many chances
    attn_width: int = 0  # also time one layer's attention over this many cached rows (0: no)
    attn_forms: tuple[tuple[int, bool], ...] = ()  # (rows, masked) to time; () with attn_width: one row exact and
    # the largest row count masked (one row masked when that is 1)
    alloc_sizes: tuple[int, ...] = ()  # also time first touch (torch.empty + a write of every page) of these bytes
    dtype: str = "float32"  # a spec's (a decoder has its own)
    batch: int = 1  # sequences whose K/V the cat, attention and alloc sizes hold (batched())
    attn_grouped: bool = False  # also time transformers' exact-width GQA path at attn_width (hf_attn_gqa)
    hf_matrices: bool = False  # a spec's: also time one layer's matrices as transformers holds them (HF_PART)
    done: int = 0
    samples: dict[tuple[str, int], list[float]] = field(default_factory=dict)  # (part, m) -> seconds

    def __post_init__(self) -> None:
        if not self.rows or self.rows[0] != 1 or any(m < 1 for m in self.rows):
            raise BMCError(f"probe rows must start at 1 and be positive, got {self.rows}")
        if self.steps < 1:
            raise BMCError(f"probe steps must be positive, got {self.steps}")
        self._stack = ExitStack()
        if isinstance(self.model, Decoder):
            s, dt, device = self.model.spec, self.model.dtype, self.model.device.type
            self._weights = decoder_weights(self.model)
        else:
            if self.dtype not in TORCH_DTYPES:
                raise BMCError(f"probe dtype must be one of {', '.join(TORCH_DTYPES)}, got {self.dtype!r}")
            s, dt, device = self.model, TORCH_DTYPES[self.dtype], "cpu"
            self._weights = spec_weights(self._stack, s, dt, self.stream_bytes, self.hf_matrices)
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise BMCError(f"probe batch must be a positive integer, got {self.batch!r}")
        self.spec = s
        kv = batched(s, self.batch)
        elem = torch.empty((), dtype=dt).element_size()
        self.rho = float(kv.kv_heads * kv.head_dim * elem)  # K bytes a row of the batch
        # one activation per inner width: [m, hidden], [m, heads * head_dim], [m, ffn]
        widths = {w.shape[1] for st in self._weights.values() for g in st.groups for w in g}
        self._x = {m: {w: torch.full((m, w), 0.5, dtype=dt, device=device) for w in widths} for m in self.rows}
        self.samples = {(p, m): [] for p in self.parts for m in self.rows}
        self._cat_op = None
        if self.cat_rows:
            self._cat_case = cat_cases(kv, (self.cat_rows,), dt, device, self.stream_bytes)[0]
            self._cat_op = self._stack.enter_context(self._cat_case.make())
            self.samples[("cat", self.cat_rows)] = []
        # first touch: a case's x is its bytes rounded to whole elements
        self._alloc = [(int(c.x), c.make) for c in alloc_cases(self.alloc_sizes, dt, device) if c.key[0] == "touch"]
        self._alloc_ops = [(x, self._stack.enter_context(make())) for x, make in self._alloc]
        for x, _ in self._alloc_ops:
            self.samples[("alloc", x)] = []
        self._attn_ops: dict[tuple[str, int], tuple[Callable[[], object], int]] = {}  # -> (op, attentions per call)
        if self.attn_width:
            self.attn_forms = self.attn_forms or ((1, False), (max(self.rows), True))
            need = max(self.stream_bytes, int(kv_bytes(kv, self.attn_width + VIEW_SLACK, elem)))
            pool = self._stack.enter_context(Pool(need, dt, device))
            for m, masked in self.attn_forms:
                key = ("attn_masked" if masked else "attn_exact", m)
                case = attn_case(pool, key, kv, self.attn_width, m, masked, self.stream_bytes)
                self._attn_ops[key] = (self._stack.enter_context(case.make()), case.per_call)
                self.samples[key] = []
            if self.attn_grouped and s.heads > s.kv_heads:  # SDPA with enable_gqa, as calibration times it
                key = (GQA, 1)
                case = attn_case(pool, key, kv, self.attn_width, 1, False, self.stream_bytes, grouped=True)
                self._attn_ops[key] = (self._stack.enter_context(case.make()), case.per_call)
                self.samples[key] = []

    @classmethod
    def beside_runs(cls, dec: Decoder, rows: tuple[int, ...], length: int, stream_bytes: int,
                    attn_forms: tuple[tuple[int, bool], ...] = (), batch: int = 1) -> MatmulProbe:
        """The probe validate and validate --sd run beside their decodes: matmuls at `rows`, torch.cat and
        attention at `length` rows (the runs' middle) of `batch` sequences, STEPS steps a repeat."""
        return cls(dec, rows, steps=STEPS, cat_rows=length, stream_bytes=stream_bytes,
                   cat_calls=min(2 * dec.spec.layers, CAT_CALLS), attn_width=length, attn_forms=attn_forms,
                   batch=batch)

    def close(self) -> None:
        """Free the cat, attention and (a spec's) weight buffers."""
        self._stack.close()
        self._cat_op = None
        self._attn_ops = {}
        self._alloc_ops = []
        self._weights = {p: Streamed([], 0.0) for p in self._weights}

    @property
    def cat_x(self) -> float:
        """Bytes per cat call, as the profile's cat term is a function of (the case's mean size)."""
        return self._cat_case.x if self.cat_rows else 0.0

    def restart(self) -> None:
        """Another `steps` steps (the next repeat); the samples accumulate."""
        self.done = 0

    def discard(self) -> None:
        """Drop the samples so far (a warm-up step's)."""
        self.samples = {k: [] for k in self.samples}

    @property
    def parts(self) -> tuple[str, ...]:
        """The weight parts timed: PARTS, and HF_PART where asked."""
        return tuple(self._weights)

    @property
    def progress(self) -> float:
        return self.done / self.steps

    @torch.inference_mode()
    def step(self) -> bool:
        """Time the layers' matmuls and the head's once at every row count (the order rotates), then each
        attention form, torch.cat and first touch."""
        k = self.done % len(self.rows)
        for m in self.rows[k:] + self.rows[:k]:
            x = self._x[m]
            for part, st in self._weights.items():
                t0 = time.perf_counter()
                for group in st.groups:
                    for w in group:
                        F.linear(x[w.shape[1]], w)  # [m, out]
                self.samples[(part, m)].append(st.scale * (time.perf_counter() - t0))
        for key, (op, per_call) in self._attn_ops.items():
            t0 = time.perf_counter()
            op()
            self.samples[key].append((time.perf_counter() - t0) / per_call)
        for _ in range(self.cat_calls if self._cat_op is not None else 0):
            t0 = time.perf_counter()
            self._cat_op()  # type: ignore[misc]
            self.samples[("cat", self.cat_rows)].append((time.perf_counter() - t0) / self._cat_case.per_call)
        for x, op in self._alloc_ops:
            op()  # warm-up
            calls, t0 = 0, time.perf_counter()
            while calls == 0 or time.perf_counter() - t0 < ALLOC_SAMPLE_S:
                op()
                calls += 1
            self.samples[("alloc", x)].append((time.perf_counter() - t0) / calls)
        self.done += 1
        return self.done < self.steps

    def medians_ms(self) -> dict[str, dict[int, float]]:
        return {p: {m: 1e3 * statistics.median(self.samples[(p, m)]) for m in self.rows} for p in self.parts}

    def cat_ms(self) -> float | None:
        """Mean ms of one torch.cat at cat_rows (None without cat_rows or samples): a mean, as calibration's
        cat term is (its slow first touches are part of what every decode step pays), robust to one burst."""
        got = self.samples.get(("cat", self.cat_rows))
        return 1e3 * burst_robust_mean(got) if got else None

    def alloc_ms(self) -> dict[int, float]:
        """Mean ms of one first touch at each size timed: {bytes: ms} (a mean, as calibration's alloc term)."""
        return {x: 1e3 * burst_robust_mean(v) for (p, x), v in self.samples.items() if p == "alloc" and v}

    def attn_ms(self) -> dict[str, dict[int, float]]:
        """Median ms of one layer's attention over attn_width rows: {"attn_exact" | "attn_masked" | GQA: {rows: ms}}."""
        out: dict[str, dict[int, float]] = {}
        for (p, m), v in self.samples.items():
            if (p.startswith("attn_") or p == GQA) and v:
                out.setdefault(p, {})[m] = 1e3 * statistics.median(v)
        return out

    def ratios(self) -> dict[str, dict[int, float]]:
        """m rows over one row, per part, from the medians."""
        med = self.medians_ms()
        return {p: {m: med[p][m] / med[p][1] for m in self.rows} for p in med}


def with_row_ratios(prof: Profile, ratios: Ratios) -> Profile:
    """prof with its weights_rows@B and head_rows@B curves replaced by one curve each: the probe's points.
    One curve per family is what every matrix size then reads, the probe having timed this model's own."""
    out = rescaled(prof, {}, ratios)
    return dataclasses.replace(out, source=f"{prof.source} [m-row ratios probed alongside the runs]")


def weights_drift(prof: Profile, geo: Geometry, one_row_ms: dict[str, float]) -> float:
    """The probe's one-row time of all layers and the head over what the profile charges for them:
    how much faster (< 1) or slower (> 1) the host streams weights now than at calibration."""
    layer = matmul_s(prof, geo.layer_weight_bytes, geo.layer_out_rows)
    charged_ms = 1e3 * (geo.layers * layer + matmul_s(prof, geo.head_weight_bytes, geo.head_out_rows))
    if charged_ms <= 0:
        raise BMCError("the profile charges nothing for this model's weights: cannot scale it")
    return (one_row_ms["layers"] + one_row_ms["head"]) / charged_ms


def hf_ratio_factor(prof: Profile, geo: Geometry, hf_layers_ms: float, weights_factor: float) -> float:
    """The factor on hf_matmul_ratio that makes the refreshed hf view charge transformers' one-row layers what
    the probe measured: hf_layers_ms over ratio x the fused layers' charge once weights_factor has scaled it.
    The calibrated ratio is over the fitted charge, not over a fused time measured beside it, so it carries
    the fit's error at this size; the weights factor corrects that error too, and without this factor the
    refreshed view would correct it twice (docs/model.md, "Refreshing transformers' matmuls")."""
    fused_ms = 1e3 * geo.layers * matmul_s(prof, geo.layer_weight_bytes, geo.layer_out_rows)
    ratio = float(term_at(prof.terms[HF_RATIO], geo.layer_weight_bytes))
    return hf_layers_ms / (weights_factor * ratio * fused_ms)


def probe_factors(prof: Profile, probe: MatmulProbe, geo: Geometry) -> dict[str, float]:
    """How far each timed term has moved: measured over what prof charges at the sizes timed.
    weights: weights_drift at one row (one factor for every size: a draft model's weights, which the probe does
    not time, move with the host as the target's do). cat (when prof has the term): at cat_x. alloc: the sum of
    the first touches timed over the term's sum at those sizes. attn_exact, attn_masked: at attn_width, at the
    most rows timed (masked: the verify pass with its folded GQA rows, at a width calibration may not reach), of
    the probe's batch. hf_matmul_ratio (timed HF_PART, a profile with the term): hf_ratio_factor. geo: the
    model's (its weights; its batch does not matter here)."""
    med = probe.medians_ms()
    f = {"weights": weights_drift(prof, geo, {p: med[p][1] for p in PARTS})}
    if HF_PART in med and HF_RATIO in prof.terms:
        f[HF_RATIO] = hf_ratio_factor(prof, geo, med[HF_PART][1], f["weights"])
    cat = probe.cat_ms()
    if cat is not None and "cat" in prof.terms:
        f["cat"] = cat / (1e3 * term_at(prof.cat, probe.cat_x))
    alloc = probe.alloc_ms()
    if alloc:
        f["alloc"] = sum(alloc.values()) / (1e3 * sum(term_at(prof.alloc, x) for x in alloc))
    for name, by_rows in probe.attn_ms().items():
        m = max(by_rows)
        if name == GQA:  # its own term, one row over the grouped views' bytes (absent: not a factor)
            if GQA in prof.terms:
                f[name] = by_rows[m] / (1e3 * term_at(prof.terms[GQA], 2 * probe.rho * probe.attn_width))
            continue
        charged = attention_s(prof, probe.rho, probe.attn_width, m, name == "attn_masked", geo.group)
        f[name] = by_rows[m] / (1e3 * charged)
    return f


def probed_profile(prof: Profile, probe: MatmulProbe, geo: Geometry) -> tuple[Profile, dict[str, float]]:
    """prof as the probe saw the host: its m-row ratios (with_row_ratios) and each timed term scaled by its
    probe_factors (weights also scales gemv_row_s). Returns (profile, {"weights": f, "cat": f, ...})."""
    f = probe_factors(prof, probe, geo)
    out = rescaled(prof, f, probe.ratios())
    said = ", ".join(f"{k} x{v:.3f}" for k, v in f.items())
    source = f"{prof.source} [probed alongside the runs: {said}, m-row ratios measured]"
    return dataclasses.replace(out, source=source), f
