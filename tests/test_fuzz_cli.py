"""Fuzz the CLI's argument lists (issue 19): every input is accepted with finite, positive predictions or
rejected with exit 2 and one line "error: ..." on stderr, never a traceback.

Argument lists are built from recommend's real options with values drawn from good and bad pools. A value
tagged with a reason must make the whole input be rejected (the oracle for silent acceptances); untagged
values may go either way (a combination may still be refused: a draft with another vocabulary, no r that
fits --max-mem, a host too small). The inputs tried per test are printed at the end of the module."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fuzz_inputs import INPUTS, check_result, files, invoke, report_counts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MODULE = "test_fuzz_cli"
BASE = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                print_blob=True)


def fuzz(n: int) -> settings:
    return settings(BASE, max_examples=n)

HUGE = ["9223372036854775807", "9223372036854775808", str(10**20), str(10**30)]
NEG_HUGE = ["-9223372036854775808", "-" + str(10**20)]
UNICODE = ["llamа-7b", "🦙", "ünïcødé", "名前", "llama\u200b-7b", "\u202ellama"]  # Cyrillic a, zero width, RTL


def pool(good: list[str], bad: dict[str, str]) -> list[tuple[str, str | None]]:
    """(value, reason it must be rejected or None)."""
    return [(v, None) for v in good] + list(bad.items())


def _bad(reason: str, values: list[str]) -> dict[str, str]:
    return {v: reason for v in values}


# 40000: past every preset's context, which is a note, not an error (the cache's cost does not depend on what
# the positions mean), unless the KV cache outgrows the host's RAM
SEQ_GOOD = ["2", "3", "16", "64", "100", "257", "1024", "2048", "40000"]
SEQ_BAD = {**_bad("seq < 2", ["1", "0", "-1", *NEG_HUGE]), **_bad("seq absurdly large", HUGE)}
BATCH = pool(["1", "2", "7", "32", "1000000"], {**_bad("batch < 1", ["0", "-1", *NEG_HUGE]),
                                                 **_bad("batch absurdly large", HUGE)})
LAYERS = pool(["1", "2", "4", "32", "1000000"], {**_bad("layers < 1", ["0", "-1", *NEG_HUGE]),
                                                  **_bad("layers absurdly large", HUGE)})
MODELS = pool(["llama-7b", "LLAMA-7B", "tinyllama-1.1b", "smollm2-135m", "qwen2.5-coder-0.5b",
               "meta-llama/Llama-2-7b-hf", "mistral-7b", " llama-7b "],
              {**_bad("empty model name", ["", "   "]),
               **_bad("unknown model", ["lama-7b", "no/such-model", "llama-7b-xl", "-1", *UNICODE])})
DRAFTS = pool(["tinyllama-1.1b", "smollm2-135m", "llama-7b", "qwen2.5-coder-0.5b"],
              {**_bad("empty draft name", [""]), **_bad("unknown draft", ["nope", "🦙"])})
DTYPES = pool(["float32", "bfloat16", "float16", "FLOAT16", "fp16"],
              {**_bad("empty dtype", [""]), **_bad("unknown dtype", ["int3", "float64", "ünï"])})
ALPHA_TEXT = pool(["0.8", "0", "0.5", "0.999", "0.9,0.8,0.7", "1e-400", " 0.8"],
                  {**_bad("alpha outside [0, 1)", ["1", "1.5", "-0.1", "nan", "inf", "-inf", "0.9,1.2", "1e400"]),
                   **_bad("alpha unreadable", ["abc", "", ",", "0.9,,0.8", "0.8;0.7", "🦙"])})
GAMMAS = pool(["0", "1", "3", "auto", "16", "64"],
              {**_bad("gamma negative", ["-1", *NEG_HUGE]), **_bad("gamma not an integer", ["x", "", "1.5", "🦙"]),
               **_bad("gamma absurdly large", HUGE)})
DRAFT_COSTS = pool(["0", "0.1", "0.5", "1", "9.9"],
                   _bad("draft cost outside [0, 10)", ["-1", "nan", "inf", "-inf", "10", "1e308", "-0.5"]))
TOLERANCES = pool(["0", "0.005", "0.1", "0.5", "0.999"],
                  _bad("tolerance outside [0, 1)", ["1", "2", "-0.1", "nan", "inf", "-inf", "1e308"]))
MAX_MEMS = pool(["2GiB", "2G", "8G", "512MiB", "1e9", "2060MiB", "1K", "1", "9e99", "1.5 GiB"],
                {**_bad("size not positive", ["-1G", "0", "-0", "0G"]),
                 **_bad("size unreadable", ["abc", "", "nan", "inf", "1e400", "2GG", "G", "🦙", "-inf"])})
RUNTIMES = pool(["bmc", "hf", "BMC", " hf"], {**_bad("unknown runtime", ["vllm", "🦙"]), **_bad("empty runtime", [""])})


@dataclass(frozen=True)
class Case:
    args: list[str]
    reasons: tuple[str, ...]  # why it has to be refused (empty: it may be accepted)
    json_out: bool

    @property
    def must_reject(self) -> str | None:
        return "; ".join(self.reasons) or None

    def __repr__(self) -> str:
        return f"Case(args={self.args!r}, must_reject={self.must_reject!r})"


def _paths() -> dict[str, list[tuple[str, str | None]]]:
    f = files()
    unreadable = {str(f.missing): "no such file", str(f.missing_json): "no such file",
                  str(f.directory): "a directory", str(f.non_utf8): "not UTF-8", str(f.non_utf8_plain): "not UTF-8",
                  str(f.truncated): "truncated JSON", str(f.empty): "empty file"}
    return {
        "config": pool([str(f.good_config)], {**unreadable, **{str(p): f"config {k}" for k, p in f.bad_configs.items()},
                                              str(f.profile_copy): "a profile, not a config", "": "empty path"}),
        "profile": pool([str(f.profile_copy)], {**unreadable, str(f.good_config): "a config, not a profile",
                                                "": "empty path"}),
        "alpha_file": pool([str(f.acc_json)], {**unreadable, **{str(p): f"acceptance file {k}"
                                                                for k, p in f.acc_bad.items()}}),
        "plot": pool([str(f.plot_ok)], {str(f.directory): "plot path is a directory",
                                        str(f.plot_no_dir): "plot folder does not exist",
                                        "": "empty plot path"}),
    }


def _num(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


@st.composite
def recommend_cases(draw) -> Case:
    """recommend with each option present or not, values of the type click accepts (ints for ints, floats
    for floats), good and bad; conflicting combinations are marked must-reject. Half the cases are clean:
    good values only, speculative decoding asked consistently, so that many are accepted and their numbers
    checked."""
    paths = _paths()
    clean = draw(st.booleans())
    args: list[str] = ["recommend"]
    reasons: list[str] = []

    def opt(name: str, choices: list[tuple[str, str | None]], p: float = 0.3) -> str | None:
        if p < 1 and draw(st.integers(0, 99)) < round(100 * (1 - p)):  # shrinks towards leaving it out
            return None
        value, why = draw(st.sampled_from([c for c in choices if not (clean and c[1])]))
        args.extend([name, value])
        if why:
            reasons.append(f"{name} {value!r}: {why}")
        return value

    seq_text = opt("--seq", pool(SEQ_GOOD, SEQ_BAD), 1)
    seq = _num(seq_text)
    if draw(st.booleans()) and seq is not None:
        kinds = ["1", "quarter", "seq-1"] + ([] if clean else ["seq", "seq+1", "0", "-1", "huge"])
        kind = draw(st.sampled_from(kinds))
        value = {"1": 1, "quarter": seq // 4, "seq-1": seq - 1, "seq": seq, "seq+1": seq + 1, "0": 0, "-1": -1,
                 "huge": 10**20}[kind]
        args.extend(["--prompt", str(value)])
        if not 1 <= value < seq:
            reasons.append(f"--prompt {value} with --seq {seq}: prompt must be in [1, seq)")
    model = opt("--model", MODELS, 0.3)
    config = None if clean and model is not None else opt("--config", paths["config"], 0.15)
    if model is not None and config is not None:
        reasons.append("--model with --config")
    opt("--layers", LAYERS, 0.2)
    opt("--batch", BATCH, 0.3)
    opt("--dtype", DTYPES, 0.2)
    if clean:
        alpha = gamma = draft = draft_cost = None
        if draw(st.booleans()):  # speculative decoding: alpha, gamma > 0 or auto, a drafter or none
            alpha = opt("--alpha", ALPHA_TEXT + paths["alpha_file"], 1)
            gamma = opt("--gamma", [g for g in GAMMAS if g[0] != "0"], 1)
            drafter = draw(st.sampled_from(["none", "draft", "cost"]))
            draft = opt("--draft", DRAFTS, 1) if drafter == "draft" else None
            draft_cost = opt("--draft-cost", DRAFT_COSTS, 1) if drafter == "cost" else None
    else:
        alpha = opt("--alpha", ALPHA_TEXT + paths["alpha_file"], 0.4)
        gamma = opt("--gamma", GAMMAS, 0.4)
        draft = opt("--draft", DRAFTS, 0.15)
        draft_cost = opt("--draft-cost", DRAFT_COSTS, 0.2)
    opt("--profile", paths["profile"], 0.15)
    opt("--max-mem", MAX_MEMS, 0.25)
    opt("--tolerance", TOLERANCES, 0.2)
    opt("--runtime", RUNTIMES, 0.2)
    if not clean:  # (no matplotlib here: a plot is refused, and a clean case should run)
        opt("--plot", paths["plot"], 0.05)
    g = _num(gamma) if gamma is not None else None
    sd_on = gamma == "auto" or (g is not None and g > 0)
    if alpha is not None and gamma is None:
        reasons.append("--alpha without --gamma")
    if sd_on and alpha is None:
        reasons.append("--gamma > 0 without --alpha")
    if draft is not None and (gamma is None or g == 0):
        reasons.append("--draft without speculative decoding (--gamma absent or 0)")
    if draft_cost is not None and (gamma is None or g == 0):
        reasons.append("--draft-cost without speculative decoding (--gamma absent or 0)")
    if draft is not None and draft_cost is not None:
        reasons.append("--draft with --draft-cost")
    json_out = draw(st.sampled_from([True, True, True, False]))
    if json_out:
        args.append("--json")
    return Case(args, tuple(reasons), json_out)


@pytest.fixture(scope="module", autouse=True)
def _counts(request):
    yield
    report_counts(request.config, MODULE)


@fuzz(400)
@given(case=recommend_cases())
def test_recommend_typed_arguments(case: Case):
    """Type-correct values: the model's own checks decide, and must-reject inputs are rejected."""
    INPUTS[f"{MODULE}::test_recommend_typed_arguments"] += 1
    res = invoke(f"{MODULE}::test_recommend_typed_arguments", case.args)
    check_result(res, case.args, must_reject=case.must_reject, json_out=case.json_out)


