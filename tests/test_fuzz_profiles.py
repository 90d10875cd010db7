"""Fuzz the profile files (issue 19): the embedded profile, mutated, read by `recommend --profile FILE`,
`profile show FILE` and, as the cached default ($XDG_CACHE_HOME/bmc-tune/profile.json), by a plain
`recommend` and `profile show`. A mutation that breaks the profile (NaN, infinities, strings, nulls or
negatives where costs go, required keys gone, knots or curves out of order, lengths that disagree, bytes
that are not JSON) must be rejected by all four with exit 2 and one line; one that keeps it physically
meaningful may be accepted, and then every prediction must be finite and positive."""

from __future__ import annotations

import copy
import json
import math

import pytest
from fuzz_inputs import INPUTS, check_result, embedded_profile_dict, fresh_dir, invoke, report_counts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MODULE = "test_fuzz_profiles"
TEST = f"{MODULE}::test_mutated_profile"
BASE = embedded_profile_dict()
REQUIRED_TERMS = ("alloc", "copy", "write", "attn_exact", "attn_masked", "weights")
REQUIRED_SCALARS = ("attn_q_slope", "weights_row_slope", "step_s", "layer_s", "sd_iter_s")
NOT_NUMBER = ("str", "numstr", "none", "list", "dict", "bool")
NON_FINITE = ("nan", "inf", "-inf")
NEGATIVE = ("neg", "neg-tiny")
VALUES: dict[str, object] = {"neg": -1.0, "neg-tiny": -1e-12, "zero": 0.0, "nan": math.nan, "inf": math.inf,
                             "-inf": -math.inf, "huge": 1e300, "tiny": 1e-300, "int": 3, "str": "abc",
                             "numstr": "1e-6", "none": None, "list": [], "dict": {}, "bool": True}


class ProfileCase:
    """What was done to the profile, why it must be refused (None: it may be accepted), and the file's bytes
    (a plain class: hypothesis prints a dataclass field by field, and a file can be 200 kB)."""

    def __init__(self, mutations: tuple[str, ...], must_reject: str | None, content: bytes) -> None:
        self.mutations, self.must_reject, self.content = mutations, must_reject, content

    def __repr__(self) -> str:
        return f"ProfileCase(mutations={self.mutations!r}, must_reject={self.must_reject!r})"


