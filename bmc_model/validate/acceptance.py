"""The measured acceptance as the file `recommend --alpha FILE` reads, written atomically."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from bmc_model.core.errors import BMCError
from bmc_model.core.paths import atomic_write


def acceptance_json(acceptance: dict[str, Any]) -> dict[str, Any]:
    """The file `recommend --alpha FILE` reads: {"acceptance": {"per_position": [...], ...}}."""
    keep = ("overall", "per_position", "per_position_raw", "per_position_smoothed", "advance", "alpha_equivalent",
            "gamma", "iterations", "synthetic", "drafter", "workload")
    clean = {k: acceptance[k] for k in keep if k in acceptance}
    if isinstance(clean.get("overall"), float) and math.isnan(clean["overall"]):
        clean["overall"] = None
    return {"acceptance": clean}


def check_writable(path: Path) -> None:
    """Fail now, not after minutes of measuring, when the acceptance file cannot be written."""
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BMCError(f"cannot write acceptance file {path}: {e.strerror or e}") from None
    if path.is_dir() or not os.access(parent, os.W_OK):
        raise BMCError(f"cannot write acceptance file {path}: not a writable file location")


def write_acceptance(path: str | Path, acceptance: dict[str, Any]) -> Path:
    """Write acceptance_json(acceptance) atomically; BMCError when the folder is not writable."""
    path = Path(path)
    try:
        with atomic_write(path, perm=0o600) as f:
            json.dump(acceptance_json(acceptance), f, indent=1)
            f.write("\n")
    except OSError as e:
        raise BMCError(f"cannot write acceptance file {path}: {e.strerror or e}") from None
    return path
