"""Parsing helpers shared by commands: sizes with suffixes, acceptance files, profile notes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bmc_model.core.errors import BMCError
from bmc_model.core.host import fingerprint
from bmc_model.core.profile import Profile, host_mismatch

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_bytes(text: str | None) -> float | None:
    """'8G', '512MiB', '1e9' -> bytes."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]i?)?b?\s*", text.lower())
    if not m:
        raise BMCError(f"cannot read a size from {text!r} (e.g. 8G, 512MiB, 1e9)")
    value = float(m.group(1)) * _UNITS[m.group(2) or ""]
    if value <= 0:
        raise BMCError(f"size must be positive, got {text!r}")
    return value


def parse_alpha(text: str | None) -> float | list[float] | None:
    """A number, a comma list of per-position rates, or a JSON file written by validate --sd."""
    if text is None:
        return None
    path = Path(text)
    if path.suffix == ".json" or path.exists():
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise BMCError(f"acceptance file not found: {path}") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BMCError(f"acceptance file {path}: unreadable ({e})") from None
        if isinstance(data, dict):
            data = data.get("acceptance", data)
        if isinstance(data, dict):
            data = data.get("per_position", data.get("alpha"))
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return float(data)
        if isinstance(data, list) and data and all(isinstance(v, (int, float)) for v in data):
            return [float(v) for v in data]
        raise BMCError(f"acceptance file {path}: expected a number, a list, or "
                       "{'acceptance': {'per_position': [...]}}")
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise BMCError(f"alpha must be a number in [0, 1), a comma list, or a JSON file; got {text!r}") from None
    return vals[0] if len(vals) == 1 else vals


def profile_note(prof: Profile, device: str | None = None) -> tuple[str, str | None]:
    """A line naming the profile, and a warning when it was measured on another host. device: where the
    predictions are for (validate's --device); None: the profile's own (a GPU profile read on its host)."""
    dev = device or prof.host.get("device", "cpu")
    diff = host_mismatch(prof, fingerprint(dtype=prof.dtype, threads=prof.host.get("threads"), device=dev))
    warn = None
    if diff and prof.source != "embedded default":
        warn = f"profile was measured on another host ({', '.join(diff)} differ): run `bmc-tune calibrate`"
    elif diff:
        warn = (f"embedded default profile is from another host ({', '.join(diff)} differ): "
                "run `bmc-tune calibrate` for this one")
    return f"profile: {prof.describe()}", warn
