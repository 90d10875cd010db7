"""Laws the cost model must obey, checked on random workloads and profiles."""

import math

import numpy as np
import pytest
from conftest import WIDTHS
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bmc_model import Policy, predict, recommend
from bmc_model.calibrate.layers import through
from bmc_model.core.breakdown import breakdown
from bmc_model.core.events import policy_events
from bmc_model.core.profile import Profile, Term, embedded_profile
from bmc_model.core.sweep import closed_form_r
from bmc_model.core.workload import Geometry, Workload

PROF = embedded_profile()
MODELS = st.sampled_from(["llama-7b", "smollm2-135m", "llama-70b", "qwen2.5-coder-1.5b", "opt-6.7b"])


@st.composite
def profiles(draw) -> Profile:
    """Random but physical coefficients: positive, allocation with a knee."""
    pos = st.floats(1e-12, 1e-9)
    knee = draw(st.floats(1e5, 1e8))
    lo, hi = draw(pos), draw(pos)
    c_lo = draw(st.floats(1e-7, 1e-4))
    alloc = Term(c0=(c_lo, c_lo + (lo - hi) * knee), slope=(lo, hi), knots=(knee,))  # continuous at the knee

    def aff() -> Term:
        return Term(c0=(draw(st.floats(1e-7, 1e-4)),), slope=(draw(pos),))

    terms = {"alloc": alloc, "copy": aff(), "write": aff(), "attn_exact": aff(), "attn_masked": aff(),
             "weights": aff()}
    if draw(st.booleans()):  # exact-width growth priced by a measured torch.cat term
        c_lo2 = draw(st.floats(1e-7, 1e-4))
        terms["cat"] = Term(c0=(c_lo2, c_lo2 + (lo - hi) * knee), slope=(lo, hi), knots=(knee,))
    scalars = {"attn_q_slope": draw(st.floats(0, 1)), "weights_row_slope": draw(st.floats(0, 0.2)),
               "step_s": draw(st.floats(0, 1e-3)), "layer_s": draw(st.floats(0, 1e-4)),
               "sd_iter_s": draw(st.floats(0, 1e-3)),
               "lazy_backing": draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0))}
    if draw(st.booleans()):  # the runtime's layers measured in place: rising with the layer's bytes
        xs = sorted(draw(st.lists(st.floats(1e6, 2e9), min_size=2, max_size=3, unique=True)))
        fixed = sorted(draw(st.lists(st.floats(0, 2e-3), min_size=len(xs), max_size=len(xs))))
        rows = sorted(draw(st.lists(st.floats(0, 1e-4), min_size=len(xs), max_size=len(xs))))
        terms["layer_fixed"], terms["layer_row"] = through(xs, fixed), through(xs, rows)
    curves = {}
    if draw(st.booleans()):  # measured ratio curves, non-decreasing as on real hosts
        ratios = sorted(draw(st.lists(st.floats(1.0, 4.0), min_size=4, max_size=4)))
        curves["weights_rows"] = ((1.0, 2.0, 4.0, 8.0, 16.0), (1.0, *ratios))
    # a host with 1 PiB of RAM: the laws hold at any size, not only at those whose KV cache fits this host
    return Profile(terms=terms, scalars=scalars, source="hypothesis", curves=curves, host={"ram_bytes": 2**50})


@st.composite
def workloads(draw):
    prompt = draw(st.integers(1, 3000))
    seq = prompt + draw(st.integers(2, 3000))
    return prompt, seq


def close(a: float, b: float, rel: float = 1e-9) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-15)


@given(MODELS, workloads(), st.integers(1, 4096), WIDTHS, profiles(), st.integers(1, 200))
def test_cost_non_decreasing_in_seq(model, ps, r, width, prof, extra):
    """The same tokens at a longer context cost more per token; a longer generation costs more in all.

    (Per-token cost of a longer generation from the same prompt may fall: one growth event is
    shared by more tokens, which is the staircase the sweep over r has to handle.)
    """
    prompt, seq = ps
    pol = Policy("fixed", r, width=width)
    a = predict(model, seq, prompt, policy=pol, profile=prof, layers=2)
    b = predict(model, seq + extra, prompt + extra, policy=pol, profile=prof, layers=2)
    assert b.ms_per_token >= a.ms_per_token * (1 - 1e-12)
    c = predict(model, seq + extra, prompt, policy=pol, profile=prof, layers=2)
    assert c.ms_per_token * (seq + extra - prompt) >= a.ms_per_token * (seq - prompt) * (1 - 1e-12)


