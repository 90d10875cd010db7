"""The CLI reads well: tables fit 80 columns without cutting a cell short, labels say what they are once,
speedups never round a faster baseline to 1, flags are plain flags, --json is strict JSON for every command
that has it, host warnings reach stderr, and a bad --plot destination is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bmc_model.cli import app, guarded
from bmc_model.cli.chart import line_chart
from bmc_model.cli.layout import speedup
from bmc_model.cli.options import parse_bytes, to_json
from bmc_model.cli.recommend_view import row_label
from bmc_model.core.decide import recommend
from bmc_model.core.errors import BMCError
from bmc_model.core.host import fingerprint
from bmc_model.core.profile import embedded_profile, write_profile
from bmc_model.core.specs import presets

runner = CliRunner()
NO_CACHE = {"XDG_CACHE_HOME": "/nonexistent"}


def run(args: list[str], columns: int = 80):
    return runner.invoke(app, args, env={"COLUMNS": str(columns), **NO_CACHE})


COMMANDS = [["models"], ["recommend", "--seq", "2048"],
            ["recommend", "--model", "smollm2-135m", "--seq", "1024", "--alpha", "0.8", "--gamma", "auto"],
            ["recommend", "--model", "tinyllama-1.1b", "--seq", "4096", "--batch", "8", "--max-mem", "1500MiB"],
            ["profile", "show"], ["recommend", "--help"], ["models", "--help"]]


@pytest.mark.parametrize("columns", [80, 200])
@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_no_line_exceeds_the_terminal_and_no_cell_is_cut_short(args, columns):
    res = run(args, columns)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines and max(len(line) for line in lines) <= columns, max(lines, key=len)
    assert "…" not in res.stdout  # rich's mark for a cell cut short


def test_the_compact_models_table_keeps_every_name_and_hf_id_whole():
    narrow, wide = run(["models"], 80).stdout, run(["models"], 200).stdout
    for s in presets().values():
        assert s.name in narrow and s.hf_id in narrow
        assert f"{s.layers * s.kv_row_elems() * 2:,}" in narrow
        assert s.hf_id in wide
    assert "│" not in narrow and "│" in wide  # the compact form drops the grid for the space it takes


def test_models_json_lists_every_preset_with_its_geometry():
    res = run(["models", "--json"])
    assert res.exit_code == 0, res.output
    got = {d["name"]: d for d in json.loads(res.stdout)}
    assert set(got) == {s.name for s in presets().values()}
    s = presets()["llama-7b"] if "llama-7b" in presets() else next(iter(presets().values()))
    assert got[s.name]["kv_bytes_per_token_fp16"] == s.layers * s.kv_row_elems() * 2
    assert got[s.name]["hf_id"] == s.hf_id and got[s.name]["layers"] == s.layers


@pytest.mark.parametrize("ratio,text", [(1.0, "1.000x"), (1.19, "1.190x"), (0.995, "0.995x"), (0.9996, "0.9996x"),
                                        (1.0004, "1.0004x"), (1 - 1e-7, "0.9999999x"), (2.92, "2.920x")])
def test_speedups_never_read_1_when_they_are_not(ratio, text):
    assert speedup(ratio) == text


def test_a_faster_baseline_is_shown_below_1_in_the_table():
    # Gemma-3's sliding layers hold a window plus r rows: a small r is leaner, within the tolerance of reserve
    args = ["recommend", "--model", "gemma3-270m", "--seq", "1024"]
    d = json.loads(run([*args, "--json"]).stdout)
    faster = {k: b["speedup_of_recommended"] for k, b in d["baselines"].items() if b["speedup_of_recommended"] < 1}
    assert faster, "this case has a baseline within the tolerance but faster; pick another if the model changed"
    out = run(args).stdout
    for ratio in faster.values():
        assert speedup(ratio) in out and not speedup(ratio).startswith("1.")


def test_labels_say_what_they_are_once():
    rec = recommend(model="smollm2-135m", seq=1024, alpha=0.8, gamma="auto")
    b = rec.baselines
    assert row_label("static", b["static"], sd=True) == "static padded"
    assert row_label("geometric", b["geometric"], sd=True).startswith("geometric x")
    assert row_label("bmc-padded", b["bmc-padded"], sd=True).split()[1].startswith("r=")
    assert row_label("dynamic-no-sd", b["dynamic-no-sd"], sd=True) == "dynamic-no-sd r=1 exact"
    assert row_label("best", rec.no_sd, sd=True).endswith("no SD")
    out = run(["recommend", "--model", "smollm2-135m", "--seq", "1024", "--alpha", "0.8", "--gamma", "auto"]).stdout
    assert "static padded" in out and "static (static" not in out and "(r=" not in out


@pytest.mark.parametrize("args", [[], ["recommend"], ["models"], ["profile", "show"], ["calibrate"], ["validate"]],
                         ids=lambda a: " ".join(a) or "root")
def test_flags_are_plain_flags_in_the_help(args):
    res = run([*args, "--help"], 200)
    assert res.exit_code == 0, res.output
    assert "<bool>" not in res.stdout
    flags = [line for line in res.stdout.splitlines() if "--json " in line or "--help " in line]
    assert flags and all("<" not in line for line in flags)


def test_json_takes_no_value_and_max_mem_says_what_its_units_are():
    assert run(["recommend", "--json", "true"]).exit_code == 2  # a flag: "true" is an extra argument
    help_text = " ".join(run(["recommend", "--help"], 200).stdout.split())
    assert "10^9" in help_text and "2^30" in help_text and "Ki/Mi/Gi/Ti" in help_text
    assert parse_bytes("1G") == 1e9 and parse_bytes("1GiB") == 2**30
    with pytest.raises(BMCError, match="too large"):
        parse_bytes("1e400")


def test_strict_json_turns_non_finite_numbers_into_null():
    import numpy as np

    text = to_json({"a": float("nan"), "b": [float("inf"), 1.5], "c": np.float64(-np.inf), "d": np.int64(3),
                    "p": Path("/x")})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {"a": None, "b": [None, 1.5], "c": None,
                                                                          "d": 3, "p": "/x"}


def test_profile_show_json_is_strict_and_carries_the_warning(tmp_path):
    d = embedded_profile().to_dict()
    d["terms"]["copy"]["ci95"][0] = [float("-inf"), float("inf")]  # a singular fit's interval: allowed, shown
    path = tmp_path / "p.json"
    path.write_text(json.dumps(d))
    res = run(["profile", "show", str(path), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"{c} in --json output"))
    assert got["terms"]["copy"]["ci95"][0] == [None, None] and got["source"] == str(path)
    assert "warning" in got


def _foreign_profile(tmp_path: Path, **host) -> Path:
    prof = embedded_profile()
    here = fingerprint()
    d = prof.to_dict()
    d["host"] = {**d["host"], "cpu": here["cpu"], "torch": here["torch"], **host}
    path = tmp_path / "foreign.json"
    path.write_text(json.dumps(d))
    return path


def test_a_profile_measured_with_more_threads_warns_on_stderr_in_every_mode(tmp_path):
    many = fingerprint()["threads"] + 62
    path = _foreign_profile(tmp_path, threads=many, cores=many)
    want = f"threads: {many} there, {fingerprint()['threads']} here"
    for args in (["recommend", "--profile", str(path), "--json"], ["recommend", "--profile", str(path)],
                 ["profile", "show", str(path), "--no-charts"], ["profile", "show", str(path), "--json"]):
        res = run(args)
        assert res.exit_code == 0, res.output
        err = res.stderr.splitlines()
        assert len(err) == 1 and err[0].startswith("warning: profile was measured on another host"), res.stderr
        assert want in err[0] and "run `bmc-tune calibrate`" in err[0]
        assert "warning:" not in res.stdout  # once, on stderr; JSON stays parseable
        if "--json" in args:
            d = json.loads(res.stdout)
            assert want in (d["profile"]["warning"] if "recommend" in args else d["warning"])


def test_a_gpu_profile_on_a_host_without_one_warns(tmp_path):
    from bmc_model.cli.options import _this_device

    if _this_device("cuda") == "cuda":
        pytest.skip("this host has an NVIDIA GPU: a cuda profile is for it")
    path = _foreign_profile(tmp_path, device="cuda")
    res = run(["recommend", "--profile", str(path), "--json"])
    assert res.exit_code == 0, res.output
    assert "device: cuda there, cpu here" in res.stderr
    same = _foreign_profile(tmp_path, device="cpu", threads=fingerprint()["threads"], cores=fingerprint()["cores"])
    assert run(["recommend", "--profile", str(same), "--json"]).stderr == ""  # this host's own: no warning


def _plot_error(target: str, *words: str) -> None:
    res = run(["recommend", "--layers", "2", "--seq", "256", "--plot", target])
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.startswith("error: --plot") and "\n" not in err and "Traceback" not in res.output
    assert res.stdout == ""  # checked before the work: nothing printed
    for w in words:
        assert w in err, err


def test_bad_plot_destinations_are_one_line_before_any_work(tmp_path):
    _plot_error(str(tmp_path), "is a folder", str(tmp_path / "recommend.png"))
    _plot_error(str(tmp_path / "missing" / "r.png"), "not an existing folder")
    _plot_error(str(tmp_path / "r.txt"), ".png")
    _plot_error(str(tmp_path / "r"), ".png")
    _plot_error("/proc/bmc-tune-test.png")  # unwritable (or, without matplotlib, that error first)
    assert not list(tmp_path.iterdir())  # in particular no "<folder>.png" beside it


def test_a_good_plot_destination_is_written_or_says_what_it_needs(tmp_path):
    target = tmp_path / "r.svg"
    res = run(["recommend", "--layers", "2", "--seq", "256", "--plot", str(target)])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert res.exit_code == 2 and "needs matplotlib" in res.stderr and not target.exists()
        return
    assert res.exit_code == 0 and target.stat().st_size > 0 and f"chart written to {target}" in res.stdout


def test_the_chart_keeps_the_recommended_point_on_the_grid():
    # the curves are samples: the recommended point can lie below every sampled one, or be NaN
    series = {"exact": ([1.0, 10.0, 100.0], [5.0, 4.0, 4.5])}
    out = line_chart(series, width=30, height=8, highlight=(30.0, 3.0))
    assert "R" in out and max(len(line) for line in out.splitlines()) <= 11 + 63
    assert "R recommended" not in line_chart(series, width=30, height=8, highlight=(30.0, float("nan")))
    assert line_chart({"x": ([1.0], [float("inf")])}) == "(nothing to plot)"


def test_an_error_message_is_always_one_line(capsys):
    import typer

    @guarded
    def cmd() -> None:
        raise BMCError("profile /tmp/a\nb.json: bad")

    with pytest.raises(typer.Exit) as ex:
        cmd()
    assert ex.value.exit_code == 2
    assert capsys.readouterr().err == "error: profile /tmp/a b.json: bad\n"


def test_profile_files_with_markup_characters_in_their_names_print(tmp_path):
    path = write_profile(embedded_profile(), tmp_path / "[bold]p.json")
    res = run(["recommend", "--profile", str(path), "--seq", "512"])
    assert res.exit_code == 0, res.output
    assert "[bold]p.json" in res.stdout


@pytest.mark.parametrize("args,words", [(["recommend", "--seq", "abc"], ["'--seq'", "recommend --help"]),
                                        (["recommend", "--bogus"], ["--bogus"]),
                                        (["recommend", "--json", "true"], ["(true)"]),
                                        (["profile", "show", "a", "b"], ["(b)"]),
                                        (["nosuchcmd"], ["nosuchcmd"])])
def test_usage_errors_are_one_line_too(args, words):
    res = run(args)
    assert res.exit_code == 2 and res.stdout == "", res.output
    err = res.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), res.stderr
    for w in words:
        assert w in err[0]


def test_no_arguments_still_prints_the_help():
    for args in ([], ["profile"]):
        res = run(args)
        assert res.exit_code == 2 and "Usage" in res.stdout and res.stderr == ""


def test_a_gpu_is_seen_from_the_driver_list_or_the_device_files(monkeypatch):
    import bmc_model.cli.options as options

    monkeypatch.setattr(options.os.path, "isdir", lambda p: False)
    monkeypatch.setattr(options.glob, "glob", lambda pattern: [])
    assert options._this_device("cuda") == "cpu" and options._this_device("cpu") == "cpu"
    monkeypatch.setattr(options.glob, "glob", lambda pattern: ["/dev/nvidia0"])
    assert options._this_device("cuda") == "cuda" and options._this_device("cpu") == "cpu"
