"""KVCache against the torch.cat baseline and the Policy rules, on random shapes and write schedules."""

import pytest
import torch
import torch.nn.functional as F
from conftest import policies
from hypothesis import given, settings
from hypothesis import strategies as st

from bmc_model.core.errors import BMCError
from bmc_model.core.policy import NAMED, Policy
from bmc_model.runtime.cache import KVCache
from bmc_model.validate.memory import kv_peak_rows

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest


POLICIES = policies(factors=(1.3, 1.5, 2.0, 3.0))
CAT = NAMED["dynamic"]


@st.composite
def geometries(draw):
    return dict(layers=draw(st.integers(1, 3)), batch=draw(st.integers(1, 3)), kv_heads=draw(st.integers(1, 3)),
                head_dim=draw(st.sampled_from([4, 8, 16])))


def attend(qh: torch.Tensor, K: torch.Tensor, V: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """qh [b, kv_heads * g, q, d] over K, V [b, kv_heads, W, d] (repeat_interleave GQA reference)."""
    g = qh.shape[1] // K.shape[1]
    return F.scaled_dot_product_attention(qh, K.repeat_interleave(g, 1), V.repeat_interleave(g, 1), attn_mask=mask)


class Rules:
    """The Policy rules restated as a tiny simulator: capacity, width and growth events."""

    def __init__(self, policy: Policy, max_len: int) -> None:
        self.p, self.max_len, self.cap, self.events = policy, max_len, 0, 0

    def write(self, n: int, q: int) -> tuple[int, int]:
        if self.p.is_cat:  # no preallocation: holds exactly n + q rows, every later write is a cat
            self.events += n > 0
            self.cap = n + q
            return self.cap, n + q
        if self.cap == 0:
            self.cap = self.p.initial_capacity(q, self.max_len)
        elif n + q > self.cap:
            self.cap = self.p.grown_capacity(n, q, self.cap, self.max_len)
            self.events += 1
        return self.cap, self.p.width_rows(n, q, self.cap)


def write(cache: KVCache, k_rows: list, v_rows: list) -> None:
    """One forward's worth of writes: q rows into every layer, then advance."""
    for layer in range(cache.layers):
        cache.update(layer, k_rows[layer], v_rows[layer])
    cache.advance()


@settings(max_examples=100, deadline=None)
@given(geo=geometries(), group=st.integers(1, 3), policy=POLICIES, prompt=st.integers(1, 12),
       steps=st.lists(st.integers(1, 4), min_size=1, max_size=10), extra=st.integers(0, 5),
       seed=st.integers(0, 2**16))
def test_attention_and_capacity_match_cat_and_rules(geo, group, policy, prompt, steps, extra, seed):
    max_len = prompt + sum(steps) + extra
    g = torch.Generator().manual_seed(seed)
    b, kvh, d, L = geo["batch"], geo["kv_heads"], geo["head_dim"], geo["layers"]
    cache, base = KVCache(policy, max_len=max_len, **geo), KVCache(CAT, max_len=max_len, **geo)
    rules = Rules(policy, max_len)
    for q in [prompt, *steps]:
        n = cache.length
        ks = [torch.randn((b, kvh, q, d), generator=g) for _ in range(L)]
        vs = [torch.randn((b, kvh, q, d), generator=g) for _ in range(L)]
        qh = torch.randn((b, kvh * group, q, d), generator=g) * 2
        widths = []
        for layer in range(L):
            K, V, mask = cache.update(layer, ks[layer], vs[layer])
            Kb, Vb, mb = base.update(layer, ks[layer], vs[layer])
            widths.append(K.shape[2])
            assert torch.equal(K[:, :, :n + q], Kb) and torch.equal(V[:, :, :n + q], Vb)  # valid rows exact
            assert torch.isfinite(K).all() and torch.isfinite(V).all()  # padded rows are read: finite
            assert (mask is None) == (policy.width == "exact" and q == 1)
            torch.testing.assert_close(attend(qh, K, V, mask), attend(qh, Kb, Vb, mb), rtol=1e-5, atol=1e-5)
        cache.advance()
        base.advance()
        cap, width = rules.write(n, q)
        assert cache.capacity == cap and widths == [width] * L
        assert cache.length == base.length == n + q
    assert cache.stats.growth_events == rules.events
    assert len(cache.stats.events) == rules.events


@settings(max_examples=80, deadline=None)
@given(geo=geometries(), policy=POLICIES, prompt=st.integers(1, 10), before=st.integers(0, 4),
       junk=st.integers(1, 5), keep=st.integers(0, 5), after=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_rollback_then_rewrite_equals_never_written(geo, policy, prompt, before, junk, keep, after, seed):
    """Write `junk` rows, roll back all but `keep` of them, write `after` rows: as if only the kept were written."""
    keep = min(keep, junk)
    max_len = prompt + before + junk + after
    g = torch.Generator().manual_seed(seed)
    b, kvh, d, L = geo["batch"], geo["kv_heads"], geo["head_dim"], geo["layers"]

    def rows(q):
        return [torch.randn((b, kvh, q, d), generator=g) for _ in range(L)]

    prefix = [(rows(prompt), rows(prompt))] + ([(rows(before), rows(before))] if before else [])
    spec_k, spec_v = rows(junk), rows(junk)
    new_k, new_v = rows(after), rows(after)
    qh = torch.randn((b, kvh, after, d), generator=g)

    a, ref = KVCache(policy, max_len=max_len, **geo), KVCache(policy, max_len=max_len, **geo)
    for k, v in prefix:
        write(a, k, v)
        write(ref, k, v)
    write(a, spec_k, spec_v)
    assert a.rollback(junk - keep) == ref.length + keep
    if keep:
        write(ref, [k[:, :, :keep] for k in spec_k], [v[:, :, :keep] for v in spec_v])
    n = ref.length
    for layer in range(L):
        K, V, mask = a.update(layer, new_k[layer], new_v[layer])
        Kr, Vr, mr = ref.update(layer, new_k[layer], new_v[layer])
        assert torch.equal(K[:, :, :n + after], Kr[:, :, :n + after])
        assert torch.equal(V[:, :, :n + after], Vr[:, :, :n + after])
        torch.testing.assert_close(attend(qh, K, V, mask), attend(qh, Kr, Vr, mr), rtol=1e-5, atol=1e-5)
    a.advance()
    ref.advance()
    assert a.length == ref.length


@settings(max_examples=80, deadline=None)
@given(policy=POLICIES, layers=st.integers(1, 3), prompt=st.integers(1, 12), new=st.integers(1, 30),
       q=st.integers(1, 3))
def test_stats_bytes_and_peak(policy, layers, prompt, new, q):
    """Copied bytes are the valid rows at each event; the peak equals the memory estimate's rule."""
    max_len = prompt + new
    cache = KVCache(policy, layers=layers, batch=2, kv_heads=1, head_dim=4, max_len=max_len)
    row = 2 * 1 * 4 * 4  # batch * kv_heads * head_dim * fp32 bytes
    k = torch.zeros((2, 1, prompt, 4))
    for layer in range(layers):
        cache.update(layer, k, k)
    cache.advance()
    while cache.length < max_len:
        qq = min(q, max_len - cache.length)
        z = torch.zeros((2, 1, qq, 4))
        for layer in range(layers):
            cache.update(layer, z, z)
        cache.advance()
    st_ = cache.stats
    assert st_.bytes_copied == sum(2 * layers * e.n * row for e in st_.events)
    assert st_.bytes_written == 2 * layers * max_len * row
    assert st_.peak_bytes == row * kv_peak_rows(policy, layers=layers, prompt=prompt, max_len=max_len, q=q)
    assert cache.nbytes() == 2 * layers * cache.capacity * row


def test_cat_is_a_real_torch_cat_every_step():
    cache = KVCache(CAT, layers=1, batch=1, kv_heads=1, head_dim=2, max_len=8)
    for q in (3, 1, 1, 2):
        before = None if cache.length == 0 else cache._k[0]  # the tensor held before this write
        K, _, _ = cache.update(0, torch.ones((1, 1, q, 2)), torch.ones((1, 1, q, 2)))
        cache.advance()
        assert K.shape[2] == cache.length == cache.capacity
        if before is not None:
            assert K.data_ptr() != before.data_ptr()  # a fresh tensor each time
    assert cache.stats.growth_events == 3
    assert cache.stats.bytes_copied == 2 * (3 + 4 + 5) * 2 * 4


def test_fixed_r_writes_in_place_between_growths():
    cache = KVCache(Policy("fixed", 4, width="padded"), layers=1, batch=1, kv_heads=1, head_dim=2, max_len=20)
    ptrs = []
    for q in (2, 1, 1, 1, 1, 1, 1):
        K, _, mask = cache.update(0, torch.ones((1, 1, q, 2)), torch.ones((1, 1, q, 2)))
        cache.advance()
        ptrs.append(K.data_ptr())
        assert K.shape[2] == cache.capacity and mask is not None
    # capacity 6 after the prompt (2 + 4); rows 2..5 in place; the write at n=6 grows to 10
    assert ptrs[:5] == [ptrs[0]] * 5 and ptrs[5] != ptrs[0] and ptrs[6] == ptrs[5]
    assert [e.__dict__ for e in cache.stats.events] == [dict(n=6, q=1, old_capacity=6, new_capacity=10)]


@pytest.mark.parametrize("policy", [NAMED["reserve"], NAMED["static"], NAMED["llamacpp"]])
def test_preallocated_allocates_once_and_rolls_back_in_place(policy, monkeypatch):
    """Static and reserve: max_len rows per K / V per layer at the prefill, zero-filled only for widths that
    read past n + q; then in-place writes, rollback by the length alone, never a growth event."""
    made = []  # (constructor, rows) of every 4-d buffer allocated
    for name in ("zeros", "empty"):
        real = getattr(torch, name)

        def spy(shape, *a, _real=real, _name=name, **kw):
            if len(shape) in (4, 5):  # reserve: one arena [2 L, batch, kv_heads, rows, head_dim] for every buffer
                made.append((_name, shape[-2], shape[0] if len(shape) == 5 else 1))
            return _real(shape, *a, **kw)

        monkeypatch.setattr(torch, name, spy)
    layers, max_len = 2, 24
    cache = KVCache(policy, layers=layers, batch=2, kv_heads=1, head_dim=4, max_len=max_len)
    ptrs = set()
    for q, back in ((5, 0), (1, 0), (4, 3), (1, 0), (3, 2), (1, 1)):
        z = torch.randn((2, 1, q, 4))
        for layer in range(layers):
            K, _, _ = cache.update(layer, z, z)
            ptrs.add(K.data_ptr())
            assert K.shape[2] == policy.width_rows(cache.length, q, max_len)
        cache.advance()
        cache.rollback(back)
        assert cache.capacity == max_len
    if policy.growth == "reserve":
        assert made == [("empty", max_len, 2 * layers)]
    else:
        assert made == [("zeros" if policy.zero_filled else "empty", max_len, 1)] * (2 * layers)
    assert len(ptrs) == layers  # one buffer per layer, never replaced
    st_ = cache.stats
    assert st_.growth_events == 0 and st_.bytes_copied == 0 and st_.allocations == layers


def test_mask_is_causal_and_hides_padding():
    cache = KVCache(Policy("fixed", 5, width="padded"), layers=1, batch=1, kv_heads=1, head_dim=2, max_len=20)
    cache.update(0, torch.ones((1, 1, 3, 2)), torch.ones((1, 1, 3, 2)))
    cache.advance()
    _, _, mask = cache.update(0, torch.ones((1, 1, 2, 2)), torch.ones((1, 1, 2, 2)))
    allowed = (mask == 0).int().tolist()  # rows at positions 3 and 4, capacity 8
    assert allowed == [[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0]]


def test_bad_use_raises_bmcerror():
    cache = KVCache(NAMED["static"], layers=2, batch=1, kv_heads=1, head_dim=2, max_len=4)
    x = torch.zeros((1, 1, 3, 2))
    with pytest.raises(BMCError):
        cache.update(1, x, x)  # layers must be written in order
    cache.update(0, x, x)
    with pytest.raises(BMCError):
        cache.advance()  # layer 1 not written
    with pytest.raises(BMCError):
        cache.update(1, torch.zeros((1, 1, 2, 2)), torch.zeros((1, 1, 2, 2)))  # q differs from layer 0
    cache.update(1, x, x)
    cache.advance()
    y = torch.zeros((1, 1, 2, 2))
    with pytest.raises(BMCError, match="maximum length"):
        cache.update(0, y, y)
    with pytest.raises(BMCError):
        cache.rollback(4)
    with pytest.raises(BMCError):
        cache.update(0, torch.zeros((1, 2, 1, 2)), torch.zeros((1, 2, 1, 2)))  # wrong kv_heads
    with pytest.raises(BMCError):
        KVCache(NAMED["static"], layers=0, batch=1, kv_heads=1, head_dim=2, max_len=4)