@given(MODELS, workloads(), st.integers(1, 4096), WIDTHS, profiles(), st.integers(1, 8), st.integers(1, 8))
def test_cost_non_decreasing_in_batch(model, ps, r, width, prof, b1, extra):
    prompt, seq = ps
    pol = Policy("fixed", r, width=width)
    a = predict(model, seq, prompt, policy=pol, profile=prof, batch=b1).ms_per_token
    b = predict(model, seq, prompt, policy=pol, profile=prof, batch=b1 + extra).ms_per_token
    assert b >= a * (1 - 1e-12)


@given(MODELS, workloads(), profiles())
def test_fixed_r1_is_dynamic(model, ps, prof):
    prompt, seq = ps
    a = predict(model, seq, prompt, policy="dynamic", profile=prof)
    b = predict(model, seq, prompt, r=1, width="exact", profile=prof)
    assert a.ms_per_token == b.ms_per_token and a.reserved_bytes == b.reserved_bytes


@given(MODELS, workloads(), profiles(), st.integers(0, 500))
def test_r_covering_generation_is_static(model, ps, prof, more):
    prompt, seq = ps
    a = predict(model, seq, prompt, policy="static", profile=prof)
    b = predict(model, seq, prompt, r=seq - prompt + min(more, prompt), width="padded", profile=prof)
    assert close(a.ms_per_token, b.ms_per_token)
    assert a.memory_bytes == b.memory_bytes and a.reserved_bytes == b.reserved_bytes
    assert b.growth_events == 0


@given(MODELS, workloads(), st.integers(1, 4096), st.sampled_from(["padded", "exact", "pad", "geo", "static"]),
       profiles(), st.integers(1, 4))
def test_breakdown_sums_and_peak_at_least_steady(model, ps, r, width, prof, batch):
    prompt, seq = ps
    pol = {"geo": Policy("geometric", factor=1.5), "static": Policy("static", width="padded")}.get(
        width, Policy("fixed", r, width=width if width in ("padded", "exact", "pad") else "exact"))
    p = predict(model, seq, prompt, policy=pol, profile=prof, batch=batch)
    assert close(sum(p.breakdown.values()), p.ms_per_token)
    assert all(v >= 0 for v in p.breakdown.values())
    assert p.reserved_bytes >= p.memory_bytes > 0


@given(MODELS, workloads(), st.integers(1, 4096), WIDTHS, profiles())
def test_sd_with_nothing_to_draft_is_plain(model, ps, r, width, prof):
    """gamma 0 with an acceptance is plain decoding (predict() refuses the pair as an option that does nothing,
    so the law is checked on the workloads)."""
    from bmc_model.core.specs import get_spec

    prompt, seq = ps
    pol = Policy("fixed", r, width=width)
    geo = Geometry.of(get_spec(model), 1, "float32")
    a = sum(breakdown(pol, Workload(prompt, seq), geo, prof).values())
    b = sum(breakdown(pol, Workload(prompt, seq, gamma=0, accept=(0.0,)), geo, prof).values())
    assert a == b


@given(MODELS, workloads(), profiles(), WIDTHS)
def test_argmin_never_worse_than_closed_form(model, ps, prof, width):
    prompt, seq = ps
    rec = recommend(model, seq, prompt, profile=prof, widths=[width], tolerance=0.0)
    lab = "pad-256" if width == "pad" else width
    sw = rec.sweeps[lab]
    r_star = min(max(1, round(rec.closed_form_r[lab])), len(sw.r))
    assert sw.seconds[rec.argmin_r[lab] - 1] <= sw.seconds[r_star - 1]
    assert sw.seconds[rec.argmin_r[lab] - 1] == sw.seconds.min()


