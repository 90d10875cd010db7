"""Sliding-window layers (Mistral-7B-v0.1's sliding_window, Gemma-3's 5 layers of 6): the rule their cache
follows, shared by the cost model (core/events.py, core/breakdown.py) and BMCCache's sliding layer
(hf/sliding.py), so that both describe the same thing (docs/model.md, "Sliding-window layers").

A sliding layer with window S attends to the last S positions: HF keeps the last S - 1 rows between passes
and a pass reads them plus its q new rows, never more. BMCCache's sliding layer keeps those rows at the front
of a buffer with room for new ones behind them, and when the room runs out copies the kept rows into a fresh
buffer with room again: a growth event whose sizes stop growing at the window, at the same times as a full
layer's events. It always returns exactly the rows HF's sliding layer returns (exact width).
"""

from __future__ import annotations

import numpy as np

from bmc_model.core.errors import BMCError
from bmc_model.core.num import is_array, vmax, vmin
from bmc_model.core.policy import Policy
from bmc_model.core.workload import Geometry, Workload


def kept_rows(n: int, window: int) -> int:
    """Rows a sliding layer holds between passes after n tokens: HF's DynamicSlidingWindowLayer keeps the last
    S - 1 (the next pass adds its own q)."""
    return min(n, window - 1)


def sliding_policy(policy: Policy, window: int) -> Policy:
    """The rule a sliding layer follows under `policy`: its growth by r rows (a room of r past the kept rows),
    exact width (the rows past the window are dropped, not masked). Static and geometric growth have no r:
    there the room is the window itself, a buffer of at most 2 S - 1 rows copied once every S tokens."""
    return Policy("fixed", policy.r if policy.growth == "fixed" else window, width="exact")


def sliding_count(geo: Geometry, w: Workload) -> int:
    """The sliding layers priced as such: none unless the generation runs past the window (while N <= S every
    pass starts with all its rows kept, and a sliding layer is a full-attention one, priced by the same
    equations, bit for bit; BMCCache's sliding layer follows the cache's own policy there too)."""
    if is_array(w.seq) and geo.sliding_layers:  # lengths priced at once: all past the window or none
        past = w.seq > geo.window
        if past.any() != past.all():
            raise BMCError("output lengths on both sides of the sliding window: price them apart (sliding_groups)")
        return geo.sliding_layers if past.all() else 0
    return geo.sliding_layers if geo.sliding_layers and w.seq > geo.window else 0


def sliding_groups(geo: Geometry, seq: np.ndarray) -> list[np.ndarray]:
    """Masks over an array of seq that sliding_count prices alike: the lengths within the window and those
    past it (one mask of all when no layer slides)."""
    if not geo.sliding_layers:
        return [np.ones(seq.shape, dtype=bool)]
    past = seq > geo.window
    return [m for m in (~past, past) if m.any()]


def sliding_width_sum(w: Workload, window: int) -> float:
    """sum over passes of the rows a sliding layer attends, min(n, S - 1) + q, with the pass starts at
    P + E i as in exact_width_sum (exact in plain decoding): the passes below the window read n + q, the rest
    S - 1 + q."""
    it = w.tokens / w.advance
    keep = float(window - 1)
    below = vmin(vmax(-(-(keep - w.prompt) // w.advance), 0.0), it)  # passes starting below S - 1 rows
    return below * w.prompt + w.advance * below * (below - 1.0) / 2.0 + (it - below) * keep + it * w.q
