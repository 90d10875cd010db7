"""`bmc-tune serve`: the HTTP JSON prediction sidecar (bmc_model/serve) under uvicorn, one worker. The
profile is loaded and the port bound before serving, so a bad file or a taken port is one line and exit 2."""

from __future__ import annotations

import socket
from pathlib import Path

import typer

from bmc_model.cli import app, fail, guarded

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here: uvicorn's own bind failure is a log line and exit 1."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:
        fail(f"--host {host!r}: cannot resolve it ({err})")
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
    try:
        sock.bind(addr)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {err.strerror or err}")
    return sock


@app.command("serve")
@guarded
def serve_cmd(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8765, "--port", help="TCP port, 1..65535."),
    profile: Path | None = typer.Option(None, "--profile", help="Profile JSON to price with, reloaded when the "
                                        "file changes (default: the calibrated one, else the embedded)."),
    log_level: str = typer.Option("warning", "--log-level", help=f"uvicorn's log level: {', '.join(LOG_LEVELS)}."),
) -> None:
    """Serve predictions over HTTP: POST /predict and /choose (a JSON object or a list), GET /healthz, /profile."""
    if not 1 <= port <= 65535:
        fail(f"--port must be in 1..65535, got {port}")
    level = log_level.strip().lower()
    if level not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    try:
        import uvicorn

        from bmc_model.serve import ProfileHolder, create_app
    except ImportError as err:
        fail(f"serve needs starlette and uvicorn: pip install 'bmc-tune[serve]' ({err})")
    holder = ProfileHolder.open(profile)  # a bad file raises BMCError: one line, exit 2
    sock = _listen(host, port)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"serving on http://{shown}:{port} (profile: {holder.current.profile.describe()})", err=True)
    config = uvicorn.Config(create_app(holder), host=host, port=port, log_level=level, workers=1,
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
