"""Host profile: the fitted cost coefficients the model reads, and their JSON file (checked on every load:
profile_check.py says what is physical).

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
  hf_attn_gqa  SDPA with enable_gqa over grouped K/V views of x bytes, one query row, no mask: the path
               transformers takes at an exact width for a GQA model (runtime "hf", group > 1)
  hf_layer_fixed, hf_layer_row  layer_fixed and layer_row of transformers' decoder layer, measured in place
               in generate() (calibrate/bench_hf_layers.py); runtime "hf" reads them in place of hf_layer_s
  hf_matmul_ratio  a ratio, not seconds: transformers' seven per-layer nn.Linear calls, timed in place at one
               token row, over what weights and gemv_row_s charge for the layer; x = the layer's weight bytes
Optional curves ({"x": [...], "ratio": [...]}, cost relative to x = 1, linear in between):
  weights_rows  matmul time with x token rows over one row (one row is a GEMV, more a GEMM)
  weights_rows@B  the same measured on a whole layer of B bytes (several geometries: the ratio
                depends on the matrix shapes; the model interpolates in log B, see curves.py)
  head_rows@B   the same measured on an LM head of B bytes (one [vocab, hidden] matrix, whose
                ratio differs from a layer's of equal bytes; absent: the layers' curves serve)
  attn_q        attention's per-byte cost with x query rows over one row
Scalars:
  attn_q_slope     relative extra attention cost per extra query row (1 + slope*(rows-1) at `rows` rows)
  weights_row_slope relative extra matmul cost per extra token row (1 + slope*(rows-1) at `rows` rows)
  step_s           fixed framework cost per decode step (embedding, final norm, sampling)
  layer_s          fixed per-layer cost (norms, RoPE, activations, kernel launches)
  sd_iter_s        fixed cost of one speculative-decoding iteration (drafting bookkeeping)
Optional scalars:
  gemv_row_s       cost per output row of a matmul, on top of its bytes (0 when absent)
  hf_step_s        step_s for transformers' generate() (runtime "hf"; absent: step_s)
  hf_layer_s       layer_s for transformers' decoder layers (runtime "hf"; absent: layer_s)
  lazy_backing     fraction in [0, 1] of an allocation's never-written bytes the OS does not hold resident
                   (1: pages back on first write, Linux CPU; 0: committed at allocation, CUDA's caching
                   allocator). Measured by calibrate/bench_lazy.py; absent: 0 (all allocated bytes resident)
Host facts besides the fingerprint (optional): overcommit_mode (vm.overcommit_memory: 0, 1 or 2) and
reserve_limit_bytes (the largest single allocation the OS grants; absent: no limit, or unknown).
Optional section "refresh" (core/refresh.py): scale factors measured since calibration. The terms above stay
as calibrated in the file; a profile read with the section is used with them scaled (Profile.calibrated: as
calibrated), and writes back the calibrated terms plus the section.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Literal, TypeVar, overload

from bmc_model.core.errors import BMCError
from bmc_model.core.paths import atomic_write, cache_dir
from bmc_model.core.term import Term, as_number, as_numbers

if TYPE_CHECKING:
    from bmc_model.core.refresh import Refresh

SCHEMA_VERSION = 1
TERM_NAMES = ("alloc", "copy", "write", "attn_exact", "attn_masked", "weights")
SCALAR_NAMES = ("attn_q_slope", "weights_row_slope", "step_s", "layer_s", "sd_iter_s")
BMC_IN_PLACE_TERMS = ("layer_fixed", "layer_row")  # measured in bmc-tune's own decoder (calibrate/bench_layers.py)
# measured in transformers' decoder (calibrate/bench_hf_layers.py), over the layer's weight bytes
HF_IN_PLACE_TERMS = ("hf_layer_fixed", "hf_layer_row", "hf_matmul_ratio")
IN_PLACE_TERMS = (*BMC_IN_PLACE_TERMS, *HF_IN_PLACE_TERMS)
OPTIONAL_TERMS = ("cat", "hf_attn_gqa", *IN_PLACE_TERMS)
# What runtime "hf" reads in place of the runtime's own: for_runtime("hf") maps file names to the names the cost
# model reads (matmul_ratio and attn_exact_grouped exist only in that view).
HF_VIEW = {"hf_layer_fixed": "layer_fixed", "hf_layer_row": "layer_row", "hf_matmul_ratio": "matmul_ratio",
           "hf_attn_gqa": "attn_exact_grouped"}
HF_ROWS = "hf_weights_rows"  # transformers' layers' m-row ratios: weights_rows@B in the hf view
# gemv_row_s: cost per output row of a GEMV (short rows stream slower); lazy_backing: absent, count every
# allocated byte as resident (the conservative reading)
OPTIONAL_SCALARS = {"gemv_row_s": 0.0, "lazy_backing": 0.0}
FRACTION_SCALARS = ("lazy_backing",)  # fractions in [0, 1], not costs (profile_check)
CURVE_NAMES = ("weights_rows", "attn_q")
SIZED_FAMILIES = ("weights_rows", "head_rows", HF_ROWS)  # curves measured at several sizes B: "FAMILY@B"
Curve = tuple[tuple[float, ...], tuple[float, ...]]  # (x, ratio)
# Framework overhead differs by the code that runs the model; everything else is the same kernels.
RUNTIMES = {"bmc": ("step_s", "layer_s"), "hf": ("hf_step_s", "hf_layer_s")}


_V = TypeVar("_V")
_REQUIRED = object()


class _Entry(Generic[_V]):
    """A term or scalar read as a typed attribute: prof.alloc is prof.terms["alloc"]. Absent, an optional
    one reads its default; a required one raises AttributeError, as any missing attribute does."""

    def __init__(self, table: Literal["terms", "scalars"], default: object = _REQUIRED) -> None:
        self.table, self.default = table, default

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> _Entry[_V]: ...
    @overload
    def __get__(self, obj: Profile, owner: type | None = None) -> _V: ...
    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        table = getattr(obj, self.table)
        if self.name in table:
            return table[self.name]
        if self.default is _REQUIRED:
            raise AttributeError(self.name)
        return self.default


@dataclass(frozen=True)
class Profile:
    terms: dict[str, Term]
    scalars: dict[str, float]
    host: dict = field(default_factory=dict)
    date: str = ""
    source: str = ""
    raw: dict = field(default_factory=dict)
    curves: dict[str, Curve] = field(default_factory=dict)
    refresh: Refresh | None = None  # the factors the terms above are scaled by (core/refresh.py)
    calibrated_base: Profile | None = field(default=None, repr=False, compare=False)  # set with refresh
    runtime: str = "bmc"  # the code whose costs this view prices (for_runtime); not in the file

    # the names of TERM_NAMES, OPTIONAL_TERMS, SCALAR_NAMES, OPTIONAL_SCALARS and RUNTIMES["hf"], typed
    alloc = _Entry[Term]("terms")
    copy = _Entry[Term]("terms")
    write = _Entry[Term]("terms")
    attn_exact = _Entry[Term]("terms")
    attn_masked = _Entry[Term]("terms")
    weights = _Entry[Term]("terms")
    cat = _Entry[Term | None]("terms", None)
    layer_fixed = _Entry[Term | None]("terms", None)
    layer_row = _Entry[Term | None]("terms", None)
    hf_attn_gqa = _Entry[Term | None]("terms", None)
    hf_layer_fixed = _Entry[Term | None]("terms", None)
    hf_layer_row = _Entry[Term | None]("terms", None)
    hf_matmul_ratio = _Entry[Term | None]("terms", None)
    attn_q_slope = _Entry[float]("scalars")
    weights_row_slope = _Entry[float]("scalars")
    step_s = _Entry[float]("scalars")
    layer_s = _Entry[float]("scalars")
    sd_iter_s = _Entry[float]("scalars")
    gemv_row_s = _Entry[float]("scalars", OPTIONAL_SCALARS["gemv_row_s"])
    lazy_backing = _Entry[float]("scalars", OPTIONAL_SCALARS["lazy_backing"])
    hf_step_s = _Entry[float | None]("scalars", None)
    hf_layer_s = _Entry[float | None]("scalars", None)

    def for_runtime(self, runtime: str) -> Profile:
        """This profile with step_s / layer_s of `runtime` ("bmc": ours, "hf": transformers generate());
        overheads unchanged where the profile lacks that runtime's scalars (see has_runtime)."""
        if runtime not in RUNTIMES:
            raise BMCError(f"unknown runtime {runtime!r} (use {' or '.join(RUNTIMES)})")
        if runtime == "bmc" or self.runtime == runtime:
            return self
        cache = self.__dict__.setdefault("_by_runtime", {})  # predict() is called per request: build once
        if runtime not in cache and not self.has_runtime(runtime):  # its kernels' rules, our overheads
            cache[runtime] = replace(self, runtime=runtime)
        if runtime not in cache:
            step, layer = RUNTIMES[runtime]
            sc = {**self.scalars, "step_s": self.scalars[step], "layer_s": self.scalars[layer]}
            # bmc-tune's in-place layer terms describe its own decoder: transformers' are its own, where measured
            # (else it keeps hf_layer_s), as are its matmul ratio and its exact-width GQA attention
            terms = {name: t for name, t in self.terms.items() if name not in (*BMC_IN_PLACE_TERMS, *HF_VIEW)}
            terms.update({HF_VIEW[name]: t for name, t in self.terms.items() if name in HF_VIEW})
            # its m-row ratios too, where a refresh timed its unfused layer (hf_weights_rows@B)
            hf_rows = {k[len(HF_ROWS) + 1:]: c for k, c in self.curves.items() if k.startswith(f"{HF_ROWS}@")}
            curves = (with_family(with_family(self.curves, HF_ROWS, {}), "weights_rows", hf_rows) if hf_rows
                      else self.curves)
            cache[runtime] = replace(self, terms=terms, scalars=sc, curves=curves,
                                     source=f"{self.source} [{runtime} overhead]", runtime=runtime)
        return cache[runtime]

    def sized_curves(self, family: str = "weights_rows") -> list[tuple[float, Curve]]:
        """The FAMILY@B curves as (B, curve), ascending B (cached: the cost model asks per call)."""
        cache = self.__dict__.setdefault("_sized", {})
        got = cache.get(family)
        if got is None:
            got = sorted((size, c) for name, c in self.curves.items() if (size := _sized(name, family)) is not None)
            cache[family] = got
        return got

    @property
    def calibrated(self) -> Profile:
        """This profile as calibrated: its terms before any refresh scaled them (itself when not refreshed)."""
        return self if self.calibrated_base is None else self.calibrated_base

    def has_runtime(self, runtime: str) -> bool:
        return all(name in self.scalars for name in RUNTIMES.get(runtime, ("?",)))

    @property
    def dtype(self) -> str:
        dtype = self.host.get("dtype")  # profile_check allows only a known name, or none (null: none)
        return dtype if isinstance(dtype, str) else "float32"

    def describe(self) -> str:
        host = self.host
        fresh = f", refreshed {self.refresh.at[:16]}" if self.refresh is not None else ""
        return (f"{self.source} ({host.get('cpu', '?')}, {host.get('threads', '?')} threads, "
                f"{host.get('device', '?')}, {host.get('dtype', '?')}, {self.date[:10] or 'undated'}{fresh})")

    def to_dict(self) -> dict:
        cal = self.calibrated  # refreshed: the calibrated terms and the factors, never scaled terms (no compounding)
        d = {"schema": SCHEMA_VERSION, "source": self.source, "date": self.date, "host": self.host,
             "terms": {name: t.to_dict() for name, t in cal.terms.items()}, "scalars": dict(cal.scalars),
             "curves": {name: {"x": list(x), "ratio": list(y)} for name, (x, y) in cal.curves.items()},
             "raw": self.raw}
        if self.refresh is not None:
            d["refresh"] = self.refresh.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: object, source: str) -> Profile:
        """Parse and check (profile_check.py): a bad entry is one BMCError naming it, never a later NaN."""
        from bmc_model.core.profile_check import check_profile  # it reads this module's names

        if not isinstance(d, dict):
            raise BMCError(f"profile {source}: not a JSON object")
        if isinstance(d.get("schema"), bool) or d.get("schema") != SCHEMA_VERSION:  # true == 1 in Python
            raise BMCError(f"profile {source}: schema version {d.get('schema')!r}, this bmc-tune reads "
                           f"{SCHEMA_VERSION}; run `bmc-tune calibrate` again")
        try:
            tables = {key: _table(d, key, required=key in ("terms", "scalars"))
                      for key in ("terms", "scalars", "curves", "host", "raw")}
            terms = {name: _term(tables["terms"], name) for name in (*TERM_NAMES, *OPTIONAL_TERMS)
                     if name in TERM_NAMES or name in tables["terms"]}
            scalars = {name: _scalar(tables["scalars"], name) for name in SCALAR_NAMES}
            scalars.update({name: _scalar(tables["scalars"], name, v) for name, v in OPTIONAL_SCALARS.items()})
            scalars.update({name: _scalar(tables["scalars"], name) for name in RUNTIMES["hf"]
                            if name in tables["scalars"]})
            curves = {name: _curve(v, f"curve {name!r}") for name, v in tables["curves"].items()
                      if name in CURVE_NAMES or name.partition("@")[0] in SIZED_FAMILIES and "@" in name}
        except BMCError as err:
            raise BMCError(f"profile {source}: {err}") from None
        prof = cls(terms=terms, scalars=scalars, host=tables["host"], date=str(d.get("date", "")), source=source,
                   raw=tables["raw"], curves=curves)
        check_profile(prof)
        return prof if d.get("refresh") is None else _refreshed(prof, d["refresh"])


