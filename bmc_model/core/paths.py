"""Where bmc-tune keeps what it computes once: the calibrated profile and de-quantized weights."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def cache_dir(*parts: str) -> Path:
    """$XDG_CACHE_HOME/bmc-tune/PARTS (default ~/.cache/bmc-tune/PARTS)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "bmc-tune", *parts)


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", *, perm: int | None = None) -> Iterator[IO[Any]]:
    """`with atomic_write(path) as f:` writes f, a temporary file in path's folder (created if missing),
    then fsyncs it and renames it over path: a reader sees the old file or the whole new one. Any exception
    in the block, an interrupt too, removes the temporary file and leaves the old file as it was.
    mode: "w" (text) or "wb"; perm: the new file's mode (default 0o666 & ~umask, an ordinary file's)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if perm is None:
        umask = os.umask(0)
        os.umask(umask)
        perm = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            os.fchmod(f.fileno(), perm)  # mkstemp makes 0600
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