# Raw: any value for any option, wrong types included (click's own parsing must keep the contract too).
OPTIONS = ["--model", "--config", "--layers", "--seq", "--prompt", "--batch", "--dtype", "--alpha", "--gamma",
           "--draft", "--draft-cost", "--profile", "--max-mem", "--tolerance", "--runtime"]
JUNK = ["", " ", "1.5", "2.0", "1e3", "0x10", "1_000", "nan", "inf", "-inf", "NaN", "abc", "-", "--", "true",
        "٣", "１２", "2GiB", "-1G", "0.9,0.8", "9223372036854775807", str(10**20), "-1", "0", *UNICODE]
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@st.composite
def raw_cases(draw) -> Case:
    paths = _paths()
    every = [v for v, _ in (pool(SEQ_GOOD, SEQ_BAD) + BATCH + MODELS + DTYPES + ALPHA_TEXT + GAMMAS + DRAFT_COSTS
                            + TOLERANCES + MAX_MEMS + RUNTIMES + paths["config"] + paths["profile"])]
    value = st.one_of(st.sampled_from(JUNK), st.sampled_from(every), TEXT)
    args = ["recommend", "--seq", draw(st.sampled_from(["64", "16", "2"]))]
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.sampled_from(OPTIONS + ["--bogus", "-s", "--Seq", "--seq="]))
        if name.endswith("="):
            args.append(name + draw(value))
        else:
            args.extend([name, draw(value)])
    if draw(st.integers(0, 9)) == 0:
        args.append(draw(st.sampled_from(["extra", "-x", "--", "🦙", ""])))
    if draw(st.integers(0, 9)) == 0:
        args.insert(len(args) - 1, "--json")  # the flag where a value was expected, or before the last one
    json_out = draw(st.booleans())
    if json_out:
        args.append("--json")
    return Case(args, (), json_out)