def _refreshed(prof: Profile, section: object) -> Profile:
    """prof (as calibrated, checked) under its refresh section, both checked."""
    from bmc_model.core.profile_check import check_profile, refresh_problem
    from bmc_model.core.refresh import Refresh, refreshed

    try:
        refresh = Refresh.from_dict(section)
    except BMCError as err:
        raise BMCError(f"profile {prof.source}: {err}") from None
    problem = refresh_problem(refresh, prof)
    if problem:
        raise BMCError(f"profile {prof.source}: {problem}")
    out = refreshed(prof, refresh)
    check_profile(out)  # scaled terms within the bounds too
    return out


def _table(d: dict, key: str, required: bool) -> dict:
    if key not in d and not required:
        return {}
    if key not in d:
        raise BMCError(f"missing {key!r}")
    if not isinstance(d[key], dict):
        raise BMCError(f"{key!r} must be an object")
    return dict(d[key])


def _term(terms: dict, name: str) -> Term:
    if name not in terms:
        raise BMCError(f"missing term {name!r}")
    try:
        return Term.from_dict(terms[name])
    except BMCError as err:
        raise BMCError(f"term {name!r}: {err}") from None


def _scalar(scalars: dict, name: str, default: float | None = None) -> float:
    if name not in scalars and default is not None:
        return default
    if name not in scalars:
        raise BMCError(f"missing scalar {name!r}")
    return as_number(scalars[name], f"scalar {name!r}")


