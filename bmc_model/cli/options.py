"""Parsing helpers shared by commands: sizes with suffixes, acceptance files, profile notes, JSON output."""

from __future__ import annotations

import glob
import json
import math
import numbers
import os
from pathlib import Path

from bmc_model.core.errors import BMCError
from bmc_model.core.host import fingerprint
from bmc_model.core.inputs import SIZE_HELP, parse_bytes  # noqa: F401  (the core's, shared with the API)
from bmc_model.core.profile import Profile, host_mismatch


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


def profile_note(prof: Profile, device: str | None = None, threads: int | None = None) -> tuple[str, str | None]:
    """A line naming the profile, and a warning when it was measured on another host. device, threads: what
    the predictions are for (validate's --device and --threads); None: this host as it runs by default,
    every core it may use, and its GPU only if the profile is a GPU one and this host has one."""
    dev = device or _this_device(str(prof.host.get("device", "cpu")))
    here = fingerprint(dtype=prof.dtype, threads=threads, device=dev)
    diff = host_mismatch(prof, here)
    if not diff:
        return f"profile: {prof.describe()}", None
    # numbers and device names are short and say what to fix; a CPU model or torch version is just named
    what = "; ".join(f"{k}: {prof.host[k]} there, {here[k]} here" if k in ("cores", "threads", "device", "dtype")
                     else f"{k} differs" for k in diff)
    if prof.source != "embedded default":
        warn = f"profile was measured on another host ({what}): run `bmc-tune calibrate`"
    else:
        warn = f"embedded default profile is from another host ({what}): run `bmc-tune calibrate` for this one"
    return f"profile: {prof.describe()}", warn


def _this_device(profile_device: str) -> str:
    """The device a prediction runs on here: a GPU profile's where this host has an NVIDIA GPU (seen without
    importing torch, seconds of start-up for every command), else the CPU."""
    if profile_device == "cpu":
        return "cpu"
    gpus = "/proc/driver/nvidia/gpus"  # the driver's list; a container may show only the device files
    try:
        listed = os.path.isdir(gpus) and bool(os.listdir(gpus))
    except OSError:
        listed = False
    return profile_device if listed or glob.glob("/dev/nvidia[0-9]*") else "cpu"


def to_json(obj: object) -> str:
    """Strict JSON (what --json promises): a NaN or infinity, which json.dumps writes as the non-JSON
    NaN / Infinity, becomes null; paths and other objects their str."""
    return json.dumps(_finite(obj), indent=1, allow_nan=False, default=str)


def _finite(obj: object) -> object:
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, numbers.Integral):  # numpy integers too
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