def _leaves() -> list[tuple[str, ...]]:
    """Every number a mutation may change (curves: a few indices each) and the other scalars of the file."""
    out: list[tuple[str, ...]] = [("schema",), ("date",), ("source",)]
    for name, term in BASE["terms"].items():
        for key in ("c0", "slope", "knots"):
            out += [("terms", name, key, i) for i in range(len(term[key]))]
        if "r2" in term:
            out.append(("terms", name, "r2"))
        out += [("terms", name, "ci95", i, j) for i in range(len(term.get("ci95", []))) for j in (0, 1)]
    out += [("scalars", name) for name in BASE["scalars"]]
    for name, curve in BASE["curves"].items():
        n = len(curve["x"])
        out += [("curves", name, key, i) for key in ("x", "ratio") for i in sorted({0, 1, n // 2, n - 1})]
    out += [("host", k) for k in BASE["host"]]
    out += [("raw", k) for k in BASE["raw"]]
    out += [("raw", "cat", "median_abs_rel_residual"), ("raw", "meta", "notes"), ("raw", "alloc", "x"),
            ("raw", "alloc", "t"), ("raw", "overhead", "step_ci95"), ("raw", "attn_q", "ci95")]
    out += [(k,) for k in ("terms", "scalars", "curves", "host", "raw")]
    out += [("terms", name) for name in BASE["terms"]]
    out += [("curves", name) for name in BASE["curves"]]
    return out


def _deletable() -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [(k,) for k in BASE]
    for name, term in BASE["terms"].items():
        out.append(("terms", name))
        out += [("terms", name, k) for k in term]
    out += [("scalars", k) for k in BASE["scalars"]]
    for name in BASE["curves"]:
        out += [("curves", name), ("curves", name, "x"), ("curves", name, "ratio")]
    out += [("host", k) for k in BASE["host"]] + [("raw", k) for k in BASE["raw"]]
    return out


LEAVES = _leaves()
DELETABLE = _deletable()


def _get(d, path):
    for k in path:
        d = d[k]
    return d


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _set_verdict(d: dict, path: tuple, kind: str) -> str | None:
    """Why setting `path` to a value of `kind` makes the profile invalid (None: it may stay valid).
    Called after the value is set, so orderings are checked on the new list."""
    bad_value = kind in NOT_NUMBER or kind in NON_FINITE
    top = path[0]
    if top == "schema":
        return f"schema set to {kind}"  # only 1 is read
    if top in ("date", "source", "host", "raw"):
        return None  # descriptive: any value may be read, ignored or refused
    if top in ("terms", "scalars") and len(path) == 1:
        return f"{top} replaced by {kind}"
    if top == "curves" and len(path) == 1:
        return None if kind in ("dict", "none") else f"curves replaced by {kind}"
    if top == "terms" and len(path) == 2:
        return None if kind == "none" and path[1] not in REQUIRED_TERMS else f"term {path[1]} replaced by {kind}"
    if top == "curves" and len(path) == 2:
        return f"curve {path[1]} replaced by {kind}"
    if top == "terms":
        name, key = path[1], path[2]
        if key == "r2":
            return f"r2 set to {kind}" if kind in ("str", "numstr", "list", "dict", "bool") else None
        if key == "ci95":
            return f"ci95 set to {kind}" if kind in ("str", "numstr", "list", "dict", "bool") else None
        if bad_value:
            return f"{name}.{key} set to {kind}"
        if key == "slope" and kind in NEGATIVE:
            return f"{name}.slope negative"
        if key == "knots":
            knots = d["terms"][name]["knots"]
            if knots != sorted(knots):
                return f"{name}.knots out of order"
        return None
    if top == "scalars":
        if kind == "none" and path[1] not in REQUIRED_SCALARS:
            return None
        if bad_value:
            return f"scalar {path[1]} set to {kind}"
        if kind in NEGATIVE:
            return f"scalar {path[1]} negative"
        return None
    if top == "curves":
        name, key, i = path[1], path[2], path[3]
        if bad_value:
            return f"curve {name}.{key} set to {kind}"
        if key == "ratio":
            return f"curve {name} ratio <= 0" if _get(d, path) <= 0 else None
        x = d["curves"][name]["x"]
        if x[0] != 1 or any(b <= a for a, b in zip(x, x[1:])):
            return f"curve {name} x not ascending from 1 (x[{i}] = {kind})"
        return None
    raise AssertionError(path)  # pragma: no cover


def _delete_verdict(d: dict, path: tuple) -> str | None:
    top = path[0]
    if len(path) == 1:
        return f"{top} deleted" if top in ("schema", "terms", "scalars") else None
    if top == "terms":
        if len(path) == 2:
            return f"required term {path[1]} deleted" if path[1] in REQUIRED_TERMS else None
        key = path[2]
        if key in ("c0", "slope"):
            return f"{path[1]}.{key} deleted"
        if key == "knots":
            return f"{path[1]}.knots deleted (it has {len(d['terms'][path[1]]['c0'])} segments)" \
                if len(d["terms"][path[1]]["c0"]) > 1 else None
        return None
    if top == "scalars":
        return f"required scalar {path[1]} deleted" if path[1] in REQUIRED_SCALARS else None
    if top == "curves":
        return f"curve {path[1]}.{path[2]} deleted" if len(path) == 3 else None
    return None


def _unit(path: tuple) -> tuple:
    """What a mutation touches: later mutations keep off it, so none can undo another's damage."""
    return path[:2] if path[0] in ("terms", "scalars", "curves", "host", "raw") else path[:1]


def _overlaps(a: tuple, b: tuple) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _clashes(path: tuple, touched: list) -> bool:
    """A mutation of `path` would meet one already made (one lies inside the other)."""
    return any(_overlaps(path, t) for t in touched)


@st.composite
def mutated(draw) -> ProfileCase:
    d = copy.deepcopy(BASE)
    done: list[str] = []
    why: list[str] = []
    touched: list[tuple] = []
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["set", "set", "set", "delete", "reorder", "length", "extra"]))
        if op == "set":
            path = draw(st.sampled_from(LEAVES))
            kind = draw(st.sampled_from(list(VALUES)))
            if _clashes(_unit(path), touched):
                continue
            parent = _get(d, path[:-1])
            parent[path[-1]] = copy.deepcopy(VALUES[kind])
            done.append(f"set {'.'.join(map(str, path))} = {VALUES[kind]!r}")
            verdict = _set_verdict(d, path, kind)
        elif op == "delete":
            path = draw(st.sampled_from(DELETABLE))
            if _clashes(_unit(path), touched):
                continue
            verdict = _delete_verdict(d, path)
            del _get(d, path[:-1])[path[-1]]
            done.append(f"delete {'.'.join(path)}")
        elif op == "reorder":
            which = draw(st.sampled_from(["knots", "curve-x"]))
            if which == "knots":
                name = draw(st.sampled_from(["layer_fixed", "layer_row"]))
                path = ("terms", name)
                if _clashes(path, touched):
                    continue
                d["terms"][name]["knots"].reverse()
                verdict = f"{name}.knots reversed"
            else:
                name = draw(st.sampled_from(sorted(BASE["curves"])))
                path = ("curves", name)
                if _clashes(path, touched):
                    continue
                d["curves"][name]["x"].reverse()
                verdict = f"curve {name} x reversed"
            done.append(f"reverse {'.'.join(path)}")
        elif op == "length":
            which = draw(st.sampled_from(["c0+", "slope-", "knots+", "x-", "ratio-", "one-point"]))
            if which in ("c0+", "slope-", "knots+"):
                name = draw(st.sampled_from(sorted(BASE["terms"])))
                path = ("terms", name)
                if _clashes(path, touched):
                    continue
                t = d["terms"][name]
                if which == "c0+":
                    t["c0"].append(t["c0"][-1])
                elif which == "slope-" and t["slope"]:
                    t["slope"].pop()
                else:
                    t["knots"].append((t["knots"][-1] if t["knots"] else 1e6) * 2)
                verdict = f"{name}: {which} makes len(c0), len(slope), len(knots) + 1 disagree"
            else:
                name = draw(st.sampled_from(sorted(BASE["curves"])))
                path = ("curves", name)
                if _clashes(path, touched):
                    continue
                c = d["curves"][name]
                if which == "one-point":
                    c["x"], c["ratio"] = [1.0], [1.0]
                    verdict = f"curve {name} has one point"
                else:
                    c[which[:-1]].pop()
                    verdict = f"curve {name}: x and ratio of different lengths"
            done.append(f"{which} {'.'.join(path)}")
        else:
            where = draw(st.sampled_from([(), ("terms",), ("scalars",), ("curves",), ("host",)]))
            key = draw(st.sampled_from(["zzz_unknown", "weights_rows@-5", "Alloc", "ünï"]))
            if where == ("curves",) and key != "weights_rows@-5":
                key = "zzz_unknown"
            path = (*where, key)
            if _clashes(_unit(path), touched):
                continue
            _get(d, where)[key] = {"x": [1.0, 2.0], "ratio": [1.0, 1.5]} if where == ("curves",) else 1.0
            done.append(f"add {'.'.join(path)}")
            verdict = None
        touched.append(_unit(path))
        if verdict:
            why.append(verdict)
    return ProfileCase(tuple(done), "; ".join(why) or None, json.dumps(d, indent=1).encode())


@st.composite
def whole_file(draw) -> ProfileCase:
    text = json.dumps(BASE, indent=1)
    kind = draw(st.sampled_from(["non-utf8", "latin1-source", "truncated", "empty", "null", "list", "number",
                                 "string", "object", "deep", "bom", "nul"]))
    content = {
        "non-utf8": b"\xff\xfe\x00\x00garbage\x80\x81",
        "latin1-source": text.replace('"bmc-tune calibrate"', '"caf\u00e9"', 1).encode("latin-1"),
        "truncated": text.encode()[: draw(st.integers(1, len(text) - 1))],
        "empty": b"",
        "null": b"null",
        "list": b"[1, 2]",
        "number": b"1",
        "string": b'"profile"',
        "object": b"{}",
        "deep": b"[" * 100000 + b"]" * 100000,
        "bom": ("\ufeff" + text).encode(),
        "nul": b"\x00" * 64,
    }[kind]
    why = None if kind == "bom" else f"whole file: {kind}"
    return ProfileCase((f"file {kind}",), why, content)


@pytest.fixture(scope="module", autouse=True)
def _counts(request):
    yield
    report_counts(request.config, MODULE)


def run_profile_case(case: ProfileCase, show_args: list[str], test: str = TEST) -> None:
    """The four ways a profile is read, each under the contract; they must agree."""
    INPUTS[test] += 1
    folder = fresh_dir("profile")
    path = folder / "profile.json"
    path.write_bytes(case.content)
    cache = folder / "cache"
    (cache / "bmc-tune").mkdir(parents=True)
    (cache / "bmc-tune" / "profile.json").write_bytes(case.content)
    runs = {
        "recommend --profile": ["recommend", "--profile", str(path), "--seq", "64", "--json"],
        "profile show PATH": ["profile", "show", str(path), *show_args],
        "recommend (cached default)": ["recommend", "--seq", "64", "--json"],
        "profile show (cached default)": ["profile", "show", "--json"],
    }
    accepted: dict[str, bool] = {}
    for label, args in runs.items():
        res = invoke(test, args, cache=cache)
        accepted[label] = check_result(res, [*args, f"# {case.mutations}"], must_reject=case.must_reject,
                                       json_out="--json" in args, prediction=args[0] == "recommend")
    assert accepted["recommend --profile"] == accepted["recommend (cached default)"], \
        f"[inconsistent] {case}: --profile and the cached default disagree: {accepted}"
    assert accepted["profile show PATH"] == accepted["profile show (cached default)"], \
        f"[inconsistent] {case}: profile show PATH and the cached default disagree: {accepted}"
    assert accepted["profile show PATH"] or not accepted["recommend --profile"], \
        f"[inconsistent] {case}: recommend uses a profile that profile show refuses: {accepted}"


SETTINGS = settings(deadline=None, max_examples=100, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(case=st.one_of(mutated(), mutated(), mutated(), whole_file()),
       show=st.sampled_from([["--json"], ["--json"], ["--no-charts"], []]))
def test_mutated_profile(case: ProfileCase, show: list[str]):
    run_profile_case(case, show)


def test_unmutated_profile_is_accepted():
    """The control: the embedded profile itself, through the same four paths, is accepted."""
    case = ProfileCase(("none",), None, json.dumps(BASE).encode())
    run_profile_case(case, ["--json"], test=f"{MODULE}::test_unmutated_profile_is_accepted")
    res = invoke(f"{MODULE}::test_unmutated_profile_is_accepted", ["profile", "show", "--json"])
    assert res.exit_code == 0, res.output  # and the embedded default, with no cached profile at all
