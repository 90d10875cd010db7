"""Where bmc-tune keeps what it computes once: the calibrated profile and de-quantized weights."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """$XDG_CACHE_HOME/bmc-tune/PARTS (default ~/.cache/bmc-tune/PARTS)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "bmc-tune", *parts)
