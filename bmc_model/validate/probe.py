"""The decoder's own matmuls at one and at m token rows, torch.cat and one layer's attention, timed side by
side with validate's runs (one more run for run_interleaved, so it shares their seconds).

Why: an m-row matmul (speculative verification) is compute-bound where a one-row GEMV is bandwidth-bound, and
on a shared host their ratio, torch.cat's page faults and attention's cost all move within minutes, so a
profile calibrated earlier carries a level that may have passed (figures: docs/results.md, "Probe").
validate then predicts twice: with the stored profile, and with the terms rescaled to what the probe measured
(probed_profile); the gap between the two is host drift since calibration, what remains the model's own error.

torch.cat is timed as calibration times it (calibrate/bench_memory.cat_cases: fresh buffers, cold sources) and
reported as a mean, as calibration's cat term is: its slow page faults come in bursts and every decode step
pays them. Attention is timed in the decoder's form (calibrate/bench_attention.attn_case: folded GQA rows, the
additive mask, cold K/V), at the runs' own width, which calibration's curve may only reach by extrapolating.
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

from bmc_model.core.breakdown import attention_s
from bmc_model.core.curves import term_at
from bmc_model.core.errors import BMCError
from bmc_model.core.profile import Profile, Term
from bmc_model.core.workload import Geometry
from bmc_model.runtime.decoder import Decoder

PARTS = ("layers", "head")
STEPS = 12  # steps of a probe beside validate's runs, per repeat
CAT_CALLS = 4  # at most this many torch.cat calls a step (a decode step makes 2 * layers)


@dataclass
class MatmulProbe:
    dec: Decoder
    rows: tuple[int, ...]  # token rows per matmul, 1 first (the ratios' denominator)
    steps: int  # probe steps, each timing every row count once
    cat_rows: int = 0  # also time torch.cat of a [1, kv_heads, cat_rows, head_dim] tensor with a row (0: no)
    stream_bytes: int = 0  # cat sources cycle through this many bytes: cold, as in decoding
    cat_calls: int = 1  # cat calls per step: a decode step's 2 * layers gives its slow page faults as many chances
    attn_width: int = 0  # also time one layer's attention over this many cached rows (0: no)
    attn_forms: tuple[tuple[int, bool], ...] = ()  # (rows, masked) to time; () with attn_width: one row exact and
    # the largest row count masked (one row masked when that is 1)
    done: int = 0
    samples: dict[tuple[str, int], list[float]] = field(default_factory=dict)  # (part, m) -> seconds

    def __post_init__(self) -> None:
        if not self.rows or self.rows[0] != 1 or any(m < 1 for m in self.rows):
            raise BMCError(f"probe rows must start at 1 and be positive, got {self.rows}")
        if self.steps < 1:
            raise BMCError(f"probe steps must be positive, got {self.steps}")
        s = self.dec.spec
        # one activation per inner width: [m, hidden], [m, heads * head_dim], [m, ffn]
        self._x = {m: {w: torch.full((m, w), 0.5, dtype=self.dec.dtype, device=self.dec.device)
                       for w in {s.hidden, s.heads * s.head_dim, s.ffn}} for m in self.rows}
        self.samples = {(p, m): [] for p in PARTS for m in self.rows}
        self._stack = ExitStack()
        self._cat_op = None
        if self.cat_rows:
            from bmc_model.calibrate.bench_memory import cat_cases

            self._cat_case = cat_cases(s, (self.cat_rows,), self.dec.dtype, self.dec.device.type,
                                       self.stream_bytes)[0]
            self._cat_op = self._stack.enter_context(self._cat_case.make())
            self.samples[("cat", self.cat_rows)] = []
        self._attn_ops: dict[tuple[str, int], tuple[Callable[[], object], int]] = {}  # -> (op, attentions per call)
        if self.attn_width:
            self.attn_forms = self.attn_forms or ((1, False), (max(self.rows), True))
            from bmc_model.calibrate.bench_attention import VIEW_SLACK, attn_case, kv_bytes
            from bmc_model.calibrate.pool import Pool

            elem = torch.empty((), dtype=self.dec.dtype).element_size()
            need = max(self.stream_bytes, int(kv_bytes(s, self.attn_width + VIEW_SLACK, elem)))
            pool = self._stack.enter_context(Pool(need, self.dec.dtype, self.dec.device.type))
            for m, masked in self.attn_forms:
                key = ("attn_masked" if masked else "attn_exact", m)
                case = attn_case(pool, key, s, self.attn_width, m, masked, self.stream_bytes)
                self._attn_ops[key] = (self._stack.enter_context(case.make()), case.per_call)
                self.samples[key] = []

    @classmethod
    def beside_runs(cls, dec: Decoder, rows: tuple[int, ...], length: int, stream_bytes: int,
                    attn_forms: tuple[tuple[int, bool], ...] = ()) -> MatmulProbe:
        """The probe validate and validate --sd run beside their decodes: matmuls at `rows`, torch.cat and
        attention at `length` rows (the runs' middle), STEPS steps a repeat."""
        return cls(dec, rows, steps=STEPS, cat_rows=length, stream_bytes=stream_bytes,
                   cat_calls=min(2 * dec.spec.layers, CAT_CALLS), attn_width=length, attn_forms=attn_forms)

    def close(self) -> None:
        """Free the cat and attention buffers."""
        self._stack.close()
        self._cat_op = None
        self._attn_ops = {}

    @property
    def cat_x(self) -> float:
        """Bytes per cat call, as the profile's cat term is a function of (the case's mean size)."""
        return self._cat_case.x if self.cat_rows else 0.0

    def restart(self) -> None:
        """Another `steps` steps (the next repeat); the samples accumulate."""
        self.done = 0

    @property
    def progress(self) -> float:
        return self.done / self.steps

    @torch.inference_mode()
    def step(self) -> bool:
        """Time the layers' matmuls and the head's once at every row count (the order rotates)."""
        k = self.done % len(self.rows)
        for m in self.rows[k:] + self.rows[:k]:
            x = self._x[m]
            t0 = time.perf_counter()
            for lw in self.dec.w.layers:  # the weights the runs stream, in their order: cold as in decoding
                for w in (lw.wqkv, lw.wo, lw.w_in, lw.w_down):
                    F.linear(x[w.shape[1]], w)  # [m, out]
            t1 = time.perf_counter()
            F.linear(x[self.dec.spec.hidden], self.dec.w.lm_head)  # [m, vocab]
            t2 = time.perf_counter()
            self.samples[("layers", m)].append(t1 - t0)
            self.samples[("head", m)].append(t2 - t1)
        for key, (op, per_call) in self._attn_ops.items():
            t0 = time.perf_counter()
            op()
            self.samples[key].append((time.perf_counter() - t0) / per_call)
        for _ in range(self.cat_calls if self._cat_op is not None else 0):
            t0 = time.perf_counter()
            self._cat_op()  # type: ignore[misc]
            self.samples[("cat", self.cat_rows)].append((time.perf_counter() - t0) / self._cat_case.per_call)
        self.done += 1
        return self.done < self.steps

    def medians_ms(self) -> dict[str, dict[int, float]]:
        return {p: {m: 1e3 * statistics.median(self.samples[(p, m)]) for m in self.rows} for p in PARTS}

    def cat_ms(self) -> float | None:
        """Mean ms of one torch.cat at cat_rows (None without cat_rows or samples): a mean, as calibration's
        cat term is (its slow first touches are part of what every decode step pays)."""
        got = self.samples.get(("cat", self.cat_rows))
        return 1e3 * statistics.fmean(got) if got else None

    def attn_ms(self) -> dict[str, dict[int, float]]:
        """Median ms of one layer's attention over attn_width rows: {"attn_exact" | "attn_masked": {rows: ms}}."""
        out: dict[str, dict[int, float]] = {}
        for (p, m), v in self.samples.items():
            if p.startswith("attn_") and v:
                out.setdefault(p, {})[m] = 1e3 * statistics.median(v)
        return out

    def ratios(self) -> dict[str, dict[int, float]]:
        """m rows over one row, per part, from the medians."""
        med = self.medians_ms()
        return {p: {m: med[p][m] / med[p][1] for m in self.rows} for p in PARTS}


def with_row_ratios(prof: Profile, ratios: dict[str, dict[int, float]]) -> Profile:
    """prof with its weights_rows@B and head_rows@B curves replaced by one curve each: the probe's points.
    One curve per family is what every matrix size then reads, the probe having timed this model's own."""
    keep = {k: c for k, c in prof.curves.items() if not k.startswith(("weights_rows@", "head_rows@"))}
    for family, part in (("weights_rows", "layers"), ("head_rows", "head")):
        ms = sorted(ratios[part])
        keep[f"{family}@1"] = (tuple(float(m) for m in ms), tuple(float(ratios[part][m]) for m in ms))
    return dataclasses.replace(prof, source=f"{prof.source} [m-row ratios probed alongside the runs]", curves=keep)


def weights_drift(prof: Profile, geo: Geometry, one_row_ms: dict[str, float]) -> float:
    """The probe's one-row time of all layers and the head over what the profile charges for them:
    how much faster (< 1) or slower (> 1) the host streams weights now than at calibration."""
    g_row = prof.scalars.get("gemv_row_s", 0.0)
    layer = term_at(prof.weights, geo.layer_weight_bytes) + g_row * geo.layer_out_rows
    head = term_at(prof.weights, geo.head_weight_bytes) + g_row * geo.head_out_rows
    charged_ms = 1e3 * (geo.layers * layer + head)
    if charged_ms <= 0:
        raise BMCError("the profile charges nothing for this model's weights: cannot scale it")
    return (one_row_ms["layers"] + one_row_ms["head"]) / charged_ms


def _scaled(t: Term, f: float) -> Term:
    return Term(c0=tuple(f * c for c in t.c0), slope=tuple(f * s for s in t.slope), knots=t.knots)


def probed_profile(prof: Profile, probe: MatmulProbe, geo: Geometry) -> tuple[Profile, dict[str, float]]:
    """prof as the probe saw the host: its m-row ratios (with_row_ratios), the weights term and gemv_row_s
    scaled by weights_drift, and (with cat_rows, when the profile has a cat term) the cat term scaled by the
    measured cat over the term at that size. One factor for every size: a draft model's weights, which the
    probe does not time, move with the host as the target's do. With attn_width, attn_exact and attn_masked are
    scaled by the attention measured over what the profile charges at that width (masked: at the most rows
    timed, the verify pass with its folded GQA rows, at a width calibration may not reach).
    Returns (profile, {"weights": f, "cat": f, "attn_exact": f, "attn_masked": f}, those measured)."""
    med = probe.medians_ms()
    f = {"weights": weights_drift(prof, geo, {p: med[p][1] for p in PARTS})}
    out = with_row_ratios(prof, probe.ratios())
    terms = {**out.terms, "weights": _scaled(prof.weights, f["weights"])}
    cat = probe.cat_ms()
    if cat is not None and "cat" in prof.terms:
        f["cat"] = cat / (1e3 * term_at(prof.cat, probe.cat_x))
        terms["cat"] = _scaled(prof.cat, f["cat"])
    for name, by_rows in probe.attn_ms().items():
        m = max(by_rows)  # masked: the verify pass's rows where timed (its folded GQA rows, its width)
        charged = attention_s(prof, geo.rho, probe.attn_width, m, name == "attn_masked", geo.group)
        f[name] = by_rows[m] / (1e3 * charged)
        terms[name] = _scaled(prof.terms[name], f[name])
    scalars = {**out.scalars, "gemv_row_s": f["weights"] * prof.scalars.get("gemv_row_s", 0.0)}
    said = ", ".join(f"{k} x{v:.3f}" for k, v in f.items())
    return dataclasses.replace(out, terms=terms, scalars=scalars,
                               source=f"{prof.source} [probed alongside the runs: {said}, m-row ratios measured]"), f
