"""KV memory the OS way: bytes reserved (address space of the live buffers) and bytes resident (pages the
OS holds), at the end of the generation and at their peak.

A buffer attended at exact width is written row by row, so where the allocator backs memory lazily
(Profile.lazy_backing, measured by calibrate) the rows never written hold no pages; a zero-filled buffer
(padded and pad-P widths read unwritten rows, which must be finite) is resident in full from its
allocation. At a growth event every tensor's new buffer holds only the rows copied into it, beside one old
buffer still alive. Freed buffers go back to the OS, except torch.cat's in transformers on the CPU: there every
K and V below glibc's mmap ceiling is a heap block freed and reallocated one row larger every token, and the
heap holds freed blocks half as large again as the live ones (docs/model.md, "Memory": the fifty-percent rule).
"""

from __future__ import annotations

from dataclasses import dataclass

from bmc_model.core.breakdown import memory
from bmc_model.core.events import Events, policy_events
from bmc_model.core.num import Num, vany, vfloat, vmax, vmin, vwhere
from bmc_model.core.policy import Policy
from bmc_model.core.profile import Profile
from bmc_model.core.sliding import sliding_count
from bmc_model.core.workload import Geometry, Workload

HEAP_CEILING_BYTES = 32 * 2**20  # glibc's highest dynamic mmap threshold (64-bit): larger blocks are mapped
HEAP_HOLES = 0.5  # free heap bytes per live byte where every block is reallocated larger (Knuth's fifty-percent rule)


def heap_cat(policy: Policy, w: Workload, geo: Geometry, prof: Profile, r: Num | None = None) -> object:
    """Whether torch.cat grows heap blocks that stay resident when freed (elementwise over r or requests):
    transformers' loading and prefill free mappings up to glibc's ceiling, which raises its threshold there;
    bmc-tune's runtime frees none, and its K/V near the ceiling stay mapped (docs/model.md, "Memory")."""
    cat = policy.cat_at(policy.r if r is None else r)
    if prof.runtime != "hf" or prof.host.get("device", "cpu") != "cpu" or not vany(cat):
        return False
    # the last block from the heap is the one of seq - 1 rows: at seq rows a K at the ceiling is mapped
    return (geo.rho * (vfloat(w.seq) + w.gamma - 1) < HEAP_CEILING_BYTES) & (cat == 1.0)


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
    resident_end, resident_peak = _resident(policy, w, geo, prof, ev, reserved_end, reserved_peak)
    heap = heap_cat(policy, w, geo, prof, r)
    if vany(heap):  # torch.cat writes every row it allocates: the live buffers, and the freed blocks beside them
        held = (1.0 + HEAP_HOLES) * reserved_end
        resident_end, resident_peak = vwhere(heap, held, resident_end), vwhere(heap, held, resident_peak)
        reserved_peak = vmax(reserved_peak, resident_peak)  # the heap's address space at its most, holes included
    return KVMemory(reserved_end, reserved_peak, resident_end, resident_peak)


def _resident(policy: Policy, w: Workload, geo: Geometry, prof: Profile, ev: Events, reserved_end: Num,
              reserved_peak: Num) -> tuple[Num, Num]:
    """Resident bytes (end, peak) where freed buffers go back to the OS: the pages written."""
    lazy = 0.0 if policy.zero_filled else prof.lazy_backing
    if lazy == 0.0:
        return reserved_end, reserved_peak
    # the full-attention layers' rows never written (a sliding layer's buffer is refilled: counted in full)
    per_row = 2 * (geo.layers - sliding_count(geo, w)) * geo.rho
    written = vmin(ev.final_capacity, vfloat(w.seq + w.gamma))  # the last verify's drafts, at worst
    resident_end = reserved_end - lazy * per_row * (ev.final_capacity - written)
    at_event = reserved_peak - lazy * per_row * (ev.final_capacity - ev.last_valid)
    return resident_end, vmax(at_event, resident_end)
