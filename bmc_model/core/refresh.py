"""A profile's refresh: how far each drifting term has moved since calibration, and the profile it makes.

A stored profile goes stale within the hour on a shared host. `bmc-tune calibrate --refresh`
(calibrate/refresh.py) re-times the drifting terms at one model's sizes and stores, beside the calibrated
terms, one factor per term: measured now / what the calibrated term charges at the sizes timed. A profile
read with a refresh section is used with its terms scaled by those factors (rescaled()); it is written back
with the calibrated terms and the factors, never the scaled terms, so refreshing again replaces the factors
instead of compounding them. Torch-free: every load reads this.

The JSON section (profile.py holds the rest of the schema; profile_check.refresh_problem what is physical):

    "refresh": {"at": ISO-8601 UTC, "model": str, "seq": int >= 2, "batch": int >= 1 (optional, 1), "seconds": float,
                "factors": {TERM: float, ...}, "row_ratios": {"layers": {"1": 1.0, "M": r}, "head": {...}}}

row_ratios (optional) are m-row matmul time over one row, measured on the model's own shapes; they replace
the weights_rows@B and head_rows@B curves with one curve each (every matrix size then reads them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from bmc_model.core.errors import BMCError
from bmc_model.core.profile import HF_ROWS, Profile, with_family
from bmc_model.core.specs import ModelSpec
from bmc_model.core.term import Term, as_number

ROW_PARTS = {"layers": "weights_rows", "head": "head_rows",  # probe part -> the curve family it replaces
             "hf_layers": HF_ROWS}  # transformers' unfused layer: the hf view reads it (Profile.for_runtime)
NEEDED_PARTS = ("layers", "head")
Ratios = dict[str, dict[int, float]]  # part -> {rows: time over one row}


@dataclass(frozen=True)
class Refresh:
    at: str  # ISO-8601, UTC
    model: str  # the geometry whose sizes were timed
    seq: int
    seconds: float  # wall time of the measurement
    factors: dict[str, float]  # term name -> measured now / calibrated charge
    row_ratios: Ratios = field(default_factory=dict)  # {}, or NEEDED_PARTS and maybe hf_layers
    batch: int = 1  # sequences whose K/V sizes were timed

    def to_dict(self) -> dict:
        d: dict = {"at": self.at, "model": self.model, "seq": self.seq, "batch": self.batch,
                   "seconds": self.seconds, "factors": dict(self.factors)}
        if self.row_ratios:
            d["row_ratios"] = {p: {str(m): r for m, r in sorted(v.items())} for p, v in self.row_ratios.items()}
        return d

    @classmethod
    def from_dict(cls, d: object) -> Refresh:
        """Types only; whether the numbers are physical is profile_check.refresh_problem's to say."""
        if not isinstance(d, dict):
            raise BMCError("'refresh' must be an object")
        for key in ("at", "model", "seq", "factors"):
            if key not in d:
                raise BMCError(f"refresh: missing {key!r}")
        for key in ("at", "model"):
            if not isinstance(d[key], str):
                raise BMCError(f"refresh {key!r} must be a string, got {d[key]!r:.40}")
        for key in ("seq", "batch"):
            v = d.get(key, 1)
            if isinstance(v, bool) or not isinstance(v, int):
                raise BMCError(f"refresh {key!r} must be an integer, got {v!r:.40}")
        if not isinstance(d["factors"], dict):
            raise BMCError("refresh 'factors' must be an object of term: factor")
        factors = {str(k): as_number(v, f"refresh factor {k!r}") for k, v in d["factors"].items()}
        return cls(at=d["at"], model=d["model"], seq=d["seq"], batch=d.get("batch", 1),
                   seconds=as_number(d.get("seconds", 0.0), "refresh 'seconds'"), factors=factors,
                   row_ratios=_ratios(d.get("row_ratios", {})))


def _ratios(d: object) -> Ratios:
    if not isinstance(d, dict):
        raise BMCError("refresh 'row_ratios' must be an object")
    out: Ratios = {}
    for part, by_rows in d.items():
        if not isinstance(by_rows, dict):
            raise BMCError(f"refresh row_ratios {part!r} must be an object of rows: ratio")
        got = {}
        for m, r in by_rows.items():
            if not (isinstance(m, str) and m.isdigit()):
                raise BMCError(f"refresh row_ratios {part!r}: rows must be positive integers, got {m!r:.20}")
            got[int(m)] = as_number(r, f"refresh row_ratios {part!r}[{m}]")
        out[str(part)] = got
    return out


