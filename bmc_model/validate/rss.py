"""The process's resident size and its high-water mark (Linux /proc), for the fresh-process memory probes.

Torch-free and transformers-free: a probe reads its baseline after importing only what it measures.
"""

from __future__ import annotations

import os
import re

from bmc_model.core import host


def rss_bytes() -> int:
    """Resident set size now (core/host.rss_bytes), an OSError where it cannot be read: a probe has no figure
    without it."""
    size = host.rss_bytes()
    if size is None:
        raise OSError("no /proc/self/statm (not Linux): resident memory cannot be read")
    return size


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.M)
    return int(m.group(1)) * 1024 if m else 0


def peak_rss_bytes() -> int:
    """VmHWM: the process's resident high-water mark (resettable with reset_peak_rss)."""
    return _status_kb("VmHWM")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, `echo 5 > /proc/self/clear_refs`); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def can_measure() -> str | None:
    """None where the resident size can be read and its high-water mark reset; else why not."""
    if not os.path.exists("/proc/self/statm"):
        return "no /proc/self/statm (not Linux): resident memory cannot be read"
    if not reset_peak_rss():
        return "VmHWM cannot be reset (/proc/self/clear_refs not writable): the peak would include set-up"
    return None