@given(MODELS, workloads(), profiles(), st.floats(0.0, 0.2))
def test_tolerance_pick_is_within_tolerance(model, ps, prof, tol):
    prompt, seq = ps
    rec = recommend(model, seq, prompt, profile=prof, tolerance=tol)
    for lab, sw in rec.sweeps.items():
        i = rec.chosen_r[lab] - 1
        assert sw.seconds[i] <= sw.seconds.min() * (1 + tol) * (1 + 1e-9)
        # the least peak resident memory of the r within the tolerance of this width's best
        within = sw.seconds <= sw.seconds[i] * (1 + 1e-9)
        assert sw.resident_bytes[i] <= sw.resident_bytes[within].min() * (1 + 1e-9)
    fastest = min([s.seconds.min() * 1000 / (seq - prompt) for s in rec.sweeps.values()]
                  + [b.ms_per_token for b in rec.baselines.values()])
    assert rec.prediction.ms_per_token <= fastest * (1 + tol) * (1 + 1e-9)


@given(MODELS, workloads(), profiles(), st.floats(0.0, 0.2))
def test_pick_never_predicted_slower_than_static_or_dynamic(model, ps, prof, tol):
    # the tolerance buys memory only with time the caches users run today would spend anyway
    prompt, seq = ps
    rec = recommend(model, seq, prompt, profile=prof, tolerance=tol)
    users = min(rec.baselines["static"].ms_per_token, rec.baselines["dynamic"].ms_per_token)
    best = min(s.seconds.min() for s in rec.sweeps.values()) * 1000 / (seq - prompt)
    assert rec.prediction.ms_per_token <= max(users, best) * (1 + 1e-9)


def simulate(policy: Policy, prompt: int, seq: int, geo: Geometry, prof: Profile):
    """Step-by-step walk of the policy rules: the ground truth the closed forms must match."""
    cap = seq
    c = policy.initial_capacity(prompt, cap)
    events, alloc, copy, width = 0, 0.0, 0.0, 0
    if policy.width == "exact" and "cat" in prof.terms:  # the prefill buffer's spare rows, first touched later
        alloc += prof.alloc.segment(geo.rho * c)[1] * geo.rho * (min(c, seq) - prompt)
    for n in range(prompt, seq):
        if n + 1 > c:
            new = policy.grown_capacity(n, 1, c, cap)
            events += 1
            if policy.width == "exact" and "cat" in prof.terms:  # copy first-touches; spare rows later
                alloc += prof.alloc.segment(geo.rho * new)[1] * geo.rho * (new - n)
                copy += float(prof.cat(geo.rho * n))
            else:
                alloc += float(prof.alloc(geo.rho * new))
                copy += float(prof.copy(geo.rho * n))
            c = new
        width += policy.width_rows(n, 1, c)
    return events, alloc, copy, width


@given(MODELS, st.integers(1, 400), st.integers(2, 600), st.integers(1, 700),
       st.sampled_from(["padded", "exact", "geo", "static", "reserve"]), profiles(), st.integers(1, 3))
def test_closed_form_events_match_step_by_step_walk(model, prompt, gen, r, kind, prof, batch):
    from bmc_model.core.specs import get_spec

    seq = prompt + gen
    pol = {"geo": Policy("geometric", factor=1.7), "static": Policy("static", width="padded"),
           "reserve": Policy("reserve")}.get(
        kind, Policy("fixed", r, width=kind if kind in ("padded", "exact") else "exact"))
    geo = Geometry.of(get_spec(model), batch, "float32")
    w = Workload(prompt, seq, batch)
    ev = policy_events(pol, w, geo, prof)
    k, alloc, copy, width = simulate(pol, prompt, seq, geo, prof)
    assert ev.count == k
    assert close(float(ev.alloc_rows_sum_s), alloc, 1e-9)
    assert close(float(ev.copy_rows_sum_s), copy, 1e-9)
    assert close(float(ev.width_sum), width, 1e-12)


