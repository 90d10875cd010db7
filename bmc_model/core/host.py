"""Host fingerprint, read without importing torch; and handing free heap memory back to the host."""

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
