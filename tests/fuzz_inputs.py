"""Shared pieces of the fuzz suite (tests/test_fuzz_*.py): running the CLI in an isolated cache, the one
contract every input must meet, the files the strategies point at, and the count of inputs tried.

The contract (issue 19): an input is either accepted (exit 0; with --json, stdout is strict JSON whose
ms_per_token and tokens_per_s are finite and > 0 and whose memory fields are finite and >= 0) or rejected
(exit 2, stderr exactly one non-empty line "error: ..."); never a traceback, never another exit code.
Each failed check raises an AssertionError whose message starts with its class in brackets, from its own
line, so hypothesis reports each class as a distinct bug."""

from __future__ import annotations

import atexit
import functools
import json
import math
import os
import re
import shutil
import signal
import tempfile
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from typer.testing import CliRunner

import bmc_model
from bmc_model.cli import app

RUNNER = CliRunner()  # click 8.2+: result.stderr is always separate, result.output interleaves both
INPUTS: Counter[str] = Counter()  # test name -> inputs (hypothesis examples or cases) tried
RUNS: Counter[str] = Counter()  # test name -> CLI invocations
ACCEPTED: Counter[str] = Counter()  # test name -> CLI runs that exited 0
POSITIVE = ("ms_per_token", "tokens_per_s", "speedup_of_recommended", "expected_tokens_per_pass")
NON_NEGATIVE = ("memory_bytes", "reserved_bytes", "weights_bytes")
_NONFINITE_WORD = re.compile(r"(?<![\w.])[-+]?(nan|inf|infinity)(?![\w])", re.IGNORECASE)

EMBEDDED_PROFILE = Path(bmc_model.__file__).resolve().parent / "data" / "default_profile.json"


def embedded_profile_dict() -> dict:
    return json.loads(EMBEDDED_PROFILE.read_text())


@functools.cache
def scratch() -> Path:
    """One temporary folder for the whole run (hypothesis rejects function-scoped fixtures in @given)."""
    root = Path(tempfile.mkdtemp(prefix="bmc-fuzz-"))
    atexit.register(shutil.rmtree, root, True)
    return root


_serial = iter(range(10**12))


def fresh_dir(kind: str) -> Path:
    """A new empty folder: each example gets its own paths, so no mtime- or path-keyed cache in bmc_model
    can hand one example's parsed file to the next."""
    d = scratch() / f"{kind}-{next(_serial)}"
    d.mkdir(parents=True)
    return d


@dataclass(frozen=True)
class Files:
    """Paths the CLI strategies draw: good files, and every kind of bad one."""

    root: Path
    good_config: Path  # a small Mistral config.json
    acc_json: Path  # validate --sd style acceptance file
    acc_bad: dict[str, Path]  # acceptance files with bad contents
    profile_copy: Path  # the embedded profile, copied
    directory: Path
    missing: Path  # no such file (no suffix)
    missing_json: Path  # no such file.json
    non_utf8: Path  # bytes that are not UTF-8, suffix .json
    non_utf8_plain: Path  # the same without a suffix
    truncated: Path  # half a JSON object
    empty: Path
    plot_ok: Path  # a PNG path in a folder that exists
    plot_no_dir: Path  # a PNG path in a folder that does not
    bad_configs: dict[str, Path] = field(default_factory=dict)