@given(MODELS, st.integers(1, 400), st.integers(2, 600), st.integers(1, 300), profiles())
def test_pad_width_close_to_walk(model, prompt, gen, r, prof):
    """pad-p uses the mean padding (a continuous approximation): within p/2 rows per step."""
    from bmc_model.core.specs import get_spec

    seq = prompt + gen
    pol = Policy("fixed", r, width="pad", pad=64)
    geo = Geometry.of(get_spec(model), 1, "float32")
    ev = policy_events(pol, Workload(prompt, seq), geo, prof)
    *_, width = simulate(pol, prompt, seq, geo, prof)
    assert abs(float(ev.width_sum) - width) <= 32 * gen


def sd_walk(policy: Policy, w: Workload, geo: Geometry, prof: Profile, runs: int, seed: int):
    """The runtime's SD rules with random acceptance (draft i accepted with probability a_i once i - 1
    were): mean event count and mean torch.cat cost over `runs` generations, and the count's standard error."""
    rng = np.random.default_rng(seed)
    a = [w.accept[min(i, len(w.accept) - 1)] for i in range(w.gamma)]
    counts, copies = [], []
    for _ in range(runs):
        n, out, c, k, cost = w.prompt, 0, policy.initial_capacity(w.prompt, w.cap), 0, 0.0
        while out < w.tokens:
            if n + w.q > c:
                c, k = policy.grown_capacity(n, w.q, c, w.cap), k + 1
                cost += float(prof.cat(geo.rho * n))
            adv = 1
            while adv < w.q and rng.random() < a[adv - 1]:
                adv += 1
            n, out = n + adv, out + adv
        counts.append(k)
        copies.append(cost)
    return float(np.mean(counts)), float(np.mean(copies)), float(np.std(counts) / math.sqrt(runs))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3000), st.integers(16, 300), st.integers(1, 8), st.floats(0.2, 0.95), st.floats(0.0, 1.0),
       st.integers(0, 10**6))
# r = 56: event 2 always leaves the capacity at the cap, so a third cannot happen (the spread once said 11%)
@example(1, 153, 5, 0.25, 0.3515625, 0)
# a known miss: 16 tokens in two or three passes of up to 8 rows, where the closed form's normal spread of event
# positions counts 3.03 events against the walk's 2.79-2.82 (8%); typical lengths are within 2%
@example(1, 16, 7, 0.9375, 0.0, 0).xfail(reason="closed-form SD events over two or three passes", raises=AssertionError)
def test_sd_growth_events_match_random_walk(prompt, gen, gamma, alpha, where, seed):
    """SD growth events in expectation, r from torch.cat to past the whole generation: the spacing and
    the events near the end (the knife edge the tuner's r sits on), against the runtime's rules."""
    from bmc_model.core.specs import get_spec

    r = 1 + int(where * (gen + gamma + 1))
    w = Workload(prompt, prompt + gen, gamma=gamma, accept=(alpha,))
    geo = Geometry.of(get_spec("llama-7b"), 1, "float32")
    pol = Policy("fixed", r, width="exact")
    ev = policy_events(pol, w, geo, PROF)
    k, copy, se = sd_walk(pol, w, geo, PROF, 800, seed)
    tol = 0.05 + 0.02 * k + 4 * se
    assert abs(float(ev.count) - k) <= tol
    assert abs(float(ev.copy_rows_sum_s) - copy) <= tol * float(PROF.cat(geo.rho * (prompt + gen)))


@given(st.lists(st.floats(0.0, 0.95), min_size=1, max_size=4), st.integers(1, 12))
def test_renewal_overshoot_laws(accept, gamma):
    """The overshoot past g is a distribution on 1..q; from a start itself (g = 0) it is A; far past
    it settles to the stationary P(A >= j) / E; and Wald: mean first passage = E (1 + expected starts in (0, g])."""
    from bmc_model.core.renewal import Renewal
    from bmc_model.core.workload import expected_advance

    ren = Renewal.of(tuple(accept), gamma)
    q, E = gamma + 1, expected_advance(tuple(accept), gamma)
    assert np.allclose(ren.excess_cdf[:, -1], 1.0) and np.all(np.diff(ren.excess_cdf, axis=1) >= -1e-12)
    assert math.isclose(ren.passage(0)[0], E, rel_tol=1e-9)
    reach = np.cumprod([1.0] + [accept[min(k, len(accept) - 1)] for k in range(gamma)])
    assert np.allclose(np.diff(ren.excess_cdf[-1]), reach / E, atol=1e-3)
    assert all(ren.passage(g)[0] >= g + 1 for g in range(0, 9 * q, 3))


