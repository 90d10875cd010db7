"""Load on `bmc-tune serve`: throughput, latency, resident memory and profile reloads under concurrent clients.

    python benchmarks/serve_load.py                       # 2 phases of 60 s, 50 clients; about 2.5 minutes
    python benchmarks/serve_load.py --duration 3 --clients 4 --phases single

Starts `bmc-tune serve` on a free loopback port with its own temporary copy of the profile (the calibrated one,
else the embedded default; or --profile), waits for /healthz, then runs each phase for --duration seconds with
--clients concurrent clients (aiohttp where installed, else httpx): "single" posts one request a body, "bulk"
--bulk-size requests a body, drawn from a mix of llama-7b / llama3-8b / smollm2-135m, seq 512..16384, batch
1..8, with r, a named policy, speculative decoding (gamma 4, alpha 0.6..0.8) or none (only requests predict()
accepts on that profile). During a phase the profile file is rewritten atomically 10 times, alternating two
valid profiles that differ in step_s: every answer's X-BMC-Profile must be one of their two fingerprints. The
server's VmRSS is sampled every second. Prints a table, writes benchmarks/results/serve_load.json, and exits 1
if any answer was a 5xx or carried another fingerprint (2: the server did not start).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np

try:
    import aiohttp
    _AIOHTTP_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError,)
except ImportError:  # the test extra has httpx only
    aiohttp = None  # type: ignore[assignment]
    _AIOHTTP_ERRORS = ()

import bmc_model
from bmc_model import BMCError, load_profile, predict
from bmc_model.core.profile import default_profile_path
from bmc_model.serve import PROFILE_HEADER, fingerprint

ROOT = Path(__file__).resolve().parent
MODELS = ("llama-7b", "llama3-8b", "smollm2-135m")
POLICIES = ("dynamic", "static", "reserve", "geometric", "mlx", "llamacpp")
WARMUP_S = 5.0  # RSS drift is measured after this (allocator arenas and caches fill first)
RELOADS = 10


@dataclass
class Phase:
    name: str
    body_size: int
    seconds: float = 0.0
    requests: int = 0
    predictions: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)  # "error" for a transport failure
    bad_fingerprints: int = 0
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds into the phase, bytes)
    rewrites: int = 0
    reloads_before: int = 0
    reloads_after: int = 0
    reload_failures: int = 0
    client: str = ""  # the HTTP client library of the load generator
    server_cpu_s: float = 0.0  # CPU seconds the server process used over the phase (user + system)
    client_cpu_s: float = 0.0  # and this load generator: both share the host's cores

    def summary(self) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        rss = [b for _, b in self.rss]
        warm = min(WARMUP_S, self.seconds / 2)
        after = [b for t, b in self.rss if t >= warm]
        drift = (100.0 * max(abs(b - after[0]) for b in after) / after[0]) if len(after) > 1 else None
        return {"phase": self.name, "client": self.client, "body_size": self.body_size,
                "seconds": round(self.seconds, 3),
                "requests": self.requests, "requests_per_s": self.requests / self.seconds,
                "predictions_per_s": self.predictions / self.seconds,
                "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
                "non_2xx": {str(k): v for k, v in sorted(self.statuses.items(), key=str)
                            if not (isinstance(k, int) and 200 <= k < 300)},
                "count_5xx": sum(v for k, v in self.statuses.items() if isinstance(k, int) and k >= 500),
                "bad_fingerprints": self.bad_fingerprints,
                "rss_first_mib": rss[0] / 2**20 if rss else None, "rss_last_mib": rss[-1] / 2**20 if rss else None,
                "rss_max_mib": max(rss) / 2**20 if rss else None, "rss_warmup_s": warm,
                "rss_max_change_pct_after_warmup": drift, "profile_rewrites": self.rewrites,
                "reloads": self.reloads_after - self.reloads_before, "reload_failures_total": self.reload_failures,
                "server_cpu_pct": 100.0 * self.server_cpu_s / self.seconds,
                "client_cpu_pct": 100.0 * self.client_cpu_s / self.seconds}


# -- the workload ---------------------------------------------------------------------------------------------

def request_mix(rng: random.Random, profile_path: Path, n: int) -> list[dict]:
    """n requests of the mix that predict() prices on this profile (a seq x batch past the host's RAM is not
    a realistic request: the model refuses it)."""
    prof = load_profile(profile_path)
    out: list[dict] = []
    while len(out) < n:
        kw: dict = {"model": rng.choice(MODELS), "seq": int(2 ** rng.uniform(9, 14)), "batch": rng.randint(1, 8)}
        kind = rng.random()
        if kind < 0.35:
            kw["r"] = rng.choice([16, 32, 64, 128, 256])
        elif kind < 0.7:
            kw["policy"] = rng.choice(POLICIES)
        elif kind < 0.9:
            kw.update(gamma=4, alpha=round(rng.uniform(0.6, 0.8), 3), r=rng.choice([32, 64, 128]))
        if rng.random() < 0.3:
            kw["prompt"] = kw["seq"] // 4
        try:
            predict(**kw, profile=prof)
        except BMCError:
            continue
        out.append(kw)
    return out


def variants(source: Path) -> tuple[str, str]:
    """Two valid profiles that differ in one term: the source, and its step_s 1.5 times over."""
    a = json.loads(source.read_text())
    b = json.loads(source.read_text())
    b["scalars"]["step_s"] *= 1.5
    return json.dumps(a, indent=1), json.dumps(b, indent=1)


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# -- the server -----------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, profile: Path) -> subprocess.Popen:
    script = shutil.which("bmc-tune", path=str(Path(sys.executable).parent)) or shutil.which("bmc-tune")
    cmd = [script] if script else [sys.executable, "-c", "from bmc_model.cli import main; main()"]
    return subprocess.Popen([*cmd, "serve", "--port", str(port), "--profile", str(profile), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


async def wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bmc-tune serve exited with {proc.returncode}: {proc.stderr.read().strip()}")
            try:
                if (await client.get(f"{base}/healthz", timeout=1.0)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"bmc-tune serve did not answer /healthz within {timeout:.0f} s")
            await asyncio.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat (fields 14 and 15, in clock ticks)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# -- a phase --------------------------------------------------------------------------------------------------

class _Posts:
    """POST and GET over one pooled client: aiohttp where installed (its C parser keeps the load generator from
    being what is measured on a 2-core host: httpx took a whole core for 280 requests/s), else httpx."""

    def __init__(self, base: str, clients: int) -> None:
        self.base, self.clients = base, clients
        self.kind = "aiohttp" if aiohttp is not None else "httpx"

    async def __aenter__(self) -> _Posts:
        if aiohttp is not None:
            self.session = aiohttp.ClientSession(self.base, connector=aiohttp.TCPConnector(limit=self.clients),
                                                 timeout=aiohttp.ClientTimeout(total=120.0))
        else:
            self.session = httpx.AsyncClient(base_url=self.base, timeout=120.0, limits=httpx.Limits(
                max_connections=self.clients, max_keepalive_connections=self.clients))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await (self.session.close() if aiohttp is not None else self.session.aclose())

    async def post(self, body: bytes) -> tuple[int, str | None]:
        headers = {"content-type": "application/json"}
        if aiohttp is not None:
            async with self.session.post("/predict", data=body, headers=headers) as r:
                await r.read()
                return r.status, r.headers.get(PROFILE_HEADER)
        r = await self.session.post("/predict", content=body, headers=headers)
        return r.status_code, r.headers.get(PROFILE_HEADER)

    async def get_json(self, path: str) -> dict:
        if aiohttp is not None:
            async with self.session.get(path) as r:
                return await r.json()
        return (await self.session.get(path)).json()


async def run_phase(phase: Phase, base: str, bodies: list[bytes], clients: int, duration: float, pid: int,
                    profile: Path, texts: tuple[str, str], prints: set[str]) -> None:
    async with _Posts(base, clients) as client:
        phase.client = client.kind
        phase.reloads_before = (await client.get_json("/profile"))["reloads"]
        cpu0, mine0 = cpu_seconds(pid), time.process_time()
        start = time.monotonic()
        stop = start + duration

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    status, fp = await client.post(rng.choice(bodies))
                except (httpx.HTTPError, OSError, asyncio.TimeoutError) + _AIOHTTP_ERRORS as err:
                    phase.statuses[f"error:{type(err).__name__}"] += 1
                    continue
                phase.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
                phase.requests += 1
                phase.statuses[status] += 1
                if 200 <= status < 300:
                    phase.predictions += phase.body_size
                if fp not in prints:
                    phase.bad_fingerprints += 1

        async def rewriter() -> None:
            for k in range(1, RELOADS + 1):  # evenly spaced, none at the very start or end
                await asyncio.sleep(max(0.0, start + k * duration / (RELOADS + 1) - time.monotonic()))
                await asyncio.to_thread(write_atomically, profile, texts[k % 2])
                phase.rewrites += 1

        async def sampler() -> None:
            while time.monotonic() < stop:
                rss = rss_bytes(pid)
                if rss is not None:
                    phase.rss.append((time.monotonic() - start, rss))
                await asyncio.sleep(1.0)

        await asyncio.gather(sampler(), rewriter(), *(worker(i) for i in range(clients)))
        phase.seconds = time.monotonic() - start
        phase.server_cpu_s, phase.client_cpu_s = cpu_seconds(pid) - cpu0, time.process_time() - mine0
        await asyncio.sleep(1.0)  # the last rewrite's poll (every 0.5 s)
        state = await client.get_json("/profile")
        phase.reloads_after, phase.reload_failures = state["reloads"], state["reload_failures"]


# -- report ---------------------------------------------------------------------------------------------------

def host_facts() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "bmc_tune": bmc_model.__version__,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def table(rows: list[dict]) -> str:
    cols = [("phase", "phase", "{}"), ("req/s", "requests_per_s", "{:.1f}"), ("pred/s", "predictions_per_s", "{:.0f}"),
            ("p50 ms", "p50_ms", "{:.2f}"), ("p99 ms", "p99_ms", "{:.2f}"), ("5xx", "count_5xx", "{}"),
            ("bad fp", "bad_fingerprints", "{}"), ("non-2xx", "non_2xx", "{}"), ("RSS first/last/max MiB", None, ""),
            ("RSS drift %", "rss_max_change_pct_after_warmup", "{:.1f}"), ("reloads", "reloads", "{}"),
            ("server CPU %", "server_cpu_pct", "{:.0f}"), ("client CPU %", "client_cpu_pct", "{:.0f}")]

    def cell(row: dict, key: str | None, fmt: str) -> str:
        if key is None:
            vals = [row[k] for k in ("rss_first_mib", "rss_last_mib", "rss_max_mib")]
            return "/".join("-" if v is None else f"{v:.0f}" for v in vals)
        v = row[key]
        if key == "non_2xx":
            return ",".join(f"{k}:{n}" for k, n in v.items()) or "0"
        return "-" if v is None else fmt.format(v)

    cells = [[h for h, _, _ in cols]] + [[cell(r, k, f) for _, k, f in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds a phase (default 60)")
    ap.add_argument("--clients", type=int, default=50, help="concurrent client tasks (default 50)")
    ap.add_argument("--bulk-size", type=int, default=1000, help="requests a body in the bulk phase (default 1000)")
    ap.add_argument("--phases", default="single,bulk", help="comma list of single, bulk (default both)")
    ap.add_argument("--profile", type=Path, default=None, help="profile to copy (default: the calibrated one, "
                    "else the embedded default)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "serve_load.json")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in phases if p not in ("single", "bulk")]
    if unknown or not phases:
        ap.error(f"--phases: {', '.join(unknown) or 'none given'} (use single, bulk)")
    if args.duration <= 0 or args.clients < 1 or args.bulk_size < 1:
        ap.error("--duration, --clients and --bulk-size must be positive")

    source = args.profile or (default_profile_path() if default_profile_path().exists()
                              else Path(bmc_model.__file__).parent / "data" / "default_profile.json")
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="bmc-serve-load-") as tmp:
        profile = Path(tmp) / "profile.json"
        texts = variants(source)
        prints = {fingerprint(t.encode()) for t in texts}
        write_atomically(profile, texts[0])
        pool = request_mix(rng, profile, 4000)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = start_server(port, profile)
        results: list[Phase] = []
        try:
            try:
                asyncio.run(wait_healthy(base, proc))
            except RuntimeError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
            for name in phases:
                size = 1 if name == "single" else args.bulk_size
                bodies = ([json.dumps(kw).encode() for kw in pool] if size == 1 else
                          [json.dumps(rng.choices(pool, k=size)).encode() for _ in range(32)])
                phase = Phase(name, size)
                asyncio.run(run_phase(phase, base, bodies, args.clients, args.duration, proc.pid, profile, texts,
                                      prints))
                results.append(phase)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    rows = [p.summary() for p in results]
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"host": host_facts(), "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "profile_source": str(source), "fingerprints": sorted(prints), "phases": rows}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    failed = sum(r["count_5xx"] + r["bad_fingerprints"] for r in rows)
    if failed:
        print(f"FAIL: {sum(r['count_5xx'] for r in rows)} 5xx, {sum(r['bad_fingerprints'] for r in rows)} answers "
              "with an unknown profile fingerprint", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
