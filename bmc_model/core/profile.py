"""Host profile: the fitted cost coefficients the model reads, and their JSON file.

Schema (version 1), every time in seconds and every size in bytes:

    {"schema": 1, "source": str, "date": ISO-8601, "host": {cpu, cores, threads, ram_bytes, os,
     torch, device, dtype}, "terms": {NAME: TERM}, "scalars": {NAME: float}, "raw": {...}}

TERM is piecewise affine in its size x: t(x) = c0[i] + slope[i] * x on segment i, where the
segments are split at the ascending `knots` (len(c0) == len(slope) == len(knots) + 1), with
optional fit quality: "r2" and "ci95" ([[lo, hi] for each slope]).

Terms (x is the bytes that one call touches, per tensor, per layer):
  alloc        torch.empty of x bytes plus the first touch of every page (growth events)
  copy         copying x bytes of valid rows from the old buffer into the new one
  write        in-place write of x bytes of new rows into a preallocated buffer
  attn_exact   scaled_dot_product_attention, one query row, over K+V views of x bytes
  attn_masked  the same over a buffer of x bytes with an additive mask (padded rows)
  weights      one decoder layer's (or the LM head's) matmuls streaming x bytes of weights
Optional terms:
  cat          torch.cat of a tensor of x bytes with one row: a fresh buffer whose pages are
               first touched by the copy itself (exact-width growth; else alloc + copy is used)
  layer_fixed  one decoder layer's cost beyond its matmuls, attention and writes, measured in place
               (after its weights stream: cold caches), x = the layer's weight bytes; replaces layer_s
  layer_row    the same per extra token row (verification passes, batches), x = the layer's weight bytes
Optional curves ({"x": [...], "ratio": [...]}, cost relative to x = 1, linear in between):
  weights_rows  matmul time with x token rows over one row (one row is a GEMV, more a GEMM)
  weights_rows@B  the same measured on a whole layer of B bytes (several geometries: the ratio
                depends on the matrix shapes; the model interpolates in log B, see cost.py)
  head_rows@B   the same measured on an LM head of B bytes (one [vocab, hidden] matrix, whose
                ratio differs from a layer's of equal bytes; absent: the layers' curves serve)
  attn_q        attention's per-byte cost with x query rows over one row
Scalars:
  attn_q_slope     relative extra attention cost per extra query row (q rows: 1 + s*(q-1))
  weights_row_slope relative extra matmul cost per extra token row (m rows: 1 + s*(m-1))
  step_s           fixed framework cost per decode step (embedding, final norm, sampling)
  layer_s          fixed per-layer cost (norms, RoPE, activations, kernel launches)
  sd_iter_s        fixed cost of one speculative-decoding iteration (drafting bookkeeping)
Optional scalars:
  gemv_row_s       cost per output row of a matmul, on top of its bytes (0 when absent)
  hf_step_s        step_s for transformers' generate() (runtime "hf"; absent: step_s)
  hf_layer_s       layer_s for transformers' decoder layers (runtime "hf"; absent: layer_s)
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np

from bmc_model.core.errors import BMCError
from bmc_model.core.paths import cache_dir

SCHEMA_VERSION = 1
TERM_NAMES = ("alloc", "copy", "write", "attn_exact", "attn_masked", "weights")
SCALAR_NAMES = ("attn_q_slope", "weights_row_slope", "step_s", "layer_s", "sd_iter_s")
IN_PLACE_TERMS = ("layer_fixed", "layer_row")  # measured in bmc-tune's own decoder (calibrate/bench_layers.py)
OPTIONAL_TERMS = ("cat", *IN_PLACE_TERMS)
OPTIONAL_SCALARS = {"gemv_row_s": 0.0}  # cost per output row of a GEMV (short rows stream slower)
CURVE_NAMES = ("weights_rows", "attn_q")
SIZED_FAMILIES = ("weights_rows", "head_rows")  # curves measured at several sizes B: "FAMILY@B"
Curve = tuple[tuple[float, ...], tuple[float, ...]]  # (x, ratio)
# Framework overhead differs by the code that runs the model; everything else is the same kernels.
RUNTIMES = {"bmc": ("step_s", "layer_s"), "hf": ("hf_step_s", "hf_layer_s")}


@dataclass(frozen=True)
class Term:
    c0: tuple[float, ...]
    slope: tuple[float, ...]
    knots: tuple[float, ...] = ()
    r2: float | None = None
    ci95: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if len(self.c0) != len(self.knots) + 1 or len(self.slope) != len(self.c0):
            raise BMCError("profile term: need len(c0) == len(slope) == len(knots) + 1")
        if list(self.knots) != sorted(self.knots):
            raise BMCError("profile term: knots must ascend")

    def __call__(self, x: np.ndarray | float) -> np.ndarray | float:
        if not self.knots:
            return self.c0[0] + self.slope[0] * x
        i = np.searchsorted(np.asarray(self.knots), x, side="right")
        return np.asarray(self.c0)[i] + np.asarray(self.slope)[i] * x

    def segment(self, x: float) -> tuple[float, float]:
        """(c0, slope) of the segment holding x: used by the closed-form optimum."""
        i = int(np.searchsorted(np.asarray(self.knots), x, side="right"))
        return self.c0[i], self.slope[i]

    def to_dict(self) -> dict:
        d: dict = {"c0": list(self.c0), "slope": list(self.slope), "knots": list(self.knots)}
        if self.r2 is not None:
            d["r2"] = self.r2
        if self.ci95:
            d["ci95"] = [list(c) for c in self.ci95]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Term:
        return cls(c0=tuple(float(v) for v in d["c0"]), slope=tuple(float(v) for v in d["slope"]),
                   knots=tuple(float(v) for v in d.get("knots", ())),
                   r2=None if d.get("r2") is None else float(d["r2"]),
                   ci95=tuple((float(a), float(b)) for a, b in d.get("ci95", ())))


@dataclass(frozen=True)
class Profile:
    terms: dict[str, Term]
    scalars: dict[str, float]
    host: dict = field(default_factory=dict)
    date: str = ""
    source: str = ""
    raw: dict = field(default_factory=dict)
    curves: dict[str, Curve] = field(default_factory=dict)

    def __getattr__(self, name: str):  # profile.alloc, profile.step_s, ...
        terms = self.__dict__.get("terms", {})
        if name in terms:
            return terms[name]
        scalars = self.__dict__.get("scalars", {})
        if name in scalars:
            return scalars[name]
        raise AttributeError(name)

    def for_runtime(self, runtime: str) -> Profile:
        """This profile with step_s / layer_s of `runtime` ("bmc": ours, "hf": transformers generate());
        unchanged where the profile lacks that runtime's scalars (see has_runtime)."""
        if runtime not in RUNTIMES:
            raise BMCError(f"unknown runtime {runtime!r} (use {' or '.join(RUNTIMES)})")
        if runtime == "bmc" or not self.has_runtime(runtime):
            return self
        cache = self.__dict__.setdefault("_by_runtime", {})  # predict() is called per request: build once
        if runtime not in cache:
            step, layer = RUNTIMES[runtime]
            sc = {**self.scalars, "step_s": self.scalars[step], "layer_s": self.scalars[layer]}
            # the in-place layer terms describe bmc-tune's own decoder: another runtime keeps its layer_s
            terms = {k: t for k, t in self.terms.items() if k not in IN_PLACE_TERMS}
            cache[runtime] = replace(self, terms=terms, scalars=sc, source=f"{self.source} [{runtime} overhead]")
        return cache[runtime]

    def sized_curves(self, family: str = "weights_rows") -> list[tuple[float, Curve]]:
        """The FAMILY@B curves as (B, curve), ascending B (cached: the cost model asks per call)."""
        cache = self.__dict__.setdefault("_sized", {})
        got = cache.get(family)
        if got is None:
            got = sorted((b, c) for k, c in self.curves.items() if (b := _sized(k, family)) is not None)
            cache[family] = got
        return got

    def has_runtime(self, runtime: str) -> bool:
        return all(k in self.scalars for k in RUNTIMES.get(runtime, ("?",)))

    @property
    def dtype(self) -> str:
        return str(self.host.get("dtype", "float32"))

    def describe(self) -> str:
        h = self.host
        return (f"{self.source} ({h.get('cpu', '?')}, {h.get('threads', '?')} threads, "
                f"{h.get('device', '?')}, {h.get('dtype', '?')}, {self.date[:10] or 'undated'})")

    def to_dict(self) -> dict:
        return {"schema": SCHEMA_VERSION, "source": self.source, "date": self.date, "host": self.host,
                "terms": {k: t.to_dict() for k, t in self.terms.items()}, "scalars": dict(self.scalars),
                "curves": {k: {"x": list(x), "ratio": list(y)} for k, (x, y) in self.curves.items()},
                "raw": self.raw}

    @classmethod
    def from_dict(cls, d: object, source: str) -> Profile:
        if not isinstance(d, dict):
            raise BMCError(f"profile {source}: not a JSON object")
        if d.get("schema") != SCHEMA_VERSION:
            raise BMCError(f"profile {source}: schema version {d.get('schema')!r}, this bmc-tune reads "
                           f"{SCHEMA_VERSION}; run `bmc-tune calibrate` again")
        try:
            terms = {k: Term.from_dict(d["terms"][k]) for k in TERM_NAMES}
            terms.update({k: Term.from_dict(d["terms"][k]) for k in OPTIONAL_TERMS if k in d["terms"]})
            scalars = {k: float(d["scalars"][k]) for k in SCALAR_NAMES}
            scalars.update({k: float(d["scalars"].get(k, v)) for k, v in OPTIONAL_SCALARS.items()})
            scalars.update({k: float(d["scalars"][k]) for k in RUNTIMES["hf"] if k in d["scalars"]})
            curves = {k: _curve(v) for k, v in d.get("curves", {}).items() if k in CURVE_NAMES or _sized(k)}
        except KeyError as e:
            raise BMCError(f"profile {source}: missing {e.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise BMCError(f"profile {source}: malformed ({e})") from None
        return cls(terms=terms, scalars=scalars, host=dict(d.get("host", {})), date=str(d.get("date", "")),
                   source=source, raw=dict(d.get("raw", {})), curves=curves)


def _sized(name: str, family: str | None = None) -> float | None:
    """B of a 'FAMILY@B' curve name (any sized family when family is None), else None."""
    head, _, tail = name.partition("@")
    if head not in ((family,) if family else SIZED_FAMILIES):
        return None
    try:
        return float(tail) if tail and float(tail) > 0 else None
    except ValueError:
        return None


def _curve(d: dict) -> Curve:
    x, y = tuple(float(v) for v in d["x"]), tuple(float(v) for v in d["ratio"])
    if len(x) != len(y) or len(x) < 2 or list(x) != sorted(set(x)) or x[0] != 1.0 or min(y) <= 0:
        raise ValueError("a curve needs >= 2 ascending x from 1 and positive ratios")
    return x, y


def default_profile_path() -> Path:
    return cache_dir("profile.json")


def embedded_profile() -> Profile:
    text = (resources.files("bmc_model") / "data" / "default_profile.json").read_text()
    return Profile.from_dict(json.loads(text), source="embedded default")


def read_profile(path: str | Path) -> Profile:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BMCError(f"profile not found: {path}") from None
    except OSError as e:
        raise BMCError(f"profile {path}: cannot read ({e.strerror})") from None
    try:
        d = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BMCError(f"profile {path}: corrupt JSON ({e})") from None
    return Profile.from_dict(d, source=str(path))


def load_profile(profile: Profile | str | Path | None = None) -> Profile:
    """An explicit profile, else the calibrated one in the cache dir, else the embedded default."""
    if isinstance(profile, Profile):
        return profile
    if profile is not None:
        return read_profile(profile)
    p = default_profile_path()
    if p.exists():
        return read_profile(p)
    return embedded_profile()


def write_profile(profile: Profile, path: str | Path) -> Path:
    """Atomic: a temporary file in the same folder, fsync, then rename over the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".profile-", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a profile is an ordinary file
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(profile.to_dict(), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def host_mismatch(profile: Profile, current: dict) -> list[str]:
    """Fingerprint keys whose values differ between the profile and this host."""
    keys = ("cpu", "cores", "threads", "device", "dtype", "torch")
    return [k for k in keys if k in profile.host and k in current and profile.host[k] != current[k]]
