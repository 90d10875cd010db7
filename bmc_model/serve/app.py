"""The starlette app: POST /predict and /choose (one request object, or a list of them), GET /healthz and
/profile. A bad body is always a 4xx JSON {"error", "field", "index"}, never a 5xx or a traceback."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from bmc_model.serve.pricing import price_list, price_one
from bmc_model.serve.profile_watch import Loaded, ProfileHolder
from bmc_model.serve.schema import CHOOSE, MAX_BODY_BYTES, PREDICT, Endpoint, RequestError, check_body, parse_json

PROFILE_HEADER = "X-BMC-Profile"
POLL_S = 0.5
PRICING_THREADS = 2
PARSE_IN_LOOP_BYTES = 64 * 1024  # a larger body is parsed in a worker thread: /healthz stays responsive


def _plain(obj: object) -> object:
    """Strict JSON values: numpy scalars as Python ones, NaN and infinities as null."""
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_plain(v) for v in obj]
    return str(obj)


def render(obj: object) -> bytes:
    try:  # answers are plain Python already (to_dicts): the C encoder as it is
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError):  # a numpy scalar, or NaN / infinity: made strict JSON first
        return json.dumps(_plain(obj), separators=(",", ":"), allow_nan=False).encode()


def json_response(obj: object, status: int = 200, loaded: Loaded | None = None,
                  headers: dict[str, str] | None = None) -> Response:
    hdrs = dict(headers or {})
    if loaded is not None:
        hdrs[PROFILE_HEADER] = loaded.fingerprint
    return Response(render(obj), status, hdrs, media_type="application/json")


def error_response(err: RequestError, loaded: Loaded | None = None) -> Response:
    message = " ".join(err.message.split())
    message = message if len(message) <= 500 else message[:497] + "..."  # a 5 MB string echoed is not a line
    if err.index is not None:
        message = f"request {err.index}: {message}"
    status = err.status if 400 <= err.status < 500 else 422
    return json_response({"error": message, "field": err.field, "index": err.index}, status, loaded)


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, refused with 413 past `limit` bytes: by its Content-Length, else as soon as the bytes read pass it."""
    length = request.headers.get("content-length")
    if length is not None:
        digits = length.strip()
        if not digits.isdigit() or not digits.isascii():
            raise RequestError(400, f"bad Content-Length {length[:40]!r}")
        if len(digits) > 15 or int(digits) > limit:  # 15 digits: int() of thousands is slow, and refused
            raise RequestError(413, f"body of {digits[:20]} bytes is over the limit of {limit:,}")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise RequestError(413, f"body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _price(ep: Endpoint, data: object, loaded: Loaded) -> bytes:
    """Check, price and render: the CPU work of one body (in a worker thread unless _quick says otherwise)."""
    reqs = check_body(data, ep)
    if isinstance(reqs, list):
        return render(price_list(ep, reqs, loaded.profile))
    return render(price_one(ep, reqs, loaded.profile))


def _quick(ep: Endpoint, data: object) -> bool:
    """One plain predict() request. A list, /choose (gamma "auto" weighs 17 gammas: most of a second) and an
    output-length distribution (mean_new: up to a third of a second) are priced in a worker thread."""
    return ep is PREDICT and isinstance(data, dict) and "mean_new" not in data and "new_tokens" not in data


def _endpoint(ep: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        loaded: Loaded = request.app.state.holder.current  # taken once: every call of this body prices with it
        try:
            body = await read_body(request)
            limiter = request.app.state.limiter
            data = (parse_json(body) if len(body) <= PARSE_IN_LOOP_BYTES else
                    await anyio.to_thread.run_sync(parse_json, body, limiter=limiter))
            if _quick(ep, data):
                out = _price(ep, data, loaded)  # a plain predict(): well under a millisecond, no thread hop
            else:
                out = await anyio.to_thread.run_sync(_price, ep, data, loaded, limiter=limiter)
        except RequestError as err:
            return error_response(err, loaded)
        except ClientDisconnect:
            return error_response(RequestError(400, "the client closed the connection mid-body"), loaded)
        except Exception as err:  # never a 500: whatever went wrong, the body provoked it
            text = " ".join(str(err).split())[:300]
            return error_response(RequestError(422, f"could not price this request: {type(err).__name__}: {text}"),
                                  loaded)
        return Response(out, 200, {PROFILE_HEADER: loaded.fingerprint}, media_type="application/json")
    return handle


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def profile(request: Request) -> Response:
    holder: ProfileHolder = request.app.state.holder
    return json_response(holder.to_dict(), loaded=holder.current)


def _allow(headers: dict[str, str] | None) -> str:
    return next((v for k, v in (headers or {}).items() if k.lower() == "allow"), "?")


async def http_error(request: Request, exc: Exception) -> Response:
    """404, 405 and the like as the same JSON as every other error (starlette's are plain text)."""
    assert isinstance(exc, HTTPException)
    message = {404: f"no such path {request.url.path[:100]!r} (paths: /predict, /choose, /healthz, /profile)",
               405: f"method {request.method} not allowed on {request.url.path} (allowed: "
                    f"{_allow(exc.headers)})"}.get(exc.status_code, str(exc.detail))
    return json_response({"error": message, "field": None, "index": None}, exc.status_code, headers=exc.headers)


async def watch(holder: ProfileHolder, interval: float) -> None:
    """Poll the profile file; a reload runs in a worker thread (parsing is milliseconds of CPU)."""
    while True:
        await anyio.sleep(interval)
        try:
            await run_in_threadpool(holder.check)
        except Exception as err:  # check() records a bad file itself; this is the poller's own failure
            holder.last_error = f"profile watch: {type(err).__name__}: {err}"


def create_app(holder: ProfileHolder | None = None, profile_path: str | Path | None = None,
               poll_interval: float = POLL_S) -> Starlette:
    """The app, on `holder` (else one opened on `profile_path`, get_profile's default where None), polling
    the file every `poll_interval` seconds (0: never) while the app runs."""
    holder = holder if holder is not None else ProfileHolder.open(profile_path)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            if poll_interval > 0:
                tg.start_soon(watch, holder, poll_interval)
            yield
            tg.cancel_scope.cancel()

    routes = [Route("/predict", _endpoint(PREDICT), methods=["POST"]),
              Route("/choose", _endpoint(CHOOSE), methods=["POST"]),
              Route("/healthz", healthz, methods=["GET"]),
              Route("/profile", profile, methods=["GET"])]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    app.state.holder = holder
    # bodies wait as bytes, not as parsed requests: a few threads price (the GIL runs one at a time anyway), so
    # 50 clients' 1000-request bodies do not hold 50 parsed copies at once
    app.state.limiter = anyio.CapacityLimiter(PRICING_THREADS)
    return app
