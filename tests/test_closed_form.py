"""sympy derives r* from the continuous cost model; the run-time closed form must agree with it,
and the continuous model must equal the code's closed-form sums wherever r divides T."""

import math

import sympy as sp
from hypothesis import given
from hypothesis import strategies as st

from bmc_model import Policy
from bmc_model.core.breakdown import breakdown
from bmc_model.core.profile import Profile, Term
from bmc_model.core.specs import get_spec
from bmc_model.core.sweep import closed_form_r
from bmc_model.core.workload import Geometry, Workload

T, P, r, rho, a0, a1, k0, k1, s = sp.symbols("T P r rho alpha0 alpha1 kappa0 kappa1 s", positive=True)
K = T / r - 1  # growth events: at t = r, 2r, ... < T
SUM_N = K * P + r * K * (K + 1) / 2  # valid rows copied, summed over events
SUM_C = SUM_N + r * K  # capacity allocated, summed over events
GROWTH = 2 * (K * (a0 + k0) + rho * a1 * SUM_C + rho * k1 * SUM_N)  # K and V tensors, per layer
REDUNDANT = s * 2 * rho * T * (r - 1) / 2  # padded rows read: (r-1)/2 per step on average
COST = GROWTH + REDUNDANT
_SAMPLE = {T: 10, P: 1, rho: 1, a0: 1, a1: 1, k0: 1, k1: 1, s: 1}
R_STAR = [x for x in sp.solve(sp.diff(COST, r), r) if x.subs(_SAMPLE) > 0]  # drop the negative root


SYMS = (T, P, r, rho, a0, a1, k0, k1, s)
R_STAR_F = sp.lambdify(SYMS, R_STAR[0], "math")
COST_F = sp.lambdify(SYMS, COST, "math")


def profile(vals) -> Profile:
    aff = lambda c, m: Term(c0=(c,), slope=(m,))  # noqa: E731
    terms = {"alloc": aff(vals["a0"], vals["a1"]), "copy": aff(vals["k0"], vals["k1"]), "write": aff(1e-6, 1e-11),
             "attn_exact": aff(1e-5, vals["s"]), "attn_masked": aff(1e-5, vals["s"]), "weights": aff(1e-5, 5e-11)}
    scalars = {"attn_q_slope": 0.3, "weights_row_slope": 0.01, "step_s": 1e-4, "layer_s": 1e-5, "sd_iter_s": 0.0}
    return Profile(terms=terms, scalars=scalars)


COEFS = st.fixed_dictionaries({"a0": st.floats(1e-7, 1e-4), "a1": st.floats(1e-12, 1e-9),
                               "k0": st.floats(1e-7, 1e-4), "k1": st.floats(1e-12, 1e-9), "s": st.floats(1e-12, 1e-9)})
MODEL = st.sampled_from(["llama-7b", "smollm2-135m"])


def test_sympy_finds_one_positive_stationary_point():
    assert len(R_STAR) == 1
    assert sp.diff(COST, r, 2).subs(r, R_STAR[0]).subs(_SAMPLE) > 0  # a minimum, not a maximum


@given(COEFS, st.integers(1, 4000), st.integers(64, 30000), MODEL)
def test_runtime_closed_form_equals_sympy_solution(c, prompt, tokens, model):
    geo = Geometry.of(get_spec(model), 1, "float32")
    got = closed_form_r(Workload(prompt, prompt + tokens), geo, profile(c), "padded")
    if tokens * c["s"] <= 2 * c["a1"]:  # no interior minimum: cost falls with r all the way
        assert got == tokens
        return
    want = R_STAR_F(tokens, prompt, 1, geo.rho, c["a0"], c["a1"], c["k0"], c["k1"], c["s"])
    if want >= tokens:
        assert got == tokens  # clamped: growing once for the whole generation is optimal
    else:
        assert math.isclose(got, want, rel_tol=1e-9)


@given(COEFS, st.integers(1, 3000), st.integers(1, 60), st.integers(1, 60), MODEL)
def test_continuous_model_equals_code_when_r_divides_T(c, prompt, r_val, blocks, model):
    tokens = r_val * blocks
    geo = Geometry.of(get_spec(model), 1, "float32")
    prof = profile(c)
    w = Workload(prompt, prompt + tokens)
    parts = breakdown(Policy("fixed", r_val, width="padded"), w, geo, prof)
    code = (parts["growth_alloc"] + parts["growth_copy"] + parts["attention_redundant"]) / geo.layers
    want = COST_F(tokens, prompt, r_val, geo.rho, c["a0"], c["a1"], c["k0"], c["k1"], c["s"])
    assert math.isclose(code, want, rel_tol=1e-9, abs_tol=1e-15)