def scaled_term(t: Term, f: float) -> Term:
    """t scaled by f: a cost f times higher at every size (ci95 likewise; r2 does not change with scale)."""
    return Term(c0=tuple(f * c for c in t.c0), slope=tuple(f * s for s in t.slope), knots=t.knots, r2=t.r2,
                ci95=tuple((f * lo, f * hi) for lo, hi in t.ci95))


def row_ratio_curves(prof: Profile, ratios: Ratios) -> dict:
    """prof's curves with the sized families of the parts measured (weights_rows@B, head_rows@B and, timed,
    hf_weights_rows@B) replaced by one curve each, the ratios' points."""
    curves = prof.curves
    for part, by_rows in ratios.items():
        ms = sorted(by_rows)
        curves = with_family(curves, ROW_PARTS[part], {"1": (tuple(float(m) for m in ms),
                                                              tuple(float(by_rows[m]) for m in ms))})
    return curves


# A term the refresh does not time moves with the one timed on the same data: transformers' exact-width GQA
# attention (SDPA with enable_gqa) reads the K/V views attn_exact reads. The refresh times it itself where it can
# (a GQA model), since the two can move apart (docs/results.md, "SmolLM2 at 4096 rows"). transformers' per-row
# layer cost is the same framework code as its fixed one (one in-place measurement gives both).
TWINS = {"hf_attn_gqa": "attn_exact", "hf_layer_row": "hf_layer_fixed"}
# Scalars that move with a factor: the rest of a matmul's cost (gemv_row_s) with the weights; transformers'
# per-step and tiny-decoder per-layer framework cost with its in-place layer cost (the same Python, per token).
SCALAR_FOLLOWERS = {"weights": ("gemv_row_s",), "hf_layer_fixed": ("hf_step_s", "hf_layer_s")}


def rescaled(prof: Profile, factors: dict[str, float], ratios: Ratios | None = None) -> Profile:
    """prof with each term named in factors scaled by its factor (and its TWINS and SCALAR_FOLLOWERS) and, with
    ratios, its sized row curves replaced (row_ratio_curves). Unnamed terms, the other scalars and curves are
    prof's own objects; the source is unchanged."""
    factors = {**{twin: factors[name] for twin, name in TWINS.items() if name in factors}, **factors}
    terms = {name: scaled_term(t, factors[name]) if name in factors else t for name, t in prof.terms.items()}
    scalars = prof.scalars
    moved = {k: f * scalars[k] for name, f in factors.items() for k in SCALAR_FOLLOWERS.get(name, ()) if k in scalars}
    if moved:
        scalars = {**scalars, **moved}
    curves = row_ratio_curves(prof, ratios) if ratios else prof.curves
    return dataclasses.replace(prof, terms=terms if factors else prof.terms, scalars=scalars, curves=curves)


def refreshed(calibrated: Profile, refresh: Refresh) -> Profile:
    """The profile predictions use: calibrated's terms scaled by the refresh; .calibrated reaches them back."""
    out = rescaled(calibrated, refresh.factors, refresh.row_ratios or None)
    return dataclasses.replace(out, refresh=refresh, calibrated_base=calibrated)


# Who measures a refresh: calibrate/refresh.py registers itself on import. Layers below calibrate (hf:
# BMCCache.tuned(refresh=True)) reach it here, since they may not import calibrate.
# (profile, model, seq, prompt (None: seq // 2), batch) -> the profile refreshed at that decode's sizes
Refresher = Callable[[Profile, ModelSpec, int, "int | None", int], Profile]
_REFRESHERS: list[Refresher] = []


def register_refresher(fn: Refresher) -> None:
    _REFRESHERS[:] = [fn]


ENTRY_POINTS = "bmc_model.refreshers"  # pyproject.toml names calibrate's refresher here: found without an import


def registered_refresher() -> Refresher:
    """The refresher registered, else the one the installed distribution names under ENTRY_POINTS."""
    if not _REFRESHERS:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINTS):
            register_refresher(ep.load())
            break
    if not _REFRESHERS:
        raise BMCError("refresh=True needs the refresh measurement, and no refresher is installed: pass "
                       "refresh=bmc_model.calibrate.refresh.refresh_for, or reinstall bmc-tune")
    return _REFRESHERS[0]