def test_sd_sweep_matches_scalar_calls():
    """The SD events' expectation over the end events, vectorised over r, equals scalar calls."""
    from bmc_model.core.specs import get_spec
    from bmc_model.core.sweep import sweep_r

    w = Workload(700, 900, gamma=5, accept=(0.8, 0.7, 0.6))
    geo = Geometry.of(get_spec("llama-7b"), 1, "float32")
    for width in ("padded", "exact"):
        sw = sweep_r(width, w, geo, PROF)
        assert len(sw.r) == sw.flat_r == w.tokens + w.gamma  # the distinct r only; seconds_at holds past them
        for r in (1, 2, 6, 7, 12, 64, 190, 199, 201, 204, 205, 900):
            s = sum(breakdown(Policy("fixed", r, width=width), w, geo, PROF).values())
            assert close(sw.seconds_at(r), s, 1e-9)


def test_sweep_matches_scalar_calls():
    w = Workload(700, 2100, 2)
    from bmc_model.core.specs import get_spec
    from bmc_model.core.sweep import sweep_r

    geo = Geometry.of(get_spec("llama-7b"), 2, "float32")
    for width in ("padded", "exact", "pad"):
        sw = sweep_r(width, w, geo, PROF)
        assert len(sw.r) == sw.flat_r == w.tokens + w.gamma  # the distinct r only; seconds_at holds past them
        for r in (1, 2, 7, 64, 255, 1399, 1400, 1401, 2100):
            s = sum(breakdown(Policy("fixed", r, width=width), w, geo, PROF).values())
            assert close(sw.seconds_at(r), s, 1e-9)


def test_speculative_decoding_reduces_passes_when_acceptance_is_high():
    plain = predict("llama-7b", 2048, layers=2, r=128, width="exact")
    sd = predict("llama-7b", 2048, layers=2, r=128, width="exact", gamma=4, alpha=0.9)
    assert sd.advance == sum(0.9**k for k in range(5))
    assert sd.breakdown["weights"] < plain.breakdown["weights"]


def test_closed_form_sits_at_the_sweep_minimum_of_the_continuous_model():
    """Large T: the continuous approximation behind r* is accurate, so r* is near the argmin."""
    rec = recommend("llama-7b", 32768, 1024, layers=2, widths=["padded"], tolerance=0.0)
    sw = rec.sweeps["padded"]
    r_star = rec.closed_form_r["padded"]
    assert sw.seconds[round(r_star) - 1] <= sw.seconds.min() * 1.002
    assert np.isfinite(closed_form_r(Workload(1024, 32768), Geometry.of(
        __import__("bmc_model").get_spec("llama-7b"), 1, "float32"), PROF))


@given(MODELS, workloads(), st.integers(1, 8), st.integers(0, 15), profiles())
def test_layer_overhead_is_fixed_plus_per_extra_row(model, ps, batch, gamma, prof):
    from bmc_model.core.specs import get_spec

    prompt, seq = ps
    if gamma >= seq - prompt:
        return
    w = Workload(prompt, seq, batch, gamma, (0.5,) if gamma else ())
    spec = get_spec(model)
    geo = Geometry.of(spec, batch)
    got = breakdown(Policy("fixed", 64), w, geo, prof)["overhead"]
    per_layer = prof.layer_s
    if "layer_fixed" in prof.terms:
        x = geo.layer_weight_bytes
        per_layer = prof.layer_fixed(x) + (batch * (gamma + 1) - 1) * prof.layer_row(x)
    assert close(got, w.tokens / w.advance * (prof.step_s + spec.layers * per_layer), 1e-6)


