"""KV memory the OS way: bytes reserved (address space of the live buffers) and bytes resident (pages the
OS holds), at the end of the generation and at their peak.

A buffer attended at exact width is written row by row, so where the allocator backs memory lazily
(Profile.lazy_backing, measured by calibrate) the rows never written hold no pages; a zero-filled buffer
(padded and pad-P widths read unwritten rows, which must be finite) is resident in full from its
allocation. At a growth event every tensor's new buffer holds only the rows copied into it, beside one old
buffer still alive. Freed buffers are taken to go back to the OS; an allocator that keeps freed heap
blocks resident holds more (docs/model.md, "Resident memory").
"""

from __future__ import annotations

from dataclasses import dataclass

from bmc_model.core.breakdown import memory
from bmc_model.core.events import Events, policy_events
from bmc_model.core.num import Num, vfloat, vmax, vmin
from bmc_model.core.policy import Policy
from bmc_model.core.profile import Profile
from bmc_model.core.sliding import sliding_count
from bmc_model.core.workload import Geometry, Workload


@dataclass(frozen=True)
class KVMemory:
    """KV bytes of one configuration; each a scalar or, over a sweep of r or of output lengths, an array."""

    reserved_end: Num  # buffers held at the end, spare rows included
    reserved_peak: Num  # the most at once: every buffer at its new capacity plus one old one
    resident_end: Num  # pages held at the end
    resident_peak: Num  # the most pages held at once


def kv_memory(policy: Policy, w: Workload, geo: Geometry, prof: Profile, r: Num | None = None,
              ev: Events | None = None) -> KVMemory:
    ev = ev or policy_events(policy, w, geo, prof, r)
    reserved_end, reserved_peak = memory(policy, w, geo, prof, r, ev)
    lazy = 0.0 if policy.zero_filled else prof.lazy_backing
    if lazy == 0.0:
        return KVMemory(reserved_end, reserved_peak, reserved_end, reserved_peak)
    # the full-attention layers' rows never written (a sliding layer's buffer is refilled: counted in full)
    per_row = 2 * (geo.layers - sliding_count(geo, w)) * geo.rho
    written = vmin(ev.final_capacity, vfloat(w.seq + w.gamma))  # the last verify's drafts, at worst
    resident_end = reserved_end - lazy * per_row * (ev.final_capacity - written)
    at_event = reserved_peak - lazy * per_row * (ev.final_capacity - ev.last_valid)
    return KVMemory(reserved_end, reserved_peak, resident_end, vmax(at_event, resident_end))
