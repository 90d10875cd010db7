"""The decode cost by term over a whole generation, and the KV memory it holds."""

from __future__ import annotations

from bmc_model.core.curves import attn_rows_factor, term_at, weights_row_factor
from bmc_model.core.events import Events, exact_width_sum, policy_events
from bmc_model.core.num import Num, vmax
from bmc_model.core.policy import Policy
from bmc_model.core.profile import Profile
from bmc_model.core.sliding import sliding_count, sliding_width_sum
from bmc_model.core.term import Term
from bmc_model.core.workload import Geometry, Workload


def attention_term(prof: Profile, masked: bool, gqa: bool = False) -> Term:
    """The attention kernel a pass runs: masked, or exact; exact over a GQA model's grouped K/V where the profile
    has attn_exact_grouped (the hf view of a profile that measured it: transformers hands them to SDPA unfolded,
    with enable_gqa, where bmc-tune's decoder folds the group into query rows)."""
    if masked:
        return prof.attn_masked
    grouped = prof.terms.get("attn_exact_grouped") if gqa else None
    return grouped if grouped is not None else prof.attn_exact


def attention_s(prof: Profile, rho: float, width: float, q: int, masked: bool, group: int = 1) -> float:
    """One layer's attention of q new rows over `width` cached rows (K and V of rho bytes a row), in bmc-tune's
    decoder's form (calibration's fits and the probe's factors; the breakdown picks transformers' GQA term)."""
    attn_c0, attn_slope = attention_term(prof, masked).segment(2 * rho * width)
    return attn_c0 + attn_slope * 2 * rho * attn_rows_factor(prof, q, group) * width


def masked_pass(policy: Policy, prof: Profile, q: int) -> bool:
    """Whether a pass's attention gets a mask: padded rows or a causal block need one, and under transformers
    so does a preallocated cache (Policy.hf_masked)."""
    return (policy.hf_masked if prof.runtime == "hf" else policy.width != "exact") or q > 1


def matmul_s(prof: Profile, nbytes: float, out_rows: float) -> float:
    """One token row through fused matrices of nbytes with out_rows output rows: the weights term plus
    gemv_row_s a row (a layer's four matmuls, or the LM head)."""
    return term_at(prof.weights, nbytes) + prof.gemv_row_s * out_rows


def matmul_ratio(prof: Profile, geo: Geometry) -> float:
    """The runtime's per-layer matmuls over the fused four the weights term times: 1 for bmc-tune's decoder,
    transformers' seven measured in place in the hf view (matmul_ratio, over the layer's weight bytes)."""
    ratio = prof.terms.get("matmul_ratio")
    return 1.0 if ratio is None else float(term_at(ratio, geo.layer_weight_bytes))


def write_s(prof: Profile, rho: float, q: int) -> float:
    """One layer's in-place write of q new K rows and q new V rows."""
    return 2 * term_at(prof.write, rho * q)


def layer_overhead_s(prof: Profile, geo: Geometry, rows: int) -> float:
    """One layer's cost beyond its matmuls, attention and writes, at `rows` token rows (batch * q): measured
    in place at real geometries (layer_fixed + (rows - 1) layer_row) when calibrated, else the tiny
    decoder's layer_s."""
    fixed = prof.layer_fixed
    if fixed is None:
        return prof.layer_s
    per_row = prof.layer_row
    x = geo.layer_weight_bytes
    return term_at(fixed, x) + (rows - 1) * (term_at(per_row, x) if per_row is not None else 0.0)


def breakdown(policy: Policy, w: Workload, geo: Geometry, prof: Profile, r: Num | None = None,
              ev: Events | None = None) -> dict[str, Num]:
    """Seconds spent over the whole generation, by term; their sum is the total. The L_s sliding layers
    (core/sliding.py) read and grow as their own events say; weights, writes and overhead are every layer's."""
    ev = ev or policy_events(policy, w, geo, prof, r)
    L, rho, q, gamma = geo.layers, geo.rho, w.q, w.gamma
    L_s = sliding_count(geo, w)
    L_f = L - L_s
    iters = w.tokens / w.advance
    rows = w.batch * q  # token rows each matmul processes
    head = matmul_s(prof, geo.head_weight_bytes, geo.head_out_rows)
    layer = matmul_ratio(prof, geo) * matmul_s(prof, geo.layer_weight_bytes, geo.layer_out_rows)
    weights = iters * (weights_row_factor(prof, rows, geo.head_weight_bytes, "head_rows") * head
                       + L * weights_row_factor(prof, rows, geo.layer_weight_bytes) * layer)
    masked = masked_pass(policy, prof, q)
    att = attention_term(prof, masked, geo.kv_group > 1)
    fq = attn_rows_factor(prof, q, geo.group)
    attn_c0, attn_slope = att.segment(2 * rho * (w.prompt + w.seq) / 2)
    exact_rows = exact_width_sum(w)
    useful = L_f * (iters * attn_c0 + attn_slope * 2 * rho * fq * exact_rows)
    redundant = L_f * attn_slope * 2 * rho * fq * (ev.width_sum - exact_rows) if L_f else 0.0
    alloc, copy = 2 * L_f * ev.alloc_rows_sum_s, 2 * L_f * ev.copy_rows_sum_s
    if L_s:
        evs = ev if L_f == 0 else ev.sliding
        width = sliding_width_sum(w, geo.window)  # exact rows: nothing redundant
        slide_c0, slide_slope = att.segment(2 * rho * width / iters)
        useful = useful + L_s * (iters * slide_c0 + slide_slope * 2 * rho * fq * width)
        alloc = alloc + 2 * L_s * evs.alloc_rows_sum_s
        copy = copy + 2 * L_s * evs.copy_rows_sum_s
    return {
        "weights": weights,
        "attention_useful": useful,
        "attention_redundant": redundant,
        "kv_write": iters * L * write_s(prof, rho, q),
        "growth_alloc": alloc,
        "growth_copy": copy,
        "overhead": iters * (prof.step_s + L * layer_overhead_s(prof, geo, rows)),
        "sd_iteration": iters * (prof.sd_iter_s if gamma > 0 else 0.0),
        "draft": iters * gamma * w.draft_step_s,
    }


def total_seconds(policy: Policy, w: Workload, geo: Geometry, prof: Profile, r: Num | None = None,
                  ev: Events | None = None) -> Num:
    return sum(breakdown(policy, w, geo, prof, r, ev).values())


def memory(policy: Policy, w: Workload, geo: Geometry, prof: Profile, r: Num | None = None,
           ev: Events | None = None) -> tuple[Num, Num]:
    """(KV bytes held at the end, largest KV footprint at any moment).

    At a growth event tensors are replaced one at a time, so the peak is every tensor at its new
    capacity plus one old buffer still alive. Sliding layers hold their window's buffer, which may have
    been larger before their last event (its room clipped at the end of the generation): the peak takes
    the larger of the two.
    """
    ev = ev or policy_events(policy, w, geo, prof, r)
    L_s, rho = sliding_count(geo, w), geo.rho
    if not L_s:
        steady = 2 * geo.layers * rho * ev.final_capacity
        return steady, steady + rho * ev.prev_capacity
    L_f = geo.layers - L_s
    evs = ev if L_f == 0 else ev.sliding
    full = 2 * L_f * rho * ev.final_capacity
    old = vmax(ev.prev_capacity, evs.prev_capacity) if L_f else evs.prev_capacity
    most = 2 * L_s * rho * vmax(evs.final_capacity, evs.prev_capacity)
    return full + 2 * L_s * rho * evs.final_capacity, full + most + rho * old