def with_family(curves: dict[str, Curve], family: str, members: dict[str, Curve]) -> dict[str, Curve]:
    """curves with the sized family's FAMILY@B curves replaced by members (B as the name writes it -> curve)."""
    out = {k: c for k, c in curves.items() if not k.startswith(f"{family}@")}
    out.update({f"{family}@{size}": c for size, c in members.items()})
    return out


def _sized(name: str, family: str | None = None) -> float | None:
    """B of a 'FAMILY@B' curve name (any sized family when family is None), else None."""
    head, _, tail = name.partition("@")
    if head not in ((family,) if family else SIZED_FAMILIES):
        return None
    try:
        return float(tail) if tail and float(tail) > 0 else None
    except ValueError:
        return None


def _curve(d: object, what: str) -> Curve:
    """Two equal-length lists; what makes a curve physical is profile_check's to say."""
    if not isinstance(d, dict) or "x" not in d or "ratio" not in d:
        raise BMCError(f"{what} must be an object with lists x and ratio")
    x, y = as_numbers(d["x"], f"{what} x"), as_numbers(d["ratio"], f"{what} ratio")
    if len(x) != len(y):
        raise BMCError(f"{what}: x has {len(x)} points, ratio {len(y)}")
    return x, y


def default_profile_path() -> Path:
    return cache_dir("profile.json")


