"""Host fingerprint, read without importing torch; handing free heap memory back to the host; and what the
OS holds or would grant: resident size, overcommit mode, the largest single reservation it allows."""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Callable
from importlib import metadata


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def available_ram_bytes() -> int:
    """MemAvailable from /proc/meminfo; the physical total where that is unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return ram_bytes()


def rss_bytes() -> int | None:
    """Resident set size: /proc/self/statm field 2 (pages) times the page size; None where there is none."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as {key: bytes} ("MemTotal:  24684092 kB"); lines that do not parse are skipped."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        try:
            value = int(parts[0])
        except ValueError:
            continue
        out[key.strip()] = value * 1024 if parts[1:2] == ["kB"] else value
    return out


def reserve_limit(mode: int | None, meminfo: dict[str, int]) -> float | None:
    """The largest single allocation the kernel grants under vm.overcommit_memory `mode`; None: no limit or
    unknown. Mode 0 (heuristic) refuses one larger than RAM + swap; 1 grants anything; 2 (strict) grants
    up to what is left of CommitLimit now."""
    try:
        if mode == 0:
            return float(meminfo["MemTotal"] + meminfo["SwapTotal"])
        if mode == 2:
            return float(max(0, meminfo["CommitLimit"] - meminfo["Committed_AS"]))
    except KeyError:
        pass
    return None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def overcommit_mode() -> int | None:
    """/proc/sys/vm/overcommit_memory (0 heuristic, 1 always, 2 never); None where unreadable."""
    text = _read("/proc/sys/vm/overcommit_memory")
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def reserve_limit_bytes() -> float | None:
    """reserve_limit for this machine, now (mode 2's headroom moves as processes commit memory)."""
    text = _read("/proc/meminfo")
    return reserve_limit(overcommit_mode(), parse_meminfo(text)) if text is not None else None


def memory_facts() -> dict:
    """Host facts for a profile: overcommit_mode and reserve_limit_bytes, each left out where unknown."""
    facts: dict = {}
    mode = overcommit_mode()
    if mode is not None:
        facts["overcommit_mode"] = mode
    limit = reserve_limit_bytes()
    if limit is not None:
        facts["reserve_limit_bytes"] = limit
    return facts


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_heap() -> bool:
    """glibc malloc_trim(0): give every free heap page back to the kernel; False where there is no glibc."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def torch_version() -> str:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "none"


def fingerprint(threads: int | None = None, device: str = "cpu", dtype: str = "float32") -> dict:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"cpu": cpu_model(), "cores": cores, "threads": threads or cores, "ram_bytes": ram_bytes(),
            "os": f"{platform.system()} {platform.release()}", "torch": torch_version(),
            "device": device, "dtype": dtype}
