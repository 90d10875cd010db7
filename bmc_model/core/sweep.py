"""Choosing r: the closed-form optimum r* and the exact integer argmin by a vectorised sweep."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bmc_model.core.breakdown import total_seconds
from bmc_model.core.errors import BMCError
from bmc_model.core.events import policy_events
from bmc_model.core.lengths import Lengths, expected, r_grid
from bmc_model.core.policy import Policy
from bmc_model.core.profile import Profile
from bmc_model.core.resident import kv_memory
from bmc_model.core.workload import Geometry, Workload


def closed_form_r(w: Workload, geo: Geometry, prof: Profile, width: str = "padded") -> float:
    """r* = sqrt(growth / padding) from d/dr [growth / r + padding r] = 0 (docs/model.md, "The optimum",
    where they are A and B):

    growth  = 2 (alloc_c0 + copy_c0) T + rho (alloc_slope + copy_slope)(2 P T + T^2)  [growth events, ~1/r]
    padding = rho (attn_slope T - 2 alloc_slope)                                       [padded rows, ~r]
    with (c0, slope) of the alloc, copy and attn_masked segments at the sizes reached (attention's per K+V
    byte). Plain decoding; widths other than padded read no padded rows, so padding <= 0 and the optimum
    is to grow once for the whole generation (r* = T).
    """
    T, P, rho = float(w.tokens), float(w.prompt), geo.rho
    if width != "padded":
        return T
    r = math.sqrt(T)
    for _ in range(3):  # the alloc/copy segment depends on the sizes reached, which depend on r
        alloc_c0, alloc_slope = prof.alloc.segment(rho * (P + T / 2 + r))
        copy_c0, copy_slope = prof.copy.segment(rho * (P + T / 2))
        attn_slope = prof.attn_masked.segment(2 * rho * (P + T / 2))[1]
        growth = 2 * (alloc_c0 + copy_c0) * T + rho * (alloc_slope + copy_slope) * (2 * P * T + T * T)
        padding = rho * (attn_slope * T - 2 * alloc_slope)
        if padding <= 0 or growth <= 0:
            return T
        r = min(math.sqrt(growth / padding), T)
    return r


@dataclass
class Sweep:
    """The predicted cost and peak KV bytes (resident and reserved) of fixed growth by every distinct r,
    r = 1 .. T + gamma.

    An r >= T + gamma holds the whole generation from the prefill on (the capacity clamps at seq + gamma),
    so every r beyond the last one stored costs and holds exactly what that last one does: the sweep stops
    there instead of allocating arrays as long as seq, and seconds_at / resident_at answer for any r >= 1.

    Over a distribution of output lengths (sweep_lengths) r is a grid (core/lengths.r_grid), not every r:
    seconds are then E[seconds], resident_bytes E[peak resident], reserved_bytes and worst_resident_bytes
    the most over the lengths, and seconds_at / resident_at answer for the grid's r (else the next one up).
    """

    width: str
    pad: int
    r: np.ndarray  # candidate r values, 1 .. T + gamma
    seconds: np.ndarray  # predicted total decode seconds for each r
    resident_bytes: np.ndarray  # predicted peak resident KV bytes for each r
    reserved_bytes: np.ndarray  # predicted peak reserved KV bytes for each r
    feasible: np.ndarray  # peak resident bytes within the memory cap (the worst case's, where there is one)
    worst_resident_bytes: np.ndarray | None = None  # over a distribution: the most over the lengths

    @property
    def capped_bytes(self) -> np.ndarray:
        """The peak resident bytes a memory cap must hold for each r."""
        return self.resident_bytes if self.worst_resident_bytes is None else self.worst_resident_bytes

    def policy(self, r: int) -> Policy:
        return Policy("fixed", int(r), width=self.width, pad=self.pad)  # type: ignore[arg-type]

    @property
    def flat_r(self) -> int:
        """The smallest r from which the cost is flat: T + gamma (max_new over a distribution)."""
        return int(self.r[-1])

    def index(self, r: int) -> int:
        if r < 1:
            raise BMCError(f"r must be >= 1, got {r}")
        return int(np.searchsorted(self.r, min(int(r), int(self.r[-1]))))  # r - 1 where r is every r

    def seconds_at(self, r: int) -> float:
        return float(self.seconds[self.index(r)])

    def resident_at(self, r: int) -> float:
        return float(self.resident_bytes[self.index(r)])

    @property
    def fastest_seconds(self) -> float:
        """The least predicted seconds among the r within the memory cap (inf: none is)."""
        return float(self.seconds[self.feasible].min()) if self.feasible.any() else math.inf

    @property
    def argmin(self) -> int | None:
        if not self.feasible.any():
            return None
        return int(self.r[np.argmin(np.where(self.feasible, self.seconds, np.inf))])


def sweep_r(width: str, w: Workload, geo: Geometry, prof: Profile, max_mem: float | None = None,
            pad: int = 256, r: np.ndarray | None = None) -> Sweep:
    """Every distinct integer r, 1 .. T + gamma, at once, or the r given (float64; a draft step priced per r
    is priced for those; a workload of many requests: one r per request)."""
    rd = np.arange(1, w.tokens + w.gamma + 1, dtype=np.float64) if r is None else r
    pol = Policy("fixed", 1, width=width, pad=pad)  # type: ignore[arg-type]
    ev = policy_events(pol, w, geo, prof, rd)
    secs = np.broadcast_to(np.asarray(total_seconds(pol, w, geo, prof, rd, ev), dtype=np.float64), rd.shape)
    mem = kv_memory(pol, w, geo, prof, rd, ev)
    resident = np.broadcast_to(np.asarray(mem.resident_peak, dtype=np.float64), rd.shape)
    reserved = np.broadcast_to(np.asarray(mem.reserved_peak, dtype=np.float64), rd.shape)
    feasible = resident <= max_mem if max_mem else np.ones_like(secs, dtype=bool)
    return Sweep(width, pad, rd.astype(np.int64), secs, resident, reserved, feasible)


def sweep_lengths(width: str, prompt: int, batch: int, dist: Lengths, geo: Geometry, prof: Profile,
                  max_mem: float | None = None, pad: int = 256, rs: np.ndarray | None = None) -> Sweep:
    """Fixed growth over r_grid (or the r `rs`), each r priced over every length at once (every r times every
    length would be too many); the memory cap holds for the worst length."""
    rs = r_grid(dist.max_new) if rs is None else rs
    xs = [expected(Policy("fixed", int(r), width=width, pad=pad), prompt, batch, dist, geo, prof)  # type: ignore
          for r in rs]
    worst = np.array([x.worst_resident_peak for x in xs])
    feasible = worst <= max_mem if max_mem else np.ones(rs.shape, dtype=bool)
    return Sweep(width, pad, rs, np.array([x.total for x in xs]), np.array([x.resident_peak for x in xs]),
                 np.array([x.reserved_peak for x in xs]), feasible, worst)