@fuzz(200)
@given(case=raw_cases())
def test_recommend_raw_arguments(case: Case):
    """Any string for any option, unknown options, extra arguments: exit 0 and sane, or exit 2 in one line."""
    INPUTS[f"{MODULE}::test_recommend_raw_arguments"] += 1
    res = invoke(f"{MODULE}::test_recommend_raw_arguments", case.args)
    json_out = case.json_out and "--" not in case.args  # after "--" the flag is an extra argument
    check_result(res, case.args, json_out=json_out)


@st.composite
def models_cases(draw) -> Case:
    extra = draw(st.lists(st.sampled_from(["--json", "--bogus", "extra", "--json=1", "-j", "🦙"]), max_size=2))
    return Case(["models", *extra], (), extra == ["--json"])


@fuzz(12)
@given(case=models_cases())
def test_models_arguments(case: Case):
    INPUTS[f"{MODULE}::test_models_arguments"] += 1
    res = invoke(f"{MODULE}::test_models_arguments", case.args)
    check_result(res, case.args, json_out=case.json_out, prediction=False)


@st.composite
def profile_show_cases(draw) -> Case:
    paths = _paths()["profile"]
    args = ["profile", "show"]
    why = None
    if draw(st.booleans()):
        value, why = draw(st.sampled_from(paths + [("🦙.json", "no such file"), (".", "a directory")]))
        args.append(value)
    flags = draw(st.lists(st.sampled_from(["--json", "--no-charts", "--bogus"]), max_size=2, unique=True))
    args.extend(flags)
    if "--bogus" in flags:
        why = why or "unknown option"
    return Case(args, (why,) if why else (), "--json" in flags)


