"""How much of the machine other processes used while we measured (Linux /proc/stat).

Preempted threads inflate timings in ways the MAD rule cannot see: when every sample of a size is
slowed alike, the samples agree with each other. So the calibration also reports the CPU share
that went to other processes, and warns when it was large.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuSnapshot:
    total_s: float  # CPU seconds of every core, idle included (None-like 0 when unknown)
    busy_s: float  # CPU seconds spent busy, by anyone
    own_s: float  # CPU seconds this process used (all threads)


def snapshot() -> CpuSnapshot | None:
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        tick = float(os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return CpuSnapshot(total_s=sum(fields) / tick, busy_s=(sum(fields) - idle) / tick, own_s=ru.ru_utime + ru.ru_stime)


def others_share(before: CpuSnapshot | None, after: CpuSnapshot | None) -> float | None:
    """Fraction of all cores' time that other processes used between the snapshots."""
    if before is None or after is None or after.total_s <= before.total_s:
        return None
    others = (after.busy_s - before.busy_s) - (after.own_s - before.own_s)
    return min(max(others / (after.total_s - before.total_s), 0.0), 1.0)
