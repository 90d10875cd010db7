"""`bmc-tune serve` (bmc_model/serve): answers equal the API's, a list answers in its order, every bad body is
a 4xx JSON naming the field and index (never a 5xx), the profile reloads atomically, and the CLI serves."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from typer.testing import CliRunner

import bmc_model
from bmc_model import load_profile, predict
from bmc_model.cli import app as cli_app
from bmc_model.serve import PROFILE_HEADER, create_app, fingerprint
from bmc_model.serve.schema import CHOOSE, MAX_BODY_BYTES, MAX_ITEMS, PREDICT

DEFAULT = Path(bmc_model.__file__).parent / "data" / "default_profile.json"
WORKLOAD = ("model", "seq", "prompt", "batch")  # the keys an answer adds to predict()'s to_dict()


@pytest.fixture
def profile_file(tmp_path: Path) -> Path:
    path = tmp_path / "profile.json"
    path.write_bytes(DEFAULT.read_bytes())
    return path


@pytest.fixture
def client(profile_file: Path):
    with TestClient(create_app(profile_path=profile_file, poll_interval=0.02)) as c:
        yield c


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory):
    """One app for the many examples of a property test (the tests that reload use their own)."""
    path = tmp_path_factory.mktemp("serve") / "profile.json"
    path.write_bytes(DEFAULT.read_bytes())
    with TestClient(create_app(profile_path=path, poll_interval=0)) as c:
        yield c


def plain(obj: object) -> object:
    """As JSON carries it (floats round-trip exactly; the server writes NaN as null, which to_dict never holds)."""
    return json.loads(json.dumps(obj))


def alone(profile_file: Path, **kw) -> dict:
    return plain(predict(**kw, profile=load_profile(profile_file)).to_dict())


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def wait_for(client: TestClient, key: str, value: int, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = client.get("/profile").json()
        if state[key] >= value or time.monotonic() > deadline:
            return state
        time.sleep(0.01)


# -- answers --------------------------------------------------------------------------------------------------

def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_profile_says_what_is_loaded(client, profile_file):
    r = client.get("/profile")
    state = r.json()
    assert r.status_code == 200
    assert state["path"] == str(profile_file) and state["source"] == str(profile_file)
    assert state["describe"] == load_profile(profile_file).describe()
    assert state["fingerprint"] == fingerprint(profile_file.read_bytes()) == r.headers[PROFILE_HEADER]
    assert state["mtime"] and state["loaded_at"]
    assert (state["reloads"], state["reload_failures"], state["last_error"]) == (0, 0, None)


SINGLES = [dict(model="llama-7b", seq=2048, r=64), dict(model="smollm2-135m", seq=4096, batch=4, policy="reserve"),
           dict(model="llama3-8b", seq=8192, prompt=1024, gamma=4, alpha=0.7),
           dict(seq=4096, gamma=3, alpha=[0.8, 0.6]), dict(seq=4096, max_new=3000, mean_new=500.0, r=128),
           dict(model="llama-7b", seq=2048, r=64, width="exact", dtype="bfloat16", runtime="hf")]


@pytest.mark.parametrize("kw", SINGLES, ids=lambda kw: ",".join(kw))
def test_a_single_predict_is_predicts_to_dict(client, profile_file, kw):
    r = client.post("/predict", json=kw)
    assert r.status_code == 200, r.text
    got = r.json()
    want = predict(**kw, profile=load_profile(profile_file))
    assert {k: v for k, v in got.items() if k not in WORKLOAD} == plain(want.to_dict())
    assert [got[k] for k in WORKLOAD] == [want.model, want.seq, want.prompt, want.batch]
    assert r.headers[PROFILE_HEADER] == fingerprint(profile_file.read_bytes())


def test_null_is_a_field_not_given(client, profile_file):
    r = client.post("/predict", json={"seq": 2048, "r": None, "dtype": None})
    assert r.status_code == 200 and r.json()["ms_per_token"] == alone(profile_file, seq=2048)["ms_per_token"]


def test_a_list_answers_in_order_each_as_predict_alone(client, profile_file):
    body = [dict(model="llama-7b", seq=2048, r=64), dict(model="smollm2-135m", seq=4096, policy="reserve"),
            dict(model="llama3-8b", seq=8192, gamma=4, alpha=0.7)]
    r = client.post("/predict", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert len(got) == 3
    for kw, answer in zip(body, got):
        want = alone(profile_file, **kw)
        assert answer["ms_per_token"] == pytest.approx(want["ms_per_token"], rel=1e-9)
        assert (answer["policy"], answer["r"], answer["gamma"]) == (want["policy"], want["r"], want["gamma"])


def test_a_list_of_interleaved_groups_goes_back_in_the_bodys_order(client, profile_file):
    # groups: (r, seq) x 2 models, (policy, seq), a per-position alpha priced by predict() alone
    body = [dict(model="llama-7b", seq=1024 * (i + 1), r=32 * (i + 1)) if i % 3 == 0 else
            dict(model="smollm2-135m", seq=512 * (i + 1), r=16) if i % 3 == 1 else
            dict(seq=600 * (i + 1), policy=["static", "reserve", "dynamic"][(i // 3) % 3])
            for i in range(12)]
    body.insert(5, dict(seq=4096, gamma=2, alpha=[0.9, 0.5]))
    r = client.post("/predict", json=body)
    assert r.status_code == 200, r.text
    for kw, answer in zip(body, r.json(), strict=True):
        want = alone(profile_file, **kw)
        assert answer["ms_per_token"] == pytest.approx(want["ms_per_token"], rel=1e-9)
        assert answer["seq"] == kw["seq"] and answer["policy"] == want["policy"]


def test_speculative_requests_of_one_group_keep_their_own_alpha(client, profile_file):
    # one group by keys, each its own rate or per-position list (lists of one length are the rows of one array)
    alphas = [0.6, 0.7, 0.8, [0.9, 0.5], [0.8, 0.6], [0.7, 0.6, 0.5], 0.65]
    body = [dict(model="llama-7b", seq=4096, gamma=3, alpha=a, r=64) for a in alphas]
    r = client.post("/predict", json=body)
    assert r.status_code == 200, r.text
    got = [a["ms_per_token"] for a in r.json()]
    assert len(set(got)) == len(alphas)  # every acceptance prices differently
    for kw, ms in zip(body, got, strict=True):
        assert ms == pytest.approx(alone(profile_file, **kw)["ms_per_token"], rel=1e-9)


def test_choose_takes_a_per_position_alpha(client, profile_file):
    kw = dict(model="llama-7b", seq=4096, gamma=3, alpha=[0.9, 0.5])
    want = plain(bmc_model.choose_many(**kw, profile=load_profile(profile_file)).to_dicts()[0])
    assert client.post("/choose", json=kw).json() == want
    pair = client.post("/choose", json=[kw, {**kw, "alpha": [0.3, 0.2]}])
    assert pair.status_code == 200 and pair.json()[0] == want


def test_new_tokens_is_prompt_plus_new_tokens(client, profile_file):
    sd = {"gamma": 2, "alpha": [0.8, 0.6]}
    body = [{"prompt": 1000, "new_tokens": 500, "r": 64}, {"prompt": 800, "new_tokens": 8, **sd}]
    r = client.post("/predict", json=body)
    assert r.status_code == 200, r.text
    for answer, want in zip(r.json(), [alone(profile_file, prompt=1000, seq=1500, r=64),
                                       alone(profile_file, prompt=800, seq=808, **sd)], strict=True):
        assert answer["ms_per_token"] == pytest.approx(want["ms_per_token"], rel=1e-9)
    one = client.post("/predict", json={"prompt": 800, "new_tokens": 8, **sd})
    assert one.json()["ms_per_token"] == pytest.approx(alone(profile_file, prompt=800, seq=808, **sd)["ms_per_token"],
                                                       rel=1e-9)


def test_an_empty_list_is_an_empty_answer(client):
    r = client.post("/predict", json=[])
    assert r.status_code == 200 and r.json() == []


def test_a_bad_request_in_a_list_is_named_by_its_index_in_the_body(client):
    # the bad one is the third of its group, which is priced after another group
    body = [dict(seq=2048, r=64), dict(seq=2048, policy="reserve"), dict(seq=4096, r=64), dict(seq=2048, policy="x"),
            dict(seq=-5, r=64)]
    r = client.post("/predict", json=body)
    err = r.json()
    assert r.status_code == 422 and err["index"] == 3 and err["field"] == "policy"
    assert err["error"].startswith("request 3: unknown policy 'x'")
    body[3] = dict(seq=2048, policy="static")
    err = client.post("/predict", json=body).json()
    assert err["index"] == 4 and err["field"] == "seq" and err["error"].startswith("request 4: seq must be")


def test_choose_single_and_list(client, profile_file):
    prof = load_profile(profile_file)
    kws = [dict(model="llama-7b", seq=2048), dict(model="smollm2-135m", seq=4096, batch=4, max_mem="1GiB"),
           dict(seq=4096, gamma=4, alpha=0.7)]
    one = client.post("/choose", json=kws[0])
    assert one.status_code == 200, one.text
    assert plain(one.json()) == plain(bmc_model.choose_many(model="llama-7b", seq=2048, profile=prof).to_dicts()[0])
    many = client.post("/choose", json=kws)
    assert many.status_code == 200, many.text
    for kw, answer in zip(kws, many.json(), strict=True):
        assert answer["ms_per_token"] == pytest.approx(client.post("/choose", json=kw).json()["ms_per_token"],
                                                       rel=1e-9)


def test_healthz_answers_while_a_slow_list_is_priced(client):
    # output-length distributions over 500k rows: predict() alone prices each, a few tenths of a second apiece
    body = [dict(model="smollm2-135m", prompt=1000, max_new=500_000, mean_new=100_000.0, r=1 + i) for i in range(4)]
    done: dict = {}

    def post() -> None:
        done["list"] = client.post("/predict", json=body)
        done["at"] = time.monotonic()

    slow = threading.Thread(target=post)
    slow.start()
    time.sleep(0.1)
    health = client.get("/healthz")
    health_at = time.monotonic()
    slow.join()
    assert health.status_code == 200 and done["list"].status_code == 200, done["list"].text
    assert health_at < done["at"]  # the loop answered while the list was still being priced


# -- refusals ---------------------------------------------------------------------------------------------------

def j(obj: object) -> bytes:
    return json.dumps(obj).encode()


MALFORMED = [  # (path, body, status, field, index)
    ("/predict", j({"seq": "abc"}), 400, "seq", None),
    ("/predict", j({"batch": True}), 400, "batch", None),
    ("/predict", j({"seq": True}), 400, "seq", None),
    ("/predict", j({"seq": 512.0}), 400, "seq", None),
    ("/predict", j({"gamma": 4, "alpha": "x"}), 400, "alpha", None),
    ("/predict", j({"gamma": 4, "alpha": [0.5, "x"]}), 400, "alpha", None),
    ("/predict", j({"policy": 5}), 400, "policy", None),
    ("/predict", j({"seq": {"a": 1}}), 400, "seq", None),
    ("/predict", j({"model": ["llama-7b"]}), 400, "model", None),
    ("/predict", j({"seq": [512, 1024]}), 400, "seq", None),  # a list body is the array form, not list values
    ("/predict", j({"sq": 2048}), 400, "sq", None),
    ("/predict", j({"profile": "/etc/passwd"}), 400, "profile", None),
    ("/predict", j({"config": "config.json"}), 400, "config", None),
    ("/predict", j({"lengths": "lengths.txt"}), 400, "lengths", None),
    ("/predict", j({"new_tokens": 100, "mean_new": 50.0}), 400, "mean_new", None),
    ("/predict", j({"seq": 2**63}), 400, "seq", None),
    ("/predict", b'{"seq": NaN}', 400, "seq", None),
    ("/predict", b'{"seq": Infinity}', 400, "seq", None),
    ("/predict", b'{"gamma": 4, "alpha": -Infinity}', 400, "alpha", None),
    ("/predict", b'{"seq": 1e400}', 400, "seq", None),
    ("/predict", b'{"seq": 1' + b"0" * 400 + b"}", 400, "seq", None),
    ("/predict", b'[{"seq": 512}, {"seq": 1' + b"0" * 5000 + b"}]", 400, "seq", 1),
    ("/predict", b"not json", 400, None, None),
    ("/predict", b'{"seq": 512', 400, None, None),
    ("/predict", b"\xff\xfe\xfa", 400, None, None),
    ("/predict", b"", 400, None, None),
    ("/predict", b"42", 400, None, None),
    ("/predict", b'"seq"', 400, None, None),
    ("/predict", b"null", 400, None, None),
    ("/predict", b"[" * 100_000, 400, None, None),
    ("/predict", j([{"seq": 512}, {"seq": "x"}]), 400, "seq", 1),
    ("/predict", j([{"seq": 512}, 7]), 400, None, 1),
    ("/predict", j([[{"seq": 512}]]), 400, None, 0),
    ("/predict", j({"seq": -5}), 422, "seq", None),
    ("/predict", j({"batch": 0}), 422, "batch", None),
    ("/predict", j({"seq": 2**62}), 422, "seq", None),
    ("/predict", j({"seq": 100, "prompt": 200}), 422, "prompt", None),
    ("/predict", j({"gamma": 4, "alpha": 1.5}), 422, "alpha", None),
    ("/predict", j({"gamma": 4, "alpha": -0.1}), 422, "alpha", None),
    ("/predict", j({"gamma": 4, "alpha": [0.8, 1.2]}), 422, "alpha", None),
    ("/predict", j({"gamma": 4}), 422, "gamma", None),  # alpha missing: "speculative decoding (gamma > 0) needs"
    ("/predict", j({"width": "exact"}), 422, "width", None),  # r or a policy missing
    ("/predict", j({"model": "nope"}), 422, "model", None),
    ("/predict", j({"model": "x" * 100_000}), 422, "model", None),
    ("/predict", j({"gamma": 4, "alpha": []}), 400, "alpha", None),
    ("/choose", j({"gamma": "auto"}), 400, "gamma", None),
    ("/choose", j({"widths": [1]}), 400, "widths", None),
    ("/choose", j({"gamma": "often"}), 400, "gamma", None),
    ("/choose", j({"policy": "reserve"}), 400, "policy", None),
    ("/choose", j({"max_mem": "lots"}), 422, "max_mem", None),
    ("/choose", j({"profile": "p.json"}), 400, "profile", None),
]


@pytest.mark.parametrize(("path", "body", "status", "field", "index"), MALFORMED,
                         ids=[f"{p}:{b[:40]!r}" for p, b, *_ in MALFORMED])
def test_every_malformed_body_is_a_4xx_json_naming_the_field(client, path, body, status, field, index):
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    err = r.json()
    assert (r.status_code, err["field"], err["index"]) == (status, field, index), err
    assert set(err) == {"error", "field", "index"} and isinstance(err["error"], str)
    assert "\n" not in err["error"] and len(err["error"]) <= 500 and "Traceback" not in err["error"]
    if index is not None:
        assert err["error"].startswith(f"request {index}: ")


def test_unknown_field_lists_the_known_ones(client):
    err = client.post("/predict", json={"sq": 1}).json()["error"]
    assert err.startswith("unknown field 'sq' (known: model, seq, prompt") and "profile" not in err


def test_a_body_over_the_limit_is_413_by_header_and_by_bytes_read(client):
    big = b"[" + b" " * MAX_BODY_BYTES + b"]"
    r = client.post("/predict", content=big)
    assert r.status_code == 413 and "limit" in r.json()["error"]

    def chunks():  # no Content-Length: the bytes read decide
        for _ in range(11):
            yield b" " * 2**20

    r = client.post("/predict", content=chunks())
    assert r.status_code == 413 and r.json()["index"] is None


def test_a_list_past_the_item_limit_is_refused(client):
    r = client.post("/predict", content=b"[" + b",".join([b"{}"] * (MAX_ITEMS + 1)) + b"]")
    assert r.status_code == 400 and "at most 100,000" in r.json()["error"]


def test_wrong_method_and_unknown_path_are_json(client):
    r = client.get("/predict")
    assert r.status_code == 405 and "POST" in r.json()["error"] and r.headers["allow"] == "POST"
    r = client.post("/healthz")
    assert r.status_code == 405 and r.json()["field"] is None
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json() == {"error": r.json()["error"], "field": None, "index": None}


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)
PLAUSIBLE = st.one_of(st.integers(-3, 5000), st.sampled_from([2**62, -(2**63), 0.5, 1.5, -0.1, "auto", "8G"]),
                      st.sampled_from(["llama-7b", "smollm2-135m", "reserve", "static", "exact", "hf", "bfloat16"]),
                      st.lists(st.floats(-0.5, 1.5), min_size=0, max_size=3), JSON)


def bodies(fields: list[str]) -> st.SearchStrategy[object]:
    one = st.dictionaries(st.sampled_from([*fields, "profile", "bogus"]), PLAUSIBLE, max_size=5)
    return st.one_of(one, st.lists(one, max_size=4), JSON)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_no_random_body_is_a_5xx(shared_client, data):
    ep = data.draw(st.sampled_from([PREDICT, CHOOSE]))
    body = data.draw(bodies(list(ep.fields)))
    r = shared_client.post(f"/{ep.name}", content=json.dumps(body).encode())
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert set(r.json()) == {"error", "field", "index"}


# -- profile reload ---------------------------------------------------------------------------------------------

def test_a_rewritten_profile_is_used_and_a_half_written_one_never(client, profile_file):
    first = client.post("/predict", json={"seq": 2048, "r": 64})
    fp1 = first.headers[PROFILE_HEADER]
    d = json.loads(profile_file.read_text())
    d["scalars"]["step_s"] *= 1000
    text = json.dumps(d, indent=1)
    write_atomically(profile_file, text)
    assert wait_for(client, "reloads", 1)["reloads"] == 1
    second = client.post("/predict", json={"seq": 2048, "r": 64})
    fp2 = second.headers[PROFILE_HEADER]
    assert fp2 == fingerprint(text.encode()) != fp1
    ms2 = second.json()["ms_per_token"]
    assert ms2 > first.json()["ms_per_token"] * 1.01
    assert ms2 == pytest.approx(alone(profile_file, seq=2048, r=64)["ms_per_token"], rel=1e-12)

    with open(profile_file, "w") as f:  # in place, cut short: what a reader sees mid-write
        f.write(text[: len(text) // 2])
    state = wait_for(client, "reload_failures", 1)
    assert state["reload_failures"] >= 1 and "corrupt JSON" in state["last_error"] and state["reloads"] == 1
    assert state["fingerprint"] == fp2
    third = client.post("/predict", json=[{"seq": 2048, "r": 64}, {"seq": 4096, "policy": "reserve"}])
    assert third.status_code == 200 and third.headers[PROFILE_HEADER] == fp2, third.text
    assert third.json()[0]["ms_per_token"] == ms2

    write_atomically(profile_file, DEFAULT.read_text())  # a good file again: back to the first answers
    assert wait_for(client, "reloads", 2)["reloads"] == 2
    again = client.post("/predict", json={"seq": 2048, "r": 64})
    assert again.headers[PROFILE_HEADER] == fp1 and again.json() == first.json()


# -- the command ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [(["--port", "0"], "--port must be in 1..65535"),
                                               (["--port", "70000"], "--port must be in 1..65535"),
                                               (["--profile", "/nonexistent/p.json"], "profile not found"),
                                               (["--log-level", "loud"], "--log-level must be one of")])
def test_bad_options_are_one_line_and_exit_2(args, message):
    r = CliRunner().invoke(cli_app, ["serve", *args])
    assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1


def test_a_bad_profile_file_at_start_is_one_line(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text('{"schema": 1, "terms"')
    r = CliRunner().invoke(cli_app, ["serve", "--profile", str(bad)])
    assert r.exit_code == 2 and "corrupt JSON" in r.output and "Traceback" not in r.output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_command_serves(profile_file):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", "from bmc_model.cli import main; main()", "serve", "--port",
                             str(port), "--profile", str(profile_file)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"seq": 2048, "r": 64}, timeout=5)
        assert r.status_code == 200 and r.json()["ms_per_token"] == alone(profile_file, seq=2048, r=64)["ms_per_token"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert err.startswith(f"serving on http://127.0.0.1:{port} (profile: {profile_file} ("), err


def test_the_server_imports_no_torch():
    code = "import sys, bmc_model.serve, bmc_model.cli.serve_cmd; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