@fuzz(50)
@given(case=profile_show_cases())
def test_profile_show_arguments(case: Case):
    INPUTS[f"{MODULE}::test_profile_show_arguments"] += 1
    res = invoke(f"{MODULE}::test_profile_show_arguments", case.args)
    check_result(res, case.args, must_reject=case.must_reject, json_out=case.json_out, prediction=False)


# Inputs the issue names as bad: each must be refused (exit 2, one line), none silently accepted.
def _must_reject() -> list[tuple[list[str], str]]:
    f = files()
    return [
        (["--alpha", "1.5", "--gamma", "2"], "alpha >= 1"),
        (["--seq", "0"], "seq 0"),
        (["--seq", "1"], "seq 1"),
        (["--batch", "0"], "batch 0"),
        (["--seq", str(10**20)], "seq 10**20"),
        (["--seq", "9223372036854775807"], "seq 2**63-1"),
        (["--batch", str(10**20)], "batch 10**20"),
        (["--layers", str(10**20)], "layers 10**20"),
        (["--model", ""], "empty model"),
        (["--model", "no-such-model"], "unknown model"),
        (["--model", "llamа-7b"], "unknown model (Cyrillic a)"),
        (["--max-mem", "-1G"], "negative size"),
        (["--max-mem", "0"], "zero size"),
        (["--max-mem", "abc"], "unreadable size"),
        (["--tolerance", "2"], "tolerance 2"),
        (["--tolerance", "nan"], "tolerance NaN"),
        (["--gamma", "-1", "--alpha", "0.8"], "gamma -1"),
        (["--gamma", "1.5", "--alpha", "0.8"], "gamma 1.5"),
        (["--alpha", "0.8"], "--alpha without --gamma"),
        (["--model", "llama-7b", "--config", str(f.good_config)], "--model with --config"),
        (["--draft", "tinyllama-1.1b"], "--draft without --gamma"),
        (["--draft-cost", "0.1", "--gamma", "0", "--alpha", "0.8"], "--draft-cost with --gamma 0"),
        (["--draft-cost", "0.1"], "--draft-cost without --gamma"),
        (["--draft-cost", "nan", "--gamma", "2", "--alpha", "0.8"], "draft cost NaN"),
        (["--alpha", "nan", "--gamma", "2"], "alpha NaN"),
        (["--alpha", str(f.acc_bad["above-one"]), "--gamma", "2"], "acceptance file with 1.5"),
        (["--dtype", ""], "empty dtype"),
        (["--runtime", ""], "empty runtime"),
        (["--seq", "64", "--prompt", "64"], "prompt == seq"),
        (["--seq", "abc"], "seq not an integer"),
        (["--seq", "1.5"], "seq a float"),
        (["--batch", ""], "batch empty"),
        (["--config", str(f.directory)], "config is a directory"),
        (["--config", str(f.non_utf8)], "config not UTF-8"),
        (["--config", str(f.bad_configs["unknown-type"])], "unknown model_type"),
        (["--config", str(f.bad_configs["head-dim-0"])], "head_dim 0"),
        (["--profile", str(f.directory)], "profile is a directory"),
        (["--profile", str(f.non_utf8)], "profile not UTF-8"),
        (["--plot", str(f.plot_no_dir)], "plot folder missing"),
        (["--plot", str(f.directory)], "plot path is a directory"),
        (["--bogus"], "unknown option"),
    ]


MUST_REJECT = _must_reject()


@pytest.mark.parametrize("extra,why", MUST_REJECT, ids=[why for _, why in MUST_REJECT])
def test_silent_acceptance(extra: list[str], why: str):
    args = ["recommend", *(["--seq", "64"] if "--seq" not in extra else []), *extra, "--json"]
    INPUTS[f"{MODULE}::test_silent_acceptance"] += 1
    res = invoke(f"{MODULE}::test_silent_acceptance", args)
    check_result(res, args, must_reject=why)
    assert res.exit_code == 2, f"[silent-accept] {args}: exit {res.exit_code}, must be rejected ({why})"