@functools.cache
def files() -> Files:
    root = scratch() / "files"
    (root / "dir").mkdir(parents=True)
    good = root / "mistral-small" / "config.json"
    good.parent.mkdir()
    good.write_text(json.dumps({
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 512,
        "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2,
        "vocab_size": 32000, "max_position_embeddings": 32768, "sliding_window": 4096, "torch_dtype": "bfloat16"}))
    acc = root / "acc.json"
    acc.write_text(json.dumps({"acceptance": {"per_position": [0.9, 0.8, 0.7]}}))
    acc_bad = {}
    for name, content in {"above-one": "[0.9, 1.5]", "nan": "[NaN]", "empty-list": "[]", "string": '"x"',
                          "nested": '{"acceptance": {"per_position": "high"}}', "null": "null",
                          "bool": "[true]"}.items():
        p = root / f"acc-{name}.json"
        p.write_text(content)
        acc_bad[name] = p
    prof = root / "profile-copy.json"
    prof.write_text(EMBEDDED_PROFILE.read_text())
    non_utf8 = root / "latin1.json"
    non_utf8.write_bytes(b'{"model_type": "llama", "name": "caf\xe9\xff\xfe"}')
    non_utf8_plain = root / "latin1"
    non_utf8_plain.write_bytes(b"\xff\xfe\x00bad\xe9")
    truncated = root / "truncated.json"
    truncated.write_text(json.dumps({"model_type": "llama", "hidden_size": 512})[:17])
    empty = root / "empty.json"
    empty.write_text("")
    bad_configs = {}
    for name, cfg in {"unknown-type": {"model_type": "mamba2", "hidden_size": 512, "num_hidden_layers": 4,
                                       "num_attention_heads": 8, "intermediate_size": 1024, "vocab_size": 1000},
                      "list": [1, 2], "head-dim-0": {"model_type": "llama", "hidden_size": 512,
                                                     "num_hidden_layers": 4, "num_attention_heads": 8,
                                                     "intermediate_size": 1024, "vocab_size": 1000,
                                                     "head_dim": 0}}.items():
        p = root / f"config-{name}" / "config.json"
        p.parent.mkdir()
        p.write_text(json.dumps(cfg))
        bad_configs[name] = p
    return Files(root=root, good_config=good, acc_json=acc, acc_bad=acc_bad, profile_copy=prof,
                 directory=root / "dir", missing=root / "no-such-file", missing_json=root / "no-such.json",
                 non_utf8=non_utf8, non_utf8_plain=non_utf8_plain, truncated=truncated, empty=empty,
                 plot_ok=root / "chart.png", plot_no_dir=root / "no-such-dir" / "chart.png",
                 bad_configs=bad_configs)


def isolated_env(cache: Path | None = None) -> dict[str, str]:
    """XDG_CACHE_HOME in a folder of our own (an empty one unless `cache` is given), so the calibrated
    profile of whoever runs the tests is never read; 100 columns, as an ordinary terminal."""
    cache = cache or (scratch() / "empty-cache")
    cache.mkdir(parents=True, exist_ok=True)
    return {"XDG_CACHE_HOME": str(cache), "COLUMNS": "100", "NO_COLOR": "1"}


RUN_LIMIT_S = 5  # one CLI run takes well under a second; past this it is a hang (e.g. a loop over 10**20 layers)


class _Hang(BaseException):  # not an Exception: CliRunner must not catch it as the command's own error
    pass


def _on_alarm(signum, frame):
    raise _Hang


def invoke(test: str, args: list[str], cache: Path | None = None):
    """Run `bmc-tune ARGS` in-process; a run past RUN_LIMIT_S fails as [hang]."""
    RUNS[test] += 1
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(RUN_LIMIT_S)
    try:
        res = RUNNER.invoke(app, args, env=isolated_env(cache))
        ACCEPTED[test] += res.exit_code == 0
        return res
    except _Hang:
        raise AssertionError(f"[hang] bmc-tune {' '.join(args)}: still running after {RUN_LIMIT_S} s") from None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _no_constants(name: str) -> float:
    raise ValueError(f"non-standard JSON constant {name}")


def strict_json(text: str) -> object:
    """json.loads that refuses NaN, Infinity and -Infinity (which Python's json writes and reads by default)."""
    return json.loads(text, parse_constant=_no_constants)


def _walk(obj: object, path: str = "$"):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, obj


def check_prediction_json(d: object, where: str) -> None:
    """Every ms_per_token / tokens_per_s (and speedup, E) finite > 0, memory finite >= 0, breakdown finite.
    A width mode with no feasible r has ms_per_token null under per_width; nowhere else."""
    assert isinstance(d, dict), f"[bad-json] {where}: top level is {type(d).__name__}, not an object"
    assert "ms_per_token" in d and "tokens_per_s" in d, f"[bad-json] {where}: no ms_per_token/tokens_per_s"
    for path, v in _walk(d):
        key = path.rsplit(".", 1)[-1]
        if key in POSITIVE:
            if v is None and ".per_width." in path:
                continue
            assert isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0, \
                f"[nonpositive-prediction] {where}: {path} = {v!r}"
        elif key in NON_NEGATIVE:
            assert isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0, \
                f"[negative-memory] {where}: {path} = {v!r}"
        elif ".breakdown_ms." in path:
            assert isinstance(v, (int, float)) and math.isfinite(v), f"[nonfinite-breakdown] {where}: {path} = {v!r}"