def test_through_interpolates_and_holds_flat_past_the_ends():
    t = through([10.0, 30.0, 20.0], [1.0, 5.0, 2.0])  # any order
    assert [t(x) for x in (0.0, 10.0, 15.0, 20.0, 25.0, 30.0, 99.0)] == [1.0, 1.0, 1.5, 2.0, 3.5, 5.0, 5.0]
    assert through([7.0], [3.0])(1e9) == 3.0


@given(st.lists(st.tuples(st.floats(1e3, 1e10), st.one_of(st.just(0.0), st.floats(1e-9, 1.0))), min_size=2,
                max_size=5, unique_by=lambda p: p[0]))
@example([(187170816.0, 5.7264293839450695e-05), (809500672.0, 0.0)])  # a quick calibration's hf_layer_row
def test_through_non_negative_points_give_a_physical_in_place_term(pts):
    """Costs floored at 0 (a per-row slope) must not come back as -1e-20 s at a knot: calibration would reject
    the profile as unphysical."""
    from bmc_model.core.profile_check import term_problem

    xs, ys = zip(*pts)
    t = through(list(xs), list(ys))
    assert term_problem(t, in_place=True) is None
    assert all(t(x) >= 0 for x in xs)


@given(st.integers(1, 16), st.sampled_from(["smollm2-135m", "qwen2.5-coder-1.5b", "llama-7b"]))
def test_folded_gqa_attention_reads_the_q_row_curve_at_g_q_rows(q, model):
    """bmc-tune's runtime attends a KV head with g q query rows (g = heads / kv_heads); transformers does not fold."""
    from bmc_model.core.breakdown import attention_s
    from bmc_model.core.curves import attn_rows_factor, row_factor
    from bmc_model.core.specs import get_spec

    prof = embedded_profile()
    spec = get_spec(model)
    g = spec.heads // spec.kv_heads
    folded, hf = Geometry.of(spec, 1, "float32"), Geometry.of(spec, 1, "float32", folded=False)
    assert (folded.group, hf.group) == (g, 1)
    f = lambda m: row_factor(prof, "attn_q", prof.attn_q_slope, m)  # noqa: E731
    assert attn_rows_factor(prof, q, g) == (f(g * q) / f(g) if g > 1 else f(q))
    assert attn_rows_factor(prof, 1, g) == 1.0  # one token row: attn_exact / attn_masked already hold its g rows
    w = 1000
    a0, a1 = prof.attn_masked.segment(2 * folded.rho * w)
    assert attention_s(prof, folded.rho, w, q, True, g) == a0 + a1 * 2 * folded.rho * attn_rows_factor(prof, q, g) * w
    # predict charges the verify pass that way for the bmc runtime, the MHA curve at q for transformers'
    kw = {"model": spec.with_layers(2), "seq": 600, "prompt": 500, "r": 64, "width": "padded", "gamma": q, "alpha": 0.5,
          "dtype": "float32", "profile": prof}
    useful = {rt: predict(**kw, runtime=rt).breakdown["attention_useful"] for rt in ("bmc", "hf")}
    same = g == 1 or attn_rows_factor(prof, q + 1, g) == f(q + 1)
    assert (useful["bmc"] == pytest.approx(useful["hf"], rel=1e-12)) == same


def test_sd_memory_counts_a_growth_that_may_happen():
    """r = T + gamma - 2: the last iteration grows the cache in some runs. The cost counts it by its
    probability, the peak memory as if it happened; r = T + gamma never grows."""
    kw = {"width": "exact", "layers": 2, "gamma": 7, "alpha": 0.8}
    edge = predict("llama-7b", 16512, 16384, r=133, **kw)
    safe = predict("llama-7b", 16512, 16384, r=135, **kw)
    assert 0.0 < edge.growth_events < 1.0 and edge.reserved_bytes > edge.memory_bytes
    assert safe.growth_events == 0.0 and safe.reserved_bytes == safe.memory_bytes
    assert edge.breakdown["growth_copy"] > 0.0 == safe.breakdown["growth_copy"]
