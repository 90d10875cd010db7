import json

import pytest
from typer.testing import CliRunner

from bmc_model.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_recommend_json_has_the_promised_keys():
    res = run("recommend", "--model", "llama-7b", "--seq", "2048", "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    for k in ("r", "width", "ms_per_token", "tokens_per_s", "r_closed_form", "memory_bytes", "reserved_bytes",
              "baselines", "profile"):
        assert k in d
    assert {"dynamic", "static"} <= set(d["baselines"])
    assert d["reserved_bytes"] >= d["memory_bytes"]
    assert d["ms_per_token"] <= min(b["ms_per_token"] for b in d["baselines"].values()) * 1.0051
    assert d["profile"]["source"]


def test_recommend_table_and_chart():
    res = run("recommend", "--model", "Meta-Llama/Llama-2-7b-hf", "--seq", "4096", "--layers", "2")
    assert res.exit_code == 0, res.output
    assert "Recommended" in res.stdout and "closed-form r*" in res.stdout and "r (log)" in res.stdout


def test_recommend_with_sd_and_memory_cap(tmp_path):
    res = run("recommend", "--seq", "2048", "--alpha", "0.8", "--gamma", "auto", "--draft-cost", "0.1", "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["gamma"] >= 0 and "dynamic-no-sd" in d["baselines"]
    acc = tmp_path / "acc.json"
    acc.write_text(json.dumps({"acceptance": {"per_position": [0.9, 0.8, 0.7]}}))
    res = run("recommend", "--seq", "2048", "--alpha", str(acc), "--gamma", "3", "--json")
    assert res.exit_code == 0, res.output
    res = run("recommend", "--seq", "2048", "--max-mem", "2060MiB", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["reserved_bytes"] <= 2060 * 2**20


def test_recommend_config_file(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"model_type": "mistral", "num_hidden_layers": 4, "num_attention_heads": 8,
                             "num_key_value_heads": 2, "hidden_size": 512, "intermediate_size": 1024,
                             "vocab_size": 1000}))
    res = run("recommend", "--config", str(p), "--seq", "1024", "--json")
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("args,needle", [
    (["--model", "lama-7b"], "did you mean"),
    (["--seq", "0"], "seq"),
    (["--seq", "-5"], "seq"),
    (["--seq", "100", "--prompt", "100"], "prompt"),
    (["--seq", "100", "--prompt", "200"], "prompt"),
    (["--batch", "0"], "batch"),
    (["--alpha", "1.0", "--gamma", "2"], "alpha"),
    (["--alpha", "-0.1", "--gamma", "2"], "alpha"),
    (["--alpha", "abc", "--gamma", "2"], "alpha"),
    (["--alpha", "0.5", "--gamma", "-1"], "gamma"),
    (["--alpha", "0.5", "--gamma", "x"], "gamma"),
    (["--gamma", "3"], "alpha"),
    (["--max-mem", "lots"], "size"),
    (["--max-mem", "1K"], "max-mem"),
    (["--dtype", "int3"], "dtype"),
    (["--draft", "llama-7b", "--alpha", "0.5", "--gamma", "2"], None),
    (["--draft", "smollm2-135m", "--alpha", "0.5", "--gamma", "2"], "vocabulary"),
    (["--layers", "0"], "layers"),
    (["--runtime", "vllm"], "unknown runtime"),
    (["--runtime", "hf"], None),
])
def test_bad_input_is_one_line_exit_2(args, needle):
    res = run("recommend", *args)
    if needle is None:
        assert res.exit_code == 0, res.output
        return
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in res.output
    assert needle in err


def test_config_errors(tmp_path):
    res = run("recommend", "--config", str(tmp_path / "missing.json"))
    assert res.exit_code == 2 and "not found" in res.stderr
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64,
                             "vocab_size": 10}))
    res = run("recommend", "--config", str(p))
    assert res.exit_code == 2 and "intermediate_size" in res.stderr


@pytest.mark.parametrize("content,needle", [
    ("{broken", "corrupt"),
    (json.dumps({"schema": 99}), "schema version"),
    (json.dumps({"schema": 1, "terms": {}, "scalars": {}}), "missing"),
    (json.dumps([1, 2]), "not a JSON object"),
])
def test_profile_errors(tmp_path, content, needle):
    p = tmp_path / "profile.json"
    p.write_text(content)
    res = run("recommend", "--profile", str(p))
    assert res.exit_code == 2 and needle in res.stderr, res.output
    res = run("recommend", "--profile", str(tmp_path / "none.json"))
    assert res.exit_code == 2 and "not found" in res.stderr