def describe(res) -> str:
    out = f"exit {res.exit_code}\n--- stdout (tail) ---\n{res.stdout[-1500:]}\n--- stderr ---\n{res.stderr[-1500:]}"
    if res.exc_info is not None and not isinstance(res.exception, SystemExit):
        out += "\n--- exception ---\n" + "".join(traceback.format_exception(*res.exc_info))[-3000:]
    return out


def check_result(res, args: list[str], *, must_reject: str | None = None, json_out: bool | None = None,
                 prediction: bool = True) -> bool:
    """The issue-19 contract for one CLI run; True when it was accepted (exit 0).

    must_reject: why this input has to be refused (None: either outcome may be right).
    json_out: whether stdout must be JSON on success (default: '--json' in args); prediction: whether that
    JSON is a recommendation (check its numbers) rather than e.g. a profile."""
    where = f"bmc-tune {' '.join(repr(a) if (not a or ' ' in a) else a for a in args)}"
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"[traceback] {where}: {type(res.exception).__name__}: {res.exception}\n{describe(res)}")
    assert "Traceback" not in res.output, f"[traceback-text] {where}\n{describe(res)}"
    assert res.exit_code in (0, 2), f"[exit-code] {where}: exit code {res.exit_code}\n{describe(res)}"
    if res.exit_code == 2:
        lines = res.stderr.splitlines()
        assert len(lines) == 1, f"[multiline-error] {where}: {len(lines)} stderr lines\n{describe(res)}"
        assert lines[0].startswith("error: ") and lines[0][len("error: "):].strip(), \
            f"[error-format] {where}: stderr {lines[0]!r}\n{describe(res)}"
        return False
    assert must_reject is None, f"[silent-accept] {where}: accepted, but must be rejected ({must_reject})\n" \
                                f"{describe(res)}"
    if json_out is None:
        json_out = "--json" in args
    if json_out:
        try:
            d = strict_json(res.stdout)
        except ValueError as err:
            raise AssertionError(f"[bad-json] {where}: stdout is not strict JSON ({err})\n{describe(res)}") from None
        if prediction:
            check_prediction_json(d, where)
    elif prediction:
        assert res.stdout.strip(), f"[empty-output] {where}\n{describe(res)}"
        m = _NONFINITE_WORD.search(res.stdout)
        assert m is None, f"[nonfinite-text] {where}: {m.group(0)!r} in the table\n{describe(res)}"
    return True


def report_counts(config, module: str) -> None:
    """Write 'how many inputs each test tried' to the terminal (shown without -s) at module teardown."""
    names = sorted(k for k in INPUTS if k.startswith(module + "::"))
    if not names:
        return
    lines = [f"fuzz: {k.split('::', 1)[1]}: {INPUTS[k]} inputs, {RUNS[k]} CLI runs ({ACCEPTED[k]} accepted, "
             f"{RUNS[k] - ACCEPTED[k]} refused)" for k in names]
    lines.append(f"fuzz: {module}: {sum(INPUTS[k] for k in names)} inputs in all")
    tr = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")
    if tr is not None and capman is not None:
        with capman.global_and_fixture_disabled():  # past the capture, so a passing run shows it too
            tr.write_line("")
            for line in lines:
                tr.write_line(line)
    else:  # pragma: no cover - plain python runs
        print("\n".join(lines))
    path = os.environ.get("BMC_FUZZ_COUNTS")  # optional: a JSON file the counts are merged into
    if path:
        p = Path(path)
        old = json.loads(p.read_text()) if p.exists() else {}
        old.update({k: {"inputs": INPUTS[k], "runs": RUNS[k], "accepted": ACCEPTED[k]} for k in names})
        p.write_text(json.dumps(old, indent=1))