def embedded_profile() -> Profile:
    text = (resources.files("bmc_model") / "data" / "default_profile.json").read_text()
    return Profile.from_dict(json.loads(text), source="embedded default")


def read_profile(path: str | Path) -> Profile:
    """A profile file, checked. The cached default one, if bad, says so and how to fix it: every command
    reads it, and falling back to the embedded default unasked would hide that the calibration is lost."""
    path = Path(path)
    try:
        return _read(path)
    except BMCError as err:
        if not _is_default(path):
            raise
        raise BMCError(f"{err} (this is the cached default profile: run `bmc-tune calibrate` to measure a new "
                       f"one, or delete {path} to use the embedded default)") from None


def _read(path: Path) -> Profile:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BMCError(f"profile not found: {path}") from None
    except OSError as err:
        raise BMCError(f"profile {path}: cannot read ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not an error
    except UnicodeDecodeError as err:
        raise BMCError(f"profile {path}: not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start})") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as err:
        raise BMCError(f"profile {path}: corrupt JSON ({err})") from None
    except RecursionError:
        raise BMCError(f"profile {path}: corrupt JSON (nested too deeply)") from None
    return Profile.from_dict(d, source=str(path))


def _is_default(path: Path) -> bool:
    return os.path.abspath(path) == os.path.abspath(default_profile_path())


def load_profile(profile: Profile | str | Path | None = None) -> Profile:
    """An explicit profile, else the calibrated one in the cache dir, else the embedded default."""
    if isinstance(profile, Profile):
        return profile
    if profile is not None:
        return read_profile(profile)
    path = default_profile_path()
    try:
        present = path.exists()  # False for a missing file, or an XDG_CACHE_HOME that is a file
    except OSError:  # e.g. a cache folder we may not enter: read_profile says so, naming the fix
        present = True
    return read_profile(path) if present else embedded_profile()


def write_profile(profile: Profile, path: str | Path) -> Path:
    """Atomic: a temporary file in the same folder, fsync, then rename over the old one."""
    path = Path(path)
    with atomic_write(path) as f:  # an ordinary file: 0666 & ~umask
        json.dump(profile.to_dict(), f, indent=1)
    return path


HOST_KEYS = ("cpu", "cores", "threads", "device", "dtype", "torch")


def host_mismatch(profile: Profile, current: dict) -> list[str]:
    """Fingerprint keys (HOST_KEYS) whose values differ between the profile and this host."""
    return [key for key in HOST_KEYS if key in profile.host and key in current and profile.host[key] != current[key]]
